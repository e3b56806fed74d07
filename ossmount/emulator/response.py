"""A response and how it goes on the wire: head bytes, then the body by the cheapest path
its faults and shaping allow.

Kept apart from the connection loop (emulator.server) and from request parsing
(emulator.request): the send paths change for speed and for the fault vocabulary (stall, cut,
flipped byte, gzip mode), never for framing. Bodies go out as ``os.sendfile`` for files and
whole memoryview slices (>= 1 MiB, zero-copy) for memory and synthetic objects; a response
with no fault and no shaping takes emulator.sendfast (plain syscalls, measured there), the
others go through `_send_body`, which honours every `SendPlan` position and token bucket.
"""

from __future__ import annotations

import email.utils
import http
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from .request import ConnectionDone, cut_connection
from .sendfast import send_file, send_response
from .shaping import Shaping, TokenBucket
from .store import Body, FileBody, Segment
from .xml import xml_doc

__all__ = ["Response", "SendPlan", "http_date", "write_response", "xml_response"]

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


async def write_response(
    stream: trio.SocketStream,
    resp: Response,
    shaping: Shaping,
    conn_bucket: TokenBucket | None,
    raw: socket.socket,
) -> None:
    """Send `resp` on the connection (`raw` is the stdlib view of its socket for sendfast);
    `resp.on_sent` hears how many body bytes left and whether all did. Raises ConnectionDone
    when a fault cuts the connection or the object's file vanished before it was opened."""
    latency = resp.latency_s + shaping.latency_s
    if latency > 0:
        await trio.sleep(latency)
    if resp.gzip_body is not None or resp.stream is None or resp.head_only:
        data, body_bytes = _in_one_piece(resp)
        await stream.send_all(data)
        if resp.on_sent:
            resp.on_sent(body_bytes, True)
        return
    head = _head_bytes(resp, resp.length)
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


def _in_one_piece(resp: Response) -> tuple[bytes, int]:
    """Head and body of a response without an object body to stream (in-memory body, gzip
    fault answer, HEAD), and how many body bytes that is."""
    if resp.gzip_body is not None:
        if resp.head_only:
            return _head_bytes(resp, None), 0
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(resp.gzip_body), resp.gzip_body)
        return _head_bytes(resp, None) + chunked, len(resp.gzip_body)
    if resp.stream is None:
        return _head_bytes(resp, len(resp.body)) + resp.body, len(resp.body)
    return _head_bytes(resp, resp.length), 0  # HEAD of an object: its length, no body


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
                await cut_connection(stream, plan.cut_kind)
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
        await cut_connection(stream, plan.cut_kind)


def _slice(seg: Segment, start: int, n: int) -> Segment:
    if isinstance(seg, memoryview):
        return seg[start : start + n]
    return (seg[0], seg[1] + start, n)


def _slice_bytes(seg: Segment, start: int, n: int) -> bytes:
    if isinstance(seg, memoryview):
        return bytes(seg[start : start + n])
    return os.pread(seg[0], n, seg[1] + start)


async def _sendfile(stream: trio.SocketStream, fd: int, offset: int, count: int) -> None:
    """``os.sendfile`` on the stream's socket (sendfast.send_file), after a checkpoint."""
    await trio.lowlevel.checkpoint()
    await send_file(stream.socket, fd, offset, count)
