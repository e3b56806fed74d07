"""The FUSE reference for bench_mount.py: a minimal pyfuse3 + trio read-only filesystem.

It serves one existing file's bytes (the bench passes ossmount's cache file) as `/data`, with the
settings ossmount uses: the mount's bdi `read_ahead_kb` raised (default 4096, ossmount's default),
`keep_cache` on open, no `max_read` (measurements.md §5), the same -o options. Each read is one
`os.pread` on the trio thread: the least a pyfuse3 daemon can do, so ossmount's first read after
a remount (served from its verified cache file) is compared with it.

    .venv/bin/python bench/ref_fs.py FILE MOUNTPOINT [--read-ahead-kb 4096]

Runs in the foreground until unmounted (`fusermount3 -u MOUNTPOINT`) or SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import stat
import sys
from pathlib import Path

import pyfuse3
import trio

NAME = b"data"
FILE_INODE = pyfuse3.InodeT(pyfuse3.ROOT_INODE + 1)


class RefFs(pyfuse3.Operations):
    def __init__(self, path: Path) -> None:
        super().__init__()
        self._fd = os.open(path, os.O_RDONLY)
        self._size = os.fstat(self._fd).st_size

    def _attr(self, inode: int) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = pyfuse3.InodeT(inode)
        if inode == pyfuse3.ROOT_INODE:
            a.st_mode = stat.S_IFDIR | 0o555
            a.st_nlink = 2
        else:
            a.st_mode = stat.S_IFREG | 0o444
            a.st_nlink = 1
            a.st_size = self._size
        a.st_uid = os.getuid()
        a.st_gid = os.getgid()
        a.st_blksize = 1 << 20
        a.attr_timeout = 3600
        a.entry_timeout = 3600
        return a

    async def getattr(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext | None = None
    ) -> pyfuse3.EntryAttributes:
        if inode not in (pyfuse3.ROOT_INODE, FILE_INODE):
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(inode)

    async def lookup(
        self, parent_inode: pyfuse3.InodeT, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        if parent_inode != pyfuse3.ROOT_INODE or name != NAME:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(FILE_INODE)

    async def opendir(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileHandleT:
        if inode != pyfuse3.ROOT_INODE:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return pyfuse3.FileHandleT(0)

    async def readdir(
        self, fh: pyfuse3.FileHandleT, start_id: int, token: pyfuse3.ReaddirToken
    ) -> None:
        if start_id == 0:
            pyfuse3.readdir_reply(token, NAME, self._attr(FILE_INODE), 1)

    async def open(
        self, inode: pyfuse3.InodeT, flags: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileInfo:
        if inode != FILE_INODE:
            raise pyfuse3.FUSEError(errno.EISDIR)
        if flags & os.O_ACCMODE != os.O_RDONLY:
            raise pyfuse3.FUSEError(errno.EROFS)
        return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(1), keep_cache=True)

    async def read(self, fh: pyfuse3.FileHandleT, off: int, size: int) -> bytes:
        return os.pread(self._fd, size, off)


def raise_readahead(mountpoint: Path, kb: int) -> None:
    dev = os.stat(mountpoint).st_dev
    Path(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb").write_text(str(kb))


async def serve(mountpoint: Path, kb: int) -> None:
    async with trio.open_nursery() as nursery:

        async def ready() -> None:
            await trio.to_thread.run_sync(os.stat, mountpoint)
            raise_readahead(mountpoint, kb)

        async def signals() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as received:
                async for _ in received:
                    pyfuse3.terminate()
                    return

        nursery.start_soon(ready)
        nursery.start_soon(signals)
        await pyfuse3.main(min_tasks=4, max_tasks=256)
        nursery.cancel_scope.cancel()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file", type=Path)
    ap.add_argument("mountpoint", type=Path)
    ap.add_argument("--read-ahead-kb", type=int, default=4096)
    args = ap.parse_args()
    fs = RefFs(args.file)
    options = {"fsname=ref_fs", "subtype=ref_fs", "ro", "default_permissions", "noatime"}
    pyfuse3.init(fs, str(args.mountpoint), options)
    try:
        trio.run(serve, args.mountpoint, args.read_ahead_kb)
    finally:
        pyfuse3.close(unmount=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
