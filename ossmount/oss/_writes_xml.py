"""XML bodies of the write operations: the few we build (Complete, Delete) and those we parse.

Parsing goes through `_xml._parse` (defusedxml, DTDs refused, size-capped) like every other
reply: these bytes come from the network too. Keys in replies are URL-decoded when the reply
says `EncodingType` url (we always ask for it, so a key with characters XML cannot carry
still round-trips).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote
from xml.sax.saxutils import escape

from ._xml import XmlError, _children, _local, _parse, parse_iso8601_ns

__all__ = [
    "MAX_WRITE_XML_BYTES",
    "ListedPart",
    "ListedUpload",
    "PartsPage",
    "UploadsPage",
    "complete_body",
    "delete_body",
    "parse_copy_result",
    "parse_deleted",
    "parse_initiate",
    "parse_list_parts",
    "parse_list_uploads",
]

# 1000 parts or uploads per page at < 2 KB each.
MAX_WRITE_XML_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ListedPart:
    number: int
    etag: str
    size: int
    crc64: int | None


@dataclass(frozen=True, slots=True)
class PartsPage:
    parts: tuple[ListedPart, ...]
    next_marker: int | None  # None when this was the last page


@dataclass(frozen=True, slots=True)
class ListedUpload:
    key: str
    upload_id: str
    initiated_ns: int


@dataclass(frozen=True, slots=True)
class UploadsPage:
    uploads: tuple[ListedUpload, ...]
    next_markers: tuple[str, str] | None  # (key-marker, upload-id-marker) or None at the end


def complete_body(parts: Sequence[tuple[int, str]]) -> bytes:
    """`<CompleteMultipartUpload>` for (part number, ETag) pairs in ascending order."""
    items = "".join(
        f"<Part><PartNumber>{n}</PartNumber><ETag>{escape(etag)}</ETag></Part>" for n, etag in parts
    )
    return f"<CompleteMultipartUpload>{items}</CompleteMultipartUpload>".encode()


def delete_body(keys: Iterable[str]) -> bytes:
    """`<Delete>` in verbose mode (Quiet false): the reply lists every key it deleted."""
    items = "".join(f"<Object><Key>{escape(k)}</Key></Object>" for k in keys)
    return f"<Delete><Quiet>false</Quiet>{items}</Delete>".encode()


def _root(body: bytes, expected: str) -> object:
    root = _parse(body, MAX_WRITE_XML_BYTES, expected)
    if _local(root.tag) != expected:
        raise XmlError(f"reply XML has root <{_local(root.tag)}>, expected <{expected}>")
    return root


def _encoded(fields: dict[str, str]) -> bool:
    return fields.get("EncodingType", "").strip().lower() == "url"


def parse_initiate(body: bytes) -> str:
    root = _parse(body, MAX_WRITE_XML_BYTES, "InitiateMultipartUploadResult")
    if _local(root.tag) != "InitiateMultipartUploadResult":
        raise XmlError(f"initiate reply has root <{_local(root.tag)}>")
    upload_id = _children(root).get("UploadId", "").strip()
    if not upload_id:
        raise XmlError("initiate reply has no UploadId")
    return upload_id


def _crc(text: str | None) -> int | None:
    text = (text or "").strip()
    return int(text) if text.isdigit() and int(text) < 1 << 64 else None


def parse_list_parts(body: bytes) -> PartsPage:
    root = _parse(body, MAX_WRITE_XML_BYTES, "ListPartsResult")
    if _local(root.tag) != "ListPartsResult":
        raise XmlError(f"list-parts reply has root <{_local(root.tag)}>")
    fields = _children(root)
    parts: list[ListedPart] = []
    try:
        for child in root:
            if _local(child.tag) != "Part":
                continue
            p = _children(child)
            parts.append(
                ListedPart(
                    int(p["PartNumber"]),
                    p["ETag"].strip(),
                    int(p["Size"]),
                    _crc(p.get("HashCrc64ecma")),
                )
            )
        truncated = fields.get("IsTruncated", "").strip().lower() == "true"
        marker = int(fields["NextPartNumberMarker"]) if truncated else None
    except (KeyError, ValueError) as exc:
        raise XmlError(f"list-parts entry is missing or has a bad field: {exc}") from None
    return PartsPage(tuple(parts), marker)


def parse_list_uploads(body: bytes) -> UploadsPage:
    root = _parse(body, MAX_WRITE_XML_BYTES, "ListMultipartUploadsResult")
    if _local(root.tag) != "ListMultipartUploadsResult":
        raise XmlError(f"list-uploads reply has root <{_local(root.tag)}>")
    fields = _children(root)
    url = _encoded(fields)

    def dec(s: str) -> str:
        return unquote(s) if url else s

    uploads: list[ListedUpload] = []
    try:
        for child in root:
            if _local(child.tag) != "Upload":
                continue
            u = _children(child)
            initiated = u.get("Initiated", "").strip()
            uploads.append(
                ListedUpload(
                    dec(u["Key"]),
                    u["UploadId"].strip(),
                    parse_iso8601_ns(initiated) if initiated else 0,
                )
            )
    except KeyError as exc:
        raise XmlError(f"list-uploads entry is missing {exc}") from None
    truncated = fields.get("IsTruncated", "").strip().lower() == "true"
    markers = None
    if truncated:
        markers = (dec(fields.get("NextKeyMarker", "")), fields.get("NextUploadIdMarker", ""))
        if not markers[0] and not markers[1]:
            raise XmlError("list-uploads page is truncated but has no next markers")
    return UploadsPage(tuple(uploads), markers)


def parse_copy_result(body: bytes) -> tuple[str, int]:
    """(ETag, Last-Modified ns) of a `CopyObjectResult` or `CopyPartResult`."""
    root = _parse(body, MAX_WRITE_XML_BYTES, "copy result")
    if _local(root.tag) not in ("CopyObjectResult", "CopyPartResult"):
        raise XmlError(f"copy reply has root <{_local(root.tag)}>")
    fields = _children(root)
    etag = fields.get("ETag", "").strip()
    if not etag:
        raise XmlError("copy reply has no ETag")
    modified = fields.get("LastModified", "").strip()
    return etag, parse_iso8601_ns(modified) if modified else 0


def parse_deleted(body: bytes) -> tuple[set[str], dict[str, str]]:
    """Keys the `DeleteResult` says were deleted, and key -> error code for refused ones."""
    root = _parse(body, MAX_WRITE_XML_BYTES, "DeleteResult")
    if _local(root.tag) != "DeleteResult":
        raise XmlError(f"delete reply has root <{_local(root.tag)}>")
    url = _encoded(_children(root))
    deleted: set[str] = set()
    errors: dict[str, str] = {}
    for child in root:
        tag = _local(child.tag)
        fields = _children(child)
        key = fields.get("Key", "")
        key = unquote(key) if url else key
        if tag == "Deleted":
            deleted.add(key)
        elif tag == "Error":
            errors[key] = fields.get("Code", "Unknown")
    return deleted, errors
