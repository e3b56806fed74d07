"""Letting the kernel drop a file's pages once they are on their way to disk.

A cache file (read path, prefetch/dropbehind.py) or a staging file (write path,
write/session.py `_release_pages`) is streamed through once; keeping all of it in the page
cache only makes the next bytes take fresh pages, which on these VMs cost a host fault each.
POSIX_FADV_DONTNEED starts the writeback of dirty pages in the range and drops the clean ones:
nothing is lost, the bytes stay in the file. Best effort: an error (the file closed meanwhile,
a filesystem that refuses the advice) changes nothing.
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["let_go"]


def let_go(fd: int, start: int, length: int) -> None:
    """Let the kernel drop `fd`'s pages in [start, start + length) (see the module docstring)."""
    if fd >= 0 and length > 0:
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, start, length, os.POSIX_FADV_DONTNEED)
