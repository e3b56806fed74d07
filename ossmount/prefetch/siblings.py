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
starts warming, each further step tops it up.

Whole files only for walkers that read whole files: a scanner that opens every file of a
directory to look at its first bytes (`file *`, a thumbnailer, `head -c`) walks it too, but
fetching whole objects for it would multiply its traffic. So a walk warms nothing while the
last file closed in that directory was not read to its end.

What a wrong guess costs is bounded: only files neither cached nor being downloaded start, at
most `Prefetcher.config.warm_limit` warm downloads run at once, and only objects up to
`warm_max_size`. Only names from a cached listing count (`Namespace.files_after`): it costs
no LIST, and a walked directory was listed by that walk (readdir) when it started.

State, per directory (by key prefix) for the `MAX_DIRS` directories used most recently: what
the next file is in each order, and whether the last file closed there was read whole.
Touched only on the trio thread.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from ossmount.oss.models import ObjectMeta
from ossmount.tree.listing import WalkOrder

__all__ = ["DirectoryReadAhead"]

ORDERS: tuple[WalkOrder, ...] = ("name", "inode")
MAX_DIRS = 64  # directories whose walks are followed at once (parallel rsyncs, find -exec)

FilesAfter = Callable[[int, int, WalkOrder], list[tuple[int, ObjectMeta]]]


@dataclass(slots=True)
class _Walk:
    following: dict[WalkOrder, int] = field(default_factory=dict)  # order -> next file's inode
    whole: bool = True  # the last file closed here was read to its end (or none closed yet)


class DirectoryReadAhead:
    """Watches opens and closes; warms the files ahead of a directory walk (module docstring)."""

    def __init__(self, *, depth: int, files_after: FilesAfter, warm: Callable[[ObjectMeta], bool]):
        self.depth = depth
        self._files_after = files_after
        self._warm = warm
        self._walks: OrderedDict[str, _Walk] = OrderedDict()  # directory's key prefix -> walk

    def opened(self, inode: int, key: str) -> int:
        """File `inode` (object `key`) was opened; returns how many warm downloads started."""
        if self.depth <= 0:
            return 0
        walk = self._walk(key)
        expected, walk.following = walk.following, {}
        started = 0
        for order in ORDERS:
            walking = expected.get(order) == inode and walk.whole
            ahead = self._files_after(inode, self.depth if walking else 1, order)
            if ahead:
                walk.following[order] = ahead[0][0]
            if walking:
                started += sum(self._warm(meta) for _, meta in ahead)
        return started

    def closed(self, key: str, read_to_end: bool) -> None:
        """A handle of object `key` closed, having read it to its end or not."""
        if self.depth > 0:
            self._walk(key).whole = read_to_end

    def _walk(self, key: str) -> _Walk:
        directory = key.rpartition("/")[0]
        walk = self._walks.pop(directory, None) or _Walk()
        self._walks[directory] = walk  # most recently used last
        if len(self._walks) > MAX_DIRS:
            self._walks.popitem(last=False)
        return walk
