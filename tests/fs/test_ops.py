"""The pyfuse3 adapter translates only: our answers into pyfuse3's types, our errors into errno
through the boundary. Handlers are called directly (no kernel; they never read `ctx`)."""

from __future__ import annotations

import errno
import os
import stat
from typing import Any

import pyfuse3
import pytest

from ossmount.fs.ops import Operations
from ossmount.tree import ROOT_INODE
from tests.fs.conftest import LOOK, Rig

CTX: Any = None


async def test_entry_attributes_carry_every_field(rig: Rig) -> None:
    meta = rig.bucket.put("a.bin", b"x" * 1000)
    ops = Operations(rig.fs)
    got = await ops.lookup(pyfuse3.InodeT(ROOT_INODE), pyfuse3.FileNameT(b"a.bin"), CTX)
    assert got.st_mode == stat.S_IFREG | 0o444
    assert (got.st_size, got.st_blocks, got.st_blksize) == (1000, 2, LOOK.block_size)
    assert (got.st_uid, got.st_gid, got.st_nlink) == (LOOK.uid, LOOK.gid, 1)
    assert got.st_mtime_ns == got.st_ctime_ns == got.st_atime_ns == meta.mtime_ns
    assert got.entry_timeout == got.attr_timeout == LOOK.attr_timeout_s
    again = await ops.getattr(got.st_ino, CTX)
    assert (again.st_ino, again.st_size) == (got.st_ino, 1000)


async def test_errors_leave_as_fuse_errors_with_the_boundary_errno(rig: Rig) -> None:
    rig.bucket.put("a.bin", b"x")
    ops = Operations(rig.fs)
    a = await ops.lookup(pyfuse3.InodeT(ROOT_INODE), pyfuse3.FileNameT(b"a.bin"), CTX)
    cases = [
        (ops.lookup(pyfuse3.InodeT(ROOT_INODE), pyfuse3.FileNameT(b"nope"), CTX), errno.ENOENT),
        (ops.open(a.st_ino, os.O_WRONLY, CTX), errno.EROFS),
        (ops.readlink(a.st_ino, CTX), errno.EINVAL),
        (ops.getxattr(a.st_ino, pyfuse3.XAttrNameT(b"security.selinux"), CTX), errno.EOPNOTSUPP),
        # asked before every write(2): answered before the inode is even looked up
        (
            ops.getxattr(pyfuse3.InodeT(12345), pyfuse3.XAttrNameT(b"security.capability"), CTX),
            errno.EOPNOTSUPP,
        ),
        (ops.getxattr(a.st_ino, pyfuse3.XAttrNameT(b"user.x"), CTX), errno.ENODATA),
        (ops.read(pyfuse3.FileHandleT(999), 0, 1), errno.EBADF),
    ]
    for call, code in cases:
        with pytest.raises(pyfuse3.FUSEError) as caught:
            await call
        assert caught.value.errno == code


async def test_open_read_xattrs_through_the_adapter(rig: Rig) -> None:
    rig.bucket.put("a.bin", b"hello")
    ops = Operations(rig.fs)
    a = await ops.lookup(pyfuse3.InodeT(ROOT_INODE), pyfuse3.FileNameT(b"a.bin"), CTX)
    info = await ops.open(a.st_ino, os.O_RDONLY, CTX)
    assert info.keep_cache is False
    assert await ops.read(info.fh, 0, 100) == b"hello"
    await ops.release(info.fh)
    assert await ops.listxattr(a.st_ino, CTX) == []  # read by name only
    assert await ops.getxattr(a.st_ino, pyfuse3.XAttrNameT(b"user.ossmount.key"), CTX) == b"a.bin"
    stats = await ops.statfs(CTX)
    assert (stats.f_bsize, stats.f_namemax) == (LOOK.block_size, 255)
