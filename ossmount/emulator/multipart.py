"""Multipart upload: Initiate, UploadPart(Copy), Complete, Abort (§3.9-3.10, §8.17).

The listings of uploads and parts are in ``uploads.py``.

ETag of the completed object is our convention ``"<MD5 of the part MD5s>-<N>"`` (upper hex),
the observable OSS shape; CRC-64 = ``crc64.combine`` of the part CRCs in part order. Parts are
held as store bodies (files under ``.tmp`` with ``--data-dir``) until Complete concatenates them.

Parts received in place (``--data-dir``): copying a 1 GiB upload's parts into one file at
Complete took ~4 s here (and wrote every byte to disk twice), so each upload has an assembly
file under ``.tmp``, and a part whose Content-Length is at most the upload's stride (the first
part's length) is received straight into it at ``(number - 1) * stride`` (a ``FileRegion``);
UploadPartCopy copies a part of its range's length into its slot the same way, in a worker
thread (objects.copy_in_thread).
When Complete chooses parts 1..N, all in place, all of the stride but the last, the assembly
file cut to their total *is* the object: nothing is copied. Anything else (other sizes, gaps, a
part re-sent into a file of its own, a part still being received) takes the copying path, so
in-place receiving is an optimisation with no visible difference.

Concurrency: ``_UPLOADS`` entries are only touched from the trio thread; a part replaces an
earlier upload of the same number by one dict assignment. Regions never overlap (each part
number has its own stride-sized slot); a slot is written only while its number is in
``claimed`` and never while the part recorded for that number lives in it, so a recorded
part's bytes are never overwritten. Complete uses the assembly file as the object only when
nothing is claimed, and between that check and publishing it does not await.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ossmount.crc64 import combine

from .listing import local_name, parse_xml
from .objects import (
    _check_overwrite,
    _user_meta,
    copy_in_thread,
    copy_source_object,
    parse_range,
)
from .receive import receive_body
from .response import Response, xml_response
from .store import (
    Body,
    FileBody,
    FileRegion,
    ObjectVersion,
    guess_content_type,
    md5_etag,
)
from .xml import OssError, iso8601, xml_doc, xml_text

if TYPE_CHECKING:
    from .app import Ctx, Op

__all__ = ["OPS", "get_upload", "uploads"]

MIN_PART = 100 * 1024
_ASSEMBLY_MAX = 1 << 40  # no slot past 1 TiB in an assembly file (ext4's limit is 16 TiB)


@dataclass
class _Part:
    body: Body
    etag: str
    md5: bytes
    crc: int
    size: int
    mtime: float


@dataclass
class _Upload:
    bucket: str
    key: str
    content_type: str
    meta: tuple[tuple[str, str], ...]
    storage_class: str
    initiated: float
    seq: int  # initiation order, which breaks ties between uploads of one key in listings
    parts: dict[int, _Part] = field(default_factory=dict)
    assembly: Path | None = None  # parts received in place (see the module docstring)
    stride: int = 0
    claimed: set[int] = field(default_factory=set)  # part numbers being received in place


_ids = itertools.count(1)


def uploads(ctx: Ctx) -> dict[str, _Upload]:
    d: dict[str, _Upload] | None = getattr(ctx.app, "_uploads", None)
    if d is None:
        d = {}
        ctx.app._uploads = d  # type: ignore[attr-defined]
    return d


def get_upload(ctx: Ctx) -> tuple[str, _Upload]:
    uid = ctx.req.qget("uploadId") or ""
    up = uploads(ctx).get(uid)
    if up is None or up.bucket != ctx.bucket_name or up.key != ctx.key:
        raise OssError(404, "NoSuchUpload", extra={"UploadId": uid})
    return uid, up


async def initiate(ctx: Ctx) -> Response:
    ctx.bucket()
    _check_overwrite(ctx)  # OSS refuses at Initiate already; Complete checks its own header
    seq = next(_ids)
    uid = hashlib.md5(f"{os.getpid()}:{seq}:{ctx.now}".encode()).hexdigest().upper()
    uploads(ctx)[uid] = _Upload(
        ctx.bucket_name,
        ctx.key,
        ctx.req.headers.get("content-type") or guess_content_type(ctx.key),
        _user_meta(ctx),
        ctx.req.headers.get("x-oss-storage-class", "Standard"),
        ctx.now,
        seq,
    )
    body = (
        "<InitiateMultipartUploadResult>\n"
        f"  <Bucket>{ctx.bucket_name}</Bucket>\n"
        f"  <Key>{xml_text(ctx.key)}</Key>\n"
        f"  <UploadId>{uid}</UploadId>\n"
        "</InitiateMultipartUploadResult>\n"
    )
    return xml_response(body)


def _part_number(ctx: Ctx) -> int:
    v = ctx.req.qget("partNumber") or ""
    try:
        n = int(v)
    except ValueError:
        n = 0
    if not 1 <= n <= 10000:
        raise OssError(
            400,
            "InvalidArgument",
            "Part number must be an integer between 1 and 10000, inclusive.",
            extra={"ArgumentName": "partNumber", "ArgumentValue": v},
            ec="0017-00000220",
        )
    return n


def _slot(ctx: Ctx, up: _Upload, n: int, length: int | None) -> tuple[Path, int] | None:
    """Where part ``n`` of ``length`` bytes is received or copied: its slot in the assembly
    file (claimed), or None for a file of its own."""
    old = up.parts.get(n)
    if not length or n in up.claimed or (old is not None and isinstance(old.body, FileRegion)):
        return None
    if up.assembly is None:
        if up.stride:
            return None  # the assembly file was taken by a Complete that then failed
        up.assembly = ctx.store.new_tmp_file()
        if up.assembly is None:
            return None  # no data dir: parts are in memory
        up.stride = length
    if length > up.stride or (n - 1) * up.stride + length > _ASSEMBLY_MAX:
        return None
    up.claimed.add(n)
    return up.assembly, (n - 1) * up.stride


async def upload_part(ctx: Ctx) -> Response:
    ctx.bucket()
    n = _part_number(ctx)
    _, up = get_upload(ctx)
    slot = _slot(ctx, up, n, ctx.req.content_length())
    try:
        writer, etag, b64 = await receive_body(ctx, slot)
    finally:
        if slot is not None:
            up.claimed.discard(n)
    _put_part(
        up, n, _Part(writer.finish(), etag, _etag_bytes(etag), writer.crc, writer.size, ctx.now)
    )
    hs = [("ETag", etag), ("x-oss-hash-crc64ecma", str(writer.crc))]
    return Response(200, hs + ([("Content-MD5", b64)] if b64 else []))


async def upload_part_copy(ctx: Ctx) -> Response:
    """A part cut from an existing object (``x-oss-copy-source-range: bytes=a-b``, else all).

    An invalid or unsatisfiable range copies the whole source, as a GET without
    ``x-oss-range-behavior: standard`` would serve it. The response carries no CRC header
    (the part's CRC shows in ListParts and in Complete's combined value).
    """
    ctx.bucket()
    n = _part_number(ctx)
    _, up = get_upload(ctx)
    src = copy_source_object(ctx)
    rng = parse_range(ctx.req.headers.get("x-oss-copy-source-range"), src.size, False)
    first, last = rng if rng is not None else (0, src.size - 1)
    slot = _slot(ctx, up, n, last - first + 1)
    try:
        writer = ctx.store.new_writer(region=slot)
        try:
            await copy_in_thread(ctx, writer, src.body, first, last - first + 1)
        except BaseException:
            writer.abort()
            raise
        etag = md5_etag(writer.md5.digest())
        part = _Part(writer.finish(), etag, _etag_bytes(etag), writer.crc, writer.size, ctx.now)
        _put_part(up, n, part)
    finally:
        if slot is not None:
            up.claimed.discard(n)
    body = (
        "<CopyPartResult>\n"
        f"  <LastModified>{iso8601(ctx.now)}</LastModified>\n"
        f"  <ETag>{xml_text(etag)}</ETag>\n"
        "</CopyPartResult>\n"
    )
    return xml_response(body)


def _etag_bytes(etag: str) -> bytes:
    """A part's ETag as bytes: its MD5, or the CRC+size digest of ``--fast-etag``."""
    return bytes.fromhex(etag.strip('"'))


def _put_part(up: _Upload, n: int, part: _Part) -> None:
    """A part replaces an earlier upload of the same number (one dict assignment)."""
    old = up.parts.get(n)
    up.parts[n] = part
    if old is not None and isinstance(old.body, FileBody):
        old.body.path.unlink(missing_ok=True)


async def complete(ctx: Ctx) -> Response:
    ctx.bucket()
    uid, up = get_upload(ctx)
    if ctx.req.header("x-oss-complete-all").lower() == "yes":
        await ctx.req.read_all()
        chosen = sorted(up.parts.items())
    else:
        try:
            data = await ctx.req.read_all(4 << 20)
        except ValueError:
            raise OssError(400, "MalformedXML", "The request body is too large.") from None
        chosen = _chosen_parts(up, parse_xml(data))
    if not chosen:
        raise OssError(400, "MalformedXML", "No parts given.")
    _check_overwrite(ctx, ec="0042-00000214")
    for _, part in chosen[:-1]:
        if part.size < MIN_PART:
            raise OssError(
                400,
                "EntityTooSmall",
                "Your proposed upload is smaller than the minimum allowed size.",
            )
    crc = 0
    for _, part in chosen:
        crc = combine(crc, part.crc, part.size)
    data_body: Body | None = _assembled(up, chosen)
    if data_body is None:
        writer = ctx.store.new_writer(md5=False)  # the ETag is built from the parts' digests
        for _, part in chosen:
            writer.append(part.body, part.crc)
        assert writer.crc == crc
        data_body = writer.finish()
    etag = md5_etag(hashlib.md5(b"".join(p.md5 for _, p in chosen)).digest())
    etag = etag[:-1] + f'-{len(chosen)}"'
    obj = ObjectVersion(
        key=ctx.key,
        body=data_body,
        etag=etag,
        mtime=ctx.now,
        crc64=crc,
        content_type=up.content_type,
        object_type="Multipart",
        storage_class=up.storage_class,
        meta=up.meta,
    )
    ctx.store.publish(ctx.bucket_name, obj)
    _discard(uploads(ctx).pop(uid))
    url = (ctx.req.qget("encoding-type") or "") == "url"
    from urllib.parse import quote

    key = quote(ctx.key, safe="") if url else xml_text(ctx.key)
    body = "<CompleteMultipartUploadResult>\n"
    if url:
        body += "  <EncodingType>url</EncodingType>\n"
    body += (
        f"  <Location>/{ctx.bucket_name}/{key}</Location>\n"
        f"  <Bucket>{ctx.bucket_name}</Bucket>\n"
        f"  <Key>{key}</Key>\n"
        f"  <ETag>{xml_text(etag)}</ETag>\n"
        "</CompleteMultipartUploadResult>\n"
    )
    return Response(
        200,
        [("Content-Type", "application/xml"), ("ETag", etag), ("x-oss-hash-crc64ecma", str(crc))],
        xml_doc(body),
    )


def _assembled(up: _Upload, chosen: list[tuple[int, _Part]]) -> FileBody | None:
    """The assembly file as the object, when the chosen parts fill it from the start with no
    gap (see the module docstring); None when they must be copied."""
    if up.assembly is None or up.claimed:
        return None
    total = 0
    for i, (number, part) in enumerate(chosen, 1):
        body = part.body
        if (
            number != i
            or not isinstance(body, FileRegion)
            or body.path != up.assembly
            or body.offset != (i - 1) * up.stride
            or (i < len(chosen) and body.size != up.stride)
        ):
            return None
        total += body.size
    os.truncate(up.assembly, total)
    path, up.assembly = up.assembly, None  # the object's file now: _discard leaves it
    return FileBody(path, total)


def _chosen_parts(up: _Upload, root: Any) -> list[tuple[int, _Part]]:
    """The parts a CompleteMultipartUpload body names, checked against the uploaded ones.

    Read by local names: S3 clients (rclone's AWS SDK) send
    ``xmlns="http://s3.amazonaws.com/doc/2006-03-01/"``, which OSS accepts."""
    if local_name(getattr(root, "tag", "")) != "CompleteMultipartUpload":
        raise OssError(400, "MalformedXML")
    chosen = []
    prev = 0
    for el in root:
        if local_name(el.tag) != "Part":
            continue
        fields = {local_name(c.tag): (c.text or "").strip() for c in el}
        try:
            num = int(fields.get("PartNumber", ""))
        except ValueError:
            raise OssError(400, "MalformedXML") from None
        etag = fields.get("ETag", "").strip('"').upper()
        if num <= prev:
            raise OssError(400, "InvalidPartOrder", "The list of parts was not in ascending order.")
        prev = num
        part = up.parts.get(num)
        if part is None or part.etag.strip('"') != etag:
            raise OssError(400, "InvalidPart", extra={"PartNumber": str(num), "ETag": etag})
        chosen.append((num, part))
    return chosen


def _discard(up: _Upload) -> None:
    for part in up.parts.values():
        if isinstance(part.body, FileBody):
            part.body.path.unlink(missing_ok=True)
    if up.assembly is not None:
        up.assembly.unlink(missing_ok=True)
        up.assembly = None


async def abort(ctx: Ctx) -> Response:
    ctx.bucket()
    uid, _up = get_upload(ctx)
    _discard(uploads(ctx).pop(uid))
    return Response(204, [])


OPS: dict[str, Op] = {
    "InitiateMultipartUpload": initiate,
    "UploadPart": upload_part,
    "CompleteMultipartUpload": complete,
    "AbortMultipartUpload": abort,
    "UploadPartCopy": upload_part_copy,
}
