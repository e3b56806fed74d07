"""HTTP/1.1 connection loop: h11 parses request heads, responses are written by hand.

Why not an ASGI server: measurements.md §4 — hypercorn costs 0.4-0.56 CPU s/GiB where a plain
trio server with ``os.sendfile`` costs 0.20, and on a 2-core machine every emulator CPU second
is taken from the client under test. Response bodies go out as ``os.sendfile`` for files and
whole memoryview slices (≥ 1 MiB, zero-copy) for memory and synthetic objects.

h11 is used only for parsing: each request gets a fresh ``h11.Connection`` fed with the bytes
left over from the previous one (``trailing_data``), so pipelined requests work and h11 never
has to know about the bytes we send ourselves.

Per-connection invariants: one request at a time (HTTP/1.1 without pipelined *responses*); a
request body not fully read by the handler closes the connection after the response, so stray
body bytes are never parsed as a request head.
"""

from __future__ import annotations

import contextlib
import email.utils
import errno
import http
import logging
import os
import socket
import struct
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import h11
import trio

from .heads import MAX_HEAD, parse_plain_head
from .sendfast import send_file, send_response
from .shaping import Shaping, TokenBucket
from .store import Body, FileBody, Segment
from .xml import xml_doc

log = logging.getLogger(__name__)

__all__ = ["Request", "Response", "SendPlan", "http_date", "serve_connection"]

_RECV = 256 * 1024
_BODY_RECV = 1 << 20  # request body reads bypassing h11 (see Request.body)

_date_cache: tuple[int, str] = (0, "")


def http_date(t: float | None = None) -> str:
    """RFC 1123 GMT. The current second's value is cached: it is on every response."""
    global _date_cache
    if t is not None:
        return email.utils.formatdate(t, usegmt=True)
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, email.utils.formatdate(now, usegmt=True))
    return _date_cache[1]


class ConnectionDone(Exception):
    """Raised to end a connection on purpose (fault resets/truncations)."""


@dataclass
class Request:
    method: str
    target: str  # raw, still percent-encoded
    path: str  # raw path part of the target
    query_string: str
    query: list[tuple[str, str]]  # decoded pairs in order
    headers: dict[str, str]  # lower-case names, repeated headers joined with ","
    peer: str
    _conn: h11.Connection | None  # None: a bodiless request parsed by `_plain_request`
    _stream: trio.SocketStream
    _expect_continue: bool = False
    body_done: bool = False
    buffered: bytes | None = None  # body read ahead of the handler (AWS payload hashing)

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name, default)

    def qget(self, name: str) -> str | None:
        for k, v in self.query:
            if k == name:
                return v
        return None

    def has_q(self, name: str) -> bool:
        return any(k == name for k, _ in self.query)

    async def body(self) -> AsyncGenerator[bytes, None]:
        """Yield the request body; sends ``100 Continue`` first when the client waits for it.

        A body framed by Content-Length is read straight from the socket in chunks of up to
        ``_BODY_RECV`` once h11 has handed over what it had buffered: h11's own path copies
        every byte three times (its buffer, the event, ``bytes``) and was a third of the
        upload CPU. Exactly Content-Length bytes are read, so nothing of a pipelined next
        request is consumed (h11 keeps whatever it had buffered beyond the body).
        """
        if self.buffered is not None:
            data, self.buffered = self.buffered, None
            if data:
                yield data
        if self.body_done:
            return
        if self._expect_continue:
            self._expect_continue = False
            await self._stream.send_all(b"HTTP/1.1 100 Continue\r\n\r\n")
        length = self.content_length()
        if length is None:
            async for chunk in self._h11_body():
                yield chunk
            return
        assert self._conn is not None  # only bodiless requests are parsed without h11
        got = 0
        while True:  # first what h11 already holds, without waiting for the socket
            ev = self._conn.next_event()
            if ev is h11.NEED_DATA:
                break
            piece = self._body_bytes(ev)
            if piece is None:
                return
            got += len(piece)
            yield piece
        while got < length:
            data = await self._stream.receive_some(min(length - got, _BODY_RECV))
            if not data:
                raise h11.RemoteProtocolError("peer closed the connection mid-body", 400)
            got += len(data)
            yield data
        self.body_done = True

    async def raw_body(self, min_length: int) -> list[bytes] | None:
        """Start a body framed by Content-Length of more than ``min_length`` bytes for a
        reader of the socket itself (the upload pump), or None: read it with ``body()``.

        Sends ``100 Continue`` when the client waits for it and returns the body bytes h11
        already holds; the reader takes the rest (``content_length()`` minus those) from
        ``socket`` and then sets ``body_done``, as ``body()`` does.
        """
        length = self.content_length()
        if self.buffered is not None or self.body_done or length is None or length <= min_length:
            return None
        assert self._conn is not None  # only bodiless requests are parsed without h11
        if self._expect_continue:
            self._expect_continue = False
            await self._stream.send_all(b"HTTP/1.1 100 Continue\r\n\r\n")
        pieces: list[bytes] = []
        while (ev := self._conn.next_event()) is not h11.NEED_DATA:
            piece = self._body_bytes(ev)
            if piece is None:
                break
            pieces.append(piece)
        return pieces

    @property
    def socket(self) -> trio.socket.SocketType:
        return self._stream.socket

    def content_length(self) -> int | None:
        """The body length when framed by Content-Length (h11 has validated the header)."""
        if "transfer-encoding" in self.headers:
            return None
        v = self.headers.get("content-length")
        return int(v) if v is not None and v.isdigit() else None

    async def _h11_body(self) -> AsyncGenerator[bytes, None]:
        assert self._conn is not None
        while (chunk := self._body_bytes(await _next_event(self._conn, self._stream))) is not None:
            yield chunk

    def _body_bytes(self, ev: object) -> bytes | None:
        """The bytes of one body event; None (and `body_done`) at the body's end."""
        if isinstance(ev, h11.Data):
            return bytes(ev.data)
        if isinstance(ev, h11.EndOfMessage):
            self.body_done = True
            return None
        raise h11.RemoteProtocolError("unexpected event in body", 400)

    async def cut(self, kind: str) -> None:
        """End the connection mid-request: RST (reset) or FIN (truncate); for upload faults."""
        await _cut(self._stream, kind)

    async def prebuffer(self, limit: int) -> bytes:
        """Read the whole body now (≤ limit bytes); ``body()`` will still yield it later."""
        data = await self.read_all(limit)
        self.buffered = data
        return data

    async def read_all(self, limit: int = 1 << 20) -> bytes:
        out = bytearray()
        async with contextlib.aclosing(self.body()) as body:
            async for chunk in body:
                out += chunk
                if len(out) > limit:
                    raise ValueError("request body too large")
        return bytes(out)


@dataclass
class SendPlan:
    """Body-level faults: cut after N bytes (reset/truncate), stall, flip a byte."""

    cut_at: int | None = None
    cut_kind: str = "reset"  # reset | truncate
    stall_at: int | None = None
    stall_s: float = 0.0
    flip_at: int | None = None


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    stream: Body | None = None  # object body; sent after the head
    offset: int = 0
    length: int = 0
    head_only: bool = False  # HEAD: Content-Length describes a body we do not send
    close: bool = False
    plan: SendPlan = field(default_factory=SendPlan)
    latency_s: float = 0.0
    gzip_body: bytes | None = None  # chunked gzip answer (fault mode §8.8)
    on_sent: Callable[[int, bool], None] | None = None  # (bytes_sent, completed)
    error_code: str | None = None  # the OSS Code of an error response, for the log


def xml_response(body: str) -> Response:
    """A 200 answer carrying the XML document `body` (without its declaration)."""
    return Response(200, [("Content-Type", "application/xml")], xml_doc(body))


Handler = Callable[[Request], Awaitable[Response]]
ErrorResponder = Callable[[int, str, str], Response]


async def _next_event(conn: h11.Connection, stream: trio.SocketStream) -> object:
    while True:
        ev = conn.next_event()
        if ev is h11.NEED_DATA:
            data = await stream.receive_some(_RECV)
            conn.receive_data(bytes(data))
            continue
        return ev


def _decode(v: bytes) -> str:
    try:
        return v.decode("utf-8")
    except UnicodeDecodeError:
        return v.decode("latin-1")


async def serve_connection(
    stream: trio.SocketStream,
    handler: Handler,
    bad_request: ErrorResponder,
    shaping: Shaping,
) -> None:
    """Serve requests on one connection until close; never raises for client misbehaviour."""
    leftover = b""
    conn_bucket: TokenBucket | None = None
    try:
        peer = str(stream.socket.getpeername()[0])
    except OSError:
        peer = "?"
    # A stdlib view of the same descriptor for `sendfast` and `_read_head` (no dup; detached
    # before the stream is closed, so the descriptor is closed once, by trio).
    ts = stream.socket
    try:
        raw = socket.socket(ts.family, ts.type, ts.proto, fileno=ts.fileno())
    except OSError:
        await _close(stream)
        return
    try:
        while True:
            leftover = await _read_head(raw, leftover)
            if not leftover:
                return  # closed between requests
            plain = _plain_request(leftover, stream, peer)
            conn: h11.Connection | None = None
            try:
                if plain is not None:
                    req, http10, leftover = plain
                else:
                    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
                    conn.receive_data(leftover)
                    req, http10 = await _h11_request(conn, stream, peer)
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                code = "RequestHeaderTooLarge" if status == 431 else "InvalidRequest"
                resp = bad_request(400, code, str(exc) or "Bad request")
                resp.close = True
                await _write(stream, resp, shaping, None, raw)
                return
            try:
                resp = await handler(req)
            except h11.RemoteProtocolError:
                return  # body framing broken mid-upload: nothing sensible to answer
            except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionDone):
                raise
            except Exception:
                # A bug must cost one request, not the server: answer 500 and log it.
                log.exception("emulator: unhandled error in %s %s", req.method, req.target)
                resp = bad_request(500, "InternalError", "internal error (see emulator log)")
                resp.close = True
            if not req.body_done and not resp.close:
                await _drain(req, resp)
            if req.headers.get("connection", "").lower() == "close" or http10:
                resp.close = True
            if shaping.conn_bps > 0 and (
                conn_bucket is None or conn_bucket.rate != shaping.conn_bps
            ):
                conn_bucket = TokenBucket(shaping.conn_bps)
            elif shaping.conn_bps <= 0:
                conn_bucket = None
            await _write(stream, resp, shaping, conn_bucket, raw)
            if resp.close:
                return
            if conn is not None:
                leftover = conn.trailing_data[0]
    except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionDone):
        return
    except OSError as exc:
        if exc.errno in (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN, errno.EBADF):
            return
        raise
    finally:
        raw.detach()
        await _close(stream)


async def _read_head(raw: socket.socket, buf: bytes) -> bytes:
    """`buf` plus what arrives until it holds a whole request head (or MAX_HEAD bytes, or
    the peer closed: then h11 judges what there is); b"" if the peer closed before a byte.
    Plain recv on the non-blocking descriptor, waiting only on EAGAIN (see `sendfast`)."""
    while b"\r\n\r\n" not in buf and len(buf) <= MAX_HEAD:
        try:
            data = raw.recv(_RECV)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(raw)
            continue
        if not data:
            break
        buf += data
    return buf


def _plain_request(
    buf: bytes, stream: trio.SocketStream, peer: str
) -> tuple[Request, bool, bytes] | None:
    """A bodiless GET/HEAD parsed by hand (see `heads`): (request, HTTP/1.0?, bytes after it),
    or None for h11."""
    head = parse_plain_head(buf)
    if head is None:
        return None
    path, _, qs = head.target.partition("?")
    query = parse_qsl(qs, keep_blank_values=True, encoding="utf-8", errors="surrogateescape")
    req = Request(
        method=head.method,
        target=head.target,
        path=path,
        query_string=qs,
        query=query,
        headers=head.headers,
        peer=peer,
        _conn=None,
        _stream=stream,
        body_done=True,
    )
    return req, head.http10, head.rest


async def _h11_request(
    conn: h11.Connection, stream: trio.SocketStream, peer: str
) -> tuple[Request, bool]:
    """The next request through h11 (any method, any framing): (request, HTTP/1.0?)."""
    ev = await _next_event(conn, stream)
    if isinstance(ev, h11.ConnectionClosed):
        raise ConnectionDone("closed")
    assert isinstance(ev, h11.Request)
    head_size = len(ev.target) + sum(len(n) + len(v) + 4 for n, v in ev.headers)
    if head_size > MAX_HEAD:
        # h11 only limits heads that arrive in pieces; enforce it for whole ones too
        raise h11.RemoteProtocolError("request header too large", 431)
    req = _make_request(ev, conn, stream, peer)
    if _has_no_body(req):
        end = conn.next_event()  # framing says no body: EndOfMessage is ready
        req.body_done = isinstance(end, h11.EndOfMessage)
    return req, ev.http_version == b"1.0"


def _has_no_body(req: Request) -> bool:
    return "transfer-encoding" not in req.headers and req.headers.get("content-length", "0") in (
        "0",
        "",
    )


async def _drain(req: Request, resp: Response) -> None:
    """Read an unread request body (up to 1 MiB) so the connection can be reused; else close.

    Unread body bytes must never be parsed as the next request head.
    """
    if req._expect_continue:
        resp.close = True  # the client has not sent the body and will not unless told
        return
    total = 0
    async with contextlib.aclosing(req.body()) as body:
        async for chunk in body:
            total += len(chunk)
            if total > 1 << 20:
                resp.close = True
                return


async def _close(stream: trio.SocketStream) -> None:
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        await stream.aclose()


def _make_request(
    ev: h11.Request, conn: h11.Connection, stream: trio.SocketStream, peer: str
) -> Request:
    headers: dict[str, str] = {}
    for name, value in ev.headers:
        n = name.decode("latin-1")
        v = _decode(value)
        headers[n] = headers[n] + "," + v if n in headers else v
    target = ev.target.decode("latin-1")
    path, _, qs = target.partition("?")
    query = parse_qsl(qs, keep_blank_values=True, encoding="utf-8", errors="surrogateescape")
    return Request(
        method=ev.method.decode("latin-1").upper(),
        target=target,
        path=path,
        query_string=qs,
        query=query,
        headers=headers,
        peer=peer,
        _conn=conn,
        _stream=stream,
        _expect_continue=headers.get("expect", "").lower() == "100-continue",
    )


def _head_bytes(resp: Response, content_length: int | None) -> bytes:
    try:
        reason = http.HTTPStatus(resp.status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {resp.status} {reason}"]
    lines += [f"{k}: {v}" for k, v in resp.headers]
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    else:
        lines.append("Transfer-Encoding: chunked")
    if resp.close:
        lines.append("Connection: close")
    else:
        lines.append("Connection: keep-alive")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


async def _write(
    stream: trio.SocketStream,
    resp: Response,
    shaping: Shaping,
    conn_bucket: TokenBucket | None,
    raw: socket.socket,
) -> None:
    latency = resp.latency_s + shaping.latency_s
    if latency > 0:
        await trio.sleep(latency)
    if resp.gzip_body is not None:
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(resp.gzip_body), resp.gzip_body)
        await stream.send_all(_head_bytes(resp, None) + (b"" if resp.head_only else chunked))
        if resp.on_sent:
            resp.on_sent(0 if resp.head_only else len(resp.gzip_body), True)
        return
    if resp.stream is None:
        await stream.send_all(_head_bytes(resp, len(resp.body)) + resp.body)
        if resp.on_sent:
            resp.on_sent(len(resp.body), True)
        return
    head = _head_bytes(resp, resp.length)
    if resp.head_only:
        await stream.send_all(head)
        if resp.on_sent:
            resp.on_sent(0, True)
        return
    body = resp.stream
    fd: int | None = None
    if isinstance(body, FileBody):
        try:
            body = body.opened()  # this response owns the fd; the version may be replaced
        except FileNotFoundError:
            resp.close = True
            raise ConnectionDone("object file vanished") from None
        fd = body.fd
    sent = [0]
    plan = resp.plan
    unshaped = conn_bucket is None and shaping.total_bps <= 0 and resp.length > 0
    try:
        if unshaped and plan.stall_at is None and plan.cut_at is None:
            if plan.flip_at is None:
                await send_response(raw, head, body, resp.offset, resp.length, sent)
            else:
                await _send_corked(stream, head)
                await _send_body(stream, body, resp, shaping, conn_bucket, sent)
        else:
            await stream.send_all(head)
            await _send_body(stream, body, resp, shaping, conn_bucket, sent)
    except BaseException:
        if resp.on_sent:
            resp.on_sent(sent[0], False)
        raise
    finally:
        if fd is not None:
            os.close(fd)
    if resp.on_sent:
        resp.on_sent(sent[0], True)


async def _send_corked(stream: trio.SocketStream, head: bytes) -> None:
    """Send the head with MSG_MORE: the kernel holds it until the body's first bytes join it,
    so a small reply leaves as one segment and the client wakes once for head and body, not
    twice (only when the body follows at once: no stall, cut or shaping to wait for)."""
    view = memoryview(head)
    while view:
        n = await stream.socket.send(view, socket.MSG_MORE)
        view = view[n:]


async def _send_body(
    stream: trio.SocketStream,
    body: Body,
    resp: Response,
    shaping: Shaping,
    conn_bucket: TokenBucket | None,
    sent: list[int],
) -> None:
    plan = resp.plan
    stall_at = plan.stall_at
    flip_at = plan.flip_at
    total_bucket = shaping.total_bucket()
    chunk_cap = 1 << 62
    for b in (conn_bucket, total_bucket):
        if b is not None:
            chunk_cap = min(chunk_cap, b.chunk())
    pos = 0
    for seg in body.segments(resp.offset, resp.length):
        seg_len = len(seg) if isinstance(seg, memoryview) else seg[2]
        done = 0
        while done < seg_len:
            if stall_at is not None and stall_at == pos:
                stall_at = None
                await trio.sleep(plan.stall_s)
            if plan.cut_at is not None and plan.cut_at == pos:
                await _cut(stream, plan.cut_kind)
            n = min(seg_len - done, chunk_cap)
            for p in (stall_at, plan.cut_at, flip_at):
                if p is not None and p > pos:
                    n = min(n, p - pos)
            if flip_at is not None and flip_at == pos:
                flip_at = None
                byte = _slice_bytes(seg, done, 1)
                piece: Segment = memoryview(bytes([byte[0] ^ 0xFF]))
                n = 1
            else:
                piece = _slice(seg, done, n)
            for b in (conn_bucket, total_bucket):
                if b is not None:
                    await b.take(n)
            if isinstance(piece, memoryview):
                await stream.send_all(piece)
            else:
                await _sendfile(stream, piece[0], piece[1], piece[2])
            done += n
            pos += n
            sent[0] = pos
    if plan.cut_at is not None and plan.cut_at >= pos:
        await _cut(stream, plan.cut_kind)


def _slice(seg: Segment, start: int, n: int) -> Segment:
    if isinstance(seg, memoryview):
        return seg[start : start + n]
    return (seg[0], seg[1] + start, n)


def _slice_bytes(seg: Segment, start: int, n: int) -> bytes:
    if isinstance(seg, memoryview):
        return bytes(seg[start : start + n])
    return os.pread(seg[0], n, seg[1] + start)


async def _cut(stream: trio.SocketStream, kind: str) -> None:
    """End the connection mid-body: RST (reset) or FIN (truncate)."""
    sock = stream.socket
    if kind == "reset":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    else:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
    raise ConnectionDone(kind)


async def _sendfile(stream: trio.SocketStream, fd: int, offset: int, count: int) -> None:
    """``os.sendfile`` on the stream's socket (sendfast.send_file), after a checkpoint."""
    await trio.lowlevel.checkpoint()
    await send_file(stream.socket, fd, offset, count)
