"""A request with a body (PutObject, UploadPart) sent and answered in one worker thread.

Why (issue 15, W13: `cp` of 1 GiB into a --rw mount is CPU-bound on 2 cores, and the daemon's
user time per GiB decides the row): through httpx/httpcore/h11 every body piece cost a trio
scheduler pass, socket-wrapper checkpoints and h11 events (per GiB ~6,300 send() calls,
~12,300 trio socket-helper calls, ~7,300 httpcore _send_event). Here the trio side signs the
request and builds its head (`OssClient._wire_head`), takes a keep-alive connection from the
client's `_wire` pool, and one `trio.to_thread.run_sync` does the rest with blocking syscalls
on the same descriptor (the GET side's pattern, `_pump`): the staged `FileRange` read with
`preadv` into one reused 1 MiB buffer for its CRC-64 (fastcrc, GIL released), then the head
with `send` (MSG_MORE: it leaves with the first body bytes) and the range with `sendfile` from
the staging descriptor (the kernel hands its page-cache pages to the socket: no copy into our
buffer and back out); then the reply head and its small body with `recv_into`. A few Python
calls per MiB, none of them trio's.

Measured: client CPU per GiB of 8 MiB parts (bench/bench_part_source.py, its docstring has
the table) 0.52-0.60 -> 0.30-0.34 s from memory pieces, 0.82-0.90 -> 0.36-0.38 s from the
staging file; the floor (no CRC, no checks) is 0.22-0.28. Through a mount (W13 shape,
`bench/bench_write_mount.py --only big --src <main> --src . --repeat 5`, medians):

    machine          daemon CPU s/GiB             MB/s          peak RSS MiB
    quiet (load ~1)  1.28 -> 1.02, 1.30 -> 1.05   483 -> 525,   77 -> 83, 84 -> 83
                                                  476 -> 520
    loaded (3-8)     1.75 -> 1.28, 1.56 -> 1.17   187 -> 290,   121 -> 83, 105 -> 84
                                                  249 -> 303

By /proc/PID/stat around one cp (loaded): user 0.50-0.68 -> 0.38-0.48 s, system 1.4-1.6 ->
0.66-0.69 s. What is left of the daemon's user time is the trio thread's (~72 % by `perf
record -e cycles:u`: the FUSE side); these worker threads take ~15 %.

With this path, keeping the writer's FUSE buffers for its parts (write/hotparts.py, 32 MiB)
no longer paid, so it was removed: W13 shape, one cp each, 6 interleaved triples on a quiet
machine (/tmp/cpone.sh, /proc/PID/stat): kept 521-553 MB/s at 1.04-1.10 daemon CPU s/GiB and
82-84 MiB peak RSS; removed (every part read back with preadv) 543-568 MB/s at 0.95-1.04 and
54 MiB; ossfs2 in the same triples 498-549 MB/s. Fresh 1 MiB buffers held for a while cost
page faults; the one reused read buffer does not.

sendfile instead of sendmsg from the CRC buffer (session 8): each byte is copied once on our
side (into the CRC buffer) instead of twice. Client CPU per GiB of staged 8 MiB parts
(bench_part_source.py, loaded machine, 3 pairs of processes taking turns) 0.44-0.45 ->
0.39-0.43 s, the emulator's CPU unchanged. Through a mount (W13 shape, `bench_write_mount.py
--only big --src <main> --src .`, load 5-8 from other work, medians [min..max]):

    rounds  daemon CPU s/GiB                        MB/s        emulator CPU s/GiB
    5       1.56 [1.37..2.89] -> 1.03 [0.99..1.16]  199 -> 292  2.62 -> 2.57
    5       1.06 [0.97..1.78] -> 1.09 [0.85..1.42]  267 -> 283  2.94 -> 2.46
    15      1.27 [0.90..1.84] -> 0.96 [0.86..1.16]  265 -> 334  2.44 -> 2.50
    15      1.20 [0.96..1.90] -> 1.02 [0.84..1.23]  291 -> 306  2.65 -> 2.66

Peak RSS the same (55 MiB). cp's close() waits longer (median 0.6-1.6 -> 1.7-1.9 s): cp
writes faster, so more of the parts are still to go when it closes; the total is shorter.

The CRC and the wire: the CRC is taken from the staged file before the bytes go, and sendfile
reads the file again as it sends (or later: TCP holds page references until acknowledged, a
retransmit reads them again). The two can differ only if the range was rewritten meanwhile;
the server's CRC is then that of what it got, not ours, the body is sent again (hashed
afresh), and a part is never called good for bytes the server does not hold (a CRC-64
collision aside). A range cut meanwhile makes sendfile return 0: StagingError naming the
object. A staged file that is short from the start is found by the CRC pass, before the head
goes: nothing is sent. A staged file sendfile cannot read (a filesystem without splice
support: EINVAL before a byte went) is read again through the CRC buffer and sent from it, as
before session 8; a change since the CRC pass is then a mismatch the same way. (mmap would
spare the CRC pass its copy too, but a staged file is truncated under a part in flight,
fs/staging.py `truncate`: touching a mapped page past the new end is SIGBUS, the daemon's
death.)

Kept from the httpcore path: a send that makes no progress for `timeout_s` (SO_SNDTIMEO), or
a reply head that does not come in `timeout_s` (SO_RCVTIMEO), fails the attempt (the same
`read_timeout_s` httpx had for write and read; sendfile to a socket waits with the socket's
send timeout as send does, and a call that made some progress returns it, so each stretch
without progress is bounded); a send refused by the peer (reset, pipe) still reads a reply the
server may have sent before it closed (an early error answer), as httpcore does; the
connection is reused only after a whole body went and a whole reply came back with
keep-alive. Not kept: a reused connection found closed is not resent on a fresh one outside
the retry budget (as the GET side does): the attempt fails and counts as one try.

The CRC pass also notes the running CRC at the offsets the caller cuts the body at
(`cuts`: the read cache's part boundaries inside an upload part), and the CRC-64s of the
pieces between them follow from those (oss/_cuts.py), so a committed file joins the read
cache without being read again (cache/adopt.py). It costs a split of the read buffer at each
cut and, per piece, one `combine` in this thread (~10-90 us): nothing per byte.

TLS (https endpoints) keeps the httpcore path: the blocking socket would bypass the SSL object.

Cancellation: as `_pump` (read its docstring, same problem: a thread must never touch the
staged fd after the call returned). The call is
`abandon_on_cancel=True` only so trio tells us at once; on Cancelled we set the cancel flag,
shut the socket down (a blocked send, sendfile or recv returns at once) and wait, shielded, for the
thread's end; the connection is then closed, never reused. (Pages sendfile queued may stay
referenced by the socket until the kernel drops them: that holds the pages, not the fd.)

Concurrency: only the worker thread touches a `BodySend`'s counters and the connection while
`run` is going; the trio side reads them after `run` returned. `cancel_and_wait` is the one
call from the trio side meanwhile, ordered against the start and end of `run` by a lock.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from ._client import OssClient

from ..threadjob import SocketThreadJob, timeval
from ._cuts import SHORT, Cuts, fold, pieces
from ._errors import describe_cause
from ._wire import MAX_HEAD, Connection, WireError, WirePool, parse_head
from ._write_types import FileRange, StagingError

__all__ = ["ENABLED", "MIN_BODY", "BodySend", "request_with_body", "send_with_body", "usable"]

ENABLED = True  # off: every body goes through httpcore (tests compare the two paths)
# Smaller bodies stay on the event loop, where a small file's commit pays no thread hop: up to
# 64 KiB on `_wire` with their head (`_small_body`), the rest through httpcore (`_write_bodies`).
MIN_BODY = SHORT  # 256 KiB
_READ = 1024 * 1024  # a staged range is read for its CRC in pieces of this size
_REPLY_CAP = 8 * 1024 * 1024  # a longer reply body is not read (the caller refuses it)
# trio sets TCP_NOTSENT_LOWAT to 16 KiB on its connections (latency for small writes): a
# blocked sendmsg of a part then wakes per 16 KiB the peer takes. Lifted while a body goes
# (system time per GiB, bench/bench_part_source.py), restored after.
_NOTSENT_LOWAT = 25  # socket.TCP_NOTSENT_LOWAT on Linux (the module lacks it before 3.12)
_NO_LOWAT = struct.pack("@I", 0xFFFFFFFF)  # the kernel's default: no limit
_GONE = frozenset((errno.EPIPE, errno.ECONNRESET, errno.ECONNABORTED))
_NO_SENDFILE = frozenset((errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP))  # the file cannot splice
_sendfile = os.sendfile  # a name of its own: tests replace it without touching os


class BodySend(SocketThreadJob):
    """One request (head + body) and its reply, run in a worker thread (module docstring; the
    thread handshake and `cancel_and_wait` are `ossmount.threadjob.SocketThreadJob`'s)."""

    def __init__(
        self,
        conn: Connection,
        head: bytes,
        body: FileRange,
        timeout_s: float,
        where: str,
        cuts: tuple[int, ...] = (),
    ) -> None:
        super().__init__(conn.sock)
        self._conn = conn
        self._head = head
        self._body = body
        self._timeout_s = timeout_s
        self._where = where
        self._cuts = cuts  # offsets in the body where `pieces` are cut (oss/_cuts.py)
        self._marks: list[int] = []  # the running CRC at each cut passed
        self.crc = 0  # CRC-64 of the body bytes sent
        self.pieces: tuple[int, ...] = ()  # CRC-64 of each piece between the cuts
        self.sent = 0  # body bytes the socket took
        self.error: str | None = None  # why no usable reply came (a transport failure)
        self.staging: str | None = None  # the staged file could not supply the body
        self.status = 0
        self.headers: dict[str, str] = {}
        self.reply = b""
        self.too_large = False  # a reply body over _REPLY_CAP (not read)
        self.keep_alive = False

    def _work(self, sock: socket.socket) -> None:
        """The worker thread's part: send head and body, then read the reply."""
        limit = timeval(self._timeout_s)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, limit)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, limit)
        lowat = sock.getsockopt(socket.IPPROTO_TCP, _NOTSENT_LOWAT)
        if lowat:
            sock.setsockopt(socket.IPPROTO_TCP, _NOTSENT_LOWAT, _NO_LOWAT)
        try:
            self._exchange(sock)
        finally:
            with contextlib.suppress(OSError):  # back to what trio expects
                if lowat:
                    sock.setsockopt(socket.IPPROTO_TCP, _NOTSENT_LOWAT, lowat)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval(0))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval(0))

    def _exchange(self, sock: socket.socket) -> None:
        try:
            self._send_file(sock, self._body)
        except BlockingIOError:  # SO_SNDTIMEO ran out without the peer taking a byte
            self.error = f"WriteTimeout: the server took no body byte in {self._timeout_s:g} s"
            return
        except OSError as exc:
            self.error = f"WriteError: {exc}"
            if exc.errno not in _GONE:
                return
            # The server closed on us: it may have answered first (an early error reply).
        if self.staging is not None or self.cancelled:
            return
        self._read_reply(sock)

    def _send_file(self, sock: socket.socket, src: FileRange) -> None:
        """The staged range's CRC first (preadv into one reused buffer), then the head and the
        range itself with sendfile (module docstring: why, and why the CRC stays honest)."""
        buf = self._hash(src)
        if buf is None:
            return
        self._send_all(sock, self._head, socket.MSG_MORE)
        pos = 0
        while pos < src.length:
            if self.cancelled:
                raise OSError(errno.ECANCELED, "cancelled")
            try:
                n = _sendfile(sock.fileno(), src.fd, src.offset + pos, src.length - pos)
            except OSError as exc:
                if pos or exc.errno not in _NO_SENDFILE:
                    raise
                self._copy_out(sock, src, buf)  # a staging filesystem sendfile cannot read
                return
            if n == 0:  # cut after it was hashed: the server's CRC could not match anyway
                self._ends_at(src, pos)
                return
            self.sent += n
            pos += n

    def _hash(self, src: FileRange) -> memoryview | None:
        """`crc` of the staged range, and the `pieces` it is cut into (in the same pass:
        oss/_cuts.py); the buffer it was read through, or None (and `staging` says why) if the
        range cannot be read."""
        buf = memoryview(bytearray(min(_READ, src.length)))
        pos = 0
        while pos < src.length and not self.cancelled:
            view = buf[: min(len(buf), src.length - pos)]
            if not self._read(src, pos, view):
                return None
            self.crc = fold(view, self.crc, pos, self._cuts, self._marks)
            pos += len(view)
        if self.cancelled:
            return None
        self.pieces = pieces(self._marks, self._cuts, src.length, self.crc)
        return buf

    def _copy_out(self, sock: socket.socket, src: FileRange, buf: memoryview) -> None:
        """The range read again into `buf` and sent from it, where sendfile cannot read the
        staged file (no splice support: EINVAL). Bytes changed since the CRC pass make a
        mismatch and a resend, as with sendfile."""
        pos = 0
        while pos < src.length:
            view = buf[: min(len(buf), src.length - pos)]
            if not self._read(src, pos, view):
                return
            self._send_all(sock, view, 0)
            self.sent += len(view)
            pos += len(view)

    def _read(self, src: FileRange, pos: int, view: memoryview) -> bool:
        """`view` filled from the range at `pos`; False (and `staging` says why) if it cannot."""
        try:
            n = os.preadv(src.fd, [view], src.offset + pos)
        except OSError as exc:
            self.staging = f"reading staged bytes at {src.offset + pos} failed: {exc}"
            return False
        if n != len(view):
            self._ends_at(src, pos + n)
            return False
        return True

    def _ends_at(self, src: FileRange, pos: int) -> None:
        self.staging = (
            f"staged file ends at {src.offset + pos}, expected bytes up to "
            f"{src.offset + src.length}"
        )

    def _send_all(self, sock: socket.socket, data: bytes | memoryview, flags: int) -> None:
        """Every byte of `data` (a blocking send may take part of it: a timeout with progress,
        a signal), unless cancelled meanwhile."""
        view = memoryview(data)
        while view:
            view = view[sock.send(view, flags) :]
            if self.cancelled and view:
                raise OSError(errno.ECANCELED, "cancelled")

    def _read_reply(self, sock: socket.socket) -> None:
        buf = self._conn.buf
        view = memoryview(buf)
        got = 0
        while True:
            try:
                n = sock.recv_into(view[got:])
            except BlockingIOError:
                self.error = f"ReadTimeout: no reply head in {self._timeout_s:g} s"
                return
            except OSError as exc:
                self.error = f"ReadError: {exc}" if got or self.error is None else self.error
                return
            if n == 0:
                if self.error is None:
                    self.error = f"ReadError: connection closed after {got} reply head bytes"
                return
            got += n
            end = buf.find(b"\r\n\r\n", max(0, got - n - 3), got)
            if 0 <= end <= MAX_HEAD:
                break
            if end > MAX_HEAD or got >= MAX_HEAD:
                self.error = f"RemoteProtocolError: reply head over {MAX_HEAD} bytes"
                return
        try:
            self.status, version, self.headers = parse_head(bytes(buf[:end]))
        except WireError as exc:
            self.error = str(exc)
            return
        self.error = None  # a reply came (after a refused send too): it decides
        self._read_reply_body(sock, bytes(buf[end + 4 : got]), version)

    def _read_reply_body(self, sock: socket.socket, pending: bytes, version: str) -> None:
        text = self.headers.get("content-length", "")
        if not text.isdigit() or "transfer-encoding" in self.headers:
            return  # no length to read to: the body is left, the connection closed
        length = int(text)
        if length > _REPLY_CAP:
            self.too_large = True
            return
        out = bytearray(pending[:length])
        while len(out) < length:
            try:
                chunk = sock.recv(length - len(out))
            except OSError:
                return
            if not chunk:
                return
            out += chunk
        self.reply = bytes(out)
        self.keep_alive = (
            version == "HTTP/1.1"
            and len(pending) <= length
            and self.sent == self._body.length
            and "close" not in self.headers.get("connection", "").lower()
        )


async def send_with_body(
    pool: WirePool,
    head: bytes,
    body: FileRange,
    *,
    timeout_s: float,
    limiter: trio.CapacityLimiter,
    where: str,
    cuts: tuple[int, ...] = (),
) -> BodySend:
    """Send `head` and `body` on a connection of `pool` and read the reply, in a worker
    thread; the finished `BodySend` says what came back (status, headers, reply, or `error`).
    Raises WireError when no connection could be made, StagingError when the staged file could
    not supply the body. `cuts`: where the body's `pieces` are cut (oss/_cuts.py)."""
    conn, _ = await pool.connection()
    job = BodySend(conn, head, body, timeout_s, where, cuts)
    try:
        try:
            await trio.to_thread.run_sync(job.run, limiter=limiter, abandon_on_cancel=True)
        except BaseException:
            # Cancelled (or KeyboardInterrupt): trio stopped waiting, the thread did not. Stop
            # it and wait until it has (shielded: the socket is shut down, so at most one
            # piece's preadv or CRC remains). A no-op when the thread had finished.
            with trio.CancelScope(shield=True):
                await job.cancel_and_wait()
            raise
    finally:
        pool.release(conn, job.keep_alive and not job.cancelled)
    if job.staging is not None:
        raise StagingError(f"{where}: {job.staging}")
    return job


def usable(client: OssClient, body: FileRange) -> bool:
    """Whether this path should carry `body` for `client`: over plain HTTP (TLS keeps
    httpcore, see the module docstring), and a body above `MIN_BODY`."""
    return ENABLED and body.length > MIN_BODY and client._scheme == "http"


async def request_with_body(
    client: OssClient,
    method: str,
    key: str,
    query: list[tuple[str, str]],
    headers: dict[str, str],
    body: FileRange,
    cuts: Cuts | None = None,
) -> tuple[dict[str, str], bytes, int, int]:
    """One signed attempt of a request with a body (the caller sets Content-Length): the
    reply's lower-case headers, its body, the CRC-64 of the body bytes sent and their number;
    `cuts.pieces` are set from the same pass. A non-2xx reply raises its typed OssError, a
    failed exchange OssTransportError."""
    where = f"{method} oss://{client.config.bucket}/{key}"
    head = await client._wire_head(method, key, query, headers, where)
    try:
        job = await send_with_body(
            client._wire, head, body, timeout_s=client.config.read_timeout_s,
            limiter=client._body_threads, where=where, cuts=cuts.at if cuts else (),
        )  # fmt: skip
    except WireError as exc:
        raise client._wire_failed(method, key, describe_cause(exc)) from exc
    if job.error is not None:
        raise client._wire_failed(method, key, job.error)
    if cuts is not None:
        cuts.pieces = job.pieces
    client._wire_replied(method, key, job.status, job.headers)
    over = _REPLY_CAP if job.too_large else None
    client._wire_checked(key, job.status, job.headers, job.reply, over_cap=over)
    return job.headers, job.reply, job.crc, job.sent
