"""A request body received off the event loop: one worker thread per upload body.

Why: on the event loop a 1 GiB PutObject took ~1,300 ``receive_some`` calls (each a fresh
1 MiB ``bytes``), ~1,000 hand-offs to a write thread and as many to an MD5 thread, and ~250
``to_thread`` waits for room when MD5 fell behind: ~9,200 futex calls per GiB (strace -c),
while MD5 alone (~0.75 GB/s here, one stream cannot be split) is the bound the upload path
should approach. Here one thread does ``recv_into`` into a pooled 2 MiB slab until it is
full, the CRC-64 and the write into the store file, and hands the slab to the MD5 stage
(writer.py); the event loop sees one ``to_thread`` per body (per piece between upload-fault
offsets). MD5 thus runs on its own core while the rest of the upload shares the other.

The thread handshake (start, cancel, the socket shut down on cancel so a blocked ``recv``
returns) is the client's ``SocketThreadJob``: a cancelled call never returns while its
thread can still touch the socket or the writer.

Concurrency: while ``run`` goes, only the worker thread touches the job's counters, the
connection and the writer's CRC/size/file (the MD5 stage touches only ``writer.md5`` and
the slabs it was given); the trio side reads them after ``run`` returned.
"""

from __future__ import annotations

import socket

import trio

from ossmount.oss._threadjob import SocketThreadJob

from .writer import BodyWriter

__all__ = ["PUMP_MIN", "pump_body"]

PUMP_MIN = 1 << 20  # bodies (Content-Length) over this are pumped; smaller ones stay inline


class _BodyPump(SocketThreadJob):
    """Receive exactly ``want`` bytes from the socket into ``writer`` (module docstring)."""

    def __init__(self, sock: trio.socket.SocketType, writer: BodyWriter, want: int) -> None:
        super().__init__(sock)
        self._writer = writer
        self._want = want
        self.got = 0
        self.eof = False  # the peer closed before ``want`` bytes

    def _work(self, sock: socket.socket) -> None:
        w = self._writer
        while self.got < self._want and not self.cancelled:
            slab = w.slab()
            room = min(len(slab), self._want - self.got)
            view = memoryview(slab)
            n = 0
            try:
                while n < room:
                    k = sock.recv_into(view[n:room])
                    if k == 0:
                        self.eof = True
                        break
                    n += k
            finally:
                view.release()
                if n:
                    w.commit(slab, n)  # passes the slab on
                    self.got += n
            if self.eof:
                return


async def pump_body(sock: trio.socket.SocketType, writer: BodyWriter, want: int) -> int:
    """Receive ``want`` body bytes into ``writer`` in a worker thread; returns how many came
    (fewer: the peer closed). Cancellation stops the thread before this returns."""
    writer.start_pump()
    job = _BodyPump(sock, writer, want)
    try:
        await trio.to_thread.run_sync(job.run, abandon_on_cancel=True)
    except BaseException:
        # trio stopped waiting, the thread did not: stop it (the socket is shut down, so at
        # most one slab's write remains) and wait until it has. A no-op once it finished.
        with trio.CancelScope(shield=True):
            await job.cancel_and_wait()
        raise
    return job.got
