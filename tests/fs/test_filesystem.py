"""`FileSystem` driven in-process (conftest.py): every operation, the page cache policy,
invalidation, symlinks, xattrs and the errors it raises, with no kernel and no pyfuse3."""

from __future__ import annotations

import errno
import os
import random
import stat
import subprocess
import sys

import pytest

from ossmount.fs.attrs import Attr
from ossmount.fs.boundary import errno_for
from ossmount.fs.errors import (
    AttributeNotSupported,
    IsADirectory,
    LinkOutsideMount,
    NoSuchAttribute,
    NotASymlink,
    ReadOnly,
    UnknownHandle,
)
from ossmount.fs.filesystem import FileSystem
from ossmount.prefetch import ObjectChanged, ObjectCorrupt
from ossmount.tree import ROOT_INODE, NotADirectory, NotFound
from tests.fs.conftest import LOOK, PART, Rig

DATA = random.Random(7).randbytes(3 * PART + 100)


async def read_all(fs: FileSystem, fh: int, size: int) -> bytes:
    out = b""
    while len(out) < size:
        chunk = await fs.read(fh, len(out), PART)
        assert chunk
        out += chunk
    return out


def entries(fs: FileSystem, fh: int, start: int = 0, take: int = 1000) -> list[tuple[str, Attr]]:
    got: list[tuple[str, Attr, int]] = []

    def reply(name: str, attr: Attr, next_id: int) -> bool:
        if len(got) == take:
            return False
        got.append((name, attr, next_id))
        return True

    fs.readdir(fh, start, reply)
    assert [n for _, _, n in got] == list(range(start + 1, start + 1 + len(got)))
    return [(name, attr) for name, attr, _ in got]


async def test_lookup_and_getattr_answer_from_the_listing(rig: Rig) -> None:
    meta = rig.bucket.put("d/a.bin", DATA)
    d = await rig.fs.lookup(ROOT_INODE, "d")
    assert stat.S_ISDIR(d.mode)
    assert d.mode & 0o777 == 0o555
    assert d.nlink == 2
    assert d.size == 0
    a = await rig.fs.lookup(d.inode, "a.bin")
    assert a.mode == stat.S_IFREG | 0o444
    assert (a.size, a.mtime_ns, a.ctime_ns, a.atime_ns) == (len(DATA), *[meta.mtime_ns] * 3)
    assert (a.uid, a.gid, a.timeout_s, a.block_size) == (1234, 5678, 30.0, LOOK.block_size)
    assert a.blocks == (len(DATA) + 511) // 512
    assert await rig.fs.getattr(a.inode) == a
    root = await rig.fs.getattr(ROOT_INODE)
    assert root.inode == ROOT_INODE
    assert stat.S_ISDIR(root.mode)


async def test_lookup_errors_are_typed(rig: Rig) -> None:
    a = rig.bucket.put("a", b"x")
    with pytest.raises(NotFound):
        await rig.fs.lookup(ROOT_INODE, "missing")
    node = await rig.fs.lookup(ROOT_INODE, "a")
    assert a.size == node.size
    with pytest.raises(NotADirectory):
        await rig.fs.lookup(node.inode, "x")
    with pytest.raises(NotFound):
        await rig.fs.getattr(424242)


async def test_readdir_pages_by_cookie_and_counts_only_accepted_entries(rig: Rig) -> None:
    for name in ("c", "a", "b/x", "d"):
        rig.bucket.put(name, name.encode())
    fh = await rig.fs.opendir(ROOT_INODE)
    first = entries(rig.fs, fh, 0, take=2)
    assert [n for n, _ in first] == ["a", "b"]
    assert stat.S_ISDIR(first[1][1].mode)
    assert stat.S_ISREG(first[0][1].mode)
    rest = entries(rig.fs, fh, 2)
    assert [n for n, _ in rest] == ["c", "d"]
    # Each accepted entry is one kernel reference; the refused third one ("c") on the first
    # page was not counted then, only when accepted on the second.
    held = {path for _parent, path, _ino in rig.namespace.kernel_entries()}
    assert held == {"a", "b", "c", "d"}
    assert rig.namespace.table.statistics().pinned == 1 + 4  # the root is pinned for good
    rig.fs.releasedir(fh)
    assert rig.namespace.table.statistics().pinned == 1
    with pytest.raises(UnknownHandle):
        entries(rig.fs, fh)


async def test_open_read_release_return_the_object_bytes(rig: Rig) -> None:
    rig.bucket.put("f.bin", DATA)
    f = await rig.fs.lookup(ROOT_INODE, "f.bin")
    opened = await rig.fs.open(f.inode, os.O_RDONLY)
    assert await read_all(rig.fs, opened.fh, len(DATA)) == DATA
    assert await rig.fs.read(opened.fh, len(DATA) - 10, 100) == DATA[-10:]
    await rig.fs.release(opened.fh)
    await rig.fs.release(opened.fh)  # a second release finds nothing to do
    with pytest.raises(UnknownHandle):
        await rig.fs.read(opened.fh, 0, 1)


async def test_open_refuses_writes_and_directories(rig: Rig) -> None:
    rig.bucket.put("d/f", b"x")
    d = await rig.fs.lookup(ROOT_INODE, "d")
    f = await rig.fs.lookup(d.inode, "f")
    for flags in (os.O_WRONLY, os.O_RDWR):
        with pytest.raises(ReadOnly, match="oss://test-bucket/d/f"):
            await rig.fs.open(f.inode, flags)
    with pytest.raises(IsADirectory):
        await rig.fs.open(d.inode, os.O_RDONLY)


async def test_keep_cache_only_when_the_last_open_saw_the_same_version(rig: Rig) -> None:
    rig.bucket.put("f", DATA)
    f = await rig.fs.lookup(ROOT_INODE, "f")
    first = await rig.fs.open(f.inode, os.O_RDONLY)
    second = await rig.fs.open(f.inode, os.O_RDONLY)
    assert (first.keep_cache, second.keep_cache) == (False, True)
    await rig.fs.release(first.fh)
    await rig.fs.release(second.fh)

    rig.bucket.put("f", DATA[::-1])  # a new version, listed
    rig.namespace.invalidate()
    third = await rig.fs.open(f.inode, os.O_RDONLY)
    assert third.keep_cache is False
    assert await read_all(rig.fs, third.fh, len(DATA)) == DATA[::-1]
    await rig.fs.release(third.fh)
    fourth = await rig.fs.open(f.inode, os.O_RDONLY)
    assert fourth.keep_cache is True
    await rig.fs.release(fourth.fh)


async def test_a_changed_object_drops_the_pages_the_metadata_and_keep_cache(rig: Rig) -> None:
    rig.bucket.put("f", DATA)
    f = await rig.fs.lookup(ROOT_INODE, "f")
    warm = await rig.fs.open(f.inode, os.O_RDONLY)
    await rig.fs.release(warm.fh)
    rig.bucket.put("f", b"new" * 2000)  # our cached listing still says the old version
    opened = await rig.fs.open(f.inode, os.O_RDONLY)
    assert opened.keep_cache is True  # as far as anyone can tell yet
    assert rig.namespace.cached_entries > 0
    with pytest.raises(ObjectChanged):
        await rig.fs.read(opened.fh, 0, 100)
    assert rig.kernel.invalidated == [f.inode]
    assert rig.namespace.cached_entries == 0  # the next open lists again
    await rig.fs.release(opened.fh)
    calls = rig.bucket.lister.call_count
    again = await rig.fs.open(f.inode, os.O_RDONLY)
    assert again.keep_cache is False
    assert rig.bucket.lister.call_count > calls
    assert await read_all(rig.fs, again.fh, 6000) == b"new" * 2000
    await rig.fs.release(again.fh)


async def test_a_corrupt_object_drops_the_pages_and_keep_cache_not_the_metadata(
    rig: Rig,
) -> None:
    rig.bucket.put("f", DATA)
    rig.bucket.source.flip.add(("f", PART + 3))
    f = await rig.fs.lookup(ROOT_INODE, "f")
    first = await rig.fs.open(f.inode, os.O_RDONLY)
    await rig.fs.release(first.fh)
    opened = await rig.fs.open(f.inode, os.O_RDONLY)
    assert opened.keep_cache is True
    with pytest.raises(ObjectCorrupt):
        await rig.fs.read(opened.fh, 0, len(DATA))
    assert rig.kernel.invalidated == [f.inode]
    assert rig.namespace.cached_entries > 0
    await rig.fs.release(opened.fh)
    rig.bucket.source.flip.clear()
    again = await rig.fs.open(f.inode, os.O_RDONLY)
    assert again.keep_cache is False
    assert await read_all(rig.fs, again.fh, len(DATA)) == DATA
    await rig.fs.release(again.fh)


async def test_readlink_is_relative_cached_per_version_and_never_leaves_the_mount(
    rig: Rig,
) -> None:
    rig.bucket.put("data/t.txt", b"t")
    rig.bucket.put_symlink("links/to", "data/t.txt")
    rig.bucket.put_symlink("links/out", "../etc/passwd")
    links = await rig.fs.lookup(ROOT_INODE, "links")
    to = await rig.fs.lookup(links.inode, "to")
    assert to.mode == stat.S_IFLNK | 0o777
    assert to.nlink == 1
    assert await rig.fs.readlink(to.inode) == "../data/t.txt"
    assert await rig.fs.readlink(to.inode) == "../data/t.txt"
    assert rig.bucket.symlink_calls == ["links/to"]  # the second came from the cache

    rig.bucket.put_symlink("links/to", "data/other")  # rewritten in place: a new ETag
    rig.namespace.invalidate()
    await rig.fs.getattr(to.inode)
    assert await rig.fs.readlink(to.inode) == "../data/other"
    assert rig.bucket.symlink_calls == ["links/to", "links/to"]

    out = await rig.fs.lookup(links.inode, "out")
    with pytest.raises(LinkOutsideMount, match="oss://test-bucket/links/out"):
        await rig.fs.readlink(out.inode)
    t = await rig.fs.lookup((await rig.fs.lookup(ROOT_INODE, "data")).inode, "t.txt")
    with pytest.raises(NotASymlink):
        await rig.fs.readlink(t.inode)


async def test_xattrs_tell_the_object_and_its_cache_state(rig: Rig) -> None:
    meta = rig.bucket.put("d/f", DATA)
    d = await rig.fs.lookup(ROOT_INODE, "d")
    f = await rig.fs.lookup(d.inode, "f")
    assert rig.fs.listxattr(d.inode) == []
    assert rig.fs.listxattr(f.inode) == []  # read by name only (fs/xattrs.py)
    assert rig.fs.getxattr(f.inode, "user.ossmount.key") == b"d/f"
    assert rig.fs.getxattr(f.inode, "user.ossmount.etag") == meta.etag.encode()
    assert rig.fs.getxattr(f.inode, "user.ossmount.state") == b"uncached"
    opened = await rig.fs.open(f.inode, os.O_RDONLY)
    await read_all(rig.fs, opened.fh, len(DATA))
    await rig.fs.release(opened.fh)
    assert rig.fs.getxattr(f.inode, "user.ossmount.state") == b"verified"
    assert meta.crc64 is not None
    assert rig.fs.getxattr(f.inode, "user.ossmount.crc64") == str(meta.crc64).encode()
    with pytest.raises(NoSuchAttribute):
        rig.fs.getxattr(f.inode, "user.other")
    with pytest.raises(NoSuchAttribute):
        rig.fs.getxattr(d.inode, "user.ossmount.key")


@pytest.mark.parametrize(
    "name", ["security.selinux", "system.posix_acl_access", "system.posix_acl_default", "trusted.x"]
)
async def test_xattrs_outside_user_are_not_supported_rather_than_absent(
    rig: Rig, name: str
) -> None:
    """`ls -l` stops asking a filesystem for these after EOPNOTSUPP, not after ENODATA."""
    rig.bucket.put("d/f", b"x")
    d = await rig.fs.lookup(ROOT_INODE, "d")
    f = await rig.fs.lookup(d.inode, "f")
    for inode in (ROOT_INODE, d.inode, f.inode):
        with pytest.raises(AttributeNotSupported) as caught:
            rig.fs.getxattr(inode, name)
        assert errno_for(caught.value)[0] == errno.EOPNOTSUPP


def test_the_boundary_maps_every_filesystem_error() -> None:
    cases = {
        ReadOnly("x"): errno.EROFS,
        IsADirectory("x"): errno.EISDIR,
        NotASymlink("x"): errno.EINVAL,
        LinkOutsideMount("x"): errno.EIO,
        NoSuchAttribute("x"): errno.ENODATA,
        AttributeNotSupported("x"): errno.EOPNOTSUPP,
        UnknownHandle("x"): errno.EBADF,
    }
    for exc, code in cases.items():
        assert errno_for(exc)[0] == code, exc


async def test_statfs(rig: Rig) -> None:
    stats = rig.fs.statfs()
    assert (stats.block_size, stats.name_max) == (LOOK.block_size, 255)


def test_the_filesystem_does_not_load_pyfuse3() -> None:
    code = "import sys, ossmount.fs.filesystem; print('pyfuse3' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


async def test_forgetting_an_inode_drops_its_keep_cache_memory_and_link_target(rig: Rig) -> None:
    """Once the kernel forgets an inode it has no pages of it left, so nothing is kept for it:
    what the filesystem remembers per inode is bounded by what the kernel holds."""
    rig.bucket.put("f", DATA)
    rig.bucket.put_symlink("l", "f")
    f = await rig.fs.lookup(ROOT_INODE, "f")
    link = await rig.fs.lookup(ROOT_INODE, "l")
    opened = await rig.fs.open(f.inode, os.O_RDONLY)
    await rig.fs.release(opened.fh)
    await rig.fs.readlink(link.inode)
    f_again = await rig.fs.lookup(ROOT_INODE, "f")  # two references now
    rig.fs.forget(f.inode, 1)
    second = await rig.fs.open(f_again.inode, os.O_RDONLY)
    assert second.keep_cache is True  # still held: its pages may be cached
    await rig.fs.release(second.fh)

    rig.fs.forget(f.inode, 1)
    rig.fs.forget(link.inode, 1)
    f_new = await rig.fs.lookup(ROOT_INODE, "f")
    assert f_new.inode == f.inode
    third = await rig.fs.open(f_new.inode, os.O_RDONLY)
    assert third.keep_cache is False
    await rig.fs.release(third.fh)
    await rig.fs.lookup(ROOT_INODE, "l")
    assert await rig.fs.readlink(link.inode) == "f"
    assert rig.bucket.symlink_calls == ["l", "l"]
