"""A symlink's owner and mtime, kept on its symlink object as ossfs 1.x keeps a link's
(fs/linkattrs.py). In-process over the emulator (tests/fs/test_writes.py's rig); requests
counted in the emulator's log."""

from __future__ import annotations

import stat

import pytest

from ossmount.fs.linkattrs import LINK_MODE, ossfs_target
from ossmount.oss._errors import PreconditionFailed
from ossmount.tree.inodes import ROOT_INODE
from tests.fs.conftest import LOOK
from tests.fs.test_write_attrs import _meta, _ops, _stamps
from tests.fs.test_writes import BUCKET, WriteRig, emu, rw

__all__ = ["emu", "rw"]

T = 1_600_000_000_250_000_000


async def test_a_symlink_carries_ossfs_mode_owner_and_time(rw: WriteRig) -> None:
    attr = await rw.fs.symlink(ROOT_INODE, "link", "target", 5, 6)
    assert (attr.mode, attr.uid, attr.gid) == (LINK_MODE, 5, 6)
    meta = _meta(rw, "link")
    stamp = meta.pop("x-oss-meta-mtime")
    assert _stamps(meta) == (stamp, stamp), "as ossfs's symlink: atime, mtime, ctime now"
    assert meta == {"x-oss-meta-mode": str(LINK_MODE), "x-oss-meta-uid": "5",
                    "x-oss-meta-gid": "6",
                    "x-oss-meta-symlink-target": "header:6:target"}  # fmt: skip
    assert await rw.fs.readlink(attr.inode) == "target"


@pytest.mark.parametrize(
    ("target", "header"),
    [("t", "header:1:t"), ("../a b/é~.-_", "header:13:../a%20b/%C3%A9~.-_"),
     ("x%:+", "header:4:x%25%3A%2B")],
)  # fmt: skip
def test_ossfs_s_copy_of_the_target_is_its_new_symlink_format(target: str, header: str) -> None:
    assert ossfs_target(target) == header


async def test_a_link_in_a_subdirectory_gives_ossfs_the_target_our_readlink_gives(
    rw: WriteRig,
) -> None:
    sub = await rw.fs.mkdir(ROOT_INODE, "sub", 0o755)
    await rw.fs.symlink(sub.inode, "up", "../top/f")
    assert _meta(rw, "sub/up")["x-oss-meta-symlink-target"] == "header:8:../top/f"


async def test_lchown_and_utimens_of_our_own_link_re_put_it_with_no_lookup(
    rw: WriteRig,
) -> None:
    attr = await rw.fs.symlink(ROOT_INODE, "link", "dir/target", 5, 6)
    made = _meta(rw, "link")["x-oss-meta-ctime"]
    shown = await rw.fs.setattr(attr.inode, size=None, mtime_ns=T, fh=None, uid=7)
    assert (shown.uid, shown.gid, shown.mtime_ns, shown.mode) == (7, 6, T, LINK_MODE)
    # ossfs's utimens with the atime left out: atime and ctime are the link's ctime again.
    assert _meta(rw, "link") == {"x-oss-meta-mode": str(LINK_MODE), "x-oss-meta-uid": "7",
                                 "x-oss-meta-gid": "6",
                                 "x-oss-meta-mtime": "1600000000.250000000",
                                 "x-oss-meta-atime": made, "x-oss-meta-ctime": made,
                                 "x-oss-meta-symlink-target": "header:10:dir/target"}  # fmt: skip
    assert _ops(rw, "link") == ["PutSymlink", "PutSymlink"], "its headers and target known"
    await rw.fs.setattr(attr.inode, size=None, mtime_ns=T, fh=None, uid=7)
    assert _ops(rw, "link") == ["PutSymlink", "PutSymlink"], "nothing changed: no request"
    assert await rw.fs.readlink(attr.inode) == "dir/target"
    listed = await rw.fs.lookup(ROOT_INODE, "link")
    assert (listed.uid, listed.mtime_ns) == (7, T)


async def test_another_client_s_link_keeps_its_metadata_and_target(rw: WriteRig) -> None:
    assert rw.staging is not None
    writes = rw.staging.uploader.writes
    await writes.put_symlink("theirs", "t", meta={"x-oss-meta-other": "kept"})
    node = await rw.fs.lookup(ROOT_INODE, "theirs")
    assert (node.mode, node.uid) == (LINK_MODE, LOOK.uid), "not known: the defaults"
    await rw.fs.setattr(node.inode, size=None, mtime_ns=None, fh=None, uid=9, gid=9)
    meta = _meta(rw, "theirs")
    assert meta.pop("x-oss-meta-ctime").isdigit(), "a chown's ctime: now"
    assert meta == {"x-oss-meta-other": "kept", "x-oss-meta-uid": "9",
                    "x-oss-meta-gid": "9"}  # fmt: skip
    assert _ops(rw, "theirs") == ["PutSymlink", "GetSymlink", "PutSymlink"]
    assert await rw.fs.readlink(node.inode) == "t"
    assert stat.S_ISLNK((await rw.fs.getattr(node.inode)).mode)


async def test_a_link_repointed_since_it_was_listed_is_not_changed(rw: WriteRig) -> None:
    rw.emu.put_symlink(BUCKET, "moved", "old")
    node = await rw.fs.lookup(ROOT_INODE, "moved")
    rw.emu.put_symlink(BUCKET, "moved", "new")  # another client, after our listing
    with pytest.raises(PreconditionFailed):
        await rw.fs.setattr(node.inode, size=None, mtime_ns=T, fh=None)
    assert _ops(rw, "moved") == ["GetSymlink"]
    assert _meta(rw, "moved") == {}
