"""The write half of the OSS client: every request that changes the bucket, CRC-verified.

`OssWrites(client)` rides on an `OssClient` (same signing, connection pool, retry policy and
typed errors); it adds request bodies and the checks that make a write trustworthy:

* Bodies over 256 KiB on plain HTTP (a staged `FileRange`) go out in one worker thread on
  the client's own connections, reply read there too (`_upload_wire`: no per-piece trio or
  httpcore work; figures there). Staged bodies up to 64 KiB (a small file's PutObject) go
  with their head in one write on the event loop, on the same connections (`_small_body`:
  no httpcore/h11 per file). The ones between, every larger body over TLS, and in-memory
  bodies are streamed through httpcore from a file range in `chunk_size` pieces read in a worker
  thread (on the trio thread up to 256 KiB). Either way a 5 GiB part never sits in memory,
  and the CRC-64 is that of the bytes sent: httpcore's pieces are hashed as each goes; the
  thread path hashes the staged range, then sendfile sends it from the file (a rewrite in
  between shows as a mismatch below and a resend: `_upload_wire`).
* PutObject and UploadPart can also return the CRC-64s of the body's pieces between offsets
  the caller names (`cuts`, oss/_cuts.py: the read cache's part boundaries), taken in the
  pass that hashes it; the worker-thread path and short bodies (read whole, sent from memory)
  take them, a long body through httpcore (TLS) does not.
* PutObject and UploadPart compare that CRC with the reply's `x-oss-hash-crc64ecma`. A
  mismatch (or a missing header) re-sends the body, at most `crc_resends` more times, then
  raises `CrcMismatch`: such a write is never reported done.
* CompleteMultipartUpload compares the reply's CRC with the combination of the part CRCs the
  caller verified (`crc64.combine`), and raises `CrcMismatch` on a difference.
* Every request goes through the client's retry policy. The ones that are not naturally
  idempotent are made safe to repeat: a repeated Complete that finds its upload gone
  (`NoSuchUpload`, the first attempt did complete) and a repeated forbid-overwrite PUT that
  finds the object there (`FileAlreadyExists`) check with a HEAD that the object is ours
  (same CRC-64), and succeed. A repeated Initiate may leave an upload behind whose id we never
  saw; the write package's sweeper cannot know it (say so in SEMANTICS.md).

POSIX attributes are stored as ossfs stores them (`posix_meta`), so a bucket written by either
looks the same to both: `x-oss-meta-mtime` (decimal seconds, `.` and nine nanosecond digits
when not whole), `x-oss-meta-mode` (decimal st_mode with the file-type bits), `-uid`, `-gid`.

Concurrency: `OssWrites` holds no mutable state; each call owns its request and body stream.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import unquote

from ..crc64 import combine, crc64
from . import _body, _small_body, _upload_wire, signing
from ._cuts import Cuts, confirmed, pieces_of_bytes, read_short
from ._errors import BadResponse, NoSuchKey, OssError
from ._retry import call_with_retries
from ._write_bodies import FileBody, Sent
from ._write_types import (
    CopyResult,
    CrcMismatch,
    ExistsAfterRetry,
    FileAlreadyExists,
    FileRange,
    Headed,
    NoSuchUpload,
    PartResult,
    PutResult,
    StagingError,
    posix_meta,
    retyped,
)
from ._writes_xml import (
    ListedPart,
    ListedUpload,
    complete_body,
    delete_body,
    parse_copy_result,
    parse_deleted,
    parse_initiate,
    parse_list_parts,
    parse_list_uploads,
)
from ._xml import XmlError
from .models import ObjectMeta

if TYPE_CHECKING:
    from ._client import OssClient

__all__ = [
    "CopyResult",
    "CrcMismatch",
    "ExistsAfterRetry",
    "FileAlreadyExists",
    "FileRange",
    "Headed",
    "ListedPart",
    "ListedUpload",
    "NoSuchUpload",
    "OssWrites",
    "PartResult",
    "PutResult",
    "StagingError",
    "posix_meta",
]

# A request's reply headers (lower-case names), reply body, and the CRC-64 of what was sent.
_Replied = tuple[Mapping[str, str], bytes, int]

log = logging.getLogger(__name__)
T = TypeVar("T")
_REPLY_LIMIT = 8 * 1024 * 1024
# Kept by replace_meta: what a REPLACE copy would otherwise reset.
_CONTENT_HEADERS = frozenset(
    ("content-type", "content-encoding", "content-disposition", "content-language",
     "cache-control", "expires")
)  # fmt: skip


def _on_wire(key: str, body: bytes | FileRange | None) -> bool:
    """Whether a request goes on the client's own connections (`_small_body.request_bytes`)
    instead of httpx: an object's request with no body or a small one in memory, when the
    fast path is on. Through httpx each cost ~0.5 ms more of the daemon's CPU (what
    `bench/bench_requests.py --what heads` measured for HEADs). Bucket-level requests (a
    multi-delete, the upload listing) stay on httpx: rare, and their key is empty."""
    if not key or not _body.FAST_PATH_ENABLED or isinstance(body, FileRange):
        return False
    return body is None or len(body) <= _small_body.MAX_BODY


def _header_crc(headers: Mapping[str, str]) -> int | None:
    value = headers.get("x-oss-hash-crc64ecma", "").strip()
    return int(value) if value.isdigit() and int(value) < 1 << 64 else None


class OssWrites:
    """Write operations for the client's bucket (see the module docstring)."""

    def __init__(
        self, client: OssClient, *, crc_resends: int = 2, chunk_size: int = 4 * 1024 * 1024
    ) -> None:
        # 4 MiB pieces: 1.0 CPU-s/GiB for a 256 MiB PUT to the emulator vs 1.3 with 1 MiB and
        # 1.7 with 256 KiB (bench/bench_writes.py's machine); each request holds one piece.
        if crc_resends < 0 or chunk_size < 1:
            raise ValueError("need crc_resends >= 0 and chunk_size >= 1")
        self.client = client
        self.bucket = client.config.bucket
        self.crc_resends = crc_resends
        self.chunk_size = chunk_size

    def _where(self, key: str, what: str) -> str:
        return f"{what} oss://{self.bucket}/{key}"

    def _stream(self, key: str, src: FileRange, sent: Sent) -> FileBody:
        return FileBody(f"oss://{self.bucket}/{key}", src, self.chunk_size, sent)

    async def _request(
        self,
        what: str,
        method: str,
        key: str,
        query: list[tuple[str, str]],
        headers: dict[str, str] | None = None,
        body: bytes | FileRange | None = None,
        cuts: Cuts | None = None,
    ) -> _Replied:
        """One retried request; returns reply headers, reply body and the CRC of what we sent.
        `cuts`: also the CRC-64s of the body's pieces (oss/_cuts.py), taken in the pass that
        hashes what is sent; the worker-thread path and short bodies take them, a long body
        through httpcore (TLS) leaves `cuts.pieces` empty."""

        async def attempt(n: int) -> _Replied:
            if cuts is not None:
                cuts.pieces = ()  # until this attempt's own
            try:
                if isinstance(body, FileRange) and _upload_wire.usable(self.client, body):
                    return await self._wire_attempt(what, method, key, query, headers, body, cuts)
                if cuts is not None and cuts.at and body is not None:
                    data = read_short(f"oss://{self.bucket}/{key}", body)
                    if data is not None:
                        cuts.pieces = pieces_of_bytes(data, cuts.at)
                        return await http_attempt(data)
                if isinstance(body, FileRange) and _small_body.usable(body):
                    hs = {**(headers or {}), "Content-Length": str(body.length)}
                    reply, data, crc = await _small_body.request_small(
                        self.client, method, key, query, hs, body
                    )
                    return reply, data, crc
                if _on_wire(key, body):
                    # A copy, delete, initiate or complete: on our own connections like the
                    # small PUTs (`rsync -a` into the mount sends three per file).
                    data = body if isinstance(body, bytes) else b""
                    hs = {**(headers or {}), "Content-Length": str(len(data))}
                    reply, text, crc = await _small_body.request_bytes(
                        self.client, method, key, query, hs, data, reply_cap=_REPLY_LIMIT
                    )
                    return reply, text, crc
                return await http_attempt(body)
            except OssError as exc:
                typed = retyped(exc)
                if n > 1 and isinstance(typed, FileAlreadyExists):
                    raise ExistsAfterRetry(
                        typed.status, typed.code, typed.message, request_id=typed.request_id,
                        bucket=self.bucket, key=key,
                    ) from exc  # fmt: skip
                if typed is exc:
                    raise
                raise typed from None

        async def http_attempt(body: bytes | FileRange | None) -> _Replied:
            sent = Sent()
            hs = dict(headers or {})
            content: bytes | FileBody | None
            if isinstance(body, FileRange):
                hs["Content-Length"] = str(body.length)
                content = self._stream(key, body, sent) if body.length else b""
                length = body.length
            else:
                content = body
                length = len(body or b"")
                hs["Content-Length"] = str(length)
                sent.crc, sent.done = (crc64(body), length) if body else (0, 0)
            response = await self.client._send(method, key or None, query, hs, content=content)
            try:
                reply = await self.client._read_capped(response, _REPLY_LIMIT, key)
            finally:
                await response.aclose()
            if sent.done != length:  # a 2xx before the server had our whole body
                raise BadResponse(
                    response.status_code, "InvalidResponse",
                    f"{what} answered after {sent.done} of {length} body bytes",
                    bucket=self.bucket, key=key,
                )  # fmt: skip
            return response.headers, reply, sent.crc

        return await call_with_retries(self.client._retry, attempt, describe=self._where(key, what))

    async def _wire_attempt(
        self,
        what: str,
        method: str,
        key: str,
        query: list[tuple[str, str]],
        headers: dict[str, str] | None,
        body: FileRange,
        cuts: Cuts | None,
    ) -> _Replied:
        """One attempt on the client's own connections, body and reply in a worker thread
        (`_upload_wire`: no per-piece trio or httpcore work)."""
        hs = {**(headers or {}), "Content-Length": str(body.length)}
        reply, data, crc, done = await _upload_wire.request_with_body(
            self.client, method, key, query, hs, body, cuts
        )
        if done != body.length:  # a 2xx before the server had our whole body
            raise BadResponse(
                200, "InvalidResponse", f"{what} answered after {done} of {body.length} body bytes",
                bucket=self.bucket, key=key,
            )  # fmt: skip
        return reply, data, crc

    async def _verified(
        self,
        what: str,
        key: str,
        send: Callable[[], Awaitable[_Replied]],
    ) -> tuple[Mapping[str, str], int]:
        """Run `send` until the reply's CRC-64 equals the CRC of what we sent (bounded)."""
        error: CrcMismatch | None = None
        for resend in range(self.crc_resends + 1):
            headers, _, sent_crc = await send()
            got = _header_crc(headers)
            if got == sent_crc:
                return headers, sent_crc
            error = CrcMismatch(what, expected=sent_crc, got=got, bucket=self.bucket, key=key)
            log.warning("%s (send %d of %d)", error, resend + 1, self.crc_resends + 1)
        assert error is not None
        raise error

    # -- single-request objects -------------------------------------------------------------

    async def put_object(
        self,
        key: str,
        body: FileRange | bytes,
        *,
        meta: Mapping[str, str] | None = None,
        forbid_overwrite: bool = False,
        content_type: str | None = None,
        may_exist_from_before: bool = False,
        cuts: tuple[int, ...] = (),
    ) -> PutResult:
        """PutObject; returns once OSS confirmed our CRC-64 (else CrcMismatch). `cuts`: as
        for `upload_part`.

        `may_exist_from_before`: a resumed forbid-overwrite PUT whose first life may have
        created the object already: FileAlreadyExists is then checked against our CRC-64."""
        headers = dict(meta or {})
        if content_type:
            headers["Content-Type"] = content_type
        size = body.length if isinstance(body, FileRange) else len(body)
        sends = 0
        cut = Cuts(cuts)

        async def send() -> _Replied:
            nonlocal sends
            sends += 1
            hs = dict(headers)
            if forbid_overwrite and sends == 1:
                # Later sends follow a CRC mismatch: the object with the bad bytes is the one
                # our first send created, so it is ours to overwrite.
                hs["x-oss-forbid-overwrite"] = "true"
            return await self._request("PutObject", "PUT", key, [], hs, body, cut)

        try:
            reply, crc = await self._verified("PutObject", key, send)
        except FileAlreadyExists as exc:
            # A forbid-overwrite PUT repeated after a lost reply (or a crash) may meet its
            # own object: ours if it has our CRC-64, else the refusal stands.
            if not isinstance(exc, ExistsAfterRetry) and not may_exist_from_before:
                raise
            return await self.confirm_existing(key, body, size)
        return PutResult(key, reply.get("etag", ""), crc, size, confirmed(cut, crc))

    async def confirm_existing(self, key: str, body: FileRange | bytes, size: int) -> PutResult:
        """The key exists after our own earlier attempt (a PutObject, or a multipart upload
        whose completion landed unseen): it is ours if its CRC-64 and size equal ours, else
        FileAlreadyExists stands."""
        if isinstance(body, FileRange):
            sent = Sent()
            async for _ in self._stream(key, body, sent):
                pass
            ours = sent.crc
        else:
            ours = crc64(body)
        meta = await self.client.head(key)
        if meta.crc64 != ours or meta.size != size:
            raise FileAlreadyExists(
                409, "FileAlreadyExists",
                f"the object exists with another content (CRC-64 {meta.crc64}, ours {ours})",
                bucket=self.bucket, key=key,
            )  # fmt: skip
        return PutResult(key, meta.etag, ours, size)

    async def put_symlink(
        self,
        key: str,
        target: str,
        *,
        meta: Mapping[str, str] | None = None,
        forbid_overwrite: bool = False,
    ) -> str:
        """PutSymlink (the target is URL-encoded in the header, as OSS2 does); returns the ETag."""
        headers = dict(meta or {})
        headers["x-oss-symlink-target"] = signing.uri_encode(target, keep_slash=False)
        if forbid_overwrite:
            headers["x-oss-forbid-overwrite"] = "true"
        reply, _, _ = await self._request("PutSymlink", "PUT", key, [("symlink", "")], headers)
        return str(reply.get("etag", ""))

    async def symlink_headers(self, key: str) -> tuple[str, str, dict[str, str]]:
        """GetSymlink: the link's target key, its own ETag and its own user metadata
        (lower-case names). A HEAD would answer the target's ETag, so it cannot fence on the
        link's; GetSymlink answers the link's own."""
        reply, _, _ = await self._request("GetSymlink", "GET", key, [("symlink", "")])
        target = unquote(reply.get("x-oss-symlink-target", ""))
        if not target:
            raise BadResponse(200, "InvalidResponse", "GetSymlink reply has no "
                              "x-oss-symlink-target", bucket=self.bucket, key=key)  # fmt: skip
        meta = {
            name.lower(): value
            for name, value in reply.items()
            if name.lower().startswith("x-oss-meta-")
        }
        return target, reply.get("etag", ""), meta

    async def copy_object(
        self,
        src_key: str,
        dst_key: str,
        *,
        if_match: str | None = None,
        meta: Mapping[str, str] | None = None,
        forbid_overwrite: bool = False,
    ) -> CopyResult:
        """Server-side CopyObject within the bucket, fenced on the source ETag when given
        (412 PreconditionFailed if the source changed). `meta` replaces the user metadata
        (directive REPLACE); without it the source's is kept."""
        headers = {"x-oss-copy-source": self._copy_source(src_key)}
        if if_match:
            headers["x-oss-copy-source-if-match"] = if_match
        if meta is not None:
            headers["x-oss-metadata-directive"] = "REPLACE"
            headers.update(meta)
        if forbid_overwrite:
            headers["x-oss-forbid-overwrite"] = "true"
        reply, body, _ = await self._request("CopyObject", "PUT", dst_key, [], headers)
        etag, mtime_ns = self._parse(parse_copy_result, body, dst_key)
        return CopyResult(etag, mtime_ns, _header_crc(reply))

    async def replace_meta(
        self,
        key: str,
        updates: Mapping[str, str],
        *,
        if_match: str,
        kept: Mapping[str, str] | None = None,
    ) -> CopyResult | None:
        """Set some `x-oss-meta-*` of `key` as ossfs does (chmod, chown, utimens): a HEAD, then
        CopyObject onto itself with directive REPLACE carrying the object's other metadata
        (user metadata and the content headers) with `updates` over it. Both are fenced on
        `if_match` (412 PreconditionFailed if the object changed). None when the object
        already has those values (no copy). `kept`: the caller knows that metadata (it just
        wrote the object, see fs/attrstore.py): no HEAD."""
        if kept is None:
            kept, _ = await self.kept_headers(key, if_match=if_match)
        if all(kept.get(name.lower()) == value for name, value in updates.items()):
            return None
        headers = {**kept, **{name.lower(): value for name, value in updates.items()}}
        return await self.copy_object(key, key, if_match=if_match, meta=headers)

    async def kept_headers(self, key: str, *, if_match: str) -> tuple[dict[str, str], int | None]:
        """One HEAD fenced on `if_match`: the object's user metadata and content headers (what
        a copy that sets metadata must send again), and its CRC-64 (None if it has none)."""
        headed = await self.object_headers(key, if_match=if_match)
        return headed.kept, headed.crc64

    async def object_headers(self, key: str, *, if_match: str | None = None) -> Headed:
        """One HEAD (fenced on `if_match` when given), as `Headed` says."""
        try:
            reply = await self.client.head_headers(key, if_match=if_match)
        except OssError as exc:
            typed = retyped(exc)
            if typed is exc:
                raise
            raise typed from None
        kept = {
            name: value
            for name, value in reply.items()
            if name.startswith("x-oss-meta-") or name in _CONTENT_HEADERS
        }
        length = reply.get("content-length", "")
        size = int(length) if length.isdigit() else None
        return Headed(reply.get("etag", ""), kept, _header_crc(reply), size)

    def _copy_source(self, key: str) -> str:
        return f"/{self.bucket}/{signing.uri_encode(key, keep_slash=True)}"

    def _parse(self, parser: Callable[[bytes], T], body: bytes, key: str) -> T:
        try:
            return parser(body)
        except XmlError as exc:
            raise BadResponse(
                200, "InvalidResponse", f"unreadable reply: {exc}", bucket=self.bucket, key=key
            ) from None

    async def delete_object(self, key: str) -> None:
        """DeleteObject (OSS answers 204 for a missing key too)."""
        await self._request("DeleteObject", "DELETE", key, [])

    async def delete_objects(self, keys: Sequence[str]) -> None:
        """DeleteMultipleObjects in batches of 1000; raises naming the first key refused."""
        for start in range(0, len(keys), 1000):
            batch = list(keys[start : start + 1000])
            payload = delete_body(batch)
            md5 = base64.b64encode(hashlib.md5(payload).digest()).decode()
            query = [("delete", ""), ("encoding-type", "url")]
            _, reply, _ = await self._request(
                "DeleteObjects", "POST", "", query, {"Content-MD5": md5}, payload
            )
            deleted, errors = self._parse(parse_deleted, reply, batch[0])
            missing = [k for k in batch if k not in deleted]
            if errors or missing:
                bad = next(iter(errors)) if errors else missing[0]
                raise OssError(
                    200, errors.get(bad, "NotDeleted"),
                    f"DeleteMultipleObjects did not delete it ({len(errors) or len(missing)} "
                    "keys of the batch refused)",
                    bucket=self.bucket, key=bad,
                )  # fmt: skip

    # -- multipart --------------------------------------------------------------------------

    async def initiate_multipart(
        self,
        key: str,
        *,
        meta: Mapping[str, str] | None = None,
        forbid_overwrite: bool = False,
        content_type: str | None = None,
    ) -> str:
        headers = dict(meta or {})
        if content_type:
            headers["Content-Type"] = content_type
        if forbid_overwrite:
            headers["x-oss-forbid-overwrite"] = "true"
        _, body, _ = await self._request(
            "InitiateMultipartUpload", "POST", key, [("uploads", "")], headers
        )
        return self._parse(parse_initiate, body, key)

    async def upload_part(
        self, key: str, upload_id: str, number: int, body: FileRange | bytes,
        *, cuts: tuple[int, ...] = (),
    ) -> PartResult:  # fmt: skip
        """UploadPart; re-sent on a CRC mismatch (bounded), so the result is verified. Its
        `pieces`: the CRC-64s of the body cut at `cuts` (offsets inside it), from the send
        OSS confirmed, or empty where that send's path did not take them (oss/_cuts.py)."""
        if not 1 <= number <= 10000:
            raise ValueError(f"part number {number} outside 1..10000")
        query = [("partNumber", str(number)), ("uploadId", upload_id)]
        size = body.length if isinstance(body, FileRange) else len(body)
        cut = Cuts(cuts)

        async def send() -> _Replied:
            return await self._request(f"UploadPart {number}", "PUT", key, query, None, body, cut)

        reply, crc = await self._verified(f"UploadPart {number}", key, send)
        return PartResult(number, reply.get("etag", ""), size, crc, confirmed(cut, crc))

    async def upload_part_copy(
        self,
        key: str,
        upload_id: str,
        number: int,
        src_key: str,
        src_range: tuple[int, int],
        *,
        expected_crc: int | None,
        if_match: str | None = None,
    ) -> PartResult:
        """UploadPartCopy of bytes [start, end) of `src_key`, fenced on its ETag.

        The caller states the CRC-64 those bytes must have when it knows them (the unchanged
        part of a staged, verified object); a reply CRC, when OSS sends one, must equal it, and
        Complete checks the combined CRC either way. None: the caller checks the whole object
        at Complete (`complete_multipart(expected_crc=...)`); the part's CRC is then the
        reply's, or 0."""
        start, end = src_range
        if not 0 <= start < end:
            raise ValueError(f"bad copy range {src_range}")
        headers = {
            "x-oss-copy-source": self._copy_source(src_key),
            "x-oss-copy-source-range": f"bytes={start}-{end - 1}",
        }
        if if_match:
            headers["x-oss-copy-source-if-match"] = if_match
        query = [("partNumber", str(number)), ("uploadId", upload_id)]
        reply, body, _ = await self._request(f"UploadPartCopy {number}", "PUT", key, query, headers)
        etag, _ = self._parse(parse_copy_result, body, key)
        got = _header_crc(reply)
        if got is not None and expected_crc is not None and got != expected_crc:
            raise CrcMismatch(
                f"UploadPartCopy {number}", expected=expected_crc, got=got,
                bucket=self.bucket, key=key,
            )  # fmt: skip
        crc = expected_crc if expected_crc is not None else got
        return PartResult(number, etag, end - start, crc or 0)

    async def complete_multipart(
        self,
        key: str,
        upload_id: str,
        parts: Sequence[PartResult],
        *,
        forbid_overwrite: bool = False,
        expected_crc: int | None = None,
        verify: bool = True,
    ) -> PutResult:
        """CompleteMultipartUpload; the reply CRC must equal combine(part CRCs), or
        `expected_crc` when given (parts copied server-side, whose CRCs we never saw).
        `verify=False` (a copy of a source without CRC-64) takes the reply's as it is."""
        ordered = sorted(parts, key=lambda p: p.number)
        expected, size = 0, 0
        for part in ordered:
            expected = combine(expected, part.crc64, part.size)
            size += part.size
        if expected_crc is not None:
            expected = expected_crc
        headers = {"Content-Type": "application/xml"}
        if forbid_overwrite:
            headers["x-oss-forbid-overwrite"] = "true"
        payload = complete_body([(p.number, p.etag) for p in ordered])
        try:
            reply, _, _ = await self._request(
                "CompleteMultipartUpload", "POST", key, [("uploadId", upload_id)], headers, payload
            )
        except NoSuchUpload:
            # A retry after a lost reply finds the upload completed: check the object is it.
            meta = await self._head_or_none(key)
            if meta is None or (verify and meta.crc64 != expected) or meta.size != size:
                raise
            log.info("oss://%s/%s: upload %s was already completed", self.bucket, key, upload_id)
            return PutResult(key, meta.etag, expected, size)
        got = _header_crc(reply)
        if not verify:
            return PutResult(key, reply.get("etag", ""), got or 0, size)
        if got != expected:
            raise CrcMismatch(
                "CompleteMultipartUpload", expected=expected, got=got, bucket=self.bucket, key=key
            )
        return PutResult(key, reply.get("etag", ""), expected, size)

    async def _head_or_none(self, key: str) -> ObjectMeta | None:
        try:
            return await self.client.head(key)
        except NoSuchKey:
            return None

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        """AbortMultipartUpload; an upload already gone counts as aborted."""
        with contextlib.suppress(NoSuchUpload):
            await self._request("AbortMultipartUpload", "DELETE", key, [("uploadId", upload_id)])

    async def list_parts(self, key: str, upload_id: str) -> list[ListedPart]:
        """Every part the server holds for the upload (all pages)."""
        out: list[ListedPart] = []
        marker = 0
        while True:
            query = [("uploadId", upload_id), ("max-parts", "1000")]
            if marker:
                query.append(("part-number-marker", str(marker)))
            _, body, _ = await self._request("ListParts", "GET", key, query)
            page = self._parse(parse_list_parts, body, key)
            out.extend(page.parts)
            if page.next_marker is None or page.next_marker <= marker:
                return out
            marker = page.next_marker

    async def list_multipart_uploads(self, prefix: str = "") -> list[ListedUpload]:
        """Every in-progress multipart upload whose key starts with `prefix` (all pages)."""
        out: list[ListedUpload] = []
        markers: tuple[str, str] | None = None
        while True:
            query = [("uploads", ""), ("encoding-type", "url"), ("max-uploads", "1000")]
            if prefix:
                query.append(("prefix", prefix))
            if markers is not None:
                query += [("key-marker", markers[0]), ("upload-id-marker", markers[1])]
            _, body, _ = await self._request("ListMultipartUploads", "GET", "", query)
            page = self._parse(parse_list_uploads, body, prefix)
            out.extend(page.uploads)
            if page.next_markers is None or page.next_markers == markers:
                return out
            markers = page.next_markers
