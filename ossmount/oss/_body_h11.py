"""A body whose reply head came through httpcore (`_http.CoreSender`): read by `_body`'s loop
with h11 kept in step, or through httpx's public iterator as the fallback.

Ranged GETs normally use `_wire` and never come here; this is the route when
`_body.FAST_PATH_ENABLED` is off (side-by-side measurement and the fallback's tests).

How h11 is kept in step, so the connection goes back to httpcore's pool after a complete body:

1. The bytes h11 already buffered beyond the head (at most one 64 KiB read) are drained through
   h11's public `next_event()`, so its Content-Length reader accounts for them.
2. The rest of the body is read by `_body.BodyReader` (recv_into on the socket, or `read()` on
   httpcore's public network stream for TLS), and h11's Content-Length reader is moved on
   (`_remaining`) after every read, so once the body is complete `next_event()` yields
   EndOfMessage, h11 is DONE, and httpcore returns the connection to the pool for reuse. A body
   abandoned half-way leaves h11 mid-message and httpcore closes that connection instead of
   reusing it: never a desynchronised stream.

Both steps reach one private attribute chain (httpx's transport stream -> httpcore's HTTP/1.1
connection -> its `h11.Connection` and h11's `ContentLengthReader`). Every link is checked with
isinstance/getattr, and when anything does not match (HTTP/2, chunked replies, a future httpx)
we fall back to httpx's public `aiter_raw()`: slower, never wrong.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import h11
import httpx
import trio
from h11._readers import ContentLengthReader

from . import _body
from ._body import BodyReader

__all__ = ["H11Body"]

# On the httpx fallback path, a body abandoned with at most this much left is drained
# rather than dropped (see H11Body.aclose).
_FALLBACK_DRAIN_LIMIT = 4 * 1024 * 1024


def _h11_connection(response: httpx.Response) -> h11.Connection | None:
    """httpx response -> the h11.Connection parsing it, or None if the chain is not the one
    we know (see module docstring)."""
    stream: Any = response.stream
    for attr in ("_httpcore_stream", "_stream", "_connection", "_h11_state"):
        stream = getattr(stream, attr, None)
        if stream is None:
            return None
    return stream if isinstance(stream, h11.Connection) else None


class H11Body(BodyReader):
    """The body of an httpx response (see module docstring)."""

    read_errors = (httpx.TransportError,)

    def __init__(
        self,
        response: httpx.Response,
        *,
        stall_s: float,
        limiter: trio.CapacityLimiter | None = None,
    ) -> None:
        length = response.headers.get("content-length")
        super().__init__(
            int(length) if length and length.isdigit() else None,
            stall_s=stall_s,
            limiter=limiter,
        )
        self._response = response
        self._h11: h11.Connection | None = None
        self._reader: ContentLengthReader | None = None
        self._net: Any = None
        self._raw_iter: AsyncIterator[bytes] | None = None
        self._h11_drained = False
        conn = (
            _h11_connection(response)
            if self.content_length is not None and _body.FAST_PATH_ENABLED
            else None
        )
        reader = getattr(conn, "_reader", None)
        net = response.extensions.get("network_stream")
        if (
            conn is not None
            and isinstance(reader, ContentLengthReader)
            and net is not None
            and response.http_version == "HTTP/1.1"
        ):
            self._h11 = conn
            self._reader = reader
            self._net = net
            if net.get_extra_info("ssl_object") is None:
                sock = net.get_extra_info("socket")
                if isinstance(sock, trio.socket.SocketType):
                    self._sock = sock

    @property
    def fast_path(self) -> str:
        return "httpx" if self._h11 is None else super().fast_path

    def _consumed(self, net: int) -> None:
        if self._reader is not None:
            self._reader._remaining -= net
            if self._reader._remaining == 0 and self._h11 is not None:
                end = self._h11.next_event()
                if not isinstance(end, h11.EndOfMessage):  # pragma: no cover - h11 contract
                    self._h11 = None

    def _prepare(self) -> None:
        """Bytes h11 read past the head: take them through its public API (into _pending)."""
        if self._h11 is None or self._h11_drained:
            return
        while True:
            event = self._h11.next_event()
            if not isinstance(event, h11.Data):
                break
            data = memoryview(event.data)
            self._pending = memoryview(bytes(self._pending) + data) if self._pending else data
        self._h11_drained = True
        self._ended = isinstance(event, h11.EndOfMessage)

    async def _read_network(self, view: memoryview) -> int:
        if self._sock is not None:
            return await self._sock.recv_into(view, len(view))
        if self._net is not None:
            data: bytes = await self._net.read(len(view))
            view[: len(data)] = data
            return len(data)
        if self._raw_iter is None:
            self._raw_iter = self._response.aiter_raw()
        try:
            chunk = await self._raw_iter.__anext__()
        except StopAsyncIteration:
            return 0
        n = min(len(view), len(chunk))
        view[:n] = chunk[:n]
        self._pending = memoryview(chunk)[n:]
        return n

    def _finish_h11(self) -> None:
        """After a complete body, let h11 see its end (EndOfMessage) so the connection goes
        back to the pool. Needed when the last body bytes came from h11's own buffer (small
        bodies arrive with the head), where no raw read marked the end."""
        conn = self._h11
        if conn is None or self.remaining != 0 or self._shut:
            return  # (shut: a cancelled pump; h11 stays mid-body, so httpcore closes it)
        try:
            while conn.their_state is h11.SEND_BODY:
                event = conn.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    break
        except h11.RemoteProtocolError:
            pass  # httpcore will see the state is not DONE and close the connection

    async def aclose(self) -> None:
        """Release the response: back to the pool if the body was read to its end (h11 DONE),
        otherwise httpcore closes the connection."""
        self._finish_h11()
        try:
            if self._raw_iter is not None:
                # httpx's body iterator is a stack of async generators and only the outer one
                # can be closed by us; the inner ones finish cleanly only when the body is
                # consumed to its end. So on the fallback path drain what little is left
                # (always the case after a complete body: its EOF is not yet seen), and close.
                remaining = self.remaining
                if remaining is not None and remaining <= _FALLBACK_DRAIN_LIMIT:
                    with trio.move_on_after(self._stall_s):
                        async for _chunk in self._raw_iter:
                            pass
                aclose = getattr(self._raw_iter, "aclose", None)
                if aclose is not None:
                    await aclose()
        finally:
            await self._response.aclose()
