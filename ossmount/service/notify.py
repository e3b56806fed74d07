"""systemd's notify protocol (sd_notify(3)), spoken directly over `$NOTIFY_SOCKET`.

The protocol is one AF_UNIX datagram per message, newline-separated `NAME=value` fields, sent
to the path in `$NOTIFY_SOCKET` (a leading `@` means the abstract namespace). systemd learns who
sent it from the kernel's peer credentials, so nothing else is needed: no libsystemd, no C.

Everything here is a no-op when `$NOTIFY_SOCKET` is unset (not run by systemd, or by a unit
that is not `Type=notify`), and a send that fails is logged once and otherwise ignored: the
mount must never fail because its supervisor stopped listening.

* `ready()` — `READY=1`, once the filesystem answers;
* `status(text)` — `STATUS=`, rate-limited (at most one per `min_interval`, the last value wins;
  a held-back value goes out on the next call once due, from `status_loop`, or on `stopping()`);
* `stopping()` — flushes a held-back status, then `STOPPING=1`;
* `reloading()` — `RELOADING=1` with `MONOTONIC_USEC=` (SIGHUP), answered by `ready()`;
* `extend_timeout(usec)` / `extending(usec)` — `EXTEND_TIMEOUT_USEC=`, once, or renewed
  while slow start-up work runs (the renewals come from `run()`);
* `watchdog_loop()` — a trio task sending `WATCHDOG=1` every half `$WATCHDOG_USEC` from the
  event loop itself, so a loop that stops turning stops the pings and systemd restarts us.
  Only when `$WATCHDOG_PID` is unset or is our pid (sd_watchdog_enabled(3)). `run()` runs it
  and the timeout renewals; start it in a nursery that lives as long as the process.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import trio

__all__ = ["Notifier", "notify_address", "watchdog_interval"]

log = logging.getLogger(__name__)

# A blocked datagram send (systemd not reading) must not freeze the mount for long.
_SEND_TIMEOUT_S = 2.0


def notify_address(value: str | None) -> bytes | None:
    """The socket address for a `$NOTIFY_SOCKET` value, or None if unset or unusable.

    `/path` is a filesystem socket; `@name` the abstract socket `\\0name`. Anything else (a
    relative path, or `vsock:` of newer systemd) is not supported and disables notification.
    """
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + os.fsencode(value[1:])
    if value.startswith("/"):
        return os.fsencode(value)
    log.warning("NOTIFY_SOCKET=%r is not a path or @name: not notifying systemd", value)
    return None


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between `WATCHDOG=1` pings (half of `$WATCHDOG_USEC`), or None when off."""
    usec_text = environ.get("WATCHDOG_USEC", "")
    pid_text = environ.get("WATCHDOG_PID", "")
    try:
        usec = int(usec_text)
    except ValueError:
        return None
    if usec <= 0:
        return None
    if pid_text:
        try:
            if int(pid_text) != pid:
                return None  # meant for another process (we were forked, or are a child)
        except ValueError:
            return None
    return usec / 2 / 1_000_000


class Notifier:
    """The service's messages to systemd. Use from the trio thread (one socket, no locking)."""

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        min_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        pid: int | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self._address = notify_address(env.get("NOTIFY_SOCKET"))
        self._watchdog_s = (
            watchdog_interval(env, os.getpid() if pid is None else pid) if self._address else None
        )
        self._min_interval = min_interval
        self._clock = clock
        self._sock: socket.socket | None = None
        self._failed = False
        self._status_sent: str | None = None
        self._status_pending: str | None = None
        self._status_at: float | None = None
        self._stopping = False
        self._extensions: list[int] = []
        self._extension_wanted = trio.Event()

    @property
    def enabled(self) -> bool:
        return self._address is not None

    @property
    def watchdog_seconds(self) -> float | None:
        return self._watchdog_s

    def __repr__(self) -> str:
        where = "off" if self._address is None else repr(self._address.replace(b"\0", b"@"))
        return f"Notifier({where}, watchdog={self._watchdog_s})"

    # ----------------------------------------------------------------- sending

    def send(self, *fields: str) -> bool:
        """Send one message of `NAME=value` fields; True if it was handed to the kernel."""
        if self._address is None:
            return False
        message = "\n".join(fields).encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.settimeout(_SEND_TIMEOUT_S)
            self._sock.sendto(message, self._address)
        except OSError as exc:
            # Logged once: systemd may be restarting, or the socket gone for good.
            level = logging.DEBUG if self._failed else logging.WARNING
            self._failed = True
            log.log(level, "could not notify systemd (%s): %s", fields[0], exc)
            return False
        return True

    def ready(self, status: str | None = None) -> None:
        fields = ["READY=1"]
        if status is not None:
            fields.append(_status_field(status))
            self._status_sent, self._status_pending = status, None
            self._status_at = self._clock()
        self.send(*fields)

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self, status: str | None = None) -> None:
        """Flush a held-back status (or send `status`), then `STOPPING=1`, once."""
        if status is not None:
            self._status_pending = status
        self.flush_status()
        if not self._stopping:
            self._stopping = True
            self.send("STOPPING=1")

    def extend_timeout(self, usec: int) -> None:
        self.send(f"EXTEND_TIMEOUT_USEC={int(usec)}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    # ----------------------------------------------------------------- status, rate-limited

    def status(self, text: str) -> None:
        """Say `text` now if the last STATUS is old enough; otherwise hold it (last one wins)."""
        if self._address is None:
            return
        self._status_pending = text
        self._flush_status(force=False)

    def flush_status(self) -> None:
        """Send a held-back status now, whatever the rate limit says."""
        self._flush_status(force=True)

    def _flush_status(self, *, force: bool) -> None:
        text = self._status_pending
        if text is None:
            return
        if text == self._status_sent:
            self._status_pending = None
            return
        now = self._clock()
        if not force and self._status_at is not None and now - self._status_at < self._min_interval:
            return
        self._status_pending = None
        self._status_sent = text
        self._status_at = now
        self.send(_status_field(text))

    async def status_loop(self, describe: Callable[[], str], interval: float = 1.0) -> None:
        """Every `interval` seconds, `status(describe())` (so a held-back value goes out too)."""
        if self._address is None:
            return
        while True:
            self.status(describe())
            await trio.sleep(interval)

    # ----------------------------------------------------------------- timeouts, watchdog

    @contextmanager
    def extending(self, usec: int) -> Iterator[None]:
        """`EXTEND_TIMEOUT_USEC=usec` now, then every usec/2 (from `run`) until the body is done.

        The body should await (e.g. run blocking work in a thread) so the renewals can go out.
        A plain context manager, not a nursery: exceptions of the body pass through unchanged.
        """
        if self._address is None:
            yield
            return
        self._extensions.append(usec)
        self.extend_timeout(usec)
        self._extension_wanted.set()
        try:
            yield
        finally:
            self._extensions.remove(usec)

    async def _extend_loop(self) -> None:
        while True:
            await self._extension_wanted.wait()
            self._extension_wanted = trio.Event()
            while self._extensions:
                await trio.sleep(min(self._extensions) / 2 / 1_000_000)
                if self._extensions:
                    self.extend_timeout(max(self._extensions))

    async def run(self) -> None:
        """The background work: watchdog pings and timeout renewals. Start it in a nursery."""
        if self._address is None:
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.watchdog_loop)
            nursery.start_soon(self._extend_loop)

    async def watchdog_loop(self) -> None:
        """Ping `WATCHDOG=1` every half `$WATCHDOG_USEC`; returns at once when not asked to."""
        if self._watchdog_s is None:
            return
        log.debug("systemd watchdog: pinging every %.3f s", self._watchdog_s)
        while True:
            self.watchdog()
            await trio.sleep(self._watchdog_s)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _status_field(text: str) -> str:
    return "STATUS=" + " ".join(text.splitlines())
