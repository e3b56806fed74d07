"""Object operations: Get/Head (ranges, conditionals), Put, Delete, Copy, Append, Symlink, Restore.

The read path follows oss-protocol.md §3.2-3.6: whole-object ``x-oss-hash-crc64ecma`` on every
GET (also 206) and HEAD, quoted upper-case ETag, ``Accept-Ranges``, range handling with and
without ``x-oss-range-behavior: standard``, conditional headers → 304/412, archive objects →
403 InvalidObjectState until restored, symlinks followed by Get/Head but not by
GetObjectMeta/GetSymlink.
"""

from __future__ import annotations

import email.utils
import functools
import gzip
import hashlib
import os
import re
from dataclasses import replace
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

import trio

from ossmount.crc64 import crc64

from .receive import feed_body, receive_body
from .response import Response
from .store import (
    Body,
    FileBody,
    MemoryBody,
    ObjectVersion,
    SyntheticBody,
    guess_content_type,
    md5_etag,
    segment_bytes,
    valid_key,
)
from .writer import BodyWriter
from .xml import OssError, iso8601, xml_doc, xml_text

if TYPE_CHECKING:
    from .app import Ctx, Op

__all__ = ["OPS", "gzip_response", "parse_range", "replace_object"]

_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)
_GZIP_TYPES = frozenset(
    {
        "text/cache-manifest",
        "text/xml",
        "text/css",
        "text/html",
        "text/plain",
        "application/javascript",
        "application/x-javascript",
        "application/rss+xml",
        "application/json",
        "text/json",
    }
)


def parse_range(header: str | None, size: int, standard: bool) -> tuple[int, int] | None:
    """(first, last) inclusive to serve, or None for the whole object (200).

    Default behaviour ignores any invalid or unsatisfiable range (200, whole object); with
    ``x-oss-range-behavior: standard`` the end is clamped to the object and an unsatisfiable
    start is 416 InvalidRange (§3.3). Syntactically broken headers are ignored in both modes.
    """
    if not header:
        return None
    if "," in header:
        if standard:
            raise _invalid_range(size)
        return None
    m = _RANGE_RE.match(header)
    if not m or (not m.group(1) and not m.group(2)):
        return None
    first_s, last_s = m.group(1), m.group(2)
    if not first_s:
        n = int(last_s)
        if n == 0 or size == 0:
            if standard:
                raise _invalid_range(size)
            return None
        return (max(0, size - n), size - 1)
    first = int(first_s)
    last = int(last_s) if last_s else size - 1
    if last_s and last < first:
        if standard:
            raise _invalid_range(size)
        return None
    if first >= size:
        if standard:
            raise _invalid_range(size)
        return None
    if last >= size:
        if not standard:
            return None
        last = size - 1
    return (first, last)


def _invalid_range(size: int) -> OssError:
    return OssError(416, "InvalidRange", headers=[("Content-Range", f"bytes */{size}")])


def _parse_http_date(value: str) -> float | None:
    try:
        dt = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return dt.timestamp()


def _etag_matches(header: str, etag: str) -> bool:
    bare = etag.strip('"').upper()
    for item in header.split(","):
        item = item.strip()
        if item == "*" or item.removeprefix("W/").strip('"').upper() == bare:
            return True
    return False


def check_conditions(ctx: Ctx, obj: ObjectVersion, prefix: str = "if-") -> Response | None:
    """If-Match/If-Unmodified-Since → 412; If-None-Match/If-Modified-Since → 304 (§3.4)."""
    h = ctx.req.headers
    mtime = int(obj.mtime)
    im = h.get(prefix + "match")
    if im is not None and not _etag_matches(im, obj.etag):
        raise OssError(412, "PreconditionFailed", extra={"Condition": "If-Match"})
    ius = h.get(prefix + "unmodified-since")
    if im is None and ius is not None:
        t = _parse_http_date(ius)
        if t is not None and mtime > t:
            raise OssError(412, "PreconditionFailed", extra={"Condition": "If-Unmodified-Since"})
    inm = h.get(prefix + "none-match")
    not_modified = False
    if inm is not None:
        not_modified = _etag_matches(inm, obj.etag)
    else:
        ims = h.get(prefix + "modified-since")
        t = _parse_http_date(ims) if ims is not None else None
        not_modified = t is not None and mtime <= t
    if not not_modified:
        return None
    if prefix != "if-":
        raise OssError(412, "PreconditionFailed", extra={"Condition": "x-oss-copy-source-if"})
    return Response(
        304,
        [("ETag", obj.etag), ("Last-Modified", _http_date(obj.mtime))],
        error_code="NotModified",
    )


def _http_date(t: float) -> str:
    return _http_date_s(int(t))


@functools.lru_cache(maxsize=4096)
def _http_date_s(seconds: int) -> str:
    """Memoized: formatdate was ~5 % of the emulator's Python time per GET, and objects'
    mtimes repeat (a tree written in a few seconds shares them)."""
    return email.utils.formatdate(seconds, usegmt=True)


# Query parameters that override a GET reply's header (signed requests only).
_OVERRIDES = {
    "response-content-type": "Content-Type",
    "response-content-language": "Content-Language",
    "response-expires": "Expires",
    "response-cache-control": "Cache-Control",
    "response-content-disposition": "Content-Disposition",
    "response-content-encoding": "Content-Encoding",
}


def object_headers(obj: ObjectVersion, shown: ObjectVersion | None = None) -> list[tuple[str, str]]:
    """Metadata headers of ``obj``; for a followed symlink ``shown`` is the link (§3.2)."""
    link = shown or obj
    mtime = max(obj.mtime, link.mtime)
    hs = [
        ("Content-Type", link.content_type),
        ("ETag", obj.etag),
        ("Last-Modified", _http_date(mtime)),
        ("Accept-Ranges", "bytes"),
        ("x-oss-object-type", link.object_type),
        ("x-oss-storage-class", obj.storage_class),
    ]
    if obj.crc64 is not None:
        hs.append(("x-oss-hash-crc64ecma", str(obj.crc64)))
    if obj.content_md5:
        hs.append(("Content-MD5", obj.content_md5))
    if obj.object_type == "Appendable":
        hs.append(("x-oss-next-append-position", str(obj.size)))
    if obj.restore:
        hs.append(("x-oss-restore", obj.restore))
    hs += [(k, v) for k, v in link.meta]
    return hs


def lookup(ctx: Ctx, key: str | None = None) -> ObjectVersion:
    obj = ctx.bucket().objects.get(ctx.key if key is None else key)
    if obj is None:
        raise OssError(404, "NoSuchKey", extra={"Key": ctx.key if key is None else key})
    return obj


def follow(ctx: Ctx, obj: ObjectVersion) -> ObjectVersion:
    if obj.object_type != "Symlink" or obj.symlink_target is None:
        return obj
    target = ctx.bucket().objects.get(obj.symlink_target)
    if target is None:
        raise OssError(404, "SymlinkTargetNotExist", extra={"Key": ctx.key})
    if target.object_type == "Symlink":
        raise OssError(400, "InvalidTargetType", "The symlink target object type is not supported.")
    return target


async def get_object(ctx: Ctx) -> Response:
    head = ctx.req.method == "HEAD"
    link = lookup(ctx)
    obj = follow(ctx, link)
    not_modified = check_conditions(ctx, obj)
    if not_modified is not None:
        return not_modified
    if not head and not obj.readable(ctx.now):
        raise OssError(403, "InvalidObjectState")
    headers = object_headers(obj, link if link is not obj else None)
    rng = None
    if not head:
        standard = ctx.req.header("x-oss-range-behavior").lower() == "standard"
        rng = parse_range(ctx.req.headers.get("range"), obj.size, standard)
    if rng is not None:
        first, last = rng
        headers.append(("Content-Range", f"bytes {first}-{last}/{obj.size}"))
        ctx.served_range = rng
        status, offset, length = 206, first, last - first + 1
    else:
        status, offset, length = 200, 0, obj.size
    if not head and ctx.sig != "anon" and ctx.req.query:
        for q, name in _OVERRIDES.items():
            v = ctx.req.qget(q)
            if v is not None:
                headers = [(k, hv) for k, hv in headers if k != name] + [(name, v)]
    return Response(status, headers, stream=obj.body, offset=offset, length=length, head_only=head)


async def get_object_meta(ctx: Ctx) -> Response:
    obj = lookup(ctx)
    hs = [("ETag", obj.etag), ("Last-Modified", _http_date(obj.mtime))]
    if obj.crc64 is not None:
        hs.append(("x-oss-hash-crc64ecma", str(obj.crc64)))
    return Response(200, hs, stream=obj.body, offset=0, length=obj.size, head_only=True)


# Standard HTTP headers OSS stores with an object (PutObject, InitiateMultipartUpload, a
# CopyObject with REPLACE) and returns on GET and HEAD, beside Content-Type.
_STORED_HEADERS = frozenset(
    ("cache-control", "content-disposition", "content-encoding", "content-language", "expires")
)


def _user_meta(ctx: Ctx) -> tuple[tuple[str, str], ...]:
    """The `x-oss-meta-*` of a request (at most 8 KiB, as OSS), and the standard headers it
    stores with them (`_STORED_HEADERS`): returned verbatim by `object_headers`."""
    meta = tuple(sorted((k, v) for k, v in ctx.req.headers.items() if k.startswith("x-oss-meta-")))
    if sum(len(k) + len(v) for k, v in meta) > 8192:
        raise OssError(400, "InvalidArgument", "Your metadata headers exceed the maximum size.")
    stored = tuple(sorted((k, v) for k, v in ctx.req.headers.items() if k in _STORED_HEADERS))
    return meta + stored


def _check_overwrite(ctx: Ctx, ec: str | None = None) -> None:
    """``x-oss-forbid-overwrite: true`` and the key exists → 409 FileAlreadyExists (§3.9)."""
    v = ctx.req.headers.get("x-oss-forbid-overwrite")
    if v is None:
        return
    if v.lower() not in ("true", "false"):
        raise OssError(400, "InvalidArgument", "Invalid x-oss-forbid-overwrite", ec="0017-00000279")
    if v.lower() == "true" and ctx.key in ctx.bucket().objects:
        raise OssError(409, "FileAlreadyExists", ec=ec)


async def put_object(ctx: Ctx) -> Response:
    ctx.bucket()
    _check_overwrite(ctx)
    meta = _user_meta(ctx)
    writer, etag, b64 = await receive_body(ctx)
    storage = ctx.req.headers.get("x-oss-storage-class", "Standard")
    obj = ObjectVersion(
        key=ctx.key,
        body=writer.finish(),
        etag=etag,
        mtime=ctx.now,
        crc64=writer.crc,
        content_type=ctx.req.headers.get("content-type") or guess_content_type(ctx.key),
        storage_class=storage,
        meta=meta,
        content_md5=b64,
    )
    ctx.store.publish(ctx.bucket_name, obj)
    hs = [("ETag", etag), ("x-oss-hash-crc64ecma", str(writer.crc))]
    return Response(200, hs + ([("Content-MD5", b64)] if b64 else []))


async def delete_object(ctx: Ctx) -> Response:
    ctx.bucket()
    ctx.store.delete(ctx.bucket_name, ctx.key)
    return Response(204, [])  # 204 even when the key did not exist (§3.9)


def parse_copy_source(ctx: Ctx, header: str) -> tuple[str, str]:
    src = header.split("?", 1)[0]
    src = unquote(src)
    if src.startswith("/"):
        src = src[1:]
    bucket, _, key = src.partition("/")
    if not bucket or not valid_key(key):
        raise OssError(400, "InvalidArgument", "Copy Source must mention the source bucket and key")
    return bucket, key


def copy_range(writer: BodyWriter, body: Body, offset: int, length: int) -> None:
    """Feed ``length`` bytes of ``body`` from ``offset`` to ``writer``, 8 MiB at a time."""
    end = offset + length
    while offset < end:
        n = min(8 << 20, end - offset)
        for seg in body.segments(offset, n):
            writer.write(segment_bytes(seg))
        offset += n


_COPY_INLINE = 1 << 20  # copies up to this size run on the event loop: a thread costs more


async def copy_in_thread(
    ctx: Ctx, writer: BodyWriter, body: Body, offset: int, length: int
) -> None:
    """``copy_range`` in a worker thread (one of ``App.copiers``), but for small copies. The
    copy is MD5-bound (~16 ms per 8 MiB here, GIL released), so on the event loop 128
    UploadPartCopy of an append to a 1 GiB object took 2.1 s one after another while nothing
    else was served; in threads, parallel copies use every core. A file body is opened
    first, on the trio thread: the copy reads this version even if it is replaced or deleted
    meanwhile (its file unlinked). The writer is this copy's alone."""
    if length <= _COPY_INLINE:
        copy_range(writer, body, offset, length)
        return
    opened = body.opened() if isinstance(body, FileBody) else None
    try:
        await trio.to_thread.run_sync(
            copy_range, writer, opened or body, offset, length, limiter=ctx.app.copiers
        )
    finally:
        if opened is not None:
            os.close(opened.fd)


async def _copy_body(ctx: Ctx, src: ObjectVersion, in_place: bool) -> Body:
    """Bodies are immutable, so memory/synthetic ones are shared, and so is a file copied
    `in_place` (`_metadata_only`); other files are copied (with no MD5: the copy keeps the
    source's ETag)."""
    if isinstance(src.body, FileBody) and not in_place:
        writer = ctx.store.new_writer(md5=False)
        try:
            await copy_in_thread(ctx, writer, src.body, 0, src.size)
        except BaseException:
            writer.abort()
            raise
        return writer.finish()
    return src.body


def copy_source_object(ctx: Ctx) -> ObjectVersion:
    """The object ``x-oss-copy-source`` names, its ``x-oss-copy-source-if-*`` checked."""
    sb, sk = parse_copy_source(ctx, ctx.req.header("x-oss-copy-source"))
    sbucket = ctx.store.bucket(sb)
    if sbucket is None:
        raise OssError(404, "NoSuchBucket", extra={"BucketName": sb})
    ctx.bucket()
    src = sbucket.objects.get(sk)
    if src is None:
        raise OssError(404, "NoSuchKey", extra={"Key": sk})
    check_conditions(ctx, src, prefix="x-oss-copy-source-if-")
    return src


def _discard_body(body: Body, shared: Body) -> None:
    """A copy's body that will not be published (a file of its own, unless shared)."""
    if body is not shared and isinstance(body, FileBody):
        body.path.unlink(missing_ok=True)


async def copy_object(ctx: Ctx) -> Response:
    src = copy_source_object(ctx)
    if src.size > ctx.store.copy_object_limit:
        raise OssError(400, "InvalidArgument", "The source object is too large for CopyObject; "
                       "copy it with UploadPartCopy.")  # fmt: skip
    _check_overwrite(ctx)
    directive = ctx.req.header("x-oss-metadata-directive", "COPY").upper()
    storage_class = ctx.req.headers.get("x-oss-storage-class", src.storage_class)
    in_place = _metadata_only(ctx, src, storage_class)
    body = await _copy_body(ctx, src, in_place)
    try:
        _check_overwrite(ctx)  # again: an object may have been made while the copy ran
    except OssError:
        _discard_body(body, src.body)
        raise
    if directive == "REPLACE":
        ctype = ctx.req.headers.get("content-type") or guess_content_type(ctx.key)
        meta = _user_meta(ctx)
    else:
        ctype, meta = src.content_type, src.meta
    obj = ObjectVersion(
        key=ctx.key,
        body=body,
        etag=src.etag,
        mtime=ctx.now,
        # Copies of content carry no CRC-64 (as OSS "may not"): clients must cope. A copy
        # onto itself changes only the metadata, so the object keeps its CRC-64 and type.
        crc64=src.crc64 if in_place else None,
        content_type=ctype,
        object_type=src.object_type if in_place or src.object_type == "Symlink" else "Normal",
        storage_class=storage_class,
        meta=meta,
        content_md5=src.content_md5 if in_place else None,
        symlink_target=src.symlink_target,
    )
    ctx.store.publish(ctx.bucket_name, obj)
    hs = [("Content-Type", "application/xml"), ("ETag", obj.etag)]
    if obj.crc64 is not None:
        hs.append(("x-oss-hash-crc64ecma", str(obj.crc64)))
    xml = (
        "<CopyObjectResult>\n"
        f"  <LastModified>{iso8601(obj.mtime)}</LastModified>\n"
        f"  <ETag>{xml_text(obj.etag)}</ETag>\n"
        "</CopyObjectResult>\n"
    )
    return Response(200, hs, xml_doc(xml))


def _metadata_only(ctx: Ctx, src: ObjectVersion, storage_class: str) -> bool:
    """OSS: a CopyObject of an object onto itself in an unversioned bucket that changes
    neither its storage class nor its encryption "only modifies the metadata and does not
    copy the content" (CopyObject, usage limits; oss-protocol.md §3.9)."""
    return (
        ctx.bucket().objects.get(ctx.key) is src  # the copy source is this very key
        and storage_class == src.storage_class
        and "x-oss-server-side-encryption" not in ctx.req.headers
    )


async def append_object(ctx: Ctx) -> Response:
    ctx.bucket()
    pos_s = ctx.req.qget("position")
    try:
        position = int(pos_s or "")
    except ValueError:
        raise OssError(400, "InvalidArgument", "position is not valid") from None
    old = ctx.bucket().objects.get(ctx.key)
    size = old.size if old is not None else 0
    if old is not None and old.object_type != "Appendable":
        raise OssError(409, "ObjectNotAppendable")
    if position != size:
        raise OssError(
            409, "PositionNotEqualToLength", headers=[("x-oss-next-append-position", str(size))]
        )
    writer = ctx.store.new_writer()
    if old is not None:
        for seg in old.body.segments(0, old.size):
            writer.write(segment_bytes(seg))
    try:
        await feed_body(ctx, writer)
    except BaseException:
        writer.abort()
        raise
    etag = md5_etag(writer.md5.digest())
    obj = ObjectVersion(
        key=ctx.key,
        body=writer.finish(),
        etag=etag,
        mtime=ctx.now,
        crc64=writer.crc,
        content_type=old.content_type
        if old
        else ctx.req.headers.get("content-type") or guess_content_type(ctx.key),
        object_type="Appendable",
        meta=old.meta if old else _user_meta(ctx),
    )
    ctx.store.publish(ctx.bucket_name, obj)
    return Response(
        200,
        [
            ("ETag", etag),
            ("x-oss-next-append-position", str(obj.size)),
            ("x-oss-hash-crc64ecma", str(writer.crc)),
        ],
    )


async def put_symlink(ctx: Ctx) -> Response:
    ctx.bucket()
    target = unquote(ctx.req.header("x-oss-symlink-target"))
    if not valid_key(target):
        raise OssError(400, "InvalidArgument", "x-oss-symlink-target is invalid")
    _check_overwrite(ctx)
    etag = md5_etag(hashlib.md5(target.encode()).digest())
    obj = ObjectVersion(
        key=ctx.key,
        body=MemoryBody(b""),
        etag=etag,
        mtime=ctx.now,
        crc64=None,
        content_type=ctx.req.headers.get("content-type") or guess_content_type(ctx.key),
        object_type="Symlink",
        meta=_user_meta(ctx),
        symlink_target=target,
    )
    ctx.store.publish(ctx.bucket_name, obj)
    return Response(200, [("ETag", etag)])


async def get_symlink(ctx: Ctx) -> Response:
    obj = lookup(ctx)
    if obj.object_type != "Symlink" or obj.symlink_target is None:
        raise OssError(
            400, "NotSymlink", "The specified object is not a symlink.", ec="0043-00000101"
        )
    hs = [
        ("ETag", obj.etag),
        ("Last-Modified", _http_date(obj.mtime)),
        ("x-oss-symlink-target", quote(obj.symlink_target, safe="")),
        ("Content-Type", "text/plain"),
        *obj.meta,  # the link's own user metadata (ossfs keeps a link's mode there)
    ]
    return Response(200, hs, b"")


async def restore_object(ctx: Ctx) -> Response:
    obj = lookup(ctx)
    if obj.storage_class not in ("Archive", "ColdArchive", "DeepColdArchive"):
        raise OssError(
            400, "OperationNotSupported", "The operation is not supported for this resource"
        )
    if obj.readable(ctx.now):
        return Response(200, [])
    until = ctx.now + 86400
    restored = replace(
        obj,
        restore=f'ongoing-request="false", expiry-date="{_http_date(until)}"',
        restored_until=until,
    )
    ctx.store.publish(ctx.bucket_name, restored)
    return Response(202, [])


def replace_object(ctx: Ctx) -> None:
    """Fault ``replace``: same key and size, different bytes, new ETag and Last-Modified."""
    b = ctx.store.bucket(ctx.bucket_name)
    obj = b.objects.get(ctx.key) if b is not None else None
    if obj is None:
        return
    mtime = max(ctx.now, obj.mtime + 1.0)
    if isinstance(obj.body, SyntheticBody):
        body = SyntheticBody(obj.body.seed + 1, obj.body.size)
        new = replace(obj, body=body, mtime=mtime, crc64=body.crc())
        new = replace(new, etag=md5_etag(hashlib.md5(f"{body.seed}:{body.size}".encode()).digest()))
    else:
        data = bytearray(obj.body.read(0, obj.size))
        if data:
            data[0] ^= 0xFF
        new = replace(
            obj,
            body=MemoryBody(bytes(data)),
            mtime=mtime,
            crc64=crc64(data),
            etag=md5_etag(hashlib.md5(data).digest()),
        )
    ctx.store.publish(ctx.bucket_name, new)


def gzip_response(ctx: Ctx, resp: Response) -> None:
    """Fault ``gzip``: OSS compresses text types ≥ 1 KB when the client accepts gzip (§3.3)."""
    if ctx.op != "GetObject" or resp.status != 200 or resp.stream is None:
        return
    if "gzip" not in ctx.req.header("accept-encoding").lower():
        return
    ctype = dict(resp.headers).get("Content-Type", "").split(";")[0].strip().lower()
    if ctype not in _GZIP_TYPES or resp.length < 1024:
        return
    data = resp.stream.read(resp.offset, resp.length)
    resp.gzip_body = gzip.compress(data)
    drop = {"ETag", "Accept-Ranges", "Content-Range"}
    resp.headers = [(k, v) for k, v in resp.headers if k not in drop]
    resp.headers.append(("Content-Encoding", "gzip"))
    resp.stream = None


OPS: dict[str, Op] = {
    "GetObject": get_object,
    "HeadObject": get_object,
    "GetObjectMeta": get_object_meta,
    "PutObject": put_object,
    "DeleteObject": delete_object,
    "CopyObject": copy_object,
    "AppendObject": append_object,
    "PutSymlink": put_symlink,
    "GetSymlink": get_symlink,
    "RestoreObject": restore_object,
}
