"""A part's way into its cache file: the body sink `CacheEntry.part_sink` gives out.

The HTTP client fills `window()` from the socket and hands each filled window to `commit()`;
the sink pwrites it where the part lives in the cache file (one copy: socket → scratch →
file pages; the measurements behind this choice are in bench/bench_client.py). So the cache,
not the client, owns its file: a full disk surfaces here as the cache's own `CacheFull`
(ENOSPC/EDQUOT), any other write error as `CacheIOError`, both naming the object and path.

`record(result)` is the one way a fetched part enters the entry: it checks that the body
delivered the whole part and records the part's CRC-64 (computed by the client while
receiving) in the entry. A body cut short is never recorded (its part stays missing).

Threads: `window` and `commit` may run in the client's body worker thread, one call at a
time and never after the GET returned (the client's contract); `record` runs on the owner's
(trio) thread after the GET returned. The scratch buffer is the caller's (`ScratchPool`) for
the duration of the GET.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

from ossmount.cache.errors import EntryStateError, io_error

if TYPE_CHECKING:
    from ossmount.cache.entry import CacheEntry
    from ossmount.oss.models import GetResult

__all__ = ["PartSink", "ScratchPool"]

_ALLOCATE_FROM = 1 << 20  # bytes: a part this large gets its blocks reserved up front


class PartSink:
    """Receives part `index` of `entry` into its cache file (see module docstring)."""

    def __init__(self, entry: CacheEntry, index: int, scratch: memoryview) -> None:
        self._entry = entry
        self.index = index
        self.start, self.length = entry.layout.span(index)
        self._scratch = scratch
        self._fd = entry.fd

    def window(self, pos: int, limit: int) -> memoryview:
        return self._scratch[: min(limit, len(self._scratch))]

    def commit(self, view: memoryview, pos: int) -> None:
        if pos == 0 and self.length >= _ALLOCATE_FROM:
            self._allocate()
        if pos + len(view) > self.length:
            raise EntryStateError(
                f"part {self.index} of oss://{self._entry.bucket}/{self._entry.meta.key} is "
                f"{self.length} bytes, body delivered up to {pos + len(view)}"
            )
        offset = self.start + pos
        try:
            while view:
                written = os.pwrite(self._fd, view, offset)
                view = view[written:]
                offset += written
        except OSError as exc:
            entry = self._entry
            raise io_error(
                f"write of part {self.index}",
                bucket=entry.bucket,
                key=entry.meta.key,
                path=entry.path,
                cause=exc,
            ) from exc

    def _allocate(self) -> None:
        """Reserve the part's blocks before its first write: ext4 then maps the range once
        instead of page by page as delayed allocation (measured standalone: 0.23 -> 0.17 CPU
        s/GiB of writes; the emulator does the same for uploads). A full disk surfaces here,
        before the rest of the body is received. A filesystem without fallocate just writes."""
        try:
            os.posix_fallocate(self._fd, self.start, self.length)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                return
            entry = self._entry
            raise io_error(
                f"allocating part {self.index}",
                bucket=entry.bucket,
                key=entry.meta.key,
                path=entry.path,
                cause=exc,
            ) from exc

    def record(self, result: GetResult) -> None:
        """The GET into this sink returned `result`: record the part with its CRC-64.

        Raises EntryStateError if the body was not the whole part, PartMismatch if a shed part
        came back with another CRC (see CacheEntry.record_part).
        """
        if result.offset != self.start or result.length != self.length:
            raise EntryStateError(
                f"part {self.index} of oss://{self._entry.bucket}/{self._entry.meta.key} "
                f"is bytes {self.start}+{self.length}, the GET delivered "
                f"{result.offset}+{result.length}"
            )
        self._entry.record_part(self.index, result.crc64)


class ScratchPool:
    """Reused receive windows, one per GET in flight: memory stays bounded by the GET limit
    however many files are open (a fresh 1 MiB buffer per part would also cost page faults).

    Owner thread only; `take`/`give` have no await between them and the GET they serve."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._free: list[bytearray] = []

    def take(self) -> bytearray:
        return self._free.pop() if self._free else bytearray(self.size)

    def give(self, buf: bytearray) -> None:
        self._free.append(buf)
