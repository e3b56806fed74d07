"""Ranged GETs on our own keep-alive HTTP/1.1 connections: the request head written in one
string, the reply head parsed by hand, the body received by `_body.BodyReader` (recv_into).

Why not httpcore for GETs (issue 13: a random reader pays one 64 KiB GET per read, a small file
one GET, so the fixed cost per request is the figure): measured on the 2 vCPU VM with
`bench/bench_requests.py --what gets,floor --size-kib 64 --objects 2000 --repeat 3` (the
emulator in its own process; medians of 3 interleaved invocations each; CPU is the client
process's user+sys):

    path                                               client CPU us/GET   wall us/GET
    httpcore pool + h11 + httpx.Response (before)       829 [725..1007]     1,120 quiet
    this module                                         278 [271..291]        ~570 quiet
    floor: one pre-built request, blocking raw socket    ~45                  ~250 quiet

(Wall figures from runs on a quiet machine; in the interleaved runs, with other work on both
cores, they were 2,150-3,950 before and 1,010-1,760 after.) Of the ~280 us left, ~50 are
system time (send, epoll, recv); Python calls per GET went from ~2,170 to ~700, a third of
them trio's (cancel scopes, the socket wrappers' checkpoints). Trying reads with `os.readv`
before trio's socket methods (no checkpoint when the bytes are there) changed nothing
measurable (3 interleaved pairs, within the noise), so the trio socket methods stay. For
scale: a trio client sending one pre-built request on a trio socket spends ~75 us user CPU per
64 KiB GET; this path ~230 (signing, head building and parsing, reply checks, cancel scopes).

The mount, referee W8 (`bench/bench_mount.py --only randread`, main vs this branch, 3
interleaved pairs on a loaded machine, median [min..max]): 4.09 s [3.24..6.06] -> 2.21 s
[1.66..2.32] for 2,000 reads; daemon CPU per read 0.92 -> 0.41-0.50 ms, emulator CPU per
read 0.35 -> 0.27-0.33 ms (its hand-parsed GET heads, emulator/heads.py).

httpcore spends its time validating every header byte string (`enforce_bytes`, h11's
`normalize_and_validate`), in five cancel scopes per request and in h11's event machinery
(~2,200 Python calls per GET in all). Our request has a fixed shape we build ourselves (every
value comes from the signer, the URI encoder or a reply's ETag), so one f-string per request and
a split of the reply head replace all of that. The same pool now carries HEADs
(`OssClient.head_headers`), small request bodies (`_small_body`), bodiless writes (copies,
deletes, initiates, completes) and large bodies (`_upload_wire`). httpx (and httpcore) stay for
LIST, GetSymlink, bucket-level requests, and everything when `_body.FAST_PATH_ENABLED` is off.

What the lean path keeps from httpcore's behaviour: a pool of at most `pool_size` connections
(waiting for one is not a fault), idle connections dropped after `keepalive_s` and checked with
a zero-timeout poll before reuse (a server that closed one makes it readable), a request that
meets a reused connection the server had closed in the meantime (EOF or reset before any reply
byte) sent again once on a new connection (GETs are idempotent), a connection reused only after
its reply body was read exactly to its Content-Length and without `Connection: close`, TLS
through `trio.SSLStream` with the same SSL context httpx would build.

Syscalls first (session 7): a request head goes out with one `os.write` and a reply is read
with `os.readv`, falling back to trio (`wait_readable`, trio's `send`) only on EAGAIN; a free
pool slot is taken with `acquire_nowait`, and a body read whose bytes are already there skips
the stall timeout's cancel scope (`_body.BodyReader._read_ready`). trio's socket methods and
`Semaphore.acquire` each end in a checkpoint, a whole scheduler pass even when nothing waits: a
spot read paid ~5 of them, now at most 2 (FUSE readable, reply head readable; about half of
the heads are already there when the send returns, the emulator having run meanwhile).
Cancellation still arrives at those waits. Measured (`bench_requests.py --what gets,floor
--size-kib 64 --repeat 3`, 3 interleaved pairs, each checkout with its own emulator): client
CPU per GET 215/207/206 -> 175/175/177 us; cProfile: Python calls per GET 556 -> 410, per W8
read in the daemon (`bench_mount.py --profile-daemon`) 962 -> 776.

Cancel scopes only for waits (session 8): a trio cancel scope costs ~11-13 us here, and the
head exchange ran in one per GET. Now the head is written and the reply read once with plain
syscalls before any scope; a scope (head timeout, or the request's deadline if sooner: see
`_client.get` for GETs that pass one) opens only when something must be waited for, about half
of the spot GETs. With the signing memo (`_gethead`) and the header-line memo below, client
CPU per spot GET went 187 -> 144 us (`bench_requests.py --what spots`, figures there).

Concurrency: the pool is shared by all tasks of the trio thread. `_idle` changes only between
awaits (pop on checkout, append on release); a connection belongs to exactly one task from
checkout until `release`, and a slot of `_slots` is held for exactly that time.
"""

from __future__ import annotations

import math
import os
import select
import ssl

import trio

from ._body import BodyError, BodyReader
from .models import BufferSink

__all__ = ["Connection", "Reply", "WireBody", "WireError", "WirePool", "parse_head", "request_head"]

MAX_HEAD = 64 * 1024  # a longer reply head is refused (h11's default limit too)
_RECV = 128 * 1024  # one read for the head: a 64 KiB spot block arrives in the same read


class WireError(Exception):
    """No usable reply head: connect, send or the head failed (the message says which)."""


class _Stale(Exception):
    """A reused connection ended before any reply byte: the server had closed it."""


class Connection:
    """One TCP (or TLS) connection to the endpoint, with its own head buffer."""

    __slots__ = ("buf", "fd", "idle_since", "poller", "sock", "tls")

    def __init__(self, sock: trio.socket.SocketType, tls: trio.SSLStream[trio.SocketStream] | None):
        self.sock = sock
        self.fd = sock.fileno()
        self.tls = tls
        self.buf = bytearray(_RECV)
        self.idle_since = 0.0
        self.poller: select.poll | None = None  # made at the first `quiet`, then reused

    def close(self) -> None:
        """Synchronous (also from `finally` under cancellation); a TLS connection is cut
        without close_notify, as httpcore does on a failed one."""
        self.sock.close()

    def quiet(self) -> bool:
        """An idle connection should have nothing to read; readable means the server closed
        it (EOF) or sent something unasked: either way not reusable."""
        try:
            poller = self.poller
            if poller is None:
                # not select.select: descriptors above 1023 are common here
                poller = self.poller = select.poll()
                poller.register(self.fd, select.POLLIN)
            return not poller.poll(0)
        except (OSError, ValueError):
            return False

    def send_nowait(self, data: bytes) -> int:
        """How much of `data` one write() took without waiting (0 on TLS: the SSL object
        writes). A request head fits the socket buffer, so normally all of it: no scheduler
        pass (see "Syscalls first" in the module docstring)."""
        if self.tls is not None:
            return 0
        try:
            return os.write(self.fd, data)
        except BlockingIOError:
            return 0

    async def send_all(self, data: bytes, sent: int) -> None:
        """The rest of `data` after its first `sent` bytes."""
        if self.tls is not None:
            await self.tls.send_all(data[sent:])
            return
        view = memoryview(data)[sent:]
        while view:
            n = await self.sock.send(view)
            view = view[n:]

    def recv_nowait(self, view: memoryview) -> int | None:
        """What is there already; None when a read would wait (always on TLS)."""
        if self.tls is not None:
            return None
        try:
            return os.readv(self.fd, [view])
        except BlockingIOError:
            return None

    async def recv_into(self, view: memoryview) -> int:
        """Read what is there; wait for readability only when nothing is."""
        if self.tls is None:
            while True:
                try:
                    return os.readv(self.fd, [view])
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(self.sock)
        data = await self.tls.receive_some(len(view))
        view[: len(data)] = data
        return len(data)


class Reply:
    """A reply head; the body follows on `conn` (its first bytes are in `pending`)."""

    __slots__ = ("chunked", "conn", "content_length", "headers", "keep_alive", "pending", "status")

    def __init__(
        self, conn: Connection, head: bytes, pending: memoryview, *, bodiless: bool = False
    ) -> None:
        """`bodiless`: the reply to a HEAD request."""
        self.conn = conn
        self.status, version, self.headers = parse_head(head)
        length = self.headers.get("content-length", "")
        self.chunked = "transfer-encoding" in self.headers
        self.content_length = int(length) if length.isdigit() and not self.chunked else None
        if bodiless or self.status in (204, 304):
            # No body whatever the headers say (RFC 9110 6.4.1, 9.3.2): a HEAD's reply has the
            # object's Content-Length, and a 204 to a DELETE may carry none, which read "to
            # EOF" waited for the server to close.
            self.chunked, self.content_length = False, 0
        self.keep_alive = (
            version == "HTTP/1.1"
            and self.content_length is not None
            and "close" not in self.headers.get("connection", "").lower()
        )
        if self.content_length is not None and len(pending) > self.content_length:
            self.keep_alive = False  # bytes past the body: never parse them as the next reply
            pending = pending[: self.content_length]
        self.pending = pending


def request_head(
    method: str, target: str, authority: str, headers: dict[str, str], what: str
) -> bytes:
    """A whole request head without body. Every value comes from the signer, the URI encoder
    or a reply's ETag; a line break in one would inject a header, so the head's line count is
    checked (cheaper than checking every value). `what` names the request in that error."""
    lines = [f"{k}: {v}\r\n" for k, v in headers.items()]
    text = f"{method} {target} HTTP/1.1\r\nHost: {authority}\r\n" + "".join(lines) + "\r\n"
    if text.count("\n") != len(lines) + 3:
        raise ValueError(f"a header of {what} has a line break")
    return text.encode("latin-1")


def parse_head(head: bytes) -> tuple[int, str, dict[str, str]]:
    """Status, HTTP version and lower-case name -> value (the last of a repeated name) of a
    reply head without its final blank line."""
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit() or rest[3:4] not in ("", " "):
        raise WireError(f"not an HTTP/1.x status line: {lines[0][:100]!r}")
    headers: dict[str, str] = {}
    known = _LINES
    for i in range(1, len(lines)):
        line = lines[i]
        pair = known.get(line)
        if pair is None:
            name, sep, value = line.partition(":")
            if not sep or not name or name[-1] in " \t" or name[0] in " \t":
                raise WireError(f"malformed reply header line: {line[:100]!r}")
            pair = (name.lower(), value.strip(" \t"))
            if len(line) <= _LINE_KEPT_MAX:
                if len(known) >= _LINES_KEPT:
                    known.clear()
                known[line] = pair
        headers[pair[0]] = pair[1]
    return int(code), version, headers


# Header lines seen before, split: most lines of a GET reply repeat from one reply of an object
# to the next (Server, ETag, Last-Modified, the CRC, types, Connection), and a random reader
# gets one reply per read; looking a line up is ~40 % cheaper than splitting, checking,
# lower-casing and stripping it again (5.1 -> 3.0 us per 15-line head). Emptied when full, so
# lines that never repeat (Date, request ids) cannot keep newer objects' lines out for long;
# a line over 256 characters is not kept, so the memo holds at most ~128 KiB of text.
_LINES: dict[str, tuple[str, str]] = {}
_LINES_KEPT = 512
_LINE_KEPT_MAX = 256


class WirePool:
    """Keep-alive connections to one endpoint, for GET requests without a body."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        pool_size: int,
        ssl_context: ssl.SSLContext | None,
        connect_timeout_s: float,
        keepalive_s: float,
    ) -> None:
        """`host`: to connect to (and the TLS server name); `ssl_context` None for plain HTTP."""
        self._host = host
        self._port = port
        self._ssl = ssl_context
        self._connect_timeout_s = connect_timeout_s
        self._keepalive_s = keepalive_s
        self._slots = trio.Semaphore(pool_size)
        self._idle: list[Connection] = []

    @property
    def connections(self) -> list[Connection]:
        """The idle connections, ready for reuse (tests look at their number)."""
        return list(self._idle)

    async def aclose(self) -> None:
        while self._idle:
            self._idle.pop().close()

    async def request(self, head: bytes, timeout_s: float, deadline: float = math.inf) -> Reply:
        """Send `head` (a whole request without body) and read the reply head, waiting at
        most `timeout_s` for it; no wait (a free connection, connecting, the reply head) goes
        past `deadline` (trio time). The caller must `release` the reply's connection."""
        try:
            self._slots.acquire_nowait()  # no scheduler pass when a slot is free
        except trio.WouldBlock:
            with trio.move_on_at(deadline) as scope:
                await self._slots.acquire()
            if scope.cancelled_caught:  # (then the slot was not taken)
                raise WireError(
                    "PoolTimeout: no free connection before the request's deadline"
                ) from None
        try:
            while True:
                conn = self._checkout()
                reused = conn is not None
                if conn is None:
                    conn = await self._connect(deadline)
                try:
                    return await self._exchange(conn, head, timeout_s, deadline)
                except _Stale as exc:
                    conn.close()
                    if not reused:
                        raise WireError("the server closed the connection without a reply") from exc
                except BaseException:
                    conn.close()
                    raise
        except BaseException:
            self._slots.release()
            raise

    async def connection(self) -> tuple[Connection, bool]:
        """A connection with its slot held, for a caller that does its own exchange (request
        bodies, `_upload_wire`); (conn, reused). Give it back with `release`."""
        try:
            self._slots.acquire_nowait()
        except trio.WouldBlock:
            await self._slots.acquire()
        try:
            conn = self._checkout()
            return (conn, True) if conn is not None else (await self._connect(math.inf), False)
        except BaseException:
            self._slots.release()
            raise

    def release(self, conn: Connection, reusable: bool) -> None:
        """Give a connection back after its reply (body read to its end when `reusable`)."""
        self._slots.release()
        if reusable:
            conn.idle_since = trio.current_time()
            self._idle.append(conn)
        else:
            conn.close()

    def _checkout(self) -> Connection | None:
        now = trio.current_time()
        while self._idle:
            conn = self._idle.pop()  # the most recently used: the least likely to be stale
            if now - conn.idle_since < self._keepalive_s and conn.quiet():
                return conn
            conn.close()
        return None

    async def _connect(self, deadline: float) -> Connection:
        where = f"{self._host}:{self._port}"
        try:
            until = min(trio.current_time() + self._connect_timeout_s, deadline)
            with trio.move_on_at(until) as scope:
                stream = await trio.open_tcp_stream(self._host, self._port)
                tls = None
                if self._ssl is not None:
                    tls = trio.SSLStream(
                        stream, self._ssl, server_hostname=self._host, https_compatible=True
                    )
                    try:
                        await tls.do_handshake()
                    except BaseException:
                        stream.socket.close()
                        raise
                return Connection(stream.socket, tls)
        except OSError as exc:
            raise WireError(f"ConnectError: {where}: {exc}") from exc
        except trio.BrokenResourceError as exc:
            raise WireError(f"ConnectError: TLS with {where} failed") from exc.__cause__ or exc
        assert scope.cancelled_caught
        raise WireError(
            f"ConnectTimeout: no connection to {where} in {self._connect_timeout_s:g} s"
        )

    async def _exchange(
        self, conn: Connection, head: bytes, timeout_s: float, deadline: float
    ) -> Reply:
        """Send `head` and read the reply head. The first write and read go without a cancel
        scope (~11 us each on this VM): a head is written whole and, about half the time, the
        reply is there when the write returns; only a wait runs under the timeout's scope."""
        reading = _HeadRead(conn, bodiless=head.startswith(b"HEAD "))
        try:
            sent = conn.send_nowait(head)
            if sent == len(head):
                n = conn.recv_nowait(reading.view)
                if n is not None:
                    reply = reading.took(n)
                    if reply is not None:
                        return reply
            with trio.move_on_at(min(trio.current_time() + timeout_s, deadline)):
                if sent < len(head):
                    await conn.send_all(head, sent)
                while True:
                    reply = reading.took(await conn.recv_into(reading.view[reading.got :]))
                    if reply is not None:
                        return reply
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            if reading.got == 0:
                raise _Stale from exc
            raise WireError(f"ReadError: {exc!r}") from exc
        raise WireError(f"ReadTimeout: no reply head in {timeout_s:g} s")


class _HeadRead:
    """A reply head being read into its connection's buffer."""

    __slots__ = ("bodiless", "conn", "got", "view")

    def __init__(self, conn: Connection, *, bodiless: bool) -> None:
        self.conn = conn
        self.bodiless = bodiless
        self.view = memoryview(conn.buf)
        self.got = 0

    def took(self, n: int) -> Reply | None:
        """`n` more bytes were read: the reply once its head is complete, else None."""
        got = self.got
        if n == 0:
            if got == 0:
                raise _Stale
            raise WireError(f"ReadError: connection closed after {got} head bytes")
        buf = self.conn.buf
        self.got = got = got + n
        end = buf.find(b"\r\n\r\n", max(0, got - n - 3), got)
        if 0 <= end <= MAX_HEAD:
            return Reply(
                self.conn, bytes(buf[:end]), self.view[end + 4 : got], bodiless=self.bodiless
            )
        if end > MAX_HEAD or got >= MAX_HEAD:  # (a read never fills the buffer)
            raise WireError(f"RemoteProtocolError: reply head over {MAX_HEAD} bytes")
        return None


class WireBody(BodyReader):
    """The body of a `Reply`; `aclose` gives the connection back (reused only when complete)."""

    def __init__(
        self,
        pool: WirePool,
        reply: Reply,
        *,
        stall_s: float,
        limiter: trio.CapacityLimiter | None,
    ) -> None:
        super().__init__(reply.content_length, stall_s=stall_s, limiter=limiter)
        self.status = reply.status
        self.headers = reply.headers
        self._pool: WirePool | None = pool
        self._reply = reply
        self._pending = reply.pending
        self._tls = reply.conn.tls
        if self._tls is None:
            self._sock = reply.conn.sock
        self._fd = reply.conn.fd

    def _read_ready(self, view: memoryview) -> int | None:
        if self._sock is None:
            return None  # TLS: the SSL object may hold decrypted bytes the socket does not show
        try:
            return os.readv(self._fd, [view])
        except BlockingIOError:
            return None

    async def _read_network(self, view: memoryview) -> int:
        if self._sock is not None:
            return await self._sock.recv_into(view, len(view))
        assert self._tls is not None
        data = await self._tls.receive_some(len(view))
        view[: len(data)] = data
        return len(data)

    async def read_capped(self, limit: int) -> bytes:
        """At most `limit` + 1 bytes of the body (an error reply's XML); b"" if it fails.
        The buffer is the body's size when the reply says it: a 1 MiB bytearray per small
        PUT or copy reply (most are empty) cost its zeroing and fresh pages every time."""
        remaining = self.remaining
        buf = bytearray(limit + 1 if remaining is None else min(limit, remaining) + 1)
        try:
            n = await self.readinto_sink(BufferSink(buf), 0, len(buf))
        except BodyError:
            return b""
        return bytes(buf[:n])

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            reusable = self._reply.keep_alive and self.remaining == 0 and not self._shut
            pool.release(self._reply.conn, reusable)
