"""A job on a trio socket's descriptor, run in one worker thread and cancellable from trio.

Why one place: the client's two thread paths (`oss/_pump.Pump`, a GET body received into
the cache; `oss/_upload_wire.BodySend`, a request body sent and its reply read) and the
emulator's upload pump (`emulator/pump.py`, a request body received into the store) need the
same guarantee, and it is easy to get subtly wrong: a cancelled call must never return while its
thread can still touch the socket, the sink or the caller's buffers (a late pwrite could land
in another file that reused the descriptor number). `oss/_pump`'s docstring says why this
design and what was rejected. Plumbing only, no protocol: the emulator may share it
(tests/unit/test_emulator_imports.py).

The handshake: `run` (in the thread) marks itself started under the lock, or does nothing if
the trio side cancelled first; `cancel_and_wait` (on the trio side, once trio stopped waiting
for `run`) sets `cancelled`, shuts the socket down so a blocked syscall returns at once, and
waits until `run` says it finished, unless `run` never started or already ended. The
subclass's `_work` sees a blocking view of the same descriptor (no dup, no close: detached
after), sets its own socket options and puts them back before it returns, and checks
`cancelled` between its steps.

Concurrency: only the worker thread touches a job's results while `run` is going; the trio
side reads them after `run` returned. `cancel_and_wait` is the one call from the trio side
meanwhile, ordered against the start and end of `run` by `_lock`.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable

import trio

__all__ = ["SocketThreadJob", "timeval"]


class SocketThreadJob:
    """Base of a job on `sock`'s descriptor in a worker thread (module docstring)."""

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self._job_sock = sock
        self.cancelled = False
        self._lock = threading.Lock()
        self._started = False
        self._finished = False
        self._on_finish: Callable[[], object] | None = None

    async def cancel_and_wait(self) -> None:
        """From the trio side, once trio stopped waiting for `run` (the task was cancelled):
        make the thread stop, and return only when it has stopped (or will never start)."""
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
            self._job_sock.shutdown(socket.SHUT_RDWR)
        await done.wait()

    def run(self) -> None:
        """The worker thread's part: `_work` on a blocking view of the descriptor."""
        with self._lock:
            if self.cancelled:
                return
            self._started = True
        try:
            # A blocking view of the same descriptor for the duration: no dup, no close
            # (detached below); the family/type/proto given spare the kernel look-ups.
            s = self._job_sock
            sock = socket.socket(s.family, s.type, s.proto, fileno=s.fileno())
            try:
                sock.setblocking(True)
                try:
                    self._work(sock)
                finally:
                    with contextlib.suppress(OSError):
                        sock.setblocking(False)  # as trio expects it
            finally:
                sock.detach()
        finally:
            with self._lock:
                self._finished = True
                on_finish = self._on_finish
            if on_finish is not None:
                on_finish()

    def _work(self, sock: socket.socket) -> None:
        """The job, on a blocking socket; puts back any option it sets before returning."""
        raise NotImplementedError


def timeval(seconds: float) -> bytes:
    """A `struct timeval` for SO_RCVTIMEO/SO_SNDTIMEO (0: no timeout)."""
    seconds = min(max(seconds, 0.0), 10**6)
    whole = int(seconds)
    return struct.pack("@ll", whole, int((seconds - whole) * 1e6))
