"""Untrusted OSS XML (error bodies, ListObjectsV2 pages) parsed with DTDs refused and size caps.

Error bodies and list pages go through the stdlib's C parser and tree builder with any DOCTYPE
refused as it starts (`_parse`, with the figures against defusedxml's pure-Python parser: the
cost per listing entry matters, issue 13 W6).

List pages first try a scanner (`_scan_list_v2`): a few compiled regexes that accept only a
strict subset of XML (the shape OSS and the emulator send: unprefixed elements without
attributes but the root's `xmlns`, text with the five predefined entities, no comments, CDATA,
processing instructions, DOCTYPE, character references, CR or XML-illegal characters). Any
page outside that subset, well-formed or not, goes to the tree parser, so the scanner never
decides anything the parser would decide differently (a property test compares the two). Why:
a 1,000-key page measured 6.4 us per entry through expat and the tree builder, and 2.3 through
the scanner (`bench/bench_requests.py --what list` shape, min of 20; both build the same
`ObjectMeta`s, whose construction is ~1 us of it).

Why so defensive: the bytes come from the network (or anything impersonating the endpoint),
and a parser that expands entities or accepts a 2 GiB body is a denial of service in a
long-running mount. DTDs are refused outright (OSS never sends one), which also rules out
entity expansion ("billion laughs") and external entities. Element namespaces are stripped
because old OSS error bodies carry `xmlns="http://doc.oss-cn-hangzhou.aliyuncs.com"`.
"""

from __future__ import annotations

import calendar
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import unquote

from defusedxml import DTDForbidden

from .models import ObjectMeta

__all__ = [
    "MAX_ERROR_XML_BYTES",
    "MAX_LIST_XML_BYTES",
    "ListResult",
    "XmlError",
    "parse_error_xml",
    "parse_iso8601_ns",
    "parse_iso8601_s",
    "parse_list_v2",
]

# An OSS error body is < 2 KB even with SignatureDoesNotMatch's StringToSignBytes.
MAX_ERROR_XML_BYTES = 64 * 1024
# 1000 keys of <= 1023 UTF-8 bytes, URL-encoded (x3) plus ~500 B of fields each: < 4 MB.
MAX_LIST_XML_BYTES = 16 * 1024 * 1024

# Listings carry no CRC-64, but an empty object's is known: the CRC-64 of no bytes is 0, what
# OSS sends for it. So an empty file's cache entry is verified, not "unverifiable" (it is
# never fetched: there is nothing to hash), and `ossmount warmup` counts it so.
_EMPTY_CRC = 0


class XmlError(ValueError):
    """The body was not acceptable OSS XML (malformed, hostile, oversized or wrong shape)."""


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(elem: ET.Element) -> dict[str, str]:
    return {_local(child.tag): (child.text or "") for child in elem}


def parse_error_xml(body: bytes) -> dict[str, str]:
    """Field name → text of an `<Error>` document (Code, Message, RequestId, EC, ...)."""
    root = _parse(body, MAX_ERROR_XML_BYTES, "error")
    if _local(root.tag) != "Error":
        raise XmlError(f"error XML has root <{_local(root.tag)}>, expected <Error>")
    return _children(root)


def parse_iso8601_ns(text: str) -> int:
    """`2020-06-22T11:42:32.000Z` → nanoseconds since the epoch (exact, no float rounding)."""
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise XmlError(f"bad timestamp {text!r}") from None
    seconds = calendar.timegm(dt.utctimetuple())  # naive times are taken as UTC
    return seconds * 1_000_000_000 + dt.microsecond * 1000


_ISO_Z = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.\d{1,9})?Z")
_EPOCH_DAYS: dict[str, int] = {}  # "YYYY-MM-DD" -> days since 1970-01-01, memo (bounded)


def parse_iso8601_s(text: str) -> int:
    """`2020-06-22T11:42:32.000Z` -> whole seconds since the epoch (the fraction dropped, as
    in a HEAD's or GET's Last-Modified header, so a listing and a HEAD agree).

    The fixed UTC form OSS sends is parsed by a regex and a memo of dates (~1 us instead of
    ~4 us through `datetime`); any other form goes through `parse_iso8601_ns`."""
    match = _ISO_Z.fullmatch(text)
    if match is None:
        return parse_iso8601_ns(text) // 1_000_000_000
    year, month, day, hour, minute, second = match.groups()
    date = text[:10]
    days = _EPOCH_DAYS.get(date)
    if days is None:
        try:
            days = (datetime(int(year), int(month), int(day)) - _EPOCH).days
        except ValueError:
            raise XmlError(f"bad timestamp {text!r}") from None
        if len(_EPOCH_DAYS) >= 4096:
            _EPOCH_DAYS.clear()
        _EPOCH_DAYS[date] = days
    return days * 86400 + int(hour) * 3600 + int(minute) * 60 + int(second)


_EPOCH = datetime(1970, 1, 1)


def _unquote(text: str) -> str:
    """`urllib.parse.unquote`, with the escapes almost every key has (`/`, space) replaced
    first: 0.2 us instead of 2.3 for `dir%2Fsub%20dir%2Ffile.dat`. Replacing them first cannot
    change the result, as neither `/` nor a space can be part of an escape."""
    plain = text.replace("%2F", "/").replace("%20", " ")
    return plain if "%" not in plain else unquote(plain)


@dataclass(frozen=True, slots=True)
class ListResult:
    """One decoded ListObjectsV2 page plus the fields the pager needs."""

    objects: tuple[ObjectMeta, ...]
    prefixes: tuple[str, ...]
    is_truncated: bool
    next_token: str | None


class _NoDtdTreeBuilder(ET.TreeBuilder):
    """The C TreeBuilder, refusing any DOCTYPE the moment it starts (before its internal
    subset is read), so no entity can be declared: defusedxml's `forbid_dtd`, without its
    pure-Python parser."""

    def doctype(self, name: str, pubid: str | None, system: str | None) -> None:
        raise DTDForbidden(name, system, pubid)


def _parse(body: bytes, limit: int, what: str) -> ET.Element:
    """`body` on the stdlib's C parser and tree builder, DOCTYPE refused, at most `limit` bytes.

    Why not defusedxml's parser: it is the *pure-Python* ElementTree XMLParser (it needs
    expat hooks the C one does not expose), which runs every expat event through several
    Python calls. Measured on a 1,000-key page (`bench/bench_requests.py --what list`, min of
    interleaved runs): defusedxml 7.0 us per entry to parse, this 3.3.
    """
    if len(body) > limit:
        raise XmlError(f"{what} XML is {len(body)} bytes, over the {limit}-byte limit")
    parser = ET.XMLParser(target=_NoDtdTreeBuilder())
    try:
        parser.feed(body)
        root: ET.Element = parser.close()
    except DTDForbidden as exc:
        raise XmlError(
            f"{what} XML refused ({type(exc).__name__}: DTD/entities forbidden)"
        ) from None
    except ET.ParseError as exc:
        raise XmlError(f"{what} XML is malformed ({exc})") from None
    return root


def _fields(elem: ET.Element) -> dict[str, str]:
    """`_children`, without a function call per child for the usual namespace-free tags."""
    return {(c.tag if c.tag[:1] != "{" else _local(c.tag)): (c.text or "") for c in elem}


def parse_list_v2(body: bytes) -> ListResult:
    """Decode a `ListBucketResult`; URL-decodes keys when `EncodingType` is `url`.

    Raises XmlError on a malformed page, including a truncated page without a token (which
    would otherwise make the pager stop early and silently hide keys).
    """
    if len(body) <= MAX_LIST_XML_BYTES:
        fast = _scan_list_v2(body)
        if fast is not None:
            return fast
    return _parse_list_v2_tree(body)


def _parse_list_v2_tree(body: bytes) -> ListResult:
    """`parse_list_v2` through the tree parser: any XML, and every error."""
    root = _parse(body, MAX_LIST_XML_BYTES, "list")
    if _local(root.tag) != "ListBucketResult":
        raise XmlError(f"list XML has root <{_local(root.tag)}>, expected <ListBucketResult>")
    encoded = False
    truncated = False
    token: str | None = None
    objects: list[ObjectMeta] = []
    prefixes: list[str] = []
    raw_prefixes: list[str] = []
    raw_objects: list[dict[str, str]] = []
    for child in root:
        tag = child.tag if child.tag[:1] != "{" else _local(child.tag)
        if tag == "Contents":
            raw_objects.append(_fields(child))
        elif tag == "CommonPrefixes":
            raw_prefixes.extend(c.text or "" for c in child if _local(c.tag) == "Prefix")
        elif tag == "EncodingType":
            encoded = (child.text or "").strip().lower() == "url"
        elif tag == "IsTruncated":
            truncated = (child.text or "").strip().lower() == "true"
        elif tag == "NextContinuationToken":
            token = child.text or None

    def dec(s: str) -> str:
        return _unquote(s) if encoded else s

    for fields in raw_objects:
        try:
            size = int(fields["Size"])
            objects.append(
                ObjectMeta(  # positional: measurably cheaper for a frozen slots dataclass
                    dec(fields["Key"]),
                    size,
                    fields.get("ETag", ""),
                    _mtime_ns(fields["LastModified"]),
                    _EMPTY_CRC if size == 0 else None,
                    fields.get("Type") or None,
                    fields.get("StorageClass") or None,
                )
            )
        except (KeyError, ValueError) as exc:
            raise XmlError(f"list entry is missing or has a bad field: {exc}") from None
    prefixes = [dec(p) for p in raw_prefixes]
    if truncated and not token:
        raise XmlError("list page is truncated but has no NextContinuationToken")
    next_token = dec(token) if truncated and token else None
    return ListResult(tuple(objects), tuple(prefixes), truncated, next_token)


_SECONDS: dict[str, int] = {}  # Last-Modified text -> ns, memo (bounded): pages repeat them


def _mtime_ns(text: str) -> int:
    ns = _SECONDS.get(text)
    if ns is None:
        ns = parse_iso8601_s(text) * 1_000_000_000
        if len(_SECONDS) >= 4096:
            _SECONDS.clear()
        _SECONDS[text] = ns
    return ns


# The scanner's subset of XML (module docstring). Whitespace between elements is XML's own
# (no CR: a parser normalizes it inside text, so a page with one goes to the parser).
_W = "[ \t\n]*"
_NAME = "[A-Za-z][A-Za-z0-9]*"
_HEAD = re.compile(
    '(?:<\\?xml version="1\\.0"(?: encoding="(?:UTF-8|utf-8)")?\\?>)?' + _W
    + '<ListBucketResult(?: xmlns="[^"<>&]*")?>'
)  # fmt: skip
_END = re.compile(_W + "</ListBucketResult>" + _W)
_FIELD = re.compile(f"{_W}<({_NAME})>([^<]*)</\\1>")
_COMMON = re.compile(f"{_W}<CommonPrefixes>{_W}<Prefix>([^<]*)</Prefix>{_W}</CommonPrefixes>")
_CONTENTS = re.compile(
    f"{_W}<Contents>{_W}<Key>([^<]*)</Key>{_W}<LastModified>([^<]*)</LastModified>{_W}"
    f"<ETag>([^<]*)</ETag>{_W}<Type>([^<]*)</Type>{_W}<Size>([^<]*)</Size>{_W}"
    f"<StorageClass>([^<]*)</StorageClass>{_W}</Contents>"
)  # the usual order and fields: one match, no dict
_ANY_CONTENTS = re.compile(
    f"{_W}<Contents>((?:{_W}<({_NAME})>[^<]*</\\2>"
    f"|{_W}<Owner>(?:{_W}<(ID|DisplayName)>[^<]*</\\3>)*{_W}</Owner>)*){_W}</Contents>"
)  # any order, optional fields, an Owner of ID/DisplayName
_INNER = re.compile(f"<({_NAME})>([^<]*)</\\1>")
# What the scanner leaves to the parser: CR, XML-illegal characters, "]]>" (illegal in text).
_REFUSED = re.compile("[\\r\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\ufffe\\uffff]|]]>")
_ENTITY = re.compile("&(lt|gt|amp|quot|apos);")  # every `&` of a scanned page starts one
_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"', "apos": "'"}


class _NotScanned(Exception):
    """The page is outside the scanner's subset: the tree parser decides."""


def _text(raw: str) -> str:
    """Element text with the predefined entities resolved (`_scan_list_v2` checked every `&`)."""
    return raw if "&" not in raw else _ENTITY.sub(lambda m: _ENTITIES[m.group(1)], raw)


def _scan_list_v2(body: bytes) -> ListResult | None:
    """`parse_list_v2` of a page in the scanner's subset, else None (module docstring)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if _REFUSED.search(text) is not None:
        return None
    if "&" in text and text.count("&") != len(_ENTITY.findall(text)):
        return None  # a character reference, or an `&` no parser accepts
    try:
        return _scan(text)
    except (_NotScanned, KeyError, ValueError):
        return None  # also a missing field or a bad number: the parser raises the error


def _scan(text: str) -> ListResult | None:
    m = _HEAD.match(text)
    if m is None:
        return None
    pos = m.end()
    raw_objects: list[tuple[str, ...]] = []
    other_objects: list[tuple[int, dict[str, str]]] = []
    raw_prefixes: list[str] = []
    top: dict[str, str] = {}
    contents, common, field, any_contents = (
        _CONTENTS.match, _COMMON.match, _FIELD.match, _ANY_CONTENTS.match
    )  # fmt: skip
    while True:
        if (m := contents(text, pos)) is not None:
            raw_objects.append(m.groups())
        elif (m := common(text, pos)) is not None:
            raw_prefixes.append(m.group(1))
        elif (m := field(text, pos)) is not None:
            name = m.group(1)
            if name in ("EncodingType", "IsTruncated", "NextContinuationToken"):
                top[name] = m.group(2)
            elif name in ("Contents", "CommonPrefixes"):
                raise _NotScanned  # text where elements belong: the parser's error
        elif (m := any_contents(text, pos)) is not None:
            fields = dict(_INNER.findall(m.group(1)))
            other_objects.append((len(raw_objects), fields))
            raw_objects.append(())
        else:
            break
        pos = m.end()
    if _END.fullmatch(text, pos) is None:
        return None
    encoded = _text(top.get("EncodingType", "")).strip().lower() == "url"
    truncated = _text(top.get("IsTruncated", "")).strip().lower() == "true"
    token = _text(top.get("NextContinuationToken", "")) or None
    dec = _unquote if encoded else str
    for index, fields in other_objects:
        raw_objects[index] = (
            fields["Key"], fields["LastModified"], fields.get("ETag", ""),
            fields.get("Type", ""), fields["Size"], fields.get("StorageClass", ""),
        )  # fmt: skip
    objects = [
        ObjectMeta(  # positional, as in the tree parser's loop
            dec(_text(key)),
            length,
            _text(etag),
            _mtime_ns(_text(modified)),
            _EMPTY_CRC if length == 0 else None,
            _text(kind) or None,
            _text(storage) or None,
        )
        for key, modified, etag, kind, size, storage in raw_objects
        for length in (int(_text(size)),)
    ]
    prefixes = tuple(dec(_text(p)) for p in raw_prefixes)
    if truncated and not token:
        return None  # the parser raises it
    next_token = dec(token) if truncated and token else None
    return ListResult(tuple(objects), prefixes, truncated, next_token)
