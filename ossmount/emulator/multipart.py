"""Multipart upload: Initiate, UploadPart, Complete, Abort, ListParts (§3.9-3.10, §8.17).

ETag of the completed object is our convention ``"<MD5 of the part MD5s>-<N>"`` (upper hex),
the observable OSS shape; CRC-64 = ``crc64.combine`` of the part CRCs in part order. Parts are
held as store bodies (files under ``.tmp`` with ``--data-dir``) until Complete concatenates them.

Concurrency: ``_UPLOADS`` entries are only touched from the trio thread; a part replaces an
earlier upload of the same number by one dict assignment.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ossmount.crc64 import combine

from .listing import parse_xml
from .objects import _user_meta, receive_body
from .server import Response
from .store import (
    Body,
    BodyWriter,
    FileBody,
    ObjectVersion,
    guess_content_type,
    md5_etag,
    segment_bytes,
)
from .xml import OssError, xml_doc, xml_text

if TYPE_CHECKING:
    from .app import Ctx, Op

__all__ = ["OPS"]

MIN_PART = 100 * 1024


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
    parts: dict[int, _Part] = field(default_factory=dict)


_ids = itertools.count(1)


def _uploads(ctx: Ctx) -> dict[str, _Upload]:
    d: dict[str, _Upload] | None = getattr(ctx.app, "_uploads", None)
    if d is None:
        d = {}
        ctx.app._uploads = d  # type: ignore[attr-defined]
    return d


def _get_upload(ctx: Ctx) -> tuple[str, _Upload]:
    uid = ctx.req.qget("uploadId") or ""
    up = _uploads(ctx).get(uid)
    if up is None or up.bucket != ctx.bucket_name or up.key != ctx.key:
        raise OssError(404, "NoSuchUpload", extra={"UploadId": uid})
    return uid, up


async def initiate(ctx: Ctx) -> Response:
    ctx.bucket()
    uid = hashlib.md5(f"{os.getpid()}:{next(_ids)}:{ctx.now}".encode()).hexdigest().upper()
    _uploads(ctx)[uid] = _Upload(
        ctx.bucket_name,
        ctx.key,
        ctx.req.headers.get("content-type") or guess_content_type(ctx.key),
        _user_meta(ctx),
        ctx.req.headers.get("x-oss-storage-class", "Standard"),
        ctx.now,
    )
    body = (
        "<InitiateMultipartUploadResult>\n"
        f"  <Bucket>{ctx.bucket_name}</Bucket>\n"
        f"  <Key>{xml_text(ctx.key)}</Key>\n"
        f"  <UploadId>{uid}</UploadId>\n"
        "</InitiateMultipartUploadResult>\n"
    )
    return Response(200, [("Content-Type", "application/xml")], xml_doc(body))


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


async def upload_part(ctx: Ctx) -> Response:
    ctx.bucket()
    n = _part_number(ctx)
    _, up = _get_upload(ctx)
    writer, etag, b64 = await receive_body(ctx)
    assert isinstance(writer, BodyWriter)
    old = up.parts.get(n)
    up.parts[n] = _Part(
        writer.finish(), etag, writer.md5.digest(), writer.crc, writer.size, ctx.now
    )
    if old is not None and isinstance(old.body, FileBody):
        old.body.path.unlink(missing_ok=True)
    return Response(
        200, [("ETag", etag), ("x-oss-hash-crc64ecma", str(writer.crc)), ("Content-MD5", b64)]
    )


async def complete(ctx: Ctx) -> Response:
    ctx.bucket()
    uid, up = _get_upload(ctx)
    if ctx.req.header("x-oss-complete-all").lower() == "yes":
        await ctx.req.read_all()
        chosen = sorted(up.parts.items())
    else:
        try:
            data = await ctx.req.read_all(4 << 20)
        except ValueError:
            raise OssError(400, "MalformedXML", "The request body is too large.") from None
        root = parse_xml(data)
        if getattr(root, "tag", "") != "CompleteMultipartUpload":
            raise OssError(400, "MalformedXML")
        chosen = []
        prev = 0
        for el in root.findall("Part"):  # type: ignore[attr-defined]
            try:
                num = int((el.findtext("PartNumber") or "").strip())
            except ValueError:
                raise OssError(400, "MalformedXML") from None
            etag = (el.findtext("ETag") or "").strip().strip('"').upper()
            if num <= prev:
                raise OssError(
                    400, "InvalidPartOrder", "The list of parts was not in ascending order."
                )
            prev = num
            part = up.parts.get(num)
            if part is None or part.etag.strip('"') != etag:
                raise OssError(400, "InvalidPart", extra={"PartNumber": str(num), "ETag": etag})
            chosen.append((num, part))
    if not chosen:
        raise OssError(400, "MalformedXML", "No parts given.")
    for _, part in chosen[:-1]:
        if part.size < MIN_PART:
            raise OssError(
                400,
                "EntityTooSmall",
                "Your proposed upload is smaller than the minimum allowed size.",
            )
    writer = ctx.store.new_writer()
    crc = 0
    for _, part in chosen:
        for seg in part.body.segments(0, part.size):
            writer.write(segment_bytes(seg))
        crc = combine(crc, part.crc, part.size)
    etag = md5_etag(hashlib.md5(b"".join(p.md5 for _, p in chosen)).digest())
    etag = etag[:-1] + f'-{len(chosen)}"'
    obj = ObjectVersion(
        key=ctx.key,
        body=writer.finish(),
        etag=etag,
        mtime=ctx.now,
        crc64=crc,
        content_type=up.content_type,
        object_type="Multipart",
        storage_class=up.storage_class,
        meta=up.meta,
    )
    assert crc == writer.crc, "combine() disagrees with a direct CRC"
    ctx.store.publish(ctx.bucket_name, obj)
    _discard(_uploads(ctx).pop(uid))
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


def _discard(up: _Upload) -> None:
    for part in up.parts.values():
        if isinstance(part.body, FileBody):
            part.body.path.unlink(missing_ok=True)


async def abort(ctx: Ctx) -> Response:
    ctx.bucket()
    uid, _up = _get_upload(ctx)
    _discard(_uploads(ctx).pop(uid))
    return Response(204, [])


async def list_parts(ctx: Ctx) -> Response:
    ctx.bucket()
    uid, up = _get_upload(ctx)
    from .xml import iso8601

    items = "".join(
        "  <Part>\n"
        f"    <PartNumber>{n}</PartNumber>\n"
        f"    <LastModified>{iso8601(p.mtime)}</LastModified>\n"
        f"    <ETag>{xml_text(p.etag)}</ETag>\n"
        f"    <HashCrc64ecma>{p.crc}</HashCrc64ecma>\n"
        f"    <Size>{p.size}</Size>\n"
        "  </Part>\n"
        for n, p in sorted(up.parts.items())
    )
    body = (
        "<ListPartsResult>\n"
        f"  <Bucket>{ctx.bucket_name}</Bucket>\n"
        f"  <Key>{xml_text(ctx.key)}</Key>\n"
        f"  <UploadId>{uid}</UploadId>\n"
        "  <PartNumberMarker>0</PartNumberMarker>\n"
        f"  <NextPartNumberMarker>{max(up.parts, default=0)}</NextPartNumberMarker>\n"
        "  <MaxParts>1000</MaxParts>\n"
        "  <IsTruncated>false</IsTruncated>\n"
        f"{items}</ListPartsResult>\n"
    )
    return Response(200, [("Content-Type", "application/xml")], xml_doc(body))


OPS: dict[str, Op] = {
    "InitiateMultipartUpload": initiate,
    "UploadPart": upload_part,
    "CompleteMultipartUpload": complete,
    "AbortMultipartUpload": abort,
    "ListParts": list_parts,
}
