"""`OssClient`: HEAD, ranged GET into a caller's sink, ListObjectsV2 — on httpx and trio.

Request life cycle (every attempt): ask the credentials provider → sign with the current time
(plus the clock offset learnt from a RequestTimeTooSkewed reply) → send through one shared
`httpx.AsyncClient` → map a non-2xx reply to a typed `OssError` → `_retry` decides whether to
sleep and go again. Re-signing on every attempt is what makes retries after a skew or a long
backoff valid.

Ranged GETs (`get`, into a body sink) are the product's hot path:

* Always `Accept-Encoding: identity` (httpx would ask for gzip and OSS would then drop ETag and
  Content-Length), `x-oss-range-behavior: standard` (so a bad range is a 416, not a silent
  200 of the whole object) and `Range: bytes=a-b`; `If-Match` when the caller pins a version.
* Sent on the client's own keep-alive connections (`_wire`: the request head built in one
  string, the reply head split by hand; httpcore's per-request cost was 3x ours, figures in
  `_wire`), not through httpcore, which carries every other request.
* The body is received by `_body.BodyReader` straight into the destination, the CRC-64 is
  folded in window by window on the same memoryview. A body of >= 1 MiB is received, written
  and CRC'd in a worker thread (`_body_threads`, one per pooled connection), so the trio
  thread stays free for FUSE replies; see `_body` for why, the numbers and cancellation.
* A body that stops short is re-requested from the byte reached, with the running CRC kept
  and the ETag of the first reply pinned by If-Match (so a resume can never splice two
  versions). That resume is one of the `max_attempts` tries, like any other retry.
* Every ranged GET has a total deadline, `OssClient.fetch_deadline_s` (tries, resumes and
  backoff waits together; see `_retry`); a GET waits at most `stall_timeout_s` for its reply
  head and between body bytes. HEAD, LIST and GetSymlink wait `read_timeout_s` for theirs
  and have the deadline `request_deadline_s`, derived the same way from `read_timeout_s`.
  A GET under `_body.THREAD_MIN_BYTES` (a random read's block, a small file) enforces the
  deadline in each of its waits instead of a cancel scope per try (`get`).
* A 200 to a ranged request (server ignored Range) is accepted as the whole object: we read
  past the bytes before `offset`, deliver ours, and drop the connection rather than drain it.
* 206 replies are checked: Content-Range must start at the byte asked for and not run past
  the end asked for; otherwise `BadResponse`.
* Zero bytes asked (an empty object, or an empty buffer) never issue a GET: a HEAD supplies
  the metadata.

Ranged GET heads are built by `_gethead.GetHeads`: the signed lines are made once per key and
second and reused (a signature covers neither Range nor If-Match); `_signer.Signer` signs.

Concurrency: one OssClient is shared by all tasks. Its only mutable state is the signer's clock
offset (a float replaced atomically between awaits), the GET head memo (changed without an
await inside) and the scratch-buffer free list (pop/append with no await in between). Each GET
owns its response and BodyReader from start to close.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import AsyncIterable, Awaitable, Callable
from types import TracebackType
from typing import TypeVar
from urllib.parse import unquote, urlsplit

import httpx
import trio

from ..observe import record_request
from . import _body, _small_body, signing
from ._body import (
    BodyError,
    BodyReader,
    BodyStalled,
    DiscardSink,
    Progress,
    Sink,
)
from ._body_h11 import H11Body
from ._config import OssConfig
from ._errors import (
    BadResponse,
    OssError,
    OssTransportError,
    PreconditionFailed,
    RequestTimeTooSkewed,
    describe_cause,
    error_from_response,
)
from ._gethead import GetHeads
from ._http import CoreSender, tls_verify
from ._reply import GetState, bad, changed, check_get_reply, header_dict, meta_from_headers
from ._retry import RetryPolicy, call_with_retries, parse_retry_after
from ._signer import Signer
from ._wire import WireBody, WireError, WirePool, request_head
from ._xml import MAX_ERROR_XML_BYTES, MAX_LIST_XML_BYTES, XmlError, parse_list_v2
from .credentials_types import CredentialsProvider
from .models import GetResult, ListPage, ObjectMeta

__all__ = ["OssClient", "OssConfig"]

log = logging.getLogger(__name__)

T = TypeVar("T")

USER_AGENT = "ossmount/0.1"
# What every ranged GET carries besides Range and If-Match (see the module docstring).
_GET_FIXED = {
    "User-Agent": USER_AGENT,
    "Accept-Encoding": "identity",
    "x-oss-range-behavior": "standard",
}


class OssClient:
    """Async OSS client for one bucket. Use as `async with OssClient(config, provider) as c`."""

    def __init__(
        self,
        config: OssConfig,
        credentials: CredentialsProvider,
        *,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.config = config
        self._signer = Signer(config, credentials)
        self._retry = retry or RetryPolicy(max_attempts=config.max_attempts)
        self._addressing = config.resolved_addressing()
        base = urlsplit(config.base_url())
        self._scheme = base.scheme
        self._scratch: list[bytearray] = []
        self._body_paths: Counter[str] = Counter()
        # Worker threads for GET bodies (see _body): at most one per pooled connection.
        self._body_threads = trio.CapacityLimiter(config.pool_size)
        timeout = httpx.Timeout(
            connect=config.connect_timeout_s,
            read=config.read_timeout_s,
            write=config.read_timeout_s,
            pool=None,  # callers bound concurrency themselves; waiting for a slot is not a fault
        )
        # Requests go straight to httpcore's connection pool (what httpx's transport wraps; see
        # _http for why and the figures). AsyncClient's layers (URL merging, cookies, auth and
        # redirect loops, event hooks, env proxies) do nothing we want: they cost 0.13 ms of
        # the trio thread's ~0.92 ms per 8 MiB part GET (`time.thread_time` over 128 GETs from
        # the emulator, 0.92 -> 0.79 ms).
        virtual = f"{config.bucket}." if self._addressing == "virtual" else ""
        self._authority = virtual + base.netloc  # the Host header
        verify = tls_verify(config)
        self._sender = CoreSender(
            base.scheme,
            virtual + (base.hostname or ""),
            self._authority,
            base.port,
            pool_size=config.pool_size,
            verify=verify,
        )
        # Ranged GETs, the hot path, go on our own connections (see _wire for why, with figures).
        self._wire = WirePool(
            virtual + (base.hostname or ""),
            base.port or (443 if base.scheme == "https" else 80),
            pool_size=config.pool_size,
            ssl_context=httpx.create_ssl_context(verify=verify) if base.scheme == "https" else None,
            connect_timeout_s=config.connect_timeout_s,
            keepalive_s=httpx.Limits().keepalive_expiry or 5.0,
        )
        self._get_heads = GetHeads(
            bucket=config.bucket,
            authority=self._authority,
            fixed=_GET_FIXED,
            target=lambda key: self._target(key, []),
            sign=self._signer.sign_get,
        )
        self._timeouts = timeout.as_dict()
        # A GET waits for its reply head as long as for a body byte: "no byte for
        # stall_timeout_s" is one rule for the whole reply.
        self._get_timeouts = {**self._timeouts, "read": config.stall_timeout_s}
        # Issue 14 finding 4: every request has a total deadline stated in --help, not ~40 x
        # the stall timeout. HEAD, LIST and GetSymlink: derived from read_timeout_s.
        self.request_deadline_s, self._request_deadline_why = self._budget(
            config.read_timeout_s, "read"
        )
        if config.fetch_timeout_s is not None:
            self.fetch_deadline_s = config.fetch_timeout_s
            self._deadline_why = f" ({config.fetch_timeout_s:g} s fetch timeout)"
        else:
            self.fetch_deadline_s, self._deadline_why = self._budget(
                config.stall_timeout_s, "stall"
            )

    def _budget(self, wait_s: float, wait: str) -> tuple[float, str]:
        """A request's derived deadline, and how it was derived (for the error message)."""
        connect_s = self.config.connect_timeout_s
        total = self._retry.budget_s(connect_s + wait_s)
        why = (
            f" ({total:g} s = {self._retry.max_attempts} attempts x "
            f"({connect_s:g} s connect + {wait_s:g} s {wait}) + backoff)"
        )
        return total, why

    async def __aenter__(self) -> OssClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._wire.aclose()
        await self._sender.aclose()

    def statistics(self) -> dict[str, int]:
        """GET bodies read per path ('recv_into_thread' for large plain-HTTP bodies,
        'recv_into' for small ones on the trio thread, 'stream_read' for TLS, 'httpx' fallback):
        lets tests and the bench see that the fast path is really in use."""
        return dict(self._body_paths)

    def __repr__(self) -> str:
        return f"OssClient(oss://{self.config.bucket} via {self.config.base_url()})"

    # -- requests -------------------------------------------------------------------------

    def _url(self, key: str | None, query: list[tuple[str, str]]) -> str:
        return f"{self._scheme}://{self._authority}{self._target(key, query)}"

    def _target(self, key: str | None, query: list[tuple[str, str]]) -> str:
        """The encoded path and query of a request for `key` (None: the bucket)."""
        path = "/" + signing.uri_encode(key or "", keep_slash=True)
        if self._addressing == "path":
            path = f"/{self.config.bucket}{path}"
        if query:
            path += "?" + "&".join(
                signing.uri_encode(n, keep_slash=False)
                + ("=" + signing.uri_encode(v, keep_slash=False) if v else "")
                for n, v in query
            )
        return path

    async def _send(
        self,
        method: str,
        key: str | None,
        query: list[tuple[str, str]],
        headers: dict[str, str] | None = None,
        timeouts: dict[str, float | None] | None = None,
        content: bytes | AsyncIterable[bytes] | None = None,
    ) -> httpx.Response:
        """One signed attempt; returns a streaming 2xx response or raises a typed error.

        `content` is a request body: bytes, or a stream (the write half, `_writes`, streams
        files through it); the caller sets Content-Length."""
        base = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        base.update(headers or {})
        signed = await self._signer.sign(method, key, query, base)
        try:
            response = await self._sender.send(
                method, self._target(key, query), signed, timeouts or self._timeouts, content
            )
        except httpx.TransportError as exc:
            record_request("list" if key is None else method.lower(), "transport")
            raise OssTransportError(
                f"{method} failed: {describe_cause(exc)}",
                bucket=self.config.bucket,
                key=key,
            ) from exc
        if log.isEnabledFor(logging.DEBUG):  # not even the header lookup otherwise
            log.debug(
                "%s oss://%s/%s -> %d (request id %s)",
                method,
                self.config.bucket,
                key or "",
                response.status_code,
                response.headers.get("x-oss-request-id", "-"),
            )
        record_request("list" if key is None else method.lower(), response.status_code)
        if response.status_code < 300:
            return response
        try:
            body = await self._read_capped(response, MAX_ERROR_XML_BYTES, key, truncate=True)
        except OssError:
            body = b""
        finally:
            await response.aclose()
        lower = {k.lower(): v for k, v in response.headers.items()}
        raise self._reply_error(response.status_code, lower, body, key)

    def _reply_error(
        self, status: int, lower: dict[str, str], body: bytes, key: str | None
    ) -> OssError:
        """The typed error a non-2xx reply stands for (`lower`: lower-case header names)."""
        error = error_from_response(status, lower, body, bucket=self.config.bucket, key=key)
        error.retry_after_s = parse_retry_after(lower.get("retry-after"), time.time())
        if isinstance(error, RequestTimeTooSkewed):
            self._signer.learn_clock_offset(lower.get("date"))
        return error

    async def _wire_head(
        self, method: str, key: str, query: list[tuple[str, str]], headers: dict[str, str],
        where: str,
    ) -> bytes:  # fmt: skip
        """A signed request head for `_wire`, for the paths that send a body after it
        (`_upload_wire`, `_small_body`); `where` names the request in errors."""
        signed = await self._signer.sign(
            method, key, query, {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **headers}
        )
        return request_head(method, self._target(key, query), self._authority, signed, where)

    def _wire_failed(self, method: str, key: str, cause: str) -> OssTransportError:
        """A request on `_wire` got no usable reply: counted, and the error to raise."""
        record_request(method.lower(), "transport")
        return OssTransportError(f"{method} failed: {cause}", bucket=self.config.bucket, key=key)

    def _wire_replied(self, method: str, key: str, status: int, headers: dict[str, str]) -> None:
        """A reply came on `_wire`: logged at DEBUG (as `_send` logs every reply), counted."""
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s oss://%s/%s -> %d (request id %s)", method, self.config.bucket, key, status,
                headers.get("x-oss-request-id", "-"),
            )  # fmt: skip
        record_request(method.lower(), status)

    def _wire_checked(
        self, key: str, status: int, lower: dict[str, str], body: bytes, *, over_cap: int | None
    ) -> None:
        """A `_wire` reply to a request with a body (PUT, part, POST): its typed error when it
        is not 2xx, ResponseTooLarge when its body was over `over_cap` bytes (None: it was not)."""
        if status >= 300:
            raise self._reply_error(status, lower, body, key)
        if over_cap is not None:
            raise BadResponse(
                status, "ResponseTooLarge", f"reply body over {over_cap} bytes",
                request_id=lower.get("x-oss-request-id"), bucket=self.config.bucket, key=key,
            )  # fmt: skip

    async def _send_get(
        self, key: str, first: int, last: int, if_match: str | None, deadline: float
    ) -> WireBody:
        """One signed ranged GET on `_wire`; a 2xx reply's body reader or a typed error. No
        wait, for the reply or its body, goes past `deadline` (trio time; inf: none)."""
        signer = self._signer
        creds = await signer.credentials()
        head = self._get_heads.head(key, first, last, if_match, creds, signer.now())
        try:
            reply = await self._wire.request(head, self.config.stall_timeout_s, deadline)
        except WireError as exc:
            raise self._wire_failed("GET", key, describe_cause(exc)) from exc
        self._wire_replied("GET", key, reply.status, reply.headers)
        reader = WireBody(
            self._wire, reply, stall_s=self.config.stall_timeout_s, limiter=self._body_threads
        )
        reader.deadline = deadline
        if reply.status < 300:
            return reader
        try:
            body = b"" if reply.chunked else await reader.read_capped(MAX_ERROR_XML_BYTES)
        finally:
            await reader.aclose()
        raise self._reply_error(reply.status, reply.headers, body, key)

    async def _read_capped(
        self, response: httpx.Response, limit: int, key: str | None, *, truncate: bool = False
    ) -> bytes:
        out = bytearray()
        chunks = response.aiter_raw()
        try:
            async for chunk in chunks:
                out += chunk
                if len(out) > limit:
                    if truncate:
                        return bytes(out[: limit + 1])
                    raise BadResponse(
                        response.status_code,
                        "ResponseTooLarge",
                        f"reply body over {limit} bytes",
                        request_id=response.headers.get("x-oss-request-id"),
                        bucket=self.config.bucket,
                        key=key,
                    )
        except httpx.TransportError as exc:
            raise OssTransportError(
                f"reading reply body failed: {describe_cause(exc)}",
                bucket=self.config.bucket,
                key=key,
            ) from exc
        finally:
            aclose = getattr(chunks, "aclose", None)  # never leave the generator to the GC
            if aclose is not None:
                await aclose()
        return bytes(out)

    # -- HEAD -------------------------------------------------------------------------------

    async def _retried(self, attempt: Callable[[int], Awaitable[T]], describe: str, key: str) -> T:
        """`attempt` under the retry policy and the request deadline (HEAD, LIST, GetSymlink:
        replies that are read whole; ranged GETs have their own, `fetch_deadline_s`)."""
        return await call_with_retries(
            self._retry,
            attempt,
            describe=describe,
            deadline=trio.current_time() + self.request_deadline_s,
            deadline_why=self._request_deadline_why,
            bucket=self.config.bucket,
            key=key,
        )

    async def head(self, key: str) -> ObjectMeta:
        """Metadata of `key` (raises NoSuchKey & co. as typed errors)."""
        headers = await self.head_headers(key)
        length = headers.get("content-length", "")
        if not length.isdigit():
            raise BadResponse(
                200,
                "InvalidResponse",
                "HEAD reply has no Content-Length",
                bucket=self.config.bucket,
                key=key,
            )
        return meta_from_headers(key, headers, int(length))

    async def head_headers(self, key: str, *, if_match: str | None = None) -> dict[str, str]:
        """One HEAD of `key` (retried as HEADs are; fenced on `if_match` when given): every
        reply header, lower-case names; typed errors as `head`. On our own connections
        (`_wire`) when the fast path is on: through httpcore's pool a HEAD cost ~790 us of
        CPU with 32 in flight, the pool scanning every connection for every request
        (`bench/bench_requests.py --what heads`), and `--own-attrs` sends one per file."""
        fence = {"If-Match": if_match} if if_match else {}
        where = f"HEAD oss://{self.config.bucket}/{key}"

        async def over_httpx(_: int) -> dict[str, str]:
            response = await self._send("HEAD", key, [], fence)
            await response.aclose()
            return header_dict(response)

        async def over_wire(_: int) -> dict[str, str]:
            # The exchange of the bodiless writes (a HEAD's reply has no body: _wire.Reply).
            reply = await _small_body.request_bytes(self, "HEAD", key, [], fence, b"")
            return reply[0]

        return await self._retried(over_wire if _body.FAST_PATH_ENABLED else over_httpx, where, key)

    async def get_symlink(self, key: str) -> str:
        """The target key of symlink object `key` (GetSymlink; the header is URL-encoded)."""

        async def attempt(_: int) -> str:
            response = await self._send("GET", key, [("symlink", "")])
            await response.aclose()
            target = response.headers.get("x-oss-symlink-target")
            if not target:
                raise BadResponse(
                    response.status_code,
                    "InvalidResponse",
                    "GetSymlink reply has no x-oss-symlink-target",
                    bucket=self.config.bucket,
                    key=key,
                )
            return unquote(target)

        return await self._retried(attempt, f"GET oss://{self.config.bucket}/{key}?symlink", key)

    # -- ranged GET -------------------------------------------------------------------------

    def _take_scratch(self) -> bytearray:
        return self._scratch.pop() if self._scratch else bytearray(self.config.chunk_size)

    async def get(
        self,
        key: str,
        offset: int,
        length: int,
        sink: Sink,
        *,
        if_match: str | None = None,
    ) -> GetResult:
        """GET `length` bytes of `key` at `offset` into `sink` (fewer at the object's end: see
        `GetResult.length`); `sink` gets them at positions 0.. in order (`_body.Sink`: the
        caller owns the destination, e.g. a cache part's file). Raises InvalidRange if `offset`
        is at/after the end; whatever the sink's `commit` raises (a full cache disk) goes
        through unchanged, never retried."""
        if offset < 0 or length < 0:
            raise ValueError(f"bad range offset={offset} length={length}")
        if length == 0:
            meta = await self.head(key)
            if if_match is not None and meta.etag != if_match:
                raise changed(self.config.bucket, key, if_match, meta.etag)
            return GetResult(meta=meta, offset=offset, length=0, crc64=0)
        state = GetState(offset, length, if_match)
        where = f"GET oss://{self.config.bucket}/{key} bytes={offset}-{offset + length - 1}"
        deadline = trio.current_time() + self.fetch_deadline_s
        # A small GET on our own connections bounds each of its waits by the deadline itself
        # instead of running every try in a cancel scope (~13 us per GET; issue 13, W8 pays
        # one per random read): the body of a GET under THREAD_MIN_BYTES stays on the trio
        # thread, where every wait takes the deadline (_wire, _body). Larger ones and the
        # httpcore fallback keep the scope (the body thread knows only the stall timeout).
        bounded = _body.FAST_PATH_ENABLED and length < _body.THREAD_MIN_BYTES
        if bounded:
            state.deadline = deadline

        async def attempt(_attempt: int) -> None:
            # Normally one request; more only if a server answers a valid 206 with less than
            # the asked range while the object goes on (each moves `pos` on by >= 1 byte and
            # is a success, not a try; the deadline bounds them too).
            while state.meta is None or state.pos < state.length:
                await self._get_attempt(key, state, sink)

        await call_with_retries(
            self._retry,
            attempt,
            describe=where,
            deadline=deadline,
            scoped=not bounded,
            deadline_why=self._deadline_why,
            bucket=self.config.bucket,
            key=key,
        )
        assert state.meta is not None
        return GetResult(meta=state.meta, offset=offset, length=state.pos, crc64=state.crc)

    async def _get_attempt(self, key: str, state: GetState, sink: Sink) -> None:
        start = state.offset + state.pos
        end = state.offset + state.length - 1
        try:
            status, headers_in, reader = await self._open_get(key, start, end, state)
        except PreconditionFailed as exc:
            if state.if_match is None and state.pinned is not None:
                # Our own pin (from the first reply) failed: the object changed mid-transfer.
                raise changed(self.config.bucket, key, state.pinned, "(different)") from exc
            raise
        try:
            if status // 100 == 2 and reader.content_length is None:
                raise bad(
                    self.config.bucket, key, status, headers_in, "reply without Content-Length"
                )
            skip, stop = check_get_reply(
                self.config.bucket, key, status, headers_in, state, start, end
            )
            if skip:
                scratch = self._take_scratch()
                try:
                    got = await reader.readinto_sink(DiscardSink(memoryview(scratch)), 0, skip)
                finally:
                    self._scratch.append(scratch)
                if got < skip:
                    raise bad(
                        self.config.bucket,
                        key,
                        status,
                        headers_in,
                        "200 reply ended before the asked offset",
                    )
            want = min(state.length, stop - state.offset) - state.pos
            progress = Progress(state.crc)
            try:
                got = await reader.readinto_sink(sink, state.pos, want, progress)
            finally:
                # Also on failure: a resume starts after what landed, CRC continued.
                state.pos += progress.done
                state.crc = progress.crc
            if got < want:
                raise BodyError(f"reply body ended after {got} of {want} bytes", got)
        except BodyError as exc:
            kind = "stalled" if isinstance(exc, BodyStalled) else "cut short"
            raise OssTransportError(
                f"GET body {kind} at byte {state.offset + state.pos}: {exc}",
                bucket=self.config.bucket,
                key=key,
            ) from exc
        finally:
            self._body_paths[reader.path_used] += 1
            await reader.aclose()

    async def _open_get(
        self, key: str, first: int, last: int, state: GetState
    ) -> tuple[int, dict[str, str], BodyReader]:
        """Send a ranged GET: status, lower-case headers and the body reader of a 2xx reply."""
        if _body.FAST_PATH_ENABLED:
            reader = await self._send_get(key, first, last, state.pinned, state.deadline)
            return reader.status, reader.headers, reader
        headers = {"Range": f"bytes={first}-{last}", **_GET_FIXED}
        if state.pinned is not None:
            headers["If-Match"] = state.pinned
        response = await self._send("GET", key, [], headers, self._get_timeouts)
        body = H11Body(response, stall_s=self.config.stall_timeout_s, limiter=self._body_threads)
        return response.status_code, header_dict(response), body

    # -- listing ----------------------------------------------------------------------------

    async def list_page(
        self,
        prefix: str,
        delimiter: str = "/",
        continuation: str | None = None,
        max_keys: int = 1000,
        start_after: str | None = None,
    ) -> ListPage:
        """One ListObjectsV2 page (keys and prefixes already URL-decoded)."""
        if not 1 <= max_keys <= 1000:
            raise ValueError("max_keys must be 1..1000")
        query = [("list-type", "2"), ("encoding-type", "url"), ("max-keys", str(max_keys))]
        if prefix:
            query.append(("prefix", prefix))
        if delimiter:
            query.append(("delimiter", delimiter))
        if continuation:
            query.append(("continuation-token", continuation))
        if start_after:
            query.append(("start-after", start_after))

        async def attempt(_: int) -> ListPage:
            response = await self._send("GET", None, query)
            try:
                body = await self._read_capped(response, MAX_LIST_XML_BYTES, prefix)
            finally:
                await response.aclose()
            try:
                result = parse_list_v2(body)
            except XmlError as exc:
                raise BadResponse(
                    response.status_code,
                    "InvalidResponse",
                    f"unreadable list page: {exc}",
                    request_id=response.headers.get("x-oss-request-id"),
                    bucket=self.config.bucket,
                    key=prefix,
                ) from None
            return ListPage(result.objects, result.prefixes, result.next_token)

        return await self._retried(attempt, f"LIST oss://{self.config.bucket}/{prefix}", prefix)
