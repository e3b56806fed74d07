"""The control socket: `CACHE_DIR/control.sock`, how `ossmount cache clear --through-mount` asks
the daemon to drop its idle cache entries (only the daemon can, without its space accounting
going wrong).

Protocol: one request per connection. The client sends one line, a word (`clear`, `status`
or `idle`), at most `MAX_REQUEST` bytes with its newline, within `TIMEOUT_S`; the daemon answers
one line of JSON, `{"ok": true, ...figures}` or `{"ok": false, "error": "..."}`, and closes.
Anything else (garbage, a line too long, silence, a peer of another user) gets an error answer
where it can still be written, a log line, and the connection closed: a client can neither
crash nor stall the mount. At most `MAX_CLIENTS` connections are served at once; more are
closed at once with an error answer. `idle` answers `status` once no download work is
scheduled or running (`Prefetcher.wait_idle`), or an error after `IDLE_TIMEOUT_S`: it lets a
test or a script wait for the mount to settle instead of sleeping a guessed time.

Access: the socket is created 0600 (bound under a temporary name, chmodded, then renamed into
place, so it is never reachable with looser bits) in the cache dir the daemon has locked: the
flock proves that any `control.sock` already there is a stale one of a killed daemon, and the
rename replaces it. A peer must also be root or the daemon's own user (SO_PEERCRED). The path
is reached through `/proc/self/fd/DIRFD/` so a cache dir longer than a unix socket address
(108 bytes) still works; the same trick serves the client.

Concurrency: every handler runs in the daemon's trio thread; `clear` drops entries in batches of
`_BATCH`, yielding to the loop between batches so FUSE requests keep being answered while a
large cache is emptied. The store is touched only from this thread (its rule).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import trio

from ossmount.cache.store import CacheStore

__all__ = [
    "IDLE_TIMEOUT_S",
    "MAX_CLIENTS",
    "MAX_REQUEST",
    "SOCKET_NAME",
    "TIMEOUT_S",
    "ControlTarget",
    "StoreControl",
    "answer",
    "handle_stream",
    "proc_path",
    "serve_control",
]

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
MAX_REQUEST = 256  # bytes, newline included: the longest request is a word
TIMEOUT_S = 5.0  # for the request line to arrive, and again for the answer to be taken
IDLE_TIMEOUT_S = 60.0  # a mount busy for longer is answered "still busy", not waited on forever
MAX_CLIENTS = 8
_BATCH = 64  # entries dropped per step of the event loop (~130 unlinks)
_DRAIN = 1 << 20  # bytes of an unread request read and dropped before closing
_DRAIN_S = 1.0


class ControlTarget(Protocol):
    """What the socket can ask of the mount: the answers' figures, JSON-ready."""

    async def clear(self) -> dict[str, Any]: ...

    def status(self) -> dict[str, Any]: ...

    async def idle(self) -> None:
        """Return once no download work is scheduled or running."""
        ...


@dataclass
class StoreControl:
    """The mount's `ControlTarget`: its cache store, and the prefetcher's download count and
    idle wait."""

    store: CacheStore
    downloads: Callable[[], int]
    idle: Callable[[], Awaitable[None]]

    async def clear(self) -> dict[str, Any]:
        entries = freed = 0
        while True:
            batch = self.store.drop_idle(_BATCH)
            entries += batch.entries
            freed += batch.bytes
            if batch.entries < _BATCH:
                break
            await trio.lowlevel.checkpoint()  # let FUSE requests through between batches
        if entries:
            log.info(
                "control: cleared %d idle cache entries (%d bytes) of bucket %s; %d in use kept",
                entries,
                freed,
                self.store.bucket,
                batch.kept_entries,
            )
        return {
            "dropped_entries": entries,
            "dropped_bytes": freed,
            "kept_entries": batch.kept_entries,
            "kept_bytes": batch.kept_bytes,
        }

    def status(self) -> dict[str, Any]:
        stats = self.store.statistics()
        return {
            "entries": stats.entries,
            "bytes": stats.bytes,
            "in_use": stats.in_use,
            "downloads": self.downloads(),
            "evictions": stats.evictions,
            "max_bytes": stats.max_bytes,
        }


class _Refused(Exception):
    """A request we answer with an error (and log); never a crash."""


def proc_path(dir_fd: int, name: str) -> str:
    """`name` in the directory open as `dir_fd`, as a path short enough for a socket address."""
    return f"/proc/self/fd/{dir_fd}/{name}"


def _error(message: str) -> bytes:
    return json.dumps({"ok": False, "error": message}).encode() + b"\n"


async def answer(line: bytes, target: ControlTarget) -> bytes:
    """The answer line to one request line (without its newline)."""
    try:
        word = line.decode("ascii").strip()
    except UnicodeDecodeError:
        raise _Refused("the request is not ASCII") from None
    if word == "clear":
        figures = await target.clear()
    elif word == "status":
        figures = target.status()
    elif word == "idle":
        with trio.move_on_after(IDLE_TIMEOUT_S) as waited:
            await target.idle()
        if waited.cancelled_caught:
            raise _Refused(f"still busy after {IDLE_TIMEOUT_S:.0f} s")
        figures = target.status()
    else:
        raise _Refused(f"unknown request {word[:40]!r} (known: clear, status, idle)")
    return json.dumps({"ok": True, **figures}).encode() + b"\n"


async def _read_line(stream: trio.abc.ReceiveStream) -> bytes:
    buffer = b""
    while b"\n" not in buffer:
        chunk = await stream.receive_some(MAX_REQUEST)
        if not chunk:
            raise _Refused("the connection closed before a whole request line")
        buffer += chunk
        if len(buffer) > MAX_REQUEST and b"\n" not in buffer[:MAX_REQUEST]:
            raise _Refused(f"the request line is longer than {MAX_REQUEST} bytes")
    line, _, _ = buffer.partition(b"\n")
    return line


async def handle_stream(stream: trio.abc.HalfCloseableStream, target: ControlTarget) -> None:
    """Serve one connection: read one request, answer, close. Never raises (but Cancelled)."""
    async with stream:
        try:
            with trio.fail_after(TIMEOUT_S):
                line = await _read_line(stream)
            reply = await answer(line, target)
        except trio.TooSlowError:
            log.warning("control: no whole request line within %.0f s: closing", TIMEOUT_S)
            reply = _error(f"no whole request line within {TIMEOUT_S:.0f} s")
        except _Refused as exc:
            log.warning("control: refused a request: %s", exc)
            reply = _error(str(exc))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.debug("control: connection lost: %s", exc)
            return
        except Exception as exc:  # a bug in a handler: answered, logged, the mount goes on
            log.exception("control: request failed")
            reply = _error(f"internal error: {type(exc).__name__}: {exc}")
        await _finish(stream, reply, TIMEOUT_S)


def _peer_allowed(sock: trio.socket.SocketType) -> bool:
    """Root, or the daemon's own user (the socket's 0600 says the same; this is belt and braces
    for a cache dir whose permissions someone loosened)."""
    fmt = "3i"
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize(fmt))
    except OSError:
        return False
    _, uid, _ = struct.unpack(fmt, raw)
    return uid in (0, os.geteuid())


async def _bind(root: Path) -> tuple[trio.socket.SocketType, int]:
    dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        tmp = f".{SOCKET_NAME}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        await sock.bind(proc_path(dir_fd, tmp))
        os.chmod(tmp, 0o600, dir_fd=dir_fd)
        os.rename(tmp, SOCKET_NAME, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)  # replaces a stale one
        sock.listen(MAX_CLIENTS)
    except BaseException:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        os.close(dir_fd)
        raise
    return sock, dir_fd


async def serve_control(
    root: Path,
    target: ControlTarget,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `root/control.sock` until cancelled, then remove it. Raises OSError only before
    `task_status.started()` (the socket could not be made)."""
    sock, dir_fd = await _bind(root)
    try:
        with sock:
            task_status.started()
            async with trio.open_nursery() as nursery:
                server = _Server(target, nursery)
                while True:
                    await server.accept_one(sock)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(SOCKET_NAME, dir_fd=dir_fd)
        os.close(dir_fd)


class _Server:
    """Accepts connections and serves each in its own task, at most MAX_CLIENTS at once.

    `active` is counted up in the same step as a connection's task is started (before any
    await), so a burst of connects cannot overshoot the bound.
    """

    def __init__(self, target: ControlTarget, nursery: trio.Nursery) -> None:
        self.target = target
        self.nursery = nursery
        self.active = 0

    async def accept_one(self, sock: trio.socket.SocketType) -> None:
        try:
            conn, _ = await sock.accept()
        except OSError as exc:  # EMFILE and the like: wait and try again, the mount goes on
            log.warning("control: accept failed: %s", os.strerror(exc.errno or errno.EIO))
            await trio.sleep(1)
            return
        stream = trio.SocketStream(conn)
        why = None if _peer_allowed(conn) else "not allowed"
        if why is None and self.active >= MAX_CLIENTS:
            why = "too many connections"
        if why is not None:
            log.warning("control: refused a connection: %s", why)
            self.nursery.start_soon(_refuse, stream, why)
            return
        self.active += 1
        self.nursery.start_soon(self._serve, stream)

    async def _serve(self, stream: trio.SocketStream) -> None:
        try:
            await handle_stream(stream, self.target)
        finally:
            self.active -= 1


async def _refuse(stream: trio.SocketStream, why: str) -> None:
    async with stream:
        await _finish(stream, _error(why), 1.0)


async def _finish(stream: trio.abc.HalfCloseableStream, reply: bytes, send_s: float) -> None:
    """Send `reply`, then EOF, then read and discard what the client still sends (at most
    `_DRAIN` bytes, `_DRAIN_S` seconds) before the caller closes: closing a unix socket with
    unread bytes makes the client's recv fail with ECONNRESET instead of reading the answer."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        with trio.move_on_after(send_s):
            await stream.send_all(reply)
            await stream.send_eof()
        drained = 0
        with trio.move_on_after(_DRAIN_S):
            while drained < _DRAIN and (chunk := await stream.receive_some(65536)):
                drained += len(chunk)
