"""One open file handle's view of a shared download: its read-ahead, coverage and progress.

A read asks the download for the parts it covers (demand) and, while the handle reads
sequentially, for a growing window beyond (read-ahead, pattern.ReadaheadWindow); then it waits
for its parts. A handle that has covered the whole object also waits for the download's CRC
verdict before its last read returns (pattern.Coverage), so a whole-object reader (`cp`) never
gets the last bytes of a corrupt object. What the handle has read (`consumed`) and is reading
(`reading`) tells shedding what it may drop.
"""

from __future__ import annotations

from collections import Counter

from ossmount.cache.checkpoint import EntryState
from ossmount.oss.models import ObjectMeta
from ossmount.prefetch.config import PrefetchConfig
from ossmount.prefetch.download import Download
from ossmount.prefetch.pattern import Coverage, ReadaheadWindow

__all__ = ["ObjectReader"]


class ObjectReader:
    def __init__(self, download: Download, config: PrefetchConfig) -> None:
        self._download = download
        part = config.part_size
        self._window = ReadaheadWindow(
            initial=2 * part,
            maximum=max(config.readahead_bytes, part),
            slack=8 * 1024 * 1024,
            trigger=download.layout.head_size,  # a peek within the head part is not a copy
            spot_run=config.spot_run if config.spot_block else 0,
        )
        self._spotted = False  # some read was answered by a spot read (prefetch.spot)
        self._coverage = Coverage(download.meta.size)
        self._ahead_until = 0  # read-ahead already requested for parts below this index
        self._read_until = 0  # the furthest end of a read that returned
        self.reading: Counter[tuple[int, int]] = Counter()  # (offset, size) of reads under way
        self.read_to_end = False  # a read returned the object's last byte (or it is empty)
        self.closed = False

    @property
    def meta(self) -> ObjectMeta:
        return self._download.meta

    @property
    def consumed(self) -> int:
        """Bytes below this offset were read by this handle, and no read of it still runs
        there: what shedding may drop (less the config's shed_margin)."""
        if self.reading:
            return min(self._read_until, min(offset for offset, _ in self.reading))
        return self._read_until

    async def read(self, offset: int, size: int) -> bytes:
        download = self._download
        if download.settled and download.entry.all_present:
            # Fast path for a fully cached, judged object (e.g. after a remount, or the rest
            # of a cold copy once its download is done): no part bookkeeping, read-ahead or
            # coverage; the pread, and `consumed` for the pages let go behind the readers
            # (prefetch/dropbehind.py). No await between the check and the read, so no read
            # of this handle is under way meanwhile.
            end = min(offset + size, download.meta.size)
            if end == download.meta.size:
                self.read_to_end = True
            if offset >= end:
                return b""
            cached = download.entry.read(offset, end - offset)
            self._read_until = max(self._read_until, end)
            download.read_past()
            return cached
        if download.failure is None and download.entry.state is EntryState.VERIFIED:
            rechecked = self._read_rechecked(offset, size)
            if rechecked is not None:
                return rechecked
        self.reading[offset, size] += 1
        try:
            data = await self._read(offset, size)
        finally:
            self.reading[offset, size] -= 1
            if not self.reading[offset, size]:
                del self.reading[offset, size]
        self._read_until = max(self._read_until, offset + len(data))
        if self._read_until >= download.meta.size:
            self.read_to_end = True
        download.read_past()
        return data

    def _read_rechecked(self, offset: int, size: int) -> bytes | None:
        """The read of a file judged whole in an earlier life (after a remount) whose parts
        under this read are all re-checked (cache.checks); None otherwise.

        Skips the part bookkeeping the slow path pays per read while the rest of the file is
        still being re-checked, but keeps the window, coverage and `consumed` current, so the
        next read past the checked parts asks for the next re-checks with the full window.
        Safe without waiting for a verdict: every byte served passed its re-hash, and the entry
        is still VERIFIED, so no part was fetched again in this process (a failed re-check
        makes it PARTIAL and every read takes the slow path). No await between the check and
        the pread.
        """
        download = self._download
        total = download.meta.size
        end = min(offset + size, total)
        if offset >= end:
            return None
        parts = download.layout.parts_for(offset, end - offset)
        if download.entry.missing_parts(parts):
            return None
        self._window.observe(offset, end)
        self._coverage.add(offset, end)
        self._read_until = max(self._read_until, end)
        if end == total:
            self.read_to_end = True
        return download.entry.read(offset, end - offset)

    async def _read(self, offset: int, size: int) -> bytes:
        download = self._download
        if download.failure is not None:
            raise download.failure
        total = download.meta.size
        end = min(offset + size, total)
        if offset >= end:
            return b""
        parts = download.layout.parts_for(offset, end - offset)
        window = self._window.observe(offset, end)
        if self._window.scattered and self._unfetched(parts):
            if not self._coverage.add(offset, end):
                self._spotted = True
                return await download.spot.read(offset, end)
            return await self._read_parts(offset, end, parts, window, covered=True)
        return await self._read_parts(offset, end, parts, window, covered=False)

    def _unfetched(self, parts: range) -> bool:
        """Some part of the read is missing and none that is missing is on its way: a spot
        read is cheaper (a part in flight or cached is read from the cache)."""
        download = self._download
        missing = False
        for index in parts:
            if not download.entry.is_done(index):
                if index in download.queue.in_flight:
                    return False
                missing = True
        return missing

    async def _read_parts(
        self, offset: int, end: int, parts: range, window: int, *, covered: bool
    ) -> bytes:
        """The read from the cache file: its parts (demand) and read-ahead; `covered`: this
        read was already found to complete the handle's coverage."""
        download = self._download
        layout = download.layout
        total = download.meta.size
        download.want(parts, demand=True)
        if window:
            ahead = layout.parts_for(end, min(total, end + window) - end)
            # Ask only for parts beyond what this handle already asked for: a sequential read
            # of 1 MiB would otherwise re-offer the whole window (~16 parts) every time.
            first = max(ahead.start, self._ahead_until)
            if first < ahead.stop:
                download.want(range(first, ahead.stop), demand=False)
                self._ahead_until = ahead.stop
        else:
            self._ahead_until = 0  # a jump: the next sequential run starts its own window
        await download.wait_parts(parts)
        if covered or self._coverage.add(offset, end):
            if self._spotted:
                # Spot reads recorded nothing: the verdict a whole-object reader waits for
                # needs every part in the cache.
                everything = range(layout.count)
                download.want(everything, demand=True)
                await download.wait_parts(everything)
            await download.wait_verdict()
        while download.entry.missing_parts(parts):
            # Shed while we waited for a later part or the verdict (a full cache disk):
            # fetched again. entry.read right after the check is atomic on this thread.
            await download.wait_parts(parts)
        return download.entry.read(offset, end - offset)

    async def fetch_all(self, max_bytes: int) -> bool:
        """Every part of the object not cached yet fetched into the cache, so the handle's
        reads need no GET: the object is about to go (fs: an unlink or a replacement through
        this mount while the file is open), and a local file's bytes stay readable through
        its open descriptors. False, fetching nothing, when more than `max_bytes` are missing
        (the caller would wait for all of them). No part of it is shed from then on (it
        could not be fetched again), so a full cache may be passed by it until its readers
        close; reads wait for the verdict as ever."""
        download = self._download
        layout = download.layout
        missing = download.entry.missing_parts(range(layout.count))
        if sum(layout.span(index)[1] for index in missing) > max_bytes:
            return False
        download.shedder.pinned = True
        download.want(tuple(missing), demand=True)
        await download.wait_parts(range(layout.count))
        return True

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            await self._download.release(self)
