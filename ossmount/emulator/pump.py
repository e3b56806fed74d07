"""A request body received off the event loop: one worker thread per upload body.

Why: on the event loop a 1 GiB PutObject took ~1,300 ``receive_some`` calls (each a fresh
1 MiB ``bytes``), ~1,000 hand-offs to a write thread and as many to an MD5 thread, and ~250
``to_thread`` waits for room when MD5 fell behind: ~9,200 futex calls per GiB (strace -c),
while MD5 alone (~0.75 GB/s here, one stream cannot be split) is the bound the upload path
should approach. Here one thread does the ``recv``, the CRC-64 and the write into the
store file, and hands each piece to the MD5 stage (writer.py); the event loop sees one
``to_thread`` per body (per piece between upload-fault offsets). MD5 thus runs on its own
core while the rest of the upload shares the other.

Why a fresh ``bytes`` per ``recv`` and not a reused buffer: the kernel's copy into the page
cache is at random slow on this VM, and more often so from a reused buffer. 1 GiB from a
socketpair into a new file, system seconds per run: ``recv`` into fresh 1 MiB ``bytes``
0.27-0.29 in 15 of 17 runs (0.71, 1.16 in the others); ``recv_into`` a reused 2 MiB mmap
written in 1 MiB pieces 0.18-0.27 in about half the runs, 0.34-1.9 in the rest, the same
for other write sizes and source offsets. In the emulator with ``--fast-etag`` (interleaved,
9 PUTs each, emulator system s/GiB): fresh ``bytes`` 0.33-0.81 (median 0.44), reused
slabs 0.26-1.92 (median 0.31, three over 1.1): the slabs' bad runs would make the pump,
not MD5, the bound of a faithful PUT.

The thread handshake (a cancelled call never returns while its thread can still touch the
socket or the writer) is ``ossmount.threadjob.SocketThreadJob``'s, shared with the client's
thread paths.

Concurrency: while ``run`` goes, only the worker thread touches the job's counters, the
connection and the writer's CRC/size/file (the MD5 stage touches only ``writer.md5`` and
the ``bytes`` it was given); the trio side reads them after ``run`` returned.
"""

from __future__ import annotations

import socket

import trio

from ..threadjob import SocketThreadJob
from .writer import BodyWriter

__all__ = ["PUMP_MIN", "pump_body"]

PUMP_MIN = 1 << 20  # bodies (Content-Length) over this are pumped; smaller ones stay inline
_RECV = 1 << 20  # the most one recv() asks for (it returns what the socket holds)


class _BodyPump(SocketThreadJob):
    """Receive exactly ``want`` bytes from the socket into ``writer`` (module docstring)."""

    def __init__(
        self,
        sock: trio.socket.SocketType,
        writer: BodyWriter,
        want: int,
        first: bytes,
        reserve: int,
    ) -> None:
        super().__init__(sock)
        self._first = first
        self._reserve = reserve
        self._writer = writer
        self._want = want
        self.got = 0
        self.eof = False  # the peer closed before ``want`` bytes

    def _work(self, sock: socket.socket) -> None:
        w = self._writer
        w.reserve(self._reserve)
        if self._first:
            w.commit(self._first)
            self._first = b""
        while self.got < self._want and not self.cancelled:
            data = sock.recv(min(_RECV, self._want - self.got))
            if not data:
                self.eof = True
                return
            w.commit(data)
            self.got += len(data)


async def pump_body(
    sock: trio.socket.SocketType,
    writer: BodyWriter,
    want: int,
    *,
    first: bytes = b"",
    reserve: int = 0,
) -> int:
    """Receive ``want`` body bytes into ``writer`` in a worker thread, after ``first`` (body
    bytes already read) and ``writer.reserve(reserve)``; returns how many came from the
    socket (fewer: the peer closed). Cancellation stops the thread before this returns."""
    writer.start_pump()
    job = _BodyPump(sock, writer, want, first, reserve)
    try:
        await trio.to_thread.run_sync(job.run, abandon_on_cancel=True)
    except BaseException:
        # trio stopped waiting, the thread did not: stop it (the socket is shut down, so at
        # most one piece's write remains) and wait until it has. A no-op once it finished.
        with trio.CancelScope(shield=True):
            await job.cancel_and_wait()
        raise
    return job.got
