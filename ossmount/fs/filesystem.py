"""`FileSystem`: the mount's behaviour as a plain class under the pyfuse3 adapter (`fs/ops.py`).

mountpoint-s3's `S3Filesystem` is the model: every FUSE operation is a method here taking and
returning our own types (`fs/attrs.py`), raising typed errors (`tree.errors`, `fs.errors`,
the prefetcher's), so it runs in-process in tests with fakes (tests/fs/) and the adapter only
translates. Names and metadata come from `tree.Namespace`, bytes from `prefetch.Prefetcher`.
The read-write operations belong here too.

Policy held here
    * Page cache: `keep_cache` is set on open when the previous open of the same inode saw the
      same ETag, so re-reads of an unchanged object come from the kernel's page cache; a new
      version, or a read that failed verification or found the object changed, starts clean.
    * Invalidation: on `ObjectChanged` / `ObjectCorrupt` from a read, the kernel's pages of
      that inode are dropped (`KernelCache.invalidate_inode`) and the next open is without
      keep_cache; on `ObjectChanged` the metadata cache is dropped too, so the next open
      re-lists and sees the new version.
    * Directory read-ahead (`prefetch.siblings`) is told of every open and close.
    * Symlink targets (`fs/links.py`) and extended attributes (`fs/xattrs.py`).

Concurrency: trio, one thread. The handle tables (`_files`, `_dirs`) and `_last_etag` are
touched only in synchronous code; a handle is registered in the same step as the object it
refers to is opened, and removed before its `aclose` is awaited, so a concurrent release of the
same handle finds nothing to do. Memory: `_last_etag` and the symlink target cache hold only
inodes the kernel still references (both are dropped on an inode's last `forget`), the handle
tables only open handles.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ossmount.fs.attrs import Attr, FsStats, Opened, Presentation, attr_of, is_symlink
from ossmount.fs.errors import IsADirectory, NotASymlink, ReadOnly, UnknownHandle
from ossmount.fs.links import SymlinkSource, SymlinkTargets
from ossmount.fs.xattrs import xattr_names, xattr_value
from ossmount.prefetch import ObjectChanged, ObjectCorrupt, ObjectReader, Prefetcher
from ossmount.prefetch.siblings import DirectoryReadAhead
from ossmount.service.metrics import MountMetrics
from ossmount.tree.listing import DirSnapshot, Namespace
from ossmount.tree.node import Node

__all__ = ["FileSystem", "KernelCache", "ReplyEntry"]

log = logging.getLogger(__name__)

# readdir hands each entry to this: (name, attributes, cookie of the next entry) -> whether
# the kernel's buffer took it.
ReplyEntry = Callable[[str, Attr, int], bool]


class KernelCache(Protocol):
    """What the filesystem asks of the kernel's caches (pyfuse3 in the mount, a fake in tests)."""

    def invalidate_inode(self, inode: int) -> None:
        """Drop the kernel's cached pages of `inode`, soon; must not block the caller."""


@dataclass(slots=True)
class _OpenFile:
    inode: int
    reader: ObjectReader


class FileSystem:
    """A read-only filesystem over a `Namespace` (names) and a `Prefetcher` (bytes)."""

    def __init__(
        self,
        namespace: Namespace,
        prefetcher: Prefetcher,
        look: Presentation,
        *,
        symlinks: SymlinkSource,
        kernel: KernelCache,
        bucket: str,
        metrics: MountMetrics | None = None,
    ) -> None:
        self._ns = namespace
        self._prefetcher = prefetcher
        self._look = look
        self._dir_mode = look.dir_mode
        self._file_mode = look.file_mode
        self._kernel = kernel
        self._bucket = bucket
        self._links = SymlinkTargets(symlinks, namespace, bucket)
        self._read_seconds = metrics.read_seconds if metrics is not None else None
        self._files: dict[int, _OpenFile] = {}
        self._dirs: dict[int, DirSnapshot] = {}
        self._next_fh = 1
        self._last_etag: dict[int, str] = {}  # inode -> ETag of its last open
        self._dir_ahead = DirectoryReadAhead(
            depth=prefetcher.warm_limit,  # 0 if the cache cap turned warming off
            files_after=namespace.files_after,
            warm=prefetcher.warm,
        )

    def attr(self, node: Node) -> Attr:
        return attr_of(node, self._look, self._dir_mode, self._file_mode)

    def _where(self, node: Node) -> str:
        key = node.meta.key if node.meta is not None else self._ns.root_prefix + node.path
        return f"oss://{self._bucket}/{key}"

    def _new_fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    # -- names -----------------------------------------------------------------------------

    async def lookup(self, parent: int, name: str) -> Attr:
        """`name` in directory `parent`; counts one kernel reference to the result."""
        return self.attr(await self._ns.lookup(parent, name))

    def forget(self, inode: int, count: int) -> None:
        """The kernel dropped `count` references. At zero it has evicted the inode and its
        pages, so there is no page cache left to keep: the inode's `_last_etag` (and symlink
        target) go too. That bounds both by what the kernel holds, not by every file ever
        opened during the mount."""
        if not self._ns.forget(inode, count):
            self._last_etag.pop(inode, None)
            self._links.forget(inode)

    async def getattr(self, inode: int) -> Attr:
        return self.attr(await self._ns.getattr(inode))

    async def opendir(self, inode: int) -> int:
        snapshot = await self._ns.opendir(inode)
        fh = self._new_fh()
        self._dirs[fh] = snapshot
        return fh

    def readdir(self, fh: int, start_id: int, reply: ReplyEntry) -> None:
        """Hand entries after cookie `start_id` to `reply` until it refuses one.

        An accepted entry is a kernel reference, exactly like a lookup (readdirplus).
        """
        snapshot = self._dirs.get(fh)
        if snapshot is None:
            raise UnknownHandle(f"<directory handle {fh}>", "not open")
        look, dir_mode, file_mode = self._look, self._dir_mode, self._file_mode
        remember = self._ns.remember
        for next_id, node in snapshot.entries_from(start_id):
            if not reply(node.name, attr_of(node, look, dir_mode, file_mode), next_id):
                return
            remember(node.inode)

    def releasedir(self, fh: int) -> None:
        snapshot = self._dirs.pop(fh, None)
        if snapshot is not None:
            self._ns.releasedir(snapshot)

    async def readlink(self, inode: int) -> str:
        """The POSIX target of symlink `inode` (see fs/links.py)."""
        node = self._ns.get(inode)
        if node.meta is None or not is_symlink(node.meta):
            raise NotASymlink(self._where(node), "readlink of an entry that is not a symlink")
        return await self._links.target(inode, node.meta)

    # -- bytes -----------------------------------------------------------------------------

    async def open(self, inode: int, flags: int) -> Opened:
        if flags & os.O_ACCMODE != os.O_RDONLY:
            raise ReadOnly(self._where(self._ns.get(inode)), "the mount is read-only")
        node = await self._ns.getattr(inode)  # the freshness check (cached within the TTL)
        if node.is_dir or node.meta is None:
            raise IsADirectory(self._where(node), "open of a directory as a file")
        meta = node.meta
        reader = self._prefetcher.open(meta)
        self._dir_ahead.opened(inode, meta.key)
        fh = self._new_fh()
        self._files[fh] = _OpenFile(inode, reader)
        keep = self._last_etag.get(inode) == meta.etag
        self._last_etag[inode] = meta.etag
        return Opened(fh, keep)

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        timer = self._read_seconds.time() if self._read_seconds else contextlib.nullcontext()
        with timer:  # failed and interrupted reads count too
            return await self._read(fh, offset, size)

    async def _read(self, fh: int, offset: int, size: int) -> bytes:
        handle = self._files.get(fh)
        if handle is None:
            raise UnknownHandle(f"<file handle {fh}>", "not open")
        try:
            return await handle.reader.read(offset, size)
        except (ObjectCorrupt, ObjectChanged) as exc:
            # Pages of this inode may hold bytes that failed verification, or of a version that
            # is gone: drop them, and make the next open start without keep_cache.
            self._last_etag.pop(handle.inode, None)
            self._kernel.invalidate_inode(handle.inode)
            if isinstance(exc, ObjectChanged):
                self._ns.invalidate()  # the next open re-lists and sees the new version
            raise

    async def release(self, fh: int) -> None:
        handle = self._files.pop(fh, None)
        if handle is not None:
            reader = handle.reader
            self._dir_ahead.closed(reader.meta.key, reader.read_to_end)
            await reader.aclose()

    # -- misc ------------------------------------------------------------------------------

    def statfs(self) -> FsStats:
        return FsStats(block_size=self._look.block_size)

    def listxattr(self, inode: int) -> list[str]:
        return xattr_names(self._ns.get(inode))

    def getxattr(self, inode: int, name: str) -> bytes:
        node = self._ns.get(inode)
        return xattr_value(node, name, self._cached_state, self._where(node))

    def _cached_state(self, node: Node) -> tuple[str, int | None]:
        assert node.meta is not None
        return self._prefetcher.cached_state(node.meta)
