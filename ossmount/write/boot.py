"""Which boot of the machine this is, so a journal can tell a kill -9 from a power loss.

A staged file sealed without an fsync (a close that waits for its commit) is in the page
cache: it survives the daemon's death but not the machine's. Its record names the boot it was
sealed in; recovery in another boot must not trust those bytes (write/journal.py).
"""

from __future__ import annotations

import functools
from pathlib import Path

__all__ = ["current_boot_id"]

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


@functools.cache
def current_boot_id() -> str:
    """This boot's id; "" where the kernel does not say (then staged files are fsynced)."""
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return ""
