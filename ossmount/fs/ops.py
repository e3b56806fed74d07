"""The pyfuse3 adapter: thin handlers that translate between the kernel and the plain classes.

All logic lives below (tree.Namespace for names and metadata, prefetch.Prefetcher for bytes);
each handler converts arguments, calls one of them, and converts the answer. Every handler is
wrapped by `fuse_boundary`, the one place exceptions become errno values.

Page cache policy: `keep_cache` is set on open when the previous open of the same inode saw the
same ETag, so re-reads of an unchanged object come from the kernel's page cache; a new version
(or a failed verification, which invalidates the inode) starts clean.

Handle tables are plain dicts touched only on the trio thread.
"""

from __future__ import annotations

import errno
import logging
import os
import posixpath
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import pyfuse3
import trio

from ossmount.crc64 import format_crc
from ossmount.fs.boundary import fuse_boundary
from ossmount.prefetch.scheduler import ObjectChanged, ObjectCorrupt, ObjectReader, Prefetcher
from ossmount.prefetch.siblings import DirectoryReadAhead
from ossmount.service.metrics import MountMetrics
from ossmount.tree.names import split_key
from ossmount.tree.namespace import DirSnapshot, Namespace, Node

__all__ = ["Operations", "Presentation"]

log = logging.getLogger(__name__)

XATTR_STATE = b"user.ossmount.state"
XATTR_ETAG = b"user.ossmount.etag"
XATTR_KEY = b"user.ossmount.key"
XATTR_CRC = b"user.ossmount.crc64"
XATTRS = (XATTR_STATE, XATTR_ETAG, XATTR_KEY, XATTR_CRC)


@dataclass(frozen=True, slots=True)
class Presentation:
    """Ownership, modes and kernel TTLs shared by every entry."""

    uid: int
    gid: int
    umask: int
    attr_timeout_s: float
    block_size: int = 1024 * 1024


class Operations(pyfuse3.Operations):
    """Read-only filesystem over a `Namespace` (names) and a `Prefetcher` (bytes)."""

    def __init__(
        self,
        namespace: Namespace,
        prefetcher: Prefetcher,
        look: Presentation,
        *,
        symlinks: SymlinkSource,
        metrics: MountMetrics | None = None,
    ) -> None:
        super().__init__()
        self._symlinks = symlinks
        self._link_targets: dict[int, tuple[str, bytes]] = {}  # inode -> (ETag, target)
        self._ns = namespace
        self._prefetcher = prefetcher
        self._look = look
        self._read_seconds = (metrics or prefetcher.metrics).read_seconds
        self._files: dict[int, tuple[int, ObjectReader]] = {}  # fh -> (inode, reader)
        self._dirs: dict[int, DirSnapshot] = {}  # fh -> entries frozen at opendir
        self._next_fh = 1
        self._last_etag: dict[int, str] = {}  # inode -> ETag of its last open
        self._dir_ahead = DirectoryReadAhead(
            depth=prefetcher.warm_limit,  # 0 if the cache cap turned warming off
            files_after=namespace.files_after,
            warm=prefetcher.warm,
        )

    # -- attributes ------------------------------------------------------------------------

    def _attrs(self, node: Node) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = pyfuse3.InodeT(node.inode)
        attr.generation = 0
        attr.entry_timeout = self._look.attr_timeout_s
        attr.attr_timeout = self._look.attr_timeout_s
        if node.is_dir:
            attr.st_mode = pyfuse3.ModeT(stat.S_IFDIR | (0o555 & ~self._look.umask))
            attr.st_nlink = 2
        elif _is_symlink(node):
            attr.st_mode = pyfuse3.ModeT(stat.S_IFLNK | 0o777)
            attr.st_nlink = 1
        else:
            attr.st_mode = pyfuse3.ModeT(stat.S_IFREG | (0o444 & ~self._look.umask))
            attr.st_nlink = 1
        attr.st_uid = self._look.uid
        attr.st_gid = self._look.gid
        attr.st_size = node.size
        attr.st_blksize = self._look.block_size
        attr.st_blocks = (node.size + 511) // 512
        attr.st_mtime_ns = node.mtime_ns
        attr.st_ctime_ns = node.mtime_ns
        attr.st_atime_ns = node.mtime_ns
        return attr

    def _new_fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    # -- names -----------------------------------------------------------------------------

    @fuse_boundary
    async def lookup(
        self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        node = await self._ns.lookup(parent_inode, os.fsdecode(name))
        return self._attrs(node)

    @fuse_boundary
    async def forget(self, inode_list: Sequence[tuple[pyfuse3.InodeT, int]]) -> None:
        for inode, count in inode_list:
            self._ns.forget(inode, count)

    @fuse_boundary
    async def getattr(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return self._attrs(await self._ns.getattr(inode))

    @fuse_boundary
    async def opendir(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileHandleT:
        snapshot = await self._ns.opendir(inode)
        fh = self._new_fh()
        self._dirs[fh] = snapshot
        return pyfuse3.FileHandleT(fh)

    @fuse_boundary
    async def readdir(
        self, fh: pyfuse3.FileHandleT, start_id: int, token: pyfuse3.ReaddirToken
    ) -> None:
        snapshot = self._dirs[fh]
        for next_id, node in snapshot.entries_from(start_id):
            name = os.fsencode(node.name)
            if not pyfuse3.readdir_reply(token, name, self._attrs(node), next_id):
                return
            # readdirplus hands the kernel a reference, exactly like a lookup.
            self._ns.remember(node.inode)

    @fuse_boundary
    async def releasedir(self, fh: pyfuse3.FileHandleT) -> None:
        snapshot = self._dirs.pop(fh, None)
        if snapshot is not None:
            self._ns.releasedir(snapshot)

    @fuse_boundary
    async def readlink(self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext) -> bytes:
        """An OSS symlink object as a POSIX symlink, relative to the link's own directory.

        OSS follows symlinks on GET and HEAD but lists the link itself (size 0), so serving it
        as a regular file would hand out an empty or mismatched file; as a symlink the kernel
        resolves it to the target's own entry, with the target's size and bytes.
        """
        node = self._ns.get(inode)
        if node.meta is None or not _is_symlink(node):
            raise pyfuse3.FUSEError(errno.EINVAL)
        cached = self._link_targets.get(inode)
        if cached is None or cached[0] != node.meta.etag:
            target_key = await self._symlinks.get_symlink(node.meta.key)
            parts = split_key(target_key, self._ns.root_prefix)
            shown = None
            if parts is not None and not target_key.endswith("/"):
                shown = await self._ns.shown_file_name("/".join(parts[:-1]), parts[-1], target_key)
            target = link_target(node.meta.key, target_key, self._ns.root_prefix, shown)
            if target is None:
                log.warning(
                    "symlink object %r points to %r, which has no path under the mount "
                    "(prefix %r): readlink fails with EIO rather than give a path leaving it",
                    node.meta.key,
                    target_key,
                    self._ns.root_prefix,
                )
                raise pyfuse3.FUSEError(errno.EIO)
            cached = (node.meta.etag, os.fsencode(target))
            self._link_targets[inode] = cached
        return cached[1]

    # -- bytes -----------------------------------------------------------------------------

    @fuse_boundary
    async def open(
        self, inode: pyfuse3.InodeT, flags: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileInfo:
        if flags & os.O_ACCMODE != os.O_RDONLY:
            raise pyfuse3.FUSEError(errno.EROFS)
        node = await self._ns.getattr(inode)  # the freshness check (cached within the TTL)
        if node.is_dir or node.meta is None:
            raise pyfuse3.FUSEError(errno.EISDIR)
        reader = self._prefetcher.open(node.meta)
        self._dir_ahead.opened(inode, node.meta.key)
        fh = self._new_fh()
        self._files[fh] = (inode, reader)
        keep = self._last_etag.get(inode) == node.meta.etag
        self._last_etag[inode] = node.meta.etag
        return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(fh), keep_cache=keep)

    @fuse_boundary
    async def read(self, fh: pyfuse3.FileHandleT, off: int, size: int) -> bytes:
        with self._read_seconds.time():  # failed and interrupted reads count too
            return await self._read(fh, off, size)

    async def _read(self, fh: pyfuse3.FileHandleT, off: int, size: int) -> bytes:
        inode, reader = self._files[fh]
        try:
            return await reader.read(off, size)
        except (ObjectCorrupt, ObjectChanged) as exc:
            # Pages of this inode may hold bytes that failed verification, or of a version that
            # is gone: drop them, and make the next open start without keep_cache.
            self._last_etag.pop(inode, None)
            trio.lowlevel.spawn_system_task(_invalidate, inode)
            if isinstance(exc, ObjectChanged):
                self._ns.invalidate()  # the next open re-lists and sees the new version
            raise

    @fuse_boundary
    async def release(self, fh: pyfuse3.FileHandleT) -> None:
        entry = self._files.pop(fh, None)
        if entry is not None:
            reader = entry[1]
            self._dir_ahead.closed(reader.meta.key, reader.read_to_end)
            await reader.aclose()

    # -- misc ------------------------------------------------------------------------------

    @fuse_boundary
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        data.f_bsize = self._look.block_size
        data.f_frsize = self._look.block_size
        data.f_namemax = 255
        return data

    @fuse_boundary
    async def listxattr(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
    ) -> Sequence[pyfuse3.XAttrNameT]:
        node = self._ns.get(inode)
        if node.is_dir:
            return []
        return [pyfuse3.XAttrNameT(name) for name in XATTRS]

    @fuse_boundary
    async def getxattr(
        self, inode: pyfuse3.InodeT, name: pyfuse3.XAttrNameT, ctx: pyfuse3.RequestContext
    ) -> bytes:
        """`user.ossmount.state` tells a user (and the demo) whether a file is verified."""
        node = self._ns.get(inode)
        if node.is_dir or node.meta is None or name not in XATTRS:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        if name == XATTR_KEY:
            return node.meta.key.encode()
        if name == XATTR_ETAG:
            return node.meta.etag.encode()
        state = self._prefetcher.cached_state(node.meta)
        if name == XATTR_STATE:
            return state[0].encode()
        return format_crc(state[1]).encode()


def link_target(
    link_key: str, target_key: str, root_prefix: str, shown_name: str | None = None
) -> str | None:
    """The POSIX target of symlink `link_key` → `target_key`: relative to the link's
    directory, and never leaving the mount root. `shown_name` replaces the target's last
    component when the object is shown under another name (`x.ossfile`, shadowed by `x/`).

    None when the target is outside the mounted prefix or has no path under it (a `..` or
    empty component: OSS takes the target literally as a key, it does not resolve it). A
    plain `relpath` of the keys would turn `other/x` under a prefix mount, or `a/../../etc`,
    into a path that climbs out of the mount onto the local disk.
    """
    link = split_key(link_key, root_prefix)
    target = split_key(target_key, root_prefix)
    if link is None or target is None or target_key.endswith("/"):
        return None
    if shown_name is not None:
        target = (*target[:-1], shown_name)
    return posixpath.relpath("/".join(target), "/".join(link[:-1]) or ".")


def _is_symlink(node: Node) -> bool:
    return node.meta is not None and node.meta.object_type == "Symlink"


class SymlinkSource(Protocol):
    async def get_symlink(self, key: str) -> str: ...


async def _invalidate(inode: int) -> None:
    # invalidate_inode blocks on the kernel, which may wait for this very request: in a thread.
    try:
        await trio.to_thread.run_sync(pyfuse3.invalidate_inode, pyfuse3.InodeT(inode), False)
    except OSError as exc:
        log.debug("invalidate_inode(%d) failed: %s", inode, exc)


async def drop_kernel_caches(entries: Sequence[tuple[int, str, int]]) -> None:
    """Make the kernel forget the names and attributes it caches for `entries`
    ((parent inode, name, inode), from `Namespace.kernel_entries`), so the next access asks
    us, and we ask OSS, instead of trusting them for up to `attr_timeout`.

    Names are dropped through pyfuse3's notification thread (`invalidate_entry_async`);
    attributes with `invalidate_inode(attr_only=True)`, which blocks on the kernel, so in a
    worker thread. ENOENT (the kernel forgot it meanwhile) is expected and ignored.
    """
    for parent, name, _inode in entries:
        pyfuse3.invalidate_entry_async(
            pyfuse3.InodeT(parent), pyfuse3.FileNameT(os.fsencode(name)), ignore_enoent=True
        )

    def attributes() -> None:
        for _parent, _name, inode in entries:
            try:
                pyfuse3.invalidate_inode(pyfuse3.InodeT(inode), True)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    log.debug("invalidate_inode(%d) failed: %s", inode, exc)

    await trio.to_thread.run_sync(attributes)
