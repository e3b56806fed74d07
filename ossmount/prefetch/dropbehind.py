"""Let the kernel drop the cache file's pages behind every reader of a download.

Why: a cold `cp` of 1 GiB puts 1 GiB of the cache file in the page cache, none of which is read
again through us (the kernel keeps what it handed `cp` in the FUSE file's own pages; a re-read
after those are gone costs a pread from disk). On a VM that hands memory the guest freed back
to its host (free page reporting, these 2-vCPU machines), each page the guest has not touched
lately costs a host fault on first touch, and after any earlier run freed its memory (the
referee's rounds, a previous copy) that is most pages: our W1 fell to 440-500 MB/s at 2.6-3.1
daemon CPU s/GiB in most rounds (1,026 MB/s at 0.87 in the others). Letting the pages go once
every reader has passed them keeps the file's footprint to a few parts whose pages the next
parts reuse: 757-884 MB/s at 1.05-1.3 s/GiB in every round, W3 (a remount's copy, left to
the kernel, below) unchanged (`PEERS="ossmount ossfs2" WORKLOADS=W1 ../shared/peers/run_all.sh`
and the same with ossmount alone, --quick, before and after side by side, 2026-12-06). The
price is the writeback of the cache file, started during the copy instead of after it. The
write path does the same for a big copy in (write/session.py `_release_pages`).

How: when the slowest reader passes into part `i`, POSIX_FADV_DONTNEED on part `i - 1` starts
the writeback of its dirty pages (the pwrite of its GET; dirty pages are never dropped, so
nothing is lost, and a checkpoint never depends on it: cache/entry.py), and the same on parts
`i - 64 .. i - 3` drops those written back by then: a page whose writeback lags (a slow disk,
a fast reader) goes at a later part. Pages still dirty when the readers stop stay until the
kernel reclaims them, as before. A reader that goes back (another handle behind, a seek) reads
from disk: correct, only slower. Objects of one part (small files) cost nothing.

Trio thread only (called from ObjectReader.read, no await inside).
"""

from __future__ import annotations

from collections.abc import Callable

from ossmount.cache.ranges import PartLayout

__all__ = ["DropBehind"]

# Parts this far behind the slowest reader were asked to be written back a few parts ago: by
# now most are clean and can go. Each is offered again at every later part, up to _CLEAN_FROM
# back (the walk of a range whose pages are gone already is cheap; an unbounded one, from 0,
# would cost each call more along a huge file).
_CLEAN_FROM, _CLEAN_TO = 64, 3


class DropBehind:
    def __init__(self, layout: PartLayout, drop: Callable[[int, int], None]) -> None:
        self._layout = layout
        self._drop = drop  # (start, length): let the kernel drop those bytes' pages
        self._passed = 0  # the slowest reader was last seen inside this part
        # Set once a part is fetched into the file: a file only read from disk (a remount's
        # cached copy) is left to the kernel, whose pages of it are clean and reclaimed
        # cheaply (letting them go, too, made the referee's W3 ~20 % slower).
        self.armed = False

    def passed(self, frontier: int) -> None:
        """Every reader has read the bytes below `frontier`."""
        if frontier <= 0 or not self.armed:
            return
        index = self._layout.parts_for(frontier - 1, 1).start
        if index <= self._passed:
            return
        self._passed = index
        span = self._layout.span
        start, length = span(index - 1)
        self._drop(start, length)
        if index >= _CLEAN_TO:
            low, _ = span(max(0, index - _CLEAN_FROM))
            top_start, top_length = span(index - _CLEAN_TO)
            self._drop(low, top_start + top_length - low)
