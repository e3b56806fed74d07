"""A large GET body received in a worker thread: recv_into -> commit (pwrite) -> CRC.

Why a thread: the mount's daemon is one trio thread, and a cold `cp` made it CPU-bound (py-spy:
FUSE replies 28 %, pwrite 22 %, recv_into 13 %, per-request HTTP/signing 13 %, trio 10 %,
pread 9 %). This loop releases the GIL in all its heavy parts (recv_into, pwrite, fastcrc), so
a body of >= `_body.THREAD_MIN_BYTES` still to come from the socket runs here
(`trio.to_thread.run_sync` with the client's own CapacityLimiter, one token per pooled
connection) and the trio thread is free to answer FUSE meanwhile. `Pump.run`, in the thread:
a non-owning blocking `socket.socket` on the same descriptor (detached after, the socket is put
back to non-blocking with no receive timeout before the trio side sees it again), SO_RCVTIMEO =
stall_s, then per window `recv_into(..., MSG_WAITALL)` (one syscall fills a 1 MiB window) ->
commit (the sink's write) -> CRC; it returns what it did (bytes from the buffered head read,
bytes from the socket, bytes committed, running CRC, and how it stopped) and the trio side
(`_body.BodyReader`) updates its counters and the caller's `Progress`, and raises as the loop
path would (BodyStalled, BodyTruncated with the bytes reached, so the client resumes from
there with its CRC continued).

Where a cold `cp`'s daemon CPU goes now (session 7, issue 13 W1: `perf record -e task-clock
-g` of the daemon during `bench_mount.py --only cold_cp`, samples grouped by the syscall they
fall in; a loaded machine, 1.0-1.3 CPU s/GiB): pwrite into the cache file 27.5 %, the FUSE
reply's writev to /dev/fuse 26.5 %, user space (Python, fastcrc, libc) 21 %, recv_into 10 %,
pread of the cache file for FUSE reads 5.4 %, other syscalls (fdatasync, openat) 4.7 %,
futex 1.9 %. By symbol the top three are kernel copies (fuse_copy memcpy 20 %,
copy_folio_from_iter 18 %, _copy_to_iter 10 %); fastcrc is 1.6 %. This loop's own Python is a
few calls per 1 MiB window, under the noise: the body path is copy-bound (socket -> window ->
cache page; cache page -> reply buffer -> FUSE page), and what is left above ossfs2's ~1.0
s/GiB is the FUSE read path's Python per 1 MiB request and those copies, not this loop.

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
under way (tested with a deliberately slow one). The shut-down connection is never reused.
Rejected: plain `abandon_on_cancel=True` (the thread writes on after we return);
`abandon_on_cancel=False` plus a watcher task (correct, but a nursery per GET cost ~45 us of
trio-thread CPU here); polling a flag between short receive timeouts (up to one timeout of
latency per cancel and idle wakeups).
Not covered: closing the OssClient while GETs are in flight (the mount closes it only after
its nursery, hence every GET and so every thread, has finished).

Concurrency: only the worker thread touches a Pump's counters and the sink while `run` is
going; the trio side reads them after `run` returned. `cancel_and_wait` is the one call from
the trio side meanwhile, ordered against the start and end of `run` by a lock.
"""

from __future__ import annotations

import contextlib
import socket

import trio

from ..crc64 import crc64
from ..threadjob import SocketThreadJob, timeval
from .models import Sink

__all__ = ["MAX_READ", "Pump", "land"]

# Largest single socket read; larger buys nothing on loopback (measurements.md §2, 1-4 MiB).
MAX_READ = 4 * 1024 * 1024


class Pump(SocketThreadJob):
    """One body's socket → sink loop, run in a worker thread (module docstring; the thread
    handshake and `cancel_and_wait` are `ossmount.threadjob.SocketThreadJob`'s).

    Only the worker thread touches the counters and the sink while `run` is going; the trio
    side reads them after `run` returned.
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
        super().__init__(sock)
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

    def _work(self, sock: socket.socket) -> None:
        """The worker thread's part: recv_into → commit (pwrite) → CRC, window by window."""
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval(self._stall_s))
        try:
            self._loop(sock)
        finally:
            with contextlib.suppress(OSError):  # no receive timeout, as trio expects
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval(0))

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
                    self.crc = land(self._sink, view[:filled], self._pos + self.done, self.crc)
                    self.done += filled


def land(sink: Sink, landed: memoryview, pos: int, crc: int | None) -> int | None:
    """Commit a filled window (body bytes from `pos`) to `sink`; the CRC-64 continued over it
    (None when not tracked). Both body loops land every window here, also a partial one after
    a failed read: what arrived is kept, so a resume starts after it."""
    sink.commit(landed, pos)
    return None if crc is None else crc64(landed, crc)
