"""ListMultipartUploads and ListParts: the two listings of unfinished multipart uploads.

Uploads are ordered by key (UTF-8 byte order, as objects are) and, for one key, by initiation
(``_Upload.seq``), so ``key-marker`` + ``upload-id-marker`` resume exactly after the last one
returned. Both read the upload table from the trio thread only, like every multipart handler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from .multipart import get_upload, uploads
from .response import Response, xml_response
from .xml import OssError, iso8601, xml_text

if TYPE_CHECKING:
    from .app import Ctx, Op

__all__ = ["OPS"]


def _int_arg(ctx: Ctx, name: str, default: int, low: int, high: int) -> int:
    v = ctx.req.qget(name)
    if v is None or v == "":
        return default
    try:
        n = int(v)
    except ValueError:
        n = low - 1
    if not low <= n <= high:
        raise OssError(
            400,
            "InvalidArgument",
            f"Argument {name} must be an integer between {low} and {high}.",
            extra={"ArgumentName": name, "ArgumentValue": v},
        )
    return n


def _url(ctx: Ctx) -> bool:
    enc = ctx.req.qget("encoding-type") or ""
    if enc not in ("", "url"):
        raise OssError(
            400,
            "InvalidArgument",
            "Invalid Encoding Method specified in Request",
            extra={"ArgumentName": "encoding-type", "ArgumentValue": enc},
        )
    return enc == "url"


async def list_uploads(ctx: Ctx) -> Response:
    """``GET /?uploads`` with prefix, delimiter, key-marker, upload-id-marker, max-uploads."""
    ctx.bucket()
    q = ctx.req.qget
    url = _url(ctx)
    prefix, delim = q("prefix") or "", q("delimiter") or ""
    key_marker, id_marker = q("key-marker") or "", q("upload-id-marker") or ""
    limit = _int_arg(ctx, "max-uploads", 1000, 1, 1000)
    table = uploads(ctx)
    mine = sorted(
        ((up.key.encode("utf-8", "surrogatepass"), up.seq, uid, up) for uid, up in table.items()),
        key=lambda t: (t[0], t[1]),
    )
    marker_seq = table[id_marker].seq if id_marker in table else -1
    km = key_marker.encode("utf-8", "surrogatepass")
    entries: list[str] = []
    prefixes: list[str] = []
    truncated = False
    next_key = next_id = ""
    for kb, seq, uid, up in mine:
        if up.bucket != ctx.bucket_name or not up.key.startswith(prefix):
            continue
        if key_marker and (kb < km or (kb == km and (not id_marker or seq <= marker_seq))):
            continue
        if delim and key_marker.endswith(delim) and up.key.startswith(key_marker):
            continue  # resuming after a common prefix: its keys were counted once already
        cp = ""
        if delim and (j := up.key.find(delim, len(prefix))) >= 0:
            cp = up.key[: j + len(delim)]
            if prefixes and prefixes[-1] == cp:
                continue
        if len(entries) + len(prefixes) >= limit:
            truncated = True
            break
        if cp:
            prefixes.append(cp)
            next_key, next_id = cp, ""
            continue
        entries.append(
            "  <Upload>\n"
            f"    <Key>{_enc(up.key, url)}</Key>\n"
            f"    <UploadId>{uid}</UploadId>\n"
            f"    <StorageClass>{up.storage_class}</StorageClass>\n"
            f"    <Initiated>{iso8601(up.initiated)}</Initiated>\n"
            "  </Upload>\n"
        )
        next_key, next_id = up.key, uid
    head = "<ListMultipartUploadsResult>\n"
    if url:
        head += "  <EncodingType>url</EncodingType>\n"
    head += (
        f"  <Bucket>{ctx.bucket_name}</Bucket>\n"
        f"  <KeyMarker>{_enc(key_marker, url)}</KeyMarker>\n"
        f"  <UploadIdMarker>{xml_text(id_marker)}</UploadIdMarker>\n"
        f"  <NextKeyMarker>{_enc(next_key if truncated else '', url)}</NextKeyMarker>\n"
        f"  <NextUploadIdMarker>{next_id if truncated else ''}</NextUploadIdMarker>\n"
        f"  <Delimiter>{_enc(delim, url)}</Delimiter>\n"
        f"  <Prefix>{_enc(prefix, url)}</Prefix>\n"
        f"  <MaxUploads>{limit}</MaxUploads>\n"
        f"  <IsTruncated>{'true' if truncated else 'false'}</IsTruncated>\n"
    )
    cps = "".join(
        f"  <CommonPrefixes>\n    <Prefix>{_enc(p, url)}</Prefix>\n  </CommonPrefixes>\n"
        for p in prefixes
    )
    body = head + "".join(entries) + cps + "</ListMultipartUploadsResult>\n"
    return xml_response(body)


def _enc(value: str, url: bool) -> str:
    return quote(value, safe="") if url else xml_text(value)


async def list_parts(ctx: Ctx) -> Response:
    """``GET /key?uploadId=`` with part-number-marker and max-parts (default 1000)."""
    ctx.bucket()
    uid, up = get_upload(ctx)
    url = _url(ctx)
    marker = _int_arg(ctx, "part-number-marker", 0, 0, 10000)
    limit = _int_arg(ctx, "max-parts", 1000, 1, 1000)
    after = [(n, p) for n, p in sorted(up.parts.items()) if n > marker]
    shown, truncated = after[:limit], len(after) > limit
    items = "".join(
        "  <Part>\n"
        f"    <PartNumber>{n}</PartNumber>\n"
        f"    <LastModified>{iso8601(p.mtime)}</LastModified>\n"
        f"    <ETag>{xml_text(p.etag)}</ETag>\n"
        f"    <HashCrc64ecma>{p.crc}</HashCrc64ecma>\n"
        f"    <Size>{p.size}</Size>\n"
        "  </Part>\n"
        for n, p in shown
    )
    body = "<ListPartsResult>\n"
    if url:
        body += "  <EncodingType>url</EncodingType>\n"
    body += (
        f"  <Bucket>{ctx.bucket_name}</Bucket>\n"
        f"  <Key>{_enc(ctx.key, url)}</Key>\n"
        f"  <UploadId>{uid}</UploadId>\n"
        f"  <StorageClass>{up.storage_class}</StorageClass>\n"
        f"  <PartNumberMarker>{marker}</PartNumberMarker>\n"
        f"  <NextPartNumberMarker>{shown[-1][0] if shown else marker}</NextPartNumberMarker>\n"
        f"  <MaxParts>{limit}</MaxParts>\n"
        f"  <IsTruncated>{'true' if truncated else 'false'}</IsTruncated>\n"
        f"{items}</ListPartsResult>\n"
    )
    return xml_response(body)


OPS: dict[str, Op] = {
    "ListMultipartUploads": list_uploads,
    "ListParts": list_parts,
}
