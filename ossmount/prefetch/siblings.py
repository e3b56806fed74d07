"""Directory read-ahead: warm the next small files of a directory that is being walked.

Why: `cp -r`, `rsync` and `tar` read a tree one file after another. For a small object the
time is all in round trips (its one GET), so a reader that goes file by file pays one round
trip per file however fast the link is: at 20 ms to OSS that is 50 files/s. Part read-ahead
cannot help, it works within a file. So when the opens in one directory walk it, the next
`depth` small files are fetched into the cache before they are opened (`Prefetcher.warm`):
their opens find them verified (or downloading), and `depth` round trips overlap.

A walk: a file opened right after the file that precedes it in the directory, in name order
(rsync, tar, `ls | xargs`) or in inode-number order (GNU `cp -r` sorts each directory by
d_ino before copying it), skipping subdirectories (`Namespace.files_after`). One such step
starts warming, each further step tops it up. A reader that jumps around rarely opens the
exact next file, and when it does the waste is bounded: only files neither cached nor being
downloaded start, at most `Prefetcher.config.warm_limit` warm downloads run at once, and
only objects up to `warm_max_size`.

Only names from a fresh cached listing count: it costs no LIST, and a walked directory was
listed by that walk (readdir) moments before.

State: for the `MAX_DIRS` directories opened in most recently, what the next file is in
each order. Touched only on the trio thread.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from ossmount.oss.models import ObjectMeta
from ossmount.tree.listing import WalkOrder
from ossmount.tree.names import split_path

__all__ = ["DirectoryReadAhead"]

ORDERS: tuple[WalkOrder, ...] = ("name", "inode")
MAX_DIRS = 64  # directories whose walks are followed at once (parallel rsyncs, find -exec)

FilesAfter = Callable[[int, int, WalkOrder], list[tuple[int, ObjectMeta]]]


class DirectoryReadAhead:
    """Watches opens; warms the files ahead of a directory walk (module docstring)."""

    def __init__(self, *, depth: int, files_after: FilesAfter, warm: Callable[[ObjectMeta], bool]):
        self.depth = depth
        self._files_after = files_after
        self._warm = warm
        # directory -> {order: inode of the file after the one opened last}
        self._next: OrderedDict[str, dict[WalkOrder, int]] = OrderedDict()

    def opened(self, inode: int, path: str) -> int:
        """File `inode` at `path` was opened; returns how many warm downloads this started."""
        if self.depth <= 0:
            return 0
        dir_path, _ = split_path(path)
        expected = self._next.pop(dir_path, {})
        following: dict[WalkOrder, int] = {}
        started = 0
        for order in ORDERS:
            walking = expected.get(order) == inode
            ahead = self._files_after(inode, self.depth if walking else 1, order)
            if ahead:
                following[order] = ahead[0][0]
            if walking:
                started += sum(self._warm(meta) for _, meta in ahead)
        self._next[dir_path] = following
        if len(self._next) > MAX_DIRS:
            self._next.popitem(last=False)
        return started
