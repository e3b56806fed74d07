"""Response bodies that land in their destination with one copy: `recv_into` from the socket.

Why not httpx's own body iterator: measured here (shared/measurements.md §2) it tops out near
0.75 GB/s at 1.4 CPU s/GiB with its 64 KiB reads, ~1.5 GB/s with 1 MiB reads; each read is a
fresh `bytes`, appended to h11's buffer, sliced out again as a `Data` event and then copied into
our buffer. A preallocated buffer filled by `socket.recv_into` reaches 3.7-4.9 GB/s at ~0.25
CPU s/GiB. `bench/bench_client.py` reproduces both paths side by side (`--body-path`).

How we get there while keeping httpx for connecting, pooling, timeouts and the response head:

1. httpx sends the request and parses the head as usual (`send(..., stream=True)`).
2. The bytes h11 already buffered beyond the head (at most one 64 KiB read) are drained through
   h11's public `next_event()`, so its Content-Length reader accounts for them.
3. The rest of the body is read by us: `recv_into` on the trio socket for plain HTTP (zero
   intermediate copies), or `read()` on httpcore's public network stream for TLS (one copy;
   the SSL object has to decrypt somewhere).
4. We keep h11's Content-Length reader in step (`_remaining`) after every read, so once the
   body is complete `next_event()` yields EndOfMessage, h11 is DONE, and httpcore returns the
   connection to the pool for reuse. A body abandoned half-way leaves h11 mid-message and
   httpcore closes that connection instead of reusing it: never a desynchronised stream.

Step 2 and 4 reach one private attribute chain (httpx's response stream → httpcore's HTTP/1.1
connection → its `h11.Connection` and h11's `ContentLengthReader`). Every link is checked with
isinstance/getattr, and when anything does not match (HTTP/2, chunked replies, a future httpx)
we fall back to httpx's public `aiter_raw()`: slower, never wrong.
`tests/client/test_body_fast_path.py` fails if the fast path silently stops engaging.

Measured on this VM kind (2 vCPU; receiver thread CPU for 1 GiB over a socketpair, 1 MiB
windows, CRC on): recv_into a scratch buffer + one pwrite per window 0.23-0.26 s/GiB at
~3.1 GB/s; recv_into straight into an mmap of the (new) cache file 2.3 s/GiB (a page fault
per 4 KiB), 0.37 with MAP_POPULATE; splice socket→pipe→file plus CRC over an mmap of the
written range 0.5-0.7 s/GiB. So the file path is "recv_into scratch, CRC, pwrite": its two
copies are the floor (a pwrite of 1 MiB into a fresh file alone costs ~0.18 s/GiB here).
In the client, with the per-part HTTP round trip, signing and trio scheduling, profiles show
>85 % of the CPU in the recv_into and pwrite syscalls and ~7 % in fastcrc. SO_RCVLOWAT
(256 KiB, to get fewer and larger wakeups with parallel parts) made no difference beyond
noise (0.49 vs 0.51 CPU s/GiB), so it is not used. A 1 MiB window beat 256 KiB and 4 MiB.

Stall detection: every network read runs under a deadline of `stall_s`; no byte for that long
raises `BodyStalled` rather than hanging on a half-dead connection.

Concurrency: a BodyReader belongs to one task and one response. It never awaits while h11's
reader and our counters disagree (each read updates both before the next await).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any, Protocol

import h11
import httpx
import trio
from h11._readers import ContentLengthReader

__all__ = [
    "BodyError",
    "BodyReader",
    "BodyStalled",
    "BodyTruncated",
    "DiscardSink",
    "FileSink",
    "MemorySink",
    "Sink",
]

# False forces httpx's public body iterator: only for side-by-side measurement (the bench's
# `--body-path httpx`), never needed for correctness.
FAST_PATH_ENABLED = True

# On the httpx fallback path, a body abandoned with at most this much left is drained
# rather than dropped (see BodyReader.aclose).
_FALLBACK_DRAIN_LIMIT = 4 * 1024 * 1024

# Largest single socket read; larger buys nothing on loopback (measurements.md §2, 1-4 MiB).
MAX_READ = 4 * 1024 * 1024


class BodyError(Exception):
    """The body could not be read completely; `received` bytes of it did arrive."""

    def __init__(self, message: str, received: int) -> None:
        super().__init__(message)
        self.received = received


class BodyTruncated(BodyError):
    pass


class BodyStalled(BodyError):
    pass


class Sink(Protocol):
    """Where body bytes go. `window` lends a writable view for the next bytes at `pos`
    (relative to the start of the delivery); `commit` is told which of them arrived."""

    def window(self, pos: int, limit: int) -> memoryview: ...

    def commit(self, view: memoryview, pos: int) -> None: ...


class MemorySink:
    """Receives straight into the caller's buffer: no copy at all on the plain-HTTP path."""

    def __init__(self, dest: memoryview) -> None:
        self._dest = dest

    def window(self, pos: int, limit: int) -> memoryview:
        return self._dest[pos : pos + limit]

    def commit(self, view: memoryview, pos: int) -> None:
        pass


class FileSink:
    """Receives into a reused scratch buffer, then one `pwrite` per chunk at the file offset.

    Why not recv into an mmap of the file: that needs the file pre-sized and takes a page fault
    per 4 KiB; pwrite of ~1 MiB chunks runs at ~4 GB/s (measurements.md §1). The pwrite is done
    inline on the trio thread: a page-cache write of one chunk takes well under a millisecond.
    """

    def __init__(self, fd: int, file_offset: int, scratch: memoryview) -> None:
        self._fd = fd
        self._file_offset = file_offset
        self._scratch = scratch

    def window(self, pos: int, limit: int) -> memoryview:
        return self._scratch[: min(limit, len(self._scratch))]

    def commit(self, view: memoryview, pos: int) -> None:
        offset = self._file_offset + pos
        while view:
            written = os.pwrite(self._fd, view, offset)
            view = view[written:]
            offset += written


class DiscardSink:
    """Swallows bytes we must read past (a 200 reply that ignored our Range)."""

    def __init__(self, scratch: memoryview) -> None:
        self._scratch = scratch

    def window(self, pos: int, limit: int) -> memoryview:
        return self._scratch[: min(limit, len(self._scratch))]

    def commit(self, view: memoryview, pos: int) -> None:
        pass


def _h11_connection(response: httpx.Response) -> h11.Connection | None:
    """httpx response → the h11.Connection parsing it, or None if the chain is not the one
    we know (see module docstring)."""
    stream: Any = response.stream
    for attr in ("_stream", "_httpcore_stream", "_stream", "_connection", "_h11_state"):
        stream = getattr(stream, attr, None)
        if stream is None:
            return None
    return stream if isinstance(stream, h11.Connection) else None


class BodyReader:
    """Reads one HTTP/1.1 response body, by its Content-Length, into sinks.

    Call `readinto_sink` as often as needed (positions are the caller's), then `close`.
    """

    def __init__(self, response: httpx.Response, *, stall_s: float) -> None:
        self._response = response
        self._stall_s = stall_s
        length = response.headers.get("content-length")
        self.content_length: int | None = int(length) if length and length.isdigit() else None
        self.received = 0
        self._pending = memoryview(b"")
        self._h11: h11.Connection | None = None
        self._reader: ContentLengthReader | None = None
        self._sock: trio.socket.SocketType | None = None
        self._net: Any = None
        self._raw_iter: AsyncIterator[bytes] | None = None
        self._h11_drained = False
        conn = (
            _h11_connection(response)
            if self.content_length is not None and FAST_PATH_ENABLED
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
        """'recv_into', 'stream_read' (TLS) or 'httpx' (fallback): for tests and the bench."""
        if self._h11 is None:
            return "httpx"
        return "recv_into" if self._sock is not None else "stream_read"

    @property
    def remaining(self) -> int | None:
        if self.content_length is None:
            return None
        return self.content_length - self.received

    async def readinto_sink(self, sink: Sink, pos: int, count: int, on_chunk: Any = None) -> int:
        """Deliver up to `count` body bytes to `sink` at positions pos.. ; returns the number
        delivered, which is less than `count` only when the body ended (BodyTruncated if it
        ended before its Content-Length). `on_chunk(view)` sees every landed chunk (CRC)."""
        done = 0
        while done < count:
            remaining = self.remaining
            if remaining == 0:
                break
            limit = count - done
            if remaining is not None:
                limit = min(limit, remaining)
            view = sink.window(pos + done, min(limit, MAX_READ))
            # Fill the whole window before handing it on: one pwrite and one CRC call per
            # window instead of per socket read (loopback reads are often 64-256 KiB).
            filled = 0
            try:
                while filled < len(view):
                    n = await self._readinto(view[filled:])
                    if n == 0:
                        break
                    filled += n
            finally:
                # Also on failure: what arrived is kept, so a resume starts after it.
                if filled:
                    landed = view[:filled]
                    sink.commit(landed, pos + done)
                    if on_chunk is not None:
                        on_chunk(landed)
                    done += filled
            if filled < len(view):
                if self.remaining is None:
                    break
                raise BodyTruncated(
                    f"connection closed after {self.received} of {self.content_length} body bytes",
                    self.received,
                )
        return done

    async def _readinto(self, view: memoryview) -> int:
        if self._pending:
            n = min(len(view), len(self._pending))
            view[:n] = self._pending[:n]
            self._pending = self._pending[n:]
            self.received += n
            return n
        if self._h11 is not None and not self._h11_drained:
            # Bytes h11 read past the head: take them through its public API first.
            event = self._h11.next_event()
            if isinstance(event, h11.Data):
                self._pending = memoryview(event.data)
                return await self._readinto(view)
            self._h11_drained = True
            if isinstance(event, h11.EndOfMessage):
                return 0
        try:
            with trio.move_on_after(self._stall_s) as scope:
                n = await self._read_network(view)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise BodyTruncated(
                f"connection failed after {self.received} body bytes ({exc!r})", self.received
            ) from exc
        except httpx.TransportError as exc:
            raise BodyTruncated(
                f"connection failed after {self.received} body bytes ({exc!r})", self.received
            ) from exc
        if scope.cancelled_caught:
            raise BodyStalled(
                f"no body bytes for {self._stall_s:g} s after {self.received} bytes",
                self.received,
            )
        self.received += n
        if self._reader is not None:
            # No await between the read and this line: h11 and we agree on what is left.
            self._reader._remaining -= n
            if self._reader._remaining == 0 and self._h11 is not None:
                end = self._h11.next_event()
                if not isinstance(end, h11.EndOfMessage):  # pragma: no cover - h11 contract
                    self._h11 = None
        return n

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
        if conn is None or self.remaining != 0:
            return
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
