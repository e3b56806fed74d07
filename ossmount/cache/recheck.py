"""Hash one span of a cache file again: the re-check of a part trusted from a checkpoint.

Runs in a worker thread (an 8 MiB pread + CRC-64 is milliseconds; fastcrc releases the GIL).
The pread also pulls the span into the page cache, so the reads that serve it right after are
memory copies: the check costs the CRC, not a second disk read.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

from ossmount.crc64 import crc64

__all__ = ["CHUNK", "hash_span"]

CHUNK = 1024 * 1024  # one reused buffer of this size per call: no 8 MiB allocation per part


def hash_span(
    fd: int, start: int, length: int, progress: Callable[[int], None] | None = None
) -> int:
    """CRC-64 of bytes [start, start + length) of `fd`. OSError as raised; a file shorter
    than the span hashes what is there (the caller's CRC then cannot match). `progress` is
    told each chunk's size (`ossmount cache verify`'s bar)."""
    if length > CHUNK:
        # One request for the whole part up front (the kernel reads it in large I/Os while we
        # hash the first chunk), not a readahead window growing chunk by chunk: after a
        # remount with the page cache dropped this is the disk read of the part (issue 13 W3).
        with contextlib.suppress(OSError, AttributeError):
            os.posix_fadvise(fd, start, length, os.POSIX_FADV_WILLNEED)
    buf = bytearray(min(CHUNK, max(length, 1)))
    view = memoryview(buf)
    crc = 0
    pos = 0
    while pos < length:
        want = min(len(buf), length - pos)
        got = os.preadv(fd, [view[:want]], start + pos)
        if got <= 0:
            break
        crc = crc64(view[:got], crc)
        pos += got
        if progress is not None:
            progress(got)
    return crc
