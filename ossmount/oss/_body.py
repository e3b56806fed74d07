"""Response bodies that land in their destination with one copy: `recv_into` from the socket.

Why not httpx's own body iterator: measured here (shared/measurements.md §2) it tops out near
0.75 GB/s at 1.4 CPU s/GiB with its 64 KiB reads, ~1.5 GB/s with 1 MiB reads; each read is a
fresh `bytes`, appended to h11's buffer, sliced out again as a `Data` event and then copied into
our buffer. A preallocated buffer filled by `socket.recv_into` reaches 3.7-4.9 GB/s at ~0.25
CPU s/GiB. `bench/bench_client.py` reproduces both paths side by side (`--body-path`).

`BodyReader` is the loop that does it, whatever carried the reply head: `_wire.WireBody` (our
own keep-alive connections, every ranged GET) or `_body_h11.H11Body` (a reply that came through
httpcore, whose h11 parser is kept in step; also httpx's public iterator as the fallback).
A subclass supplies the bytes read with the head (`_pending`), the plain socket when there is
one (`_sock`), `_read_network` and `aclose`:

1. Bytes already read with the head are delivered first.
2. The rest is read by us: `recv_into` on the socket for plain HTTP (zero intermediate copies;
   in a worker thread for bodies >= THREAD_MIN_BYTES, see `_pump`), or the stream's read for
   TLS (one copy; the SSL object has to decrypt somewhere).
3. Once the body is complete the connection can be reused; a body abandoned half-way closes it:
   never a desynchronised stream.

Why "recv_into a reused scratch window, CRC, pwrite" for files, and the measurements behind
every choice in this module (mmap, splice, SO_RCVLOWAT, window size, the thread threshold):
bench/bench_client.py's docstring.

Stall detection: every network read on the trio thread runs under a deadline of `stall_s`; no
byte for that long raises `BodyStalled` rather than hanging on a half-dead connection (the
thread path: `_pump`). A caller without a cancel scope of its own for the request's total
deadline sets `deadline` (trio time): each wait then also ends there, and the thread path is
not taken (it knows only the stall timeout). See `_client.get` for why small GETs do that.

Small bodies stay on the trio thread: the hop to a thread has a fixed cost that only pays
from one window (1 MiB) up, hence THREAD_MIN_BYTES (figures: bench/bench_client.py).

Concurrency: a BodyReader belongs to one task and one response. On the trio thread it never
awaits while the source's counters and ours disagree (each read updates both before the next
await); on the thread path the source is not touched until the thread has returned, and not
at all once the pump was cancelled.
"""

from __future__ import annotations

import math

import trio

from ._pump import MAX_READ, Pump, land
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

# False forces httpcore and httpx's public body iterator for GETs: only for side-by-side
# measurement (the bench's `--body-path httpx`) and its tests, never needed for correctness.
FAST_PATH_ENABLED = True

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


class BodyReader:
    """Reads one HTTP/1.1 response body, by its Content-Length (to the connection's end when
    there is none), into sinks.

    Call `readinto_sink` as often as needed (positions are the caller's), then `aclose`.
    `limiter` enables the worker-thread path for large plain-HTTP bodies.
    """

    # What a failed network read may raise besides OSError and trio's stream errors.
    read_errors: tuple[type[Exception], ...] = ()

    def __init__(
        self,
        content_length: int | None,
        *,
        stall_s: float,
        limiter: trio.CapacityLimiter | None,
    ) -> None:
        self.content_length = content_length
        self.received = 0
        self._stall_s = stall_s
        self._limiter = limiter
        self._pending = memoryview(b"")  # body bytes read with the head, not yet delivered
        self._sock: trio.socket.SocketType | None = None  # plain HTTP: recv_into from it
        self._ended = False  # the source has nothing beyond `_pending`
        self._threaded = False
        self._shut = False  # a cancelled pump shut the socket down: never reuse it
        self.deadline = math.inf  # trio time no wait may pass (see module docstring)

    @property
    def fast_path(self) -> str:
        """'recv_into' (plain socket), 'stream_read' (TLS) or 'httpx' (fallback)."""
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

    def _prepare(self) -> None:
        """Before the first read: a subclass collects what was read with the head."""

    def _consumed(self, net: int) -> None:
        """`net` more bytes were read from the network (a subclass keeps its parser in step)."""

    async def _read_network(self, view: memoryview) -> int:
        raise NotImplementedError

    def _read_ready(self, view: memoryview) -> int | None:
        """Bytes the network already holds, read without waiting; None when a read would
        wait (then `_read_network` waits, under the stall timeout). A subclass with a plain
        socket skips a cancel scope and a scheduler pass per read this way."""
        return None

    async def aclose(self) -> None:
        raise NotImplementedError

    async def readinto_sink(
        self, sink: Sink, pos: int, count: int, progress: Progress | None = None
    ) -> int:
        """Deliver up to `count` body bytes to `sink` at positions pos.. ; returns the number
        delivered, which is less than `count` only when the body ended (BodyTruncated if it
        ended before its Content-Length). `progress` (optional) is kept up to date with what
        was delivered and its CRC-64, also when this raises."""
        threads = self._limiter is not None and self.deadline == math.inf
        if self._sock is not None and threads and self.remaining:
            self._prepare()
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
                    crc = land(sink, view[:filled], pos + done, tracked)
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
        """`count` (<= remaining) body bytes, the buffered ones first, in a worker thread.

        When this returns or raises (Cancelled included), the thread is done and will not
        touch the sink or the socket again."""
        assert self._sock is not None
        assert self._limiter is not None
        self._threaded = True
        tracked = progress.crc if progress is not None else None
        pump = Pump(self._sock, sink, pos, count, self._pending, tracked, self._stall_s)
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
                self._shut = True  # the socket is shut down: the connection is not reused
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
        """`from_pending` bytes taken from the head's buffer and `net` read from the network
        (no await may come between a read and this)."""
        self.received += from_pending + net
        if net:
            self._consumed(net)

    async def _readinto(self, view: memoryview) -> int:
        self._prepare()
        if self._pending:
            n = min(len(view), len(self._pending))
            view[:n] = self._pending[:n]
            self._pending = self._pending[n:]
            self.received += n
            return n
        if self._ended:
            return 0
        errors: tuple[type[Exception], ...] = (
            OSError,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            *self.read_errors,
        )
        try:
            ready = self._read_ready(view)
            if ready is None:
                until = min(trio.current_time() + self._stall_s, self.deadline)
                with trio.move_on_at(until) as scope:
                    n = await self._read_network(view)
                if scope.cancelled_caught:
                    raise BodyStalled(
                        f"no body bytes for {self._stall_s:g} s after {self.received} bytes",
                        self.received,
                    )
            else:
                n = ready
        except errors as exc:
            raise BodyTruncated(
                f"connection failed after {self.received} body bytes ({exc!r})", self.received
            ) from exc
        if n == 0:
            self._ended = True
        self._account(0, n)
        return n
