"""Logging setup: one line per event, readable at 3 a.m., secrets never written.

* Foreground: stderr, `time level logger: message`.
* Under systemd (JOURNAL_STREAM set): stderr with `<N>` priority prefixes, which journald turns
  into real priorities; journald adds its own timestamps.
* Daemonized: `--log-file` if given, else syslog via /dev/log when it exists.

A redaction filter on every handler scrubs Authorization headers, signatures, tokens and known
secret values (ossmount.oss.redact), so even a debug dump of a request cannot leak a secret.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path

__all__ = ["has_syslog", "setup_logging"]

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


def has_syslog() -> bool:
    return os.path.exists("/dev/log")


def setup_logging(level: str, *, foreground: bool, log_file: Path | None = None) -> None:
    from ossmount.oss.redact import RedactingFilter

    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler: logging.Handler
    if log_file is not None:
        handler = logging.FileHandler(log_file)
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
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(level)
    # httpx/httpcore log every request at INFO/DEBUG with full URLs; ours are better.
    for noisy in ("httpx", "httpcore", "hpack"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
