"""One HTTP/1.1 request off a connection: its head parsed, its body read on demand.

Kept apart from the connection loop (emulator.server) and from how answers go out
(emulator.response) because it changes for other reasons: request framing (h11, the hand
parser for bodiless heads in emulator.heads, ``100 Continue``, the raw body read for the
upload pump) is one concern; what the server does between two requests is another.

h11 is used only for parsing: each request gets a fresh ``h11.Connection`` fed with the bytes
left over from the previous one (``trailing_data``), so pipelined requests work and h11 never
has to know about the bytes the server sends itself. A bodiless GET or HEAD of the common shape
skips h11 (``plain_request``; emulator.heads says why).
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from urllib.parse import parse_qsl

import h11
import trio

from .heads import MAX_HEAD, parse_plain_head

__all__ = [
    "ConnectionDone",
    "Request",
    "cut_connection",
    "h11_request",
    "make_request",
    "plain_request",
    "read_head",
]

_RECV = 256 * 1024
_BODY_RECV = 1 << 20  # request body reads bypassing h11 (see Request.body)


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
    _conn: h11.Connection | None  # None: a bodiless request parsed by `plain_request`
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
        await cut_connection(self._stream, kind)

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


async def read_head(raw: socket.socket, buf: bytes) -> bytes:
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


def plain_request(
    buf: bytes, stream: trio.SocketStream, peer: str
) -> tuple[Request, bool, bytes] | None:
    """A bodiless GET/HEAD parsed by hand (see `heads`): (request, HTTP/1.0?, bytes after it),
    or None for h11."""
    head = parse_plain_head(buf)
    if head is None:
        return None
    req = _new_request(head.method, head.target, head.headers, peer, None, stream)
    req.body_done = True
    return req, head.http10, head.rest


async def h11_request(
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
    req = make_request(ev, conn, stream, peer)
    if _has_no_body(req):
        end = conn.next_event()  # framing says no body: EndOfMessage is ready
        req.body_done = isinstance(end, h11.EndOfMessage)
    return req, ev.http_version == b"1.0"


def _new_request(
    method: str,
    target: str,
    headers: dict[str, str],
    peer: str,
    conn: h11.Connection | None,
    stream: trio.SocketStream,
) -> Request:
    """The Request of a parsed head, its target split into path and decoded query pairs."""
    path, _, qs = target.partition("?")
    query = parse_qsl(qs, keep_blank_values=True, encoding="utf-8", errors="surrogateescape")
    return Request(
        method=method,
        target=target,
        path=path,
        query_string=qs,
        query=query,
        headers=headers,
        peer=peer,
        _conn=conn,
        _stream=stream,
    )


def _has_no_body(req: Request) -> bool:
    return "transfer-encoding" not in req.headers and req.headers.get("content-length", "0") in (
        "0",
        "",
    )


def make_request(
    ev: h11.Request, conn: h11.Connection, stream: trio.SocketStream, peer: str
) -> Request:
    headers: dict[str, str] = {}
    for name, value in ev.headers:
        n = name.decode("latin-1")
        v = _decode(value)
        headers[n] = headers[n] + "," + v if n in headers else v
    method = ev.method.decode("latin-1").upper()
    req = _new_request(method, ev.target.decode("latin-1"), headers, peer, conn, stream)
    req._expect_continue = headers.get("expect", "").lower() == "100-continue"
    return req


async def cut_connection(stream: trio.SocketStream, kind: str) -> None:
    """End the connection mid-request or mid-body (upload and download faults): RST (reset)
    or FIN (truncate), then ConnectionDone, which the connection loop takes as the end."""
    sock = stream.socket
    if kind == "reset":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    else:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
    raise ConnectionDone(kind)
