"""Response bodies that land in their destination with one copy: `recv_into` from the socket.

Why not httpx's own body iterator: measured here (shared/measurements.md §2) it tops out near
0.75 GB/s at 1.4 CPU s/GiB with its 64 KiB reads, ~1.5 GB/s with 1 MiB reads; each read is a
fresh `bytes`, appended to h11's buffer, sliced out again as a `Data` event and then copied into
our buffer. A preallocated buffer filled by `socket.recv_into` reaches 3.7-4.9 GB/s at ~0.25
CPU s/GiB. `bench/bench_client.py` reproduces both paths side by side (`--body-path`).

How we get there while keeping httpx for connecting, pooling, timeouts and the response head:

1. httpx's transport sends the request and parses the head as usual (a streaming response).
2. The bytes h11 already buffered beyond the head (at most one 64 KiB read) are drained through
   h11's public `next_event()`, so its Content-Length reader accounts for them.
3. The rest of the body is read by us: `recv_into` on the socket for plain HTTP (zero
   intermediate copies; in a worker thread for bodies >= 1 MiB, see "Threads"), or `read()`
   on httpcore's public network stream for TLS (one copy; the SSL object has to decrypt
   somewhere).
4. We keep h11's Content-Length reader in step (`_remaining`) after every read (after the
   thread returned, on the thread path), so once the body is complete `next_event()` yields
   EndOfMessage, h11 is DONE, and httpcore returns the connection to the pool for reuse. A body
   abandoned half-way leaves h11 mid-message and httpcore closes that connection instead of
   reusing it: never a desynchronised stream.

Step 2 and 4 reach one private attribute chain (httpx's transport stream → httpcore's HTTP/1.1
connection → its `h11.Connection` and h11's `ContentLengthReader`). Every link is checked with
isinstance/getattr, and when anything does not match (HTTP/2, chunked replies, a future httpx)
we fall back to httpx's public `aiter_raw()`: slower, never wrong.
`test_fast_body_path_engaged` (tests/client/test_client_errors.py) and
tests/client/test_client_body_thread.py fail if the fast path silently stops engaging.

Why "recv_into a reused scratch window, CRC, pwrite" for files, and the measurements behind
every choice in this module (mmap, splice, SO_RCVLOWAT, window size, the thread threshold):
bench/bench_client.py's docstring.

Stall detection: every network read on the trio thread runs under a deadline of `stall_s`; no
byte for that long raises `BodyStalled` rather than hanging on a half-dead connection (the
thread path: below).

Threads
-------
The mount's daemon is one trio thread, and a cold `cp` made it CPU-bound (py-spy: FUSE replies
28 %, pwrite 22 %, recv_into 13 %, per-request httpx/signing 13 %, trio 10 %, pread 9 %). The
body loop releases the GIL in all its heavy parts (recv_into, pwrite, fastcrc), so a body of
>= THREAD_MIN_BYTES still to come from the socket runs in a worker thread
(`trio.to_thread.run_sync` with the client's own CapacityLimiter, one token per pooled
connection) and the trio thread is free to answer FUSE meanwhile. `_Pump.run`, in the thread:
a non-owning blocking `socket.socket` on the same descriptor (detached after, the socket is put
back to non-blocking with no receive timeout before the trio side sees it again), SO_RCVTIMEO =
stall_s, then per window `recv_into(..., MSG_WAITALL)` (one syscall fills a 1 MiB window) →
commit (the sink's write) → CRC; it returns what it did (bytes from h11's
buffer, bytes from the socket, bytes committed, running CRC, and how it stopped) and the trio
side updates `received`, h11's counter and the caller's `Progress`, and raises as the loop
path would (BodyStalled, BodyTruncated with the bytes reached, so the client resumes from
there with its CRC continued).

Stall in the thread: SO_RCVTIMEO bounds each recv; it returns what arrived (a partial window,
committed, then the next recv waits again) or EAGAIN with nothing, which is the stall. So a
stall is detected after stall_s..2*stall_s without a byte (the loop path: exactly stall_s).

Cancellation (the scheduler cancels part workers on ObjectChanged/corruption and at unmount,
and a discarded cache entry keeps its fd open only until it is released): a cancelled GET must
never return while its thread can still write, or a late pwrite could land in another file
that reused the descriptor number (or in a caller's buffer already reused). Chosen: the call
is `abandon_on_cancel=True` only so that trio tells us at once; on Cancelled (or
KeyboardInterrupt) we set the pump's cancel flag, shut the socket down (a recv blocked in the
thread returns at once) and wait, shielded, for the thread's own end signal before re-raising.
From the flag on the thread commits nothing more, so the wait is at most one pwrite already
under way (tested with a deliberately slow one). The shut-down connection is never reused
(h11 is left mid-body, httpcore closes it). Rejected: plain `abandon_on_cancel=True` (the
thread writes on after we return); `abandon_on_cancel=False` plus a watcher task (correct,
but a nursery per GET cost ~45 µs of trio-thread CPU here); polling a flag between short
receive timeouts (up to one timeout of latency per cancel and idle wakeups).
Not covered: closing the OssClient while GETs are in flight (the mount closes it only after
its nursery, hence every GET and so every thread, has finished).

Small bodies stay on the trio thread: the hop to a thread has a fixed cost that only pays
from one window (1 MiB) up, hence THREAD_MIN_BYTES (figures: bench/bench_client.py).

Concurrency: a BodyReader belongs to one task and one response. On the trio thread it never
awaits while h11's reader and our counters disagree (each read updates both before the next
await); on the thread path h11 is not touched until the thread has returned, and not at all
once the pump was cancelled.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import h11
import httpx
import trio
from h11._readers import ContentLengthReader

from ..crc64 import crc64
from .models import Sink

__all__ = [
    "BodyError",
    "BodyReader",
    "BodyStalled",
    "BodyTruncated",
    "DiscardSink",
    "Progress",
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

# A body with at least this many bytes still to come from the socket is received in a worker
# thread; smaller ones stay on the trio thread, where they cost no thread hop (module docstring).
THREAD_MIN_BYTES = 1024 * 1024


class BodyError(Exception):
    """The body could not be read completely; `received` bytes of it did arrive."""

    def __init__(self, message: str, received: int) -> None:
        super().__init__(message)
        self.received = received


class BodyTruncated(BodyError):
    pass


class BodyStalled(BodyError):
    pass


class Progress:
    """What one `readinto_sink` call delivered: `done` bytes, and `crc` continued over them
    from the value given (the running CRC-64 of the whole range across resumes)."""

    __slots__ = ("crc", "done")

    def __init__(self, crc: int = 0) -> None:
        self.done = 0
        self.crc = crc


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
    for attr in ("_httpcore_stream", "_stream", "_connection", "_h11_state"):
        stream = getattr(stream, attr, None)
        if stream is None:
            return None
    return stream if isinstance(stream, h11.Connection) else None


class _Pump:
    """One body's socket → sink loop, run in a worker thread (module docstring, "Threads").

    Only the worker thread touches the counters and the sink while `run` is going; the trio
    side reads them after `run` returned. `cancel` is the one call from the trio side meanwhile.
    """

    def __init__(
        self,
        sock: trio.socket.SocketType,
        sink: Sink,
        pos: int,
        count: int,
        pending: memoryview,
        crc: int | None,
        stall_s: float,
    ) -> None:
        self._sock = sock
        self._sink = sink
        self._pos = pos
        self._count = count
        self._pending = pending
        self._stall_s = stall_s
        self.crc = crc
        self.done = 0  # bytes committed to the sink
        self.from_pending = 0  # of which taken from h11's buffer
        self.net = 0  # bytes read from the socket
        self.stalled = False
        self.eof = False
        self.error: OSError | None = None
        self.cancelled = False
        self._lock = threading.Lock()  # orders `cancel` against the start and end of `run`
        self._started = False
        self._finished = False
        self._on_finish: Callable[[], object] | None = None

    async def cancel_and_wait(self) -> None:
        """From the trio side, once trio stopped waiting for `run` (the task was cancelled):
        make the thread stop, and return only when it has stopped (or will never start).

        The socket is shut down so a recv blocked in the thread returns at once; after that
        the thread only finishes the pwrite it may be in, and commits nothing more. The
        connection is not reused (see `BodyReader._readinto_sink_thread`)."""
        done = trio.Event()
        token = trio.lowlevel.current_trio_token()
        with self._lock:
            if self._finished:
                return
            self.cancelled = True
            if not self._started:
                return  # `run` will see `cancelled` first and do nothing
            self._on_finish = lambda: token.run_sync_soon(done.set)
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        await done.wait()

    def run(self) -> None:
        """The worker thread's part: recv_into → commit (pwrite) → CRC, window by window."""
        with self._lock:
            if self.cancelled:
                return
            self._started = True
        try:
            # A blocking view of the same descriptor for the duration: no dup, no close
            # (detached below); the family/type/proto given spare the kernel look-ups.
            s = self._sock
            sock = socket.socket(s.family, s.type, s.proto, fileno=s.fileno())
            try:
                sock.setblocking(True)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(self._stall_s))
                try:
                    self._loop(sock)
                finally:
                    # Back to what trio expects (non-blocking, no receive timeout) before the
                    # trio side can touch the socket again.
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(0))
                        sock.setblocking(False)
            finally:
                sock.detach()
        finally:
            with self._lock:
                self._finished = True
                on_finish = self._on_finish
            if on_finish is not None:
                on_finish()

    def _cancelled(self) -> bool:
        return self.cancelled  # set by the trio side at any time (a plain read of a bool)

    def _loop(self, sock: socket.socket) -> None:
        pending = self._pending
        while self.done < self._count and not self._cancelled():
            view = self._sink.window(self._pos + self.done, min(self._count - self.done, MAX_READ))
            filled = 0
            try:
                if pending:
                    filled = min(len(pending), len(view))
                    view[:filled] = pending[:filled]
                    pending = pending[filled:]
                    self.from_pending += filled
                while filled < len(view):
                    try:
                        # MSG_WAITALL: one syscall fills the window unless the receive timeout
                        # (stall_s) runs out, the peer closes or the trio side shuts us down.
                        n = sock.recv_into(view[filled:], len(view) - filled, socket.MSG_WAITALL)
                    except BlockingIOError:  # SO_RCVTIMEO ran out with no byte at all
                        self.stalled = True
                        return
                    except OSError as exc:
                        self.error = exc
                        return
                    if n == 0:
                        self.eof = True
                        return
                    filled += n
                    self.net += n
                    if self._cancelled():
                        return
            finally:
                # Also on failure: what arrived is kept, so a resume starts after it. Never
                # once cancelled: then the trio side may already be giving the sink up.
                if filled and not self._cancelled():
                    self.crc = _land(self._sink, view[:filled], self._pos + self.done, self.crc)
                    self.done += filled


def _land(sink: Sink, landed: memoryview, pos: int, crc: int | None) -> int | None:
    """Commit a filled window (body bytes from `pos`) to `sink`; the CRC-64 continued over it
    (None when not tracked). Both body loops land every window here, also a partial one after
    a failed read: what arrived is kept, so a resume starts after it."""
    sink.commit(landed, pos)
    return None if crc is None else crc64(landed, crc)


def _timeval(seconds: float) -> bytes:
    seconds = min(max(seconds, 0.0), 10**6)
    whole = int(seconds)
    return struct.pack("@ll", whole, int((seconds - whole) * 1e6))


class BodyReader:
    """Reads one HTTP/1.1 response body, by its Content-Length, into sinks.

    Call `readinto_sink` as often as needed (positions are the caller's), then `aclose`.
    `limiter` enables the worker-thread path for large plain-HTTP bodies.
    """

    def __init__(
        self,
        response: httpx.Response,
        *,
        stall_s: float,
        limiter: trio.CapacityLimiter | None = None,
    ) -> None:
        self._response = response
        self._stall_s = stall_s
        self._limiter = limiter
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
        self._h11_ended = False
        self._threaded = False
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
    def path_used(self) -> str:
        """`fast_path`, or 'recv_into_thread' once a body was received in a worker thread."""
        return "recv_into_thread" if self._threaded else self.fast_path

    @property
    def remaining(self) -> int | None:
        if self.content_length is None:
            return None
        return self.content_length - self.received

    async def readinto_sink(
        self, sink: Sink, pos: int, count: int, progress: Progress | None = None
    ) -> int:
        """Deliver up to `count` body bytes to `sink` at positions pos.. ; returns the number
        delivered, which is less than `count` only when the body ended (BodyTruncated if it
        ended before its Content-Length). `progress` (optional) is kept up to date with what
        was delivered and its CRC-64, also when this raises."""
        if self._sock is not None and self._limiter is not None and self.remaining:
            self._drain_h11()
            want = min(count, self.remaining)
            if want - len(self._pending) >= THREAD_MIN_BYTES:
                return await self._readinto_sink_thread(sink, pos, want, progress)
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
                    tracked = progress.crc if progress is not None else None
                    crc = _land(sink, view[:filled], pos + done, tracked)
                    if progress is not None and crc is not None:
                        progress.crc = crc
                        progress.done += filled
                    done += filled
            if filled < len(view):
                if self.remaining is None:
                    break
                raise BodyTruncated(
                    f"connection closed after {self.received} of {self.content_length} body bytes",
                    self.received,
                )
        return done

    async def _readinto_sink_thread(
        self, sink: Sink, pos: int, count: int, progress: Progress | None
    ) -> int:
        """`count` (<= remaining) body bytes, h11's buffered ones first, in a worker thread.

        When this returns or raises (Cancelled included), the thread is done and will not
        touch the sink or the socket again."""
        assert self._sock is not None
        assert self._limiter is not None
        self._threaded = True
        pump = _Pump(
            self._sock,
            sink,
            pos,
            count,
            self._pending,
            progress.crc if progress is not None else None,
            self._stall_s,
        )
        self._pending = memoryview(b"")  # count > len(pending): the pump takes all of it
        try:
            try:
                await trio.to_thread.run_sync(
                    pump.run, limiter=self._limiter, abandon_on_cancel=True
                )
            except BaseException:
                # Cancelled (or KeyboardInterrupt, which trio delivers the same way): trio
                # stopped waiting, the thread did not. Stop it, and wait until it has
                # (shielded: bounded by one pwrite once the socket is shut down). A no-op when
                # the exception came from the thread itself (it has finished).
                with trio.CancelScope(shield=True):
                    await pump.cancel_and_wait()
                raise
        finally:
            if progress is not None:
                progress.done += pump.done
                if pump.crc is not None:
                    progress.crc = pump.crc
            if pump.cancelled:
                # The socket is shut down: leave h11 mid-body so httpcore closes it.
                self._h11 = None
                self._reader = None
            else:
                self._account(pump.from_pending, pump.net)
        if pump.stalled:
            raise BodyStalled(
                f"no body bytes for {self._stall_s:g} s after {self.received} bytes",
                self.received,
            )
        if pump.error is not None:
            raise BodyTruncated(
                f"connection failed after {self.received} body bytes ({pump.error!r})",
                self.received,
            ) from pump.error
        if pump.eof:
            raise BodyTruncated(
                f"connection closed after {self.received} of {self.content_length} body bytes",
                self.received,
            )
        return pump.done

    def _account(self, from_pending: int, net: int) -> None:
        """`from_pending` bytes taken from h11's buffer and `net` read from the socket: keep
        h11's Content-Length reader in step (no await may come between a read and this)."""
        self.received += from_pending + net
        if self._reader is not None and net:
            self._reader._remaining -= net
            if self._reader._remaining == 0 and self._h11 is not None:
                end = self._h11.next_event()
                if not isinstance(end, h11.EndOfMessage):  # pragma: no cover - h11 contract
                    self._h11 = None

    def _drain_h11(self) -> None:
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
        self._h11_ended = isinstance(event, h11.EndOfMessage)

    async def _readinto(self, view: memoryview) -> int:
        self._drain_h11()
        if self._pending:
            n = min(len(view), len(self._pending))
            view[:n] = self._pending[:n]
            self._pending = self._pending[n:]
            self.received += n
            return n
        if self._h11_ended:
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
        self._account(0, n)
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
