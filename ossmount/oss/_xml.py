"""Untrusted OSS XML (error bodies, ListObjectsV2 pages) parsed with defusedxml and size caps.

Why so defensive: the bytes come from the network (or anything impersonating the endpoint),
and a parser that expands entities or accepts a 2 GiB body is a denial of service in a
long-running mount. DTDs are refused outright (OSS never sends one), which also rules out
entity expansion ("billion laughs") and external entities. Element namespaces are stripped
because old OSS error bodies carry `xmlns="http://doc.oss-cn-hangzhou.aliyuncs.com"`.
"""

from __future__ import annotations

import calendar
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import unquote

import defusedxml
import defusedxml.ElementTree as DET

from .models import ObjectMeta, whole_seconds

__all__ = [
    "MAX_ERROR_XML_BYTES",
    "MAX_LIST_XML_BYTES",
    "ListResult",
    "XmlError",
    "parse_error_xml",
    "parse_iso8601_ns",
    "parse_list_v2",
]

# An OSS error body is < 2 KB even with SignatureDoesNotMatch's StringToSignBytes.
MAX_ERROR_XML_BYTES = 64 * 1024
# 1000 keys of <= 1023 UTF-8 bytes, URL-encoded (x3) plus ~500 B of fields each: < 4 MB.
MAX_LIST_XML_BYTES = 16 * 1024 * 1024


class XmlError(ValueError):
    """The body was not acceptable OSS XML (malformed, hostile, oversized or wrong shape)."""


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _parse(body: bytes, limit: int, what: str) -> ET.Element:
    if len(body) > limit:
        raise XmlError(f"{what} XML is {len(body)} bytes, over the {limit}-byte limit")
    try:
        root: ET.Element = DET.fromstring(body, forbid_dtd=True)
    except defusedxml.DefusedXmlException as exc:
        raise XmlError(
            f"{what} XML refused ({type(exc).__name__}: DTD/entities forbidden)"
        ) from None
    except ET.ParseError as exc:
        raise XmlError(f"{what} XML is malformed ({exc})") from None
    return root


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


@dataclass(frozen=True, slots=True)
class ListResult:
    """One decoded ListObjectsV2 page plus the fields the pager needs."""

    objects: tuple[ObjectMeta, ...]
    prefixes: tuple[str, ...]
    is_truncated: bool
    next_token: str | None


def parse_list_v2(body: bytes) -> ListResult:
    """Decode a `ListBucketResult`; URL-decodes keys when `EncodingType` is `url`.

    Raises XmlError on a malformed page, including a truncated page without a token (which
    would otherwise make the pager stop early and silently hide keys).
    """
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
        tag = _local(child.tag)
        if tag == "EncodingType":
            encoded = (child.text or "").strip().lower() == "url"
        elif tag == "IsTruncated":
            truncated = (child.text or "").strip().lower() == "true"
        elif tag == "NextContinuationToken":
            token = child.text or None
        elif tag == "Contents":
            raw_objects.append(_children(child))
        elif tag == "CommonPrefixes":
            raw_prefixes.extend(c.text or "" for c in child if _local(c.tag) == "Prefix")

    def dec(s: str) -> str:
        return unquote(s) if encoded else s

    for fields in raw_objects:
        try:
            objects.append(
                ObjectMeta(
                    key=dec(fields["Key"]),
                    size=int(fields["Size"]),
                    etag=fields.get("ETag", ""),
                    mtime_ns=whole_seconds(parse_iso8601_ns(fields["LastModified"])),
                    crc64=None,
                    object_type=fields.get("Type") or None,
                    storage_class=fields.get("StorageClass") or None,
                )
            )
        except (KeyError, ValueError) as exc:
            raise XmlError(f"list entry is missing or has a bad field: {exc}") from None
    prefixes = [dec(p) for p in raw_prefixes]
    if truncated and not token:
        raise XmlError("list page is truncated but has no NextContinuationToken")
    next_token = dec(token) if truncated and token else None
    return ListResult(tuple(objects), tuple(prefixes), truncated, next_token)
