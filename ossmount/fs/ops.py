"""The pyfuse3 adapter: pure translation between the kernel and `FileSystem`.

Each handler converts pyfuse3's arguments to ours (bytes names to str, handle types to int),
calls one `FileSystem` method, and converts the answer (`Attr` to `EntryAttributes`). Every
handler is wrapped by `fuse_boundary`, the one place exceptions become errno values. The
behaviour (page cache policy, read-ahead, symlinks, xattrs, handles) is in fs/filesystem.py.

`PyfuseKernel` and `drop_kernel_caches` are the other direction: what the filesystem and the
SIGHUP handler ask of the kernel's caches, through pyfuse3's notification calls.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from collections.abc import Sequence

import pyfuse3
import trio

from ossmount.fs.attrs import Attr, Opened, Presentation
from ossmount.fs.boundary import fuse_boundary
from ossmount.fs.filesystem import FileSystem
from ossmount.fs.links import link_target

__all__ = ["Operations", "Presentation", "PyfuseKernel", "drop_kernel_caches", "link_target"]

log = logging.getLogger(__name__)

_FS_ENCODING = sys.getfilesystemencoding()
_FS_ERRORS = sys.getfilesystemencodeerrors()


def entry_attributes(attr: Attr) -> pyfuse3.EntryAttributes:
    out = pyfuse3.EntryAttributes()
    out.st_ino = pyfuse3.InodeT(attr.inode)  # generation: 0, the default
    out.entry_timeout = attr.timeout_s
    out.attr_timeout = attr.timeout_s
    out.st_mode = pyfuse3.ModeT(attr.mode)
    out.st_nlink = attr.nlink
    out.st_uid = attr.uid
    out.st_gid = attr.gid
    out.st_size = attr.size
    out.st_blksize = attr.block_size
    out.st_blocks = attr.blocks
    out.st_mtime_ns = attr.mtime_ns
    out.st_ctime_ns = attr.ctime_ns
    out.st_atime_ns = attr.atime_ns
    return out


def file_info(opened: Opened) -> pyfuse3.FileInfo:
    return pyfuse3.FileInfo(
        fh=pyfuse3.FileHandleT(opened.fh), keep_cache=opened.keep_cache,
        direct_io=opened.direct_io,
    )  # fmt: skip


class Operations(pyfuse3.Operations):
    """pyfuse3's handlers over one `FileSystem`."""

    def __init__(self, fs: FileSystem) -> None:
        super().__init__()
        self.fs = fs

    # -- names -----------------------------------------------------------------------------

    @fuse_boundary
    async def lookup(
        self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return entry_attributes(await self.fs.lookup(parent_inode, os.fsdecode(name)))

    @fuse_boundary
    async def forget(self, inode_list: Sequence[tuple[pyfuse3.InodeT, int]]) -> None:
        for inode, count in inode_list:
            self.fs.forget(inode, count)

    @fuse_boundary
    async def getattr(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return entry_attributes(await self.fs.getattr(inode))

    @fuse_boundary
    async def opendir(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileHandleT:
        return pyfuse3.FileHandleT(await self.fs.opendir(inode))

    @fuse_boundary
    async def readdir(
        self, fh: pyfuse3.FileHandleT, start_id: int, token: pyfuse3.ReaddirToken
    ) -> None:
        readdir_reply = pyfuse3.readdir_reply

        def reply(name: str, attr: Attr, next_id: int) -> bool:  # os.fsencode, inlined
            encoded = name.encode(_FS_ENCODING, _FS_ERRORS)
            return readdir_reply(token, encoded, entry_attributes(attr), next_id)

        self.fs.readdir(fh, start_id, reply)

    @fuse_boundary
    async def fsyncdir(self, fh: pyfuse3.FileHandleT, datasync: bool) -> None:
        await self.fs.fsyncdir(fh)

    @fuse_boundary
    async def releasedir(self, fh: pyfuse3.FileHandleT) -> None:
        self.fs.releasedir(fh)

    @fuse_boundary
    async def readlink(self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext) -> bytes:
        return os.fsencode(await self.fs.readlink(inode))

    # -- bytes -----------------------------------------------------------------------------

    @fuse_boundary
    async def open(
        self, inode: pyfuse3.InodeT, flags: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileInfo:
        opened = await self.fs.open(inode, flags)
        return file_info(opened)

    @fuse_boundary
    async def read(self, fh: pyfuse3.FileHandleT, off: int, size: int) -> bytes:
        return await self.fs.read(fh, off, size)

    @fuse_boundary
    async def release(self, fh: pyfuse3.FileHandleT) -> None:
        await self.fs.release(fh)

    # -- writes (-o rw; on a read-only mount the kernel refuses them before they get here) --

    @fuse_boundary
    async def create(
        self,
        parent_inode: pyfuse3.InodeT,
        name: pyfuse3.FileNameT,
        mode: int,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        opened, attr = await self.fs.create(
            parent_inode, os.fsdecode(name), flags, mode, ctx.uid, ctx.gid
        )
        info = file_info(opened)
        return info, entry_attributes(attr)

    @fuse_boundary
    async def write(self, fh: pyfuse3.FileHandleT, off: int, buf: bytes) -> int:
        return await self.fs.write_waiting(fh, off, buf)

    @fuse_boundary
    async def flush(self, fh: pyfuse3.FileHandleT) -> None:
        if not self.fs.writes:
            # Nothing to commit on a read-only mount. ENOSYS makes the kernel stop sending
            # FLUSH for the rest of the mount (fuse_flush sets no_flush and close gets 0): one
            # round trip less per close, 2,000 of them in a cp -r of 2,000 files.
            log.debug("flush: a read-only mount has nothing to commit; the kernel stops asking")
            raise pyfuse3.FUSEError(errno.ENOSYS)
        await self.fs.flush(fh)

    @fuse_boundary
    async def fsync(self, fh: pyfuse3.FileHandleT, datasync: bool) -> None:
        await self.fs.fsync(fh)

    @fuse_boundary
    async def setattr(
        self,
        inode: pyfuse3.InodeT,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: pyfuse3.FileHandleT | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        answer = await self.fs.setattr(
            inode,
            size=attr.st_size if fields.update_size else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
            atime_ns=attr.st_atime_ns if fields.update_atime else None,
            fh=fh,
            mode=attr.st_mode if fields.update_mode else None,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None,
        )
        return entry_attributes(answer)

    @fuse_boundary
    async def unlink(
        self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext
    ) -> None:
        await self.fs.unlink(parent_inode, os.fsdecode(name))

    @fuse_boundary
    async def mkdir(
        self,
        parent_inode: pyfuse3.InodeT,
        name: pyfuse3.FileNameT,
        mode: int,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        attr = await self.fs.mkdir(parent_inode, os.fsdecode(name), mode, ctx.uid, ctx.gid)
        return entry_attributes(attr)

    @fuse_boundary
    async def rmdir(
        self, parent_inode: pyfuse3.InodeT, name: pyfuse3.FileNameT, ctx: pyfuse3.RequestContext
    ) -> None:
        await self.fs.rmdir(parent_inode, os.fsdecode(name))

    @fuse_boundary
    async def rename(
        self,
        parent_inode_old: pyfuse3.InodeT,
        name_old: pyfuse3.FileNameT,
        parent_inode_new: pyfuse3.InodeT,
        name_new: pyfuse3.FileNameT,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        await self.fs.rename(
            parent_inode_old,
            os.fsdecode(name_old),
            parent_inode_new,
            os.fsdecode(name_new),
            flags,
        )

    @fuse_boundary
    async def symlink(
        self,
        parent_inode: pyfuse3.InodeT,
        name: pyfuse3.FileNameT,
        target: pyfuse3.FileNameT,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        attr = await self.fs.symlink(
            parent_inode, os.fsdecode(name), os.fsdecode(target), ctx.uid, ctx.gid
        )
        return entry_attributes(attr)

    @fuse_boundary
    async def mknod(
        self,
        parent_inode: pyfuse3.InodeT,
        name: pyfuse3.FileNameT,
        mode: int,
        rdev: int,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        self.fs.mknod(parent_inode, os.fsdecode(name))  # always refuses (NoReturn)

    # -- misc ------------------------------------------------------------------------------

    @fuse_boundary
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        stats = self.fs.statfs()
        data = pyfuse3.StatvfsData()
        data.f_bsize = stats.block_size
        data.f_frsize = stats.block_size
        data.f_blocks = data.f_bfree = data.f_bavail = stats.free_bytes // stats.block_size
        data.f_files = data.f_ffree = data.f_favail = stats.free_files
        data.f_namemax = stats.name_max
        return data

    @fuse_boundary
    async def listxattr(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
    ) -> Sequence[pyfuse3.XAttrNameT]:
        return [pyfuse3.XAttrNameT(os.fsencode(name)) for name in self.fs.listxattr(inode)]

    @fuse_boundary
    async def getxattr(
        self, inode: pyfuse3.InodeT, name: pyfuse3.XAttrNameT, ctx: pyfuse3.RequestContext
    ) -> bytes:
        return self.fs.getxattr(inode, os.fsdecode(name))


class PyfuseKernel:
    """`KernelCache` through pyfuse3's notifications."""

    def invalidate_inode(self, inode: int) -> None:
        trio.lowlevel.spawn_system_task(_invalidate, inode)

    def forget_name(self, parent: int, name: str) -> None:
        pyfuse3.invalidate_entry_async(
            pyfuse3.InodeT(parent), pyfuse3.FileNameT(os.fsencode(name)), ignore_enoent=True
        )


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
