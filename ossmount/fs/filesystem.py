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
    * Writes (`-o rw`, `staging` given): a file open for writing is a `Staged` file
      (fs/staging.py); while it exists, lookups, getattr and reads of that inode answer from
      it (the staged size, mode, owner and mtime, the staged bytes), not from OSS. Flush
      (every close) and fsync commit it and record the new object in the namespace
      (`Namespace.learned`), so no cached name or listing hides it. Without `staging`
      every write raises ReadOnly.
    * Modes, owners and mtimes shown: fs/shown.py (`self.attr`).

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
import posixpath
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import NoReturn, Protocol

import trio

from ossmount.cache.adopt import Adopter
from ossmount.cache.errors import CacheError
from ossmount.fs.attrs import Attr, FsStats, Opened, Presentation, direct_writes, is_symlink
from ossmount.fs.dirattrs import make_dir
from ossmount.fs.dirrename import rename_tree
from ossmount.fs.errors import (
    Exists,
    IsADirectory,
    NotASymlink,
    NotEmpty,
    NotSupported,
    ReadOnly,
    Refused,
    Stale,
    UnknownHandle,
)
from ossmount.fs.filerename import move_file
from ossmount.fs.linkattrs import make_link, move_link
from ossmount.fs.links import SymlinkSource, SymlinkTargets
from ossmount.fs.newnames import new_entry
from ossmount.fs.ownattrs import OwnAttrs
from ossmount.fs.setattrs import set_attrs
from ossmount.fs.shown import AttrView, Posix, ShownAttrs
from ossmount.fs.staged import Staged, staged_state
from ossmount.fs.stagednames import (
    add_staged,
    forget_dropped,
    put_staged,
    show_unsent,
)
from ossmount.fs.stagedspace import StagedSpace
from ossmount.fs.staging import NoRoomYet, Staging
from ossmount.fs.stamps import now_s
from ossmount.fs.xattrs import check_namespace, xattr_value
from ossmount.oss.models import ObjectMeta
from ossmount.prefetch import ObjectChanged, ObjectCorrupt, ObjectReader, Prefetcher, ReadError
from ossmount.prefetch.siblings import DirectoryReadAhead
from ossmount.service.metrics import MountMetrics
from ossmount.tree.errors import NotADirectory, NotFound
from ossmount.tree.listing import DirSnapshot, Namespace
from ossmount.tree.names import join_path
from ossmount.tree.node import Node
from ossmount.write import StagedFile
from ossmount.write.journal import JournalRecord

__all__ = ["FileSystem", "KernelCache", "ReplyEntry"]

log = logging.getLogger(__name__)

# What an unlink or rename waits to fetch for the handles still reading an object it takes
# away (`_keep_for_readers`): about 2 s on loopback, 10 s at 100 MB/s.
_KEEP_MAX_BYTES = 1 << 30

# readdir hands each entry to this: (name, attributes, cookie of the next entry) -> whether
# the kernel's buffer took it.
ReplyEntry = Callable[[str, Attr, int], bool]

_NOREPLACE, _RENAME_EXCHANGE = 1, 2  # renameat2 flags, as pyfuse3 passes them


class KernelCache(Protocol):
    """What the filesystem asks of the kernel's caches (pyfuse3 in the mount, a fake in tests)."""

    def invalidate_inode(self, inode: int) -> None:
        """Drop the kernel's cached pages of `inode`, soon; must not block the caller."""

    def forget_name(self, parent: int, name: str) -> None:
        """Drop the kernel's cached entry `name` in directory `parent`, soon; must not block."""


@dataclass(slots=True)
class _OpenFile:
    inode: int
    reader: ObjectReader | None  # None: served by `staged`
    staged: Staged | None = None
    unread: ObjectReader | None = None  # of `staged.unread.source`, opened on the first read
    # Readers this handle left while a read of theirs was under way: closed at its release
    # (closing one under a read could close its cache entry under it).
    retired: list[ObjectReader] = field(default_factory=list)


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
        staging: Staging | None = None,
        shown: ShownAttrs | None = None,
        own_attrs: OwnAttrs | None = None,
    ) -> None:
        """`shown`: what a read-only mount shows of attributes stored earlier (a `--rw`
        mount's come from `staging`, which learns more as it stores). `own_attrs`
        (--own-attrs): HEADs files whose attributes are unknown before showing them."""
        self._ns = namespace
        self._own_attrs = own_attrs
        if own_attrs is not None:
            namespace.on_marker = own_attrs.listed_marker
        self._staging = staging
        if staging is not None:
            staging.on_commit = self._committed
            namespace.held = staging.by_path  # listings leave files being written as they are
            staging.pins = namespace.table  # a staged file keeps its number (Staging.pins)
            staging.owed.on_new_etag = lambda key: namespace.invalidate()  # never on OSS
            if staging.adopter is None:
                staging.adopter = Adopter(prefetcher.store, prefetcher.config.part_size)
            if staging.space is None:
                staging.space = StagedSpace(prefetcher.store)
        self._prefetcher = prefetcher
        self._look = look
        staged = None
        if staging is not None:
            shown, staged = staging.known.shown, staging.by_inode
        self.attr = AttrView(look, namespace.root_prefix, shown, staged)  # fs/shown.py
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

    def show_unsent(self, unsent: Iterable[tuple[StagedFile, JournalRecord]]) -> None:
        """fs/stagednames.py `show_unsent`: before the mount is ready."""
        assert self._staging is not None
        show_unsent(self._ns, self._staging, unsent)

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
        if self._staging is not None and self._staging.by_path:
            inode = self._staging.by_path.get(join_path(self._ns.get(parent).path, name))
            if inode is not None:  # created here, not committed yet: OSS does not know it
                self._ns.remember(inode)
                return self.attr(self._ns.get(inode))
        node = await self._ns.lookup(parent, name)
        if self._own_attrs is not None:
            await self._own_attrs.learn((node,))
        return self.attr(node)

    def forget(self, inode: int, count: int) -> None:
        """The kernel dropped `count` references. At zero it has evicted the inode and its
        pages, so there is no page cache left to keep: the inode's `_last_etag` (and symlink
        target) go too. That bounds both by what the kernel holds, not by every file ever
        opened during the mount."""
        if not self._ns.forget(inode, count):
            self._last_etag.pop(inode, None)
            self._links.forget(inode)

    async def getattr(self, inode: int) -> Attr:
        if self._staging is not None and inode in self._staging.by_inode:
            return self.attr(self._ns.get(inode))  # pinned while staged (Staging.pins)
        if self._ns.table.detached(inode) and any(h.inode == inode for h in self._files.values()):
            # Unlinked or replaced by this mount while open: as a local file's, its attributes
            # stay for its descriptors. The kernel asks before a read past the size it knows,
            # and its ENOENT would fail that read.
            return self.attr(self._ns.get(inode))
        node = await self._ns.getattr(inode)
        if self._own_attrs is not None:
            await self._own_attrs.learn((node,))
        return self.attr(node)

    async def opendir(self, inode: int) -> int:
        snapshot = await self._ns.opendir(inode)
        if self._own_attrs is not None:
            await self._own_attrs.learn(snapshot.entries)
        if self._staging is not None and self._staging.by_path:
            add_staged(self._ns, snapshot, self._staging)
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
        attr, remember = self.attr, self._ns.remember
        for next_id, node in snapshot.entries_from(start_id):
            if not reply(node.name, attr(node), next_id):
                return
            remember(node.inode)

    async def fsyncdir(self, fh: int) -> None:
        """The attributes the directory's marker owes (fs/owedattrs.py) stored, and renames
        of files whose write-back upload is held back made durable (fs/writeback.py)."""
        snapshot = self._dirs.get(fh)
        if snapshot is None or self._staging is None:
            return
        if self._staging.writeback:
            await self._staging.sync_names()
        if snapshot.path:
            await self._staging.owed.store(self._key(snapshot.path) + "/")

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
        writing = flags & os.O_ACCMODE != os.O_RDONLY
        staged = self._staging.by_inode.get(inode) if self._staging else None
        if writing or staged is not None:
            return await self._open_staged(inode, flags, staged)
        node = await self._entry_to_open(inode)  # the freshness check (cached within the TTL)
        if node.is_dir or node.meta is None:
            raise IsADirectory(self._where(node), "open of a directory as a file")
        meta = node.meta
        if self._staging is not None:
            self._staging.adopt_now(meta.key)  # just written here: read from the cache
        reader = self._prefetcher.open(meta)
        self._dir_ahead.opened(inode, meta.key)
        fh = self._new_fh()
        self._files[fh] = _OpenFile(inode, reader)
        keep = self._last_etag.get(inode) == meta.etag
        self._last_etag[inode] = meta.etag
        return Opened(fh, keep)

    async def _entry_to_open(self, inode: int) -> Node:
        """`Namespace.getattr` for an open of `inode`, which is not staged: an entry that is
        gone (detached, tree/inodes.py) is Stale, so the kernel looks its name up again."""
        try:
            return await self._ns.getattr(inode)
        except NotFound:
            if self._ns.table.detached(inode):
                raise Stale(f"<inode {inode}>", "its entry is gone") from None
            raise

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        timer = self._read_seconds.time() if self._read_seconds else contextlib.nullcontext()
        with timer:  # failed and interrupted reads count too
            return await self._read(fh, offset, size)

    async def _read(self, fh: int, offset: int, size: int) -> bytes:
        handle = self._files.get(fh)
        if handle is None:
            raise UnknownHandle(f"<file handle {fh}>", "not open")
        if handle.reader is None:
            assert handle.staged is not None
            assert self._staging is not None
            if offset < handle.staged.unread_end:
                return await self._read_unread(handle, offset, size)
            return self._staging.read(handle.staged, offset, size)
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

    async def _read_unread(self, handle: _OpenFile, offset: int, size: int) -> bytes:
        """A read of the unread start of a file appended to (Staged.unread) goes to the
        version that holds it, through the verified read path, then on into the staged
        bytes."""
        staged = handle.staged
        assert staged is not None
        while True:
            start = staged.unread
            if start is None:  # fetched meanwhile
                assert self._staging is not None
                return self._staging.read(staged, offset, size)
            source = start.source
            if handle.unread is None or handle.unread.meta != source:  # a new version
                if handle.unread is not None:
                    await handle.unread.aclose()
                handle.unread = self._prefetcher.open(source)
            want = min(size, start.below - offset)
            try:
                data = await handle.unread.read(offset, want)
                break
            except ObjectChanged:
                assert self._staging is not None
                # A commit of this file may have replaced that version, its reply not in
                # yet: its end tells.
                await self._staging.settle(staged)
                if staged.unread is not None and staged.unread.source == source:
                    raise
                # a commit of this file replaced that version meanwhile: read the new one
        if len(data) < want or len(data) == size:
            return data
        assert self._staging is not None  # the rest: staged bytes (also if fetched meanwhile)
        return data + self._staging.read(staged, offset + len(data), size - len(data))

    async def release(self, fh: int) -> None:
        handle = self._files.pop(fh, None)
        if handle is None:
            return
        if handle.unread is not None:
            await handle.unread.aclose()
        for retired in handle.retired:
            await retired.aclose()
        if handle.staged is not None:
            assert self._staging is not None
            await self._staging.release(handle.staged)  # a commit there tells `_committed`
            forget_dropped(self._ns, self._staging, self._kernel.forget_name, handle.staged)
        if handle.reader is not None:
            reader = handle.reader
            self._dir_ahead.closed(reader.meta.key, reader.read_to_end)
            await reader.aclose()

    # -- writes (-o rw) ----------------------------------------------------------------------

    def _writable(self, inode: int) -> Staging:
        if self._staging is None:
            raise ReadOnly(self._where(self._ns.get(inode)), "the mount is read-only")
        return self._staging

    def _key(self, path: str) -> str:
        return self._ns.root_prefix + path

    async def _open_staged(self, inode: int, flags: int, staged: Staged | None) -> Opened:
        """An open that writes, or any open of a file being written (it reads the staged
        bytes). Writing into an existing object stages all of it first (through the verified
        read path); O_TRUNC starts empty."""
        writing = flags & os.O_ACCMODE != os.O_RDONLY
        staging = self._writable(inode) if writing else self._staging
        assert staging is not None
        if staged is None:
            node = await self._entry_to_open(inode)
            if node.is_dir or node.meta is None:
                raise IsADirectory(self._where(node), "open of a directory as a file")
            staged = staging.by_inode.get(inode)  # another open may have started it meanwhile
        if staged is not None and not staged.filled.is_set():  # another open stages the object
            await staged.filled.wait()  # then look again: a failed fill's file is gone
            return await self._open_staged(inode, flags, staging.by_inode.get(inode))
        if staged is None:
            meta = node.meta
            assert meta is not None
            staged = staging.start(inode, node.path, meta.key, base_etag=meta.etag)
            self.attr.carry(node, staged)
            try:
                if not flags & os.O_TRUNC and meta.size:
                    staged.filled = trio.Event()  # an open joining meanwhile waits for it
                    staging.adopt_now(meta.key)
                    reader = self._prefetcher.open(meta)
                    try:
                        append, crc = self._append_fill(flags, meta)
                        await staging.fill(staged, reader, meta, append=append, whole_crc=crc)
                    finally:
                        await reader.aclose()
            except BaseException:
                await staging.release(staged)  # drops the file before any checkpoint
                raise
            finally:
                staged.filled.set()  # only now: no one joins the torn copy of a failed fill
        else:
            staged.handles += 1
        if writing and flags & os.O_TRUNC:
            await staging.quiesce_held(staged)  # what a write-back close sealed goes up first
            # Dirty (an empty object replaces the old one at close) and, as on ext4, a mtime
            # a utimens set is now, even if the file was empty already (a stress run under
            # write-back: `touch -d` then `: >` of an empty file kept the old mtime).
            await self._before_truncate(staged, 0)
            staging.truncate(staged, 0)
        await self._readers_follow(inode, staged)
        fh = self._new_fh()
        self._files[fh] = _OpenFile(inode, None, staged)
        self._last_etag.pop(inode, None)
        return Opened(fh, False, direct_writes(flags))

    async def _readers_follow(self, inode: int, staged: Staged) -> None:
        """Handles of `inode` opened for reading before it was staged read the staged bytes
        from now on, as a local file's descriptors see every write to it. Left on the version
        they opened, they would read its cached parts (bytes this mount has replaced) and,
        once the commit replaces it, fail with ESTALE on the next GET.

        The switch of every such handle is one synchronous step (no read of `inode` starts
        between two of them); a read already in flight finishes on the old version."""
        left = self._readers_of(inode)
        for handle, _ in left:
            handle.reader, handle.staged = None, staged
            staged.handles += 1
        for handle, reader in left:
            self._dir_ahead.closed(reader.meta.key, reader.read_to_end)
            await self._retire(handle, reader)

    def _readers_of(self, inode: int) -> list[tuple[_OpenFile, ObjectReader]]:
        """The handles of `inode` reading an object version (not a staged file), with it."""
        return [(h, h.reader) for h in self._files.values()
                if h.inode == inode and h.reader is not None]  # fmt: skip

    async def _retire(self, handle: _OpenFile, reader: ObjectReader) -> None:
        """`reader`, which `handle` no longer reads through, closed now, or at the handle's
        release if a read of it is under way."""
        if reader.reading:
            handle.retired.append(reader)
        else:
            await reader.aclose()

    async def create(
        self, parent: int, name: str, flags: int, mode: int = 0o644, uid: int | None = None,
        gid: int | None = None,
    ) -> tuple[Opened, Attr]:  # fmt: skip
        """A new file (open with O_CREAT of a name that does not exist): staged until close,
        then stored with `mode` and the creator's `uid`/`gid` (as ossfs's s3fs_create)."""
        staging = self._writable(parent)
        pnode = self._ns.get(parent)
        if not pnode.is_dir:
            raise NotADirectory(pnode.path)
        path, key = new_entry(self._ns.root_prefix, pnode.path, name)
        if path in staging.by_path:
            if flags & os.O_EXCL:
                raise Exists(path, "is being created")
            inode = staging.by_path[path]
            opened = await self._open_staged(inode, flags, staging.by_inode[inode])
            self._ns.remember(inode)
            return opened, self.attr(self._ns.get(inode))
        node = put_staged(self._ns, path, key, 0, None)
        self._ns.remember(node.inode)  # no await since the put: the entry cannot be evicted
        staged = staging.start(node.inode, path, key, forbid=bool(flags & os.O_EXCL))
        staged.dirty = True  # an empty file is committed too
        staged.mode = stat.S_IFREG | (mode & 0o7777)
        staged.uid, staged.gid = uid, gid
        staged.atime_ns = staged.ctime_ns = now_s()  # as ossfs's create (fs/stamps.py)
        fh = self._new_fh()
        self._files[fh] = _OpenFile(node.inode, None, staged)
        return Opened(fh, False, direct_writes(flags)), self.attr(node)

    def _append_fill(self, flags: int, meta: ObjectMeta) -> tuple[bool, int | None]:
        """Whether `Staging.fill` may leave the start of an object opened for writing
        unread (an appender's, unless the read cache holds that version whole: it is then
        copied from there, no GET, and the file committed becomes the cache's entry of the
        new version, as before), and its CRC-64 if the cache knows it (no HEAD then)."""
        if not flags & os.O_APPEND:
            return False, None
        state, crc = self._prefetcher.cached_state(meta)
        return state != "verified", crc

    async def _fetch_unread(self, staged: Staged) -> None:
        assert self._staging is not None
        await self._staging.fetch_unread(staged, self._prefetcher.open)

    async def _before_truncate(self, staged: Staged, size: int) -> None:
        """An unread start a truncate keeps part of is fetched first; one being fetched is
        waited for (its writes must not land after the truncate)."""
        start = staged.unread
        if start is not None and (0 < size < start.below or start.fetching is not None):
            await self._fetch_unread(staged)

    async def _truncate_waiting(self, staged: Staged, size: int, still: Callable[[], bool]) -> bool:
        """Truncate `staged` once its pending upload landed and what the truncate keeps of
        an unread start is fetched, waiting while the cache has no room for a growth yet
        (NoRoomYet, as `write_waiting`); False, changing nothing, when `still()` says after
        one of those waits that the file is no longer the one to truncate."""
        assert self._staging is not None
        while True:
            await self._staging.quiesce(staged)  # a pending write-back upload lands first
            if not still():
                return False
            await self._before_truncate(staged, size)
            if not still():
                return False
            try:
                self._staging.truncate(staged, size)
                return True
            except NoRoomYet as no_room:
                await no_room.wait()

    async def _keep_for_readers(self, going: Callable[[str], bool]) -> None:
        """The objects whose keys are `going` are about to go (unlinked, replaced or moved
        away by a rename): for the handles reading them, the rest of each is fetched into
        the cache first, as a local file's bytes stay readable through its open descriptors;
        up to _KEEP_MAX_BYTES per object, so an `rm` does not wait minutes for a big file
        some forgotten `less` holds open. If that is too much or fails (the object changed
        meanwhile, the link is down), the change goes on: those handles' reads of what is
        not cached fail (ESTALE), as they would have anyway.

        The fetch is made through a reader of our own on the same download: the handle's
        may be closed meanwhile (its process exits), and the last reader's close stops the
        download's read-ahead and may close it under this wait."""
        versions = {h.reader.meta for h in self._files.values() if h.reader is not None}
        for meta in [m for m in versions if going(m.key)]:
            keeper = self._prefetcher.open(meta)
            try:
                if await keeper.fetch_all(_KEEP_MAX_BYTES):
                    continue
                why = f"more than {_KEEP_MAX_BYTES >> 20} MiB of it not cached"
            except (ReadError, CacheError) as exc:
                why = str(exc)
            finally:
                await keeper.aclose()
            log.info("oss://%s/%s: not kept for its open handles: %s", self._bucket, meta.key,
                     why)  # fmt: skip

    async def _readers_moved(self, inode: int, old: ObjectMeta, moved: ObjectMeta) -> None:
        """`inode`'s object was renamed by this mount: the handles reading it go on at the
        new key, where the copy (fenced on the old ETag: the same bytes) is; at the old one
        their next GET would find nothing. The source's CRC-64 stays theirs to check against
        (a copy may have none)."""
        crc = moved.crc64 if moved.crc64 is not None else old.crc64
        left = self._readers_of(inode)
        for handle, _ in left:
            handle.reader = self._prefetcher.open(replace(moved, crc64=crc))
        for handle, reader in left:
            await self._retire(handle, reader)

    async def _keep_readable(self, staged: Staged) -> None:
        """A file still open whose object is about to go (unlinked, replaced): its unread
        start is fetched first, as a local file's bytes stay readable through its handles."""
        if staged.handles and staged.unread is not None:
            await self._fetch_unread(staged)

    def _staged_handle(self, fh: int) -> Staged:
        handle = self._files.get(fh)
        if handle is None or handle.staged is None:
            raise UnknownHandle(f"<file handle {fh}>", "not open for writing")
        return handle.staged

    async def before_write(self, fh: int) -> None:
        """A pending write-back upload lands first (Staging.quiesce); `write` follows."""
        assert self._staging is not None
        await self._staging.quiesce(self._staged_handle(fh))

    def write(self, fh: int, offset: int, data: bytes) -> int:
        assert self._staging is not None
        return self._staging.write(self._staged_handle(fh), offset, data)

    async def write_waiting(self, fh: int, offset: int, data: bytes) -> int:
        """A write from the kernel: `before_write`, then `write`, waiting while the cache
        has no room for it yet but parts of the file being sent will make some (NoRoomYet:
        a file bigger than the room left, written faster than it is uploaded)."""
        while True:
            await self.before_write(fh)
            staged = self._staged_handle(fh)
            if offset < staged.unread_end:  # the start of an object appended to: fetched first
                await self._fetch_unread(staged)
                continue
            try:
                return self.write(fh, offset, data)
            except NoRoomYet as no_room:
                await no_room.wait()

    @property
    def writes(self) -> bool:
        """A read-write mount (`--rw`): closes may have something to commit."""
        return self._staging is not None

    async def flush(self, fh: int) -> None:
        """Every close: commit what the file's handles wrote, verified, or raise (EIO)."""
        handle = self._files.get(fh)
        if handle is None or handle.staged is None or not handle.staged.dirty:
            return
        staging = self._staging
        assert staging is not None
        if staging.writeback and await staging.seal_and_schedule(handle.staged):
            return  # durable on local disk; the upload runs in the background
        await self._commit(handle.staged)

    async def fsync(self, fh: int) -> None:
        """The file's bytes committed, and the attributes it owes (fs/owedattrs.py) stored."""
        handle = self._files.get(fh)
        if handle is None or self._staging is None:
            return
        if handle.staged is not None and handle.staged.dirty:
            await self._commit(handle.staged)
        node = self._ns.get(handle.inode)
        if node.meta is not None:
            await self._staging.owed.store(node.meta.key)

    async def _commit(self, staged: Staged) -> None:
        assert self._staging is not None
        await self._staging.commit(staged)  # which tells `_committed`

    def _committed(self, staged: Staged, meta: ObjectMeta) -> None:
        if not staged.orphan:
            self._ns.learned(staged.path, meta)
            self._last_etag.pop(staged.inode, None)

    async def setattr(
        self,
        inode: int,
        *,
        size: int | None,
        mtime_ns: int | None,
        fh: int | None,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        atime_ns: int | None = None,
    ) -> Attr:
        """truncate (size) works on the staged file (staging the object if no handle is
        open, then committing it at once); mode, owners and times: see fs/setattrs.py."""
        staging = self._writable(inode)
        while size is not None:
            staged = staging.by_inode.get(inode)
            if staged is not None and staged.handles:  # committed by that handle's close

                def still(staged: Staged = staged) -> bool:
                    return staging.by_inode.get(inode) is staged and bool(staged.handles)

                if await self._truncate_waiting(staged, size, still):
                    break
                continue  # closed (or replaced) meanwhile: look again
            # none open (a write-back upload may still hold it): commit it here
            opened = await self._open_staged(
                inode, os.O_WRONLY | (os.O_TRUNC if size == 0 else 0), staged
            )
            try:
                handle = self._staged_handle(opened.fh)
                await self._truncate_waiting(handle, size, lambda: True)
                await self._commit(handle)
            finally:
                await self.release(opened.fh)
            break
        if (posix := Posix(mode, uid, gid, mtime_ns, atime_ns)) != Posix():
            await set_attrs(staging, self._ns, self.attr, inode, posix)
        return await self.getattr(inode)

    async def unlink(self, parent: int, name: str) -> None:
        staging = self._writable(parent)
        path = join_path(self._ns.get(parent).path, name)
        inode = staging.by_path.get(path)
        if inode is not None:
            staged = staging.by_inode[inode]
            await self._keep_readable(staged)
            staging.unlinked(staged)  # no commit of it starts from here on
            await staging.settle(staged)  # one running (write-back, another close) lands first
            await staging.disown(staged)  # and a crash cannot bring it back
            staging.unused(staged)  # no handle open: its staged bytes go now
            if staged.committed is not None:  # this mount's version: delete it by its key
                await self._delete_file(staging, staged.committed.key, inode, path)
                return
            if staged.replaces:  # OSS holds what its upload was to replace
                await self._delete_file(staging, staged.key, inode, path)
                return
            if not staged.base_etag:
                self._ns.deleted(inode, path)  # never reached OSS
                return
        node = await self._ns.entry(parent, name)
        if node.is_dir or node.meta is None:
            raise IsADirectory(self._where(node), "unlink of a directory")
        key = node.meta.key
        await self._keep_for_readers(lambda reading: reading == key)
        await self._delete_file(staging, key, node.inode, node.path)

    async def _delete_file(self, staging: Staging, key: str, inode: int, path: str) -> None:
        await staging.delete_object(key)
        self._ns.deleted(inode, path)

    async def mkdir(
        self, parent: int, name: str, mode: int = 0o755, uid: int | None = None,
        gid: int | None = None,
    ) -> Attr:  # fmt: skip
        """A `dir/` marker object carrying mode, owner and mtime, as ossfs makes them
        (fs/dirattrs.py)."""
        staging = self._writable(parent)
        path, key = new_entry(self._ns.root_prefix, self._ns.get(parent).path, name, "/")
        if path in staging.by_path:
            raise Exists(path, "a file is being created under that name")
        await make_dir(staging.uploader.writes, staging.known, key, mode=mode,
                       uid=uid, gid=gid)  # fmt: skip
        node = self._ns.learned(path, None, is_dir=True)
        assert node is not None
        self._ns.remember(node.inode)
        return self.attr(node)

    async def rmdir(self, parent: int, name: str) -> None:
        """Empty directories only; deleting the `dir/` marker (an implicit directory has
        none, and is never empty)."""
        staging = self._writable(parent)
        node = await self._ns.entry(parent, name)
        if not node.is_dir:
            raise NotADirectory(node.path)
        snapshot = await self._ns.opendir(node.inode)
        try:
            if snapshot.entries:
                raise NotEmpty(self._where(node), "directory not empty")
        finally:
            self._ns.releasedir(snapshot)
        if any(p.startswith(node.path + "/") for p in staging.by_path):
            raise NotEmpty(self._where(node), "a file is being created in it")
        await staging.delete_object(self._key(node.path) + "/")
        self._ns.deleted(node.inode, node.path)

    async def rename(
        self, parent_old: int, name_old: str, parent_new: int, name_new: str, flags: int
    ) -> None:
        """A file or link: fs/filerename.py; the inode keeps its number under the new name.
        A directory: key by key (fs/dirrename.py)."""
        staging = self._writable(parent_old)
        if flags & _RENAME_EXCHANGE:
            raise NotSupported(name_old, "RENAME_EXCHANGE")
        new_path, _ = new_entry(self._ns.root_prefix, self._ns.get(parent_new).path, name_new)
        new_key = self._key(new_path)
        old_path = join_path(self._ns.get(parent_old).path, name_old)
        if new_path != old_path and not flags & _NOREPLACE:
            # What it replaces stays readable through its handles.
            await self._keep_for_readers(lambda reading: reading == new_key)
        inode = staging.by_path.get(old_path)
        staged = staging.by_inode.get(inode) if inode is not None else None
        if staged is not None and not flags and await self._rekey(staging, staged, new_path):
            return
        if staged is not None and (staged.dirty or staged.pending):
            await self._commit(staged)  # the copy must carry what was written (or is being)
        node = await self._ns.entry(parent_old, name_old)
        if node.is_dir or node.meta is None:
            await self._rename_dir(staging, node, new_path)
            return
        meta = node.meta
        if new_key == meta.key:
            return
        victim = staging.by_inode.get(staging.by_path.get(new_path, 0))
        if victim is not None and victim.inode == node.inode:
            victim = None
        if victim is not None:
            await self._keep_readable(victim)
        moved = await move_file(staging, meta, new_key, self._ns.root_prefix, victim=victim,
                                noreplace=bool(flags & _NOREPLACE))  # fmt: skip
        self._ns.learned(node.path, None)
        self._ns.moved(node.inode, new_path)
        self._ns.learned(new_path, moved)
        self._last_etag.pop(node.inode, None)
        await self._readers_moved(node.inode, meta, moved)
        if staged is not None:
            staging.moved(staged, new_path, moved)
            staging.unused(staged)  # committed for the copy: to the read cache if unused
        if victim is not None:
            staging.unused(victim)

    async def _rekey(self, staging: Staging, staged: Staged, new_path: str) -> bool:
        """-o writeback: a file closed moments ago, whose upload has not started and which has
        no older version on OSS (rsync's temporary file), moves without a request: its sealed
        journal names the new key before the rename returns (fsynced; the directory is not:
        fsyncdir), and its one upload goes there (Staging.rekey, fs/writeback.py). A file
        staged under the new name is replaced, as by unlink. False: not such a file, nothing
        done."""
        victim = staging.by_inode.get(staging.by_path.get(new_path, 0))
        if victim is staged:
            victim = None
        if victim is not None:
            await self._keep_readable(victim)
        old_path = staged.path
        async with victim.lock if victim is not None else contextlib.nullcontext():
            if not await staging.rekey(staged, new_path, self._key(new_path)):
                return False
            if victim is not None:
                staging.unlinked(victim)
                await staging.disown(victim)  # its sealed journal must not land later
        self._ns.learned(old_path, None)
        self._ns.learned(new_path, None)  # OSS has the replaced object until the upload lands
        self._ns.moved(staged.inode, new_path)
        put_staged(self._ns, new_path, staged.key, staged.size, staged.mtime_ns)  # its new key
        self._last_etag.pop(staged.inode, None)
        if victim is not None:
            staging.unused(victim)
        return True

    async def _rename_dir(self, staging: Staging, node: Node, new_path: str) -> None:
        """Every key under the directory moves; the inodes under it keep their numbers under
        the new path, and the metadata cache starts over (names under both paths changed).
        Files closed under it whose write-back upload is pending are uploaded first; one
        still being written answers EXDEV, so `mv` copies instead."""
        inside, onto = node.path + "/", new_path + "/"
        for closed in [staging.by_inode[i] for p, i in staging.by_path.items()
                       if p.startswith(inside) and not staging.by_inode[i].handles]:  # fmt: skip
            await staging.quiesce(closed)
            staging.unused(closed)
        if any(p.startswith(inside) for p in staging.by_path):
            raise NotSupported(self._where(node), "rename of a directory with files being written")
        if any(p.startswith(onto) for p in staging.by_path):  # not on OSS yet: rename_tree
            raise NotEmpty(self._where_path(new_path), "a file is being created in it")
        writes, prefix = staging.uploader.writes, self._ns.root_prefix
        await staging.owed.store_under(self._key(node.path) + "/")  # the copies keep metadata
        await self._keep_for_readers(lambda reading: reading.startswith(self._key(inside)))
        moved = await rename_tree(
            writes,
            self._key(node.path) + "/",
            self._key(new_path) + "/",
            staging.uploader.ledger,
            lambda meta, key: move_link(writes, staging.known, meta, key, prefix),
        )
        self._ns.moved_tree(node.inode, new_path)
        staging.known.shown.moved_tree(
            self._key(node.path) + "/", self._key(new_path) + "/", time.time_ns()
        )
        log.info("renamed %s to %s/: %d keys copied then deleted", self._where(node),
                 self._key(new_path), moved)  # fmt: skip

    def mknod(self, parent: int, name: str) -> NoReturn:
        """A FIFO, socket or device cannot be an object: EPERM, which mknod(2) answers when
        the filesystem does not support the node type (pyfuse3's default was ENOSYS, "Function
        not implemented", to `mkfifo`); EROFS on a read-only mount, as every write. Regular
        files come through `create`."""
        self._writable(parent)
        path, _ = new_entry(self._ns.root_prefix, self._ns.get(parent).path, name)
        raise Refused(self._where_path(path), "a FIFO, socket or device cannot be an object")

    async def symlink(
        self, parent: int, name: str, target: str, uid: int | None = None, gid: int | None = None
    ) -> Attr:
        """A PutSymlink object (fs/linkattrs.py) whose target is the key the POSIX target names
        (relative to the link's directory); a target leaving the mount, or absolute, cannot be
        an OSS symlink this mount shows the same way: refused (EPERM)."""
        staging = self._writable(parent)
        path, key = new_entry(self._ns.root_prefix, self._ns.get(parent).path, name)
        dir_path = path.rpartition("/")[0]
        resolved = posixpath.normpath(posixpath.join(dir_path, target)) if target else ""
        outside = resolved in ("", ".", "..") or resolved.startswith("../")
        if target.startswith("/") or outside:
            raise Refused(self._where_path(path), f"symlink target {target!r} is outside the mount")
        meta = await make_link(staging.uploader.writes, staging.known, key,
                               self._key(resolved), self._ns.root_prefix, uid, gid)  # fmt: skip
        node = self._ns.learned(path, meta)
        assert node is not None
        self._ns.remember(node.inode)
        return self.attr(node)

    def _where_path(self, path: str) -> str:
        return f"oss://{self._bucket}/{self._key(path)}"

    # -- misc ------------------------------------------------------------------------------

    def statfs(self) -> FsStats:
        return FsStats.of(self._look.block_size, writable=self._staging is not None)

    def listxattr(self, inode: int) -> list[str]:
        """None listed: ours are read by name only (fs/xattrs.py says why)."""
        self._ns.get(inode)  # an unknown inode is still ENOENT
        return []

    def getxattr(self, inode: int, name: str) -> bytes:
        check_namespace(name, inode)
        node = self._ns.get(inode)
        return xattr_value(node, name, self._cached_state, self._where(node))

    def _cached_state(self, node: Node) -> tuple[str, int | None]:
        assert node.meta is not None
        staging = self._staging
        if staging is not None and (staged := staging.by_inode.get(node.inode)) is not None:
            return staged_state(staged, staging.held(staged)), None
        return self._prefetcher.cached_state(node.meta)
