"""Logging setup: one line per event, readable at 3 a.m., secrets never written.

* Foreground: stderr, `time level logger: message`.
* Under systemd (JOURNAL_STREAM set): stderr with `<N>` priority prefixes, which journald turns
  into real priorities; journald adds its own timestamps.
* Daemonized: `--log-file` if given, else syslog via /dev/log when it exists.

A log file names objects (bucket and key names an operator may consider private), so it is
created mode 0600 (`open_private`); an existing file keeps the mode its owner gave it.

A redaction filter on every handler scrubs Authorization headers, signatures, tokens and known
secret values (ossmount.oss.redact), so even a debug dump of a request cannot leak a secret.

Object keys are anything (a newline, an escape sequence), so `OneLineFilter` escapes control
characters in every message: a key cannot forge a log line or recolour a terminal, and call
sites log keys plainly (`oss://bucket/key`) instead of each quoting them its own way.

WARNINGs are recoverable trouble (a part that failed and will be fetched again, a retry), and
trouble comes in storms: `RateLimitFilter` lets through at most `burst` WARNINGs of one message
template per logger per `period_s`, counts the rest, and then writes one line
`suppressed K similar messages in the last N s: <template>`. ERRORs are never suppressed.

pyfuse3 logs an ERROR whenever a reply finds that the kernel no longer waits for it (ENOENT):
a request the caller interrupted, or a release the kernel sent in the background for a file
closed just before an unmount. Nothing is lost either way, so `KernelGaveUpFilter` turns that
one message into a DEBUG line that says so.
"""

from __future__ import annotations

import atexit
import io
import logging
import logging.handlers
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

__all__ = [
    "KernelGaveUpFilter",
    "OneLineFilter",
    "RateLimitFilter",
    "flush_suppressed",
    "has_syslog",
    "open_private",
    "setup_logging",
]

_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{_PRIORITY.get(record.levelno, 6)}>"
        return prefix + super().format(record).replace("\n", "\n" + prefix)


# C0 controls and DEL; tab stays readable as is.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _escape(match: re.Match[str]) -> str:
    return {"\n": "\\n", "\r": "\\r"}.get(match.group(), f"\\x{ord(match.group()):02x}")


class OneLineFilter(logging.Filter):
    """Escapes control characters in the message (not in a traceback, which is ours)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if _CONTROL.search(message):
            record.msg = _CONTROL.sub(_escape, message)
            record.args = None
        return True


class KernelGaveUpFilter(logging.Filter):
    """On the `pyfuse3` logger: its "fuse_reply_* failed with No such file or directory"
    ERROR becomes DEBUG (see the module docstring), dropped unless DEBUG is on."""

    _SIGN = "fuse_reply_* failed with No such file or directory"

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or self._SIGN not in record.getMessage():
            return True
        record.msg = (
            f"{record.getMessage()}: the kernel no longer waited for this reply "
            "(an interrupted request, or a file closed just before an unmount)"
        )
        record.args = None
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(logging.DEBUG)


class _Window:
    __slots__ = ("level", "logger", "passed", "start", "suppressed", "template")

    def __init__(self, start: float, logger: str, template: str, level: int) -> None:
        self.start = start
        self.logger = logger
        self.template = template
        self.level = level
        self.passed = 0
        self.suppressed = 0


class RateLimitFilter(logging.Filter):
    """At most `burst` WARNINGs per (logger, message template) per `period_s`, then a summary.

    The summary of a window is written when the window has ended and any record passes this
    filter (so a storm that stops is still reported), or at `flush()` (at exit). It goes to
    `emit`, normally the handler this filter sits on, so it passes the handler's other filters
    (redaction) too. Thread-safe: records come from worker threads as well.
    """

    SUMMARY_ATTR = "ossmount_rate_summary"
    MAX_KEYS = 1000  # templates are code constants; a bound in case one is an f-string

    def __init__(
        self,
        *,
        burst: int = 5,
        period_s: float = 60.0,
        levels: frozenset[int] = frozenset({logging.WARNING}),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.burst = burst
        self.period_s = period_s
        self.levels = levels
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str], _Window] = {}
        self._next_sweep = 0.0
        self._pending: list[logging.LogRecord] = []  # summaries of windows ended by _admit
        self.emit: Callable[[logging.LogRecord], object] | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, self.SUMMARY_ATTR, False):
            return True
        now = self._clock()
        with self._lock:
            due = self._sweep(now) if now >= self._next_sweep else []
            keep = True
            if record.levelno in self.levels:
                keep = self._admit(record, now)
            due += self._pending
            self._pending = []
        for summary in due:
            self._emit(summary)
        return keep

    def _admit(self, record: logging.LogRecord, now: float) -> bool:
        key = (record.name, str(record.msg))
        window = self._windows.get(key)
        if window is None or now - window.start >= self.period_s:
            if window is not None and window.suppressed:
                # Reached before the sweep saw it: report it ahead of this record.
                self._pending.append(self._summary(window, now))
            if window is None and len(self._windows) >= self.MAX_KEYS:
                return True
            window = self._windows[key] = _Window(now, key[0], key[1], record.levelno)
        if window.passed < self.burst:
            window.passed += 1
            return True
        window.suppressed += 1
        return False

    def _sweep(self, now: float) -> list[logging.LogRecord]:
        self._next_sweep = now + min(1.0, self.period_s)
        due, self._pending = self._pending, []
        for key, window in list(self._windows.items()):
            if now - window.start >= self.period_s:
                del self._windows[key]
                if window.suppressed:
                    due.append(self._summary(window, now))
        return due

    def _summary(self, window: _Window, now: float) -> logging.LogRecord:
        record = logging.LogRecord(
            window.logger,
            window.level,
            __file__,
            0,
            "suppressed %d similar messages in the last %.0f s: %s",
            (window.suppressed, now - window.start, window.template),
            None,
        )
        setattr(record, self.SUMMARY_ATTR, True)
        return record

    def _emit(self, record: logging.LogRecord) -> None:
        if self.emit is not None:
            self.emit(record)

    def flush(self) -> None:
        """Write the summary of every window with suppressed messages, ended or not."""
        now = self._clock()
        with self._lock:
            due, self._pending = self._pending, []
            for window in self._windows.values():
                if window.suppressed:
                    due.append(self._summary(window, now))
            self._windows.clear()
        for summary in due:
            self._emit(summary)


def _private_opener(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)  # the mode applies only when the file is created


def open_private(path: Path) -> TextIO:
    """Open `path` for appending, creating it mode 0600 if it does not exist."""
    return open(path, "a", encoding="utf-8", opener=_private_opener)


class _PrivateFileHandler(logging.FileHandler):
    """A FileHandler whose file, if it creates it, only its owner may read."""

    def _open(self) -> io.TextIOWrapper:
        # Always appended to: setup_logging makes it with the default mode "a".
        return open(
            self.baseFilename,
            "a",
            encoding=self.encoding,
            errors=self.errors,
            opener=_private_opener,
        )


_limiter: RateLimitFilter | None = None


def flush_suppressed() -> None:
    """Write the pending "suppressed K similar messages" lines now (at exit, at unmount)."""
    if _limiter is not None:
        _limiter.flush()


def has_syslog() -> bool:
    return os.path.exists("/dev/log")


def setup_logging(level: str, *, foreground: bool, log_file: Path | None = None) -> None:
    from ossmount.oss.redact import RedactingFilter

    global _limiter
    if _limiter is not None:
        _limiter.flush()  # into the handler it belongs to, before that one goes
        _limiter.emit = None
    else:
        atexit.register(flush_suppressed)  # runs before logging's own shutdown (registered earlier)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler: logging.Handler
    if log_file is not None:
        handler = _PrivateFileHandler(log_file)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
        )
    elif foreground or not has_syslog():
        handler = logging.StreamHandler(sys.stderr)
        if not foreground:
            # A daemon with nowhere else to log: until it detaches, only trouble reaches the
            # terminal of whoever ran `mount`; the outcome itself is the parent's one line.
            handler.setLevel(logging.WARNING)
        if os.environ.get("JOURNAL_STREAM"):
            handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
        else:
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
            )
    else:
        handler = logging.handlers.SysLogHandler(address="/dev/log")
        handler.setFormatter(
            logging.Formatter("ossmount[%(process)d]: %(levelname)s %(name)s: %(message)s")
        )
    # Rate limit first: it keys on the message template, which redaction may rewrite.
    _limiter = RateLimitFilter()
    _limiter.emit = handler.handle
    handler.addFilter(_limiter)
    handler.addFilter(RedactingFilter())
    handler.addFilter(OneLineFilter())
    root.addHandler(handler)
    root.setLevel(level)
    fuse_log = logging.getLogger("pyfuse3")
    if not any(isinstance(f, KernelGaveUpFilter) for f in fuse_log.filters):
        fuse_log.addFilter(KernelGaveUpFilter())
    # httpx/httpcore log every request at INFO/DEBUG with full URLs; ours are better.
    for noisy in ("httpx", "httpcore", "hpack"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
