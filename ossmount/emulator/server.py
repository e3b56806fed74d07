"""The HTTP/1.1 connection loop: one request at a time, answered by the app's handler.

Why not an ASGI server: measurements.md §4 — hypercorn costs 0.4-0.56 CPU s/GiB where a plain
trio server with ``os.sendfile`` costs 0.20, and on a 2-core machine every emulator CPU second
is taken from the client under test.

Three modules, each changing for its own reasons: emulator.request reads a request off the
connection (h11 for framing, a hand parser for bodiless heads, the body on demand);
emulator.response writes an answer (hand-built head, sendfile / zero-copy bodies, body-level
faults and shaping); this one runs the connection between them (keep-alive, draining an
unread body, turning a handler's crash into a 500).

Per-connection invariants: one request at a time (HTTP/1.1 without pipelined *responses*); a
request body not fully read by the handler closes the connection after the response, so stray
body bytes are never parsed as a request head.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
from collections.abc import Awaitable, Callable

import h11
import trio

from .heads import MAX_HEAD
from .request import ConnectionDone, Request, h11_request, plain_request, read_head
from .response import Response, write_response
from .shaping import Shaping, TokenBucket

log = logging.getLogger(__name__)

__all__ = ["ErrorResponder", "Handler", "serve_connection"]

Handler = Callable[[Request], Awaitable[Response]]
ErrorResponder = Callable[[int, str, str], Response]


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
    # A stdlib view of the same descriptor for `sendfast` and `read_head` (no dup; detached
    # before the stream is closed, so the descriptor is closed once, by trio).
    ts = stream.socket
    try:
        raw = socket.socket(ts.family, ts.type, ts.proto, fileno=ts.fileno())
    except OSError:
        await _close(stream)
        return
    try:
        while True:
            leftover = await read_head(raw, leftover)
            if not leftover:
                return  # closed between requests
            plain = plain_request(leftover, stream, peer)
            conn: h11.Connection | None = None
            try:
                if plain is not None:
                    req, http10, leftover = plain
                else:
                    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
                    conn.receive_data(leftover)
                    req, http10 = await h11_request(conn, stream, peer)
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                code = "RequestHeaderTooLarge" if status == 431 else "InvalidRequest"
                resp = bad_request(400, code, str(exc) or "Bad request")
                resp.close = True
                await write_response(stream, resp, shaping, None, raw)
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
                try:
                    await _drain(req, resp)
                except h11.RemoteProtocolError:
                    return  # the client gave up on its body: nobody is left to answer
            if req.headers.get("connection", "").lower() == "close" or http10:
                resp.close = True
            if shaping.conn_bps > 0 and (
                conn_bucket is None or conn_bucket.rate != shaping.conn_bps
            ):
                conn_bucket = TokenBucket(shaping.conn_bps)
            elif shaping.conn_bps <= 0:
                conn_bucket = None
            await write_response(stream, resp, shaping, conn_bucket, raw)
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
