"""-o writeback holds a closed file's upload back for a moment (fs/writeback.py): a rename of a
file that is not on OSS yet then moves it without a request and it is uploaded once, under
its final name, as rsync's temporary files are; whoever needs the upload sooner hurries it.
In-process, over a real client against the emulator."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from ossmount.emulator import Emulator, FaultRule
from ossmount.fs.filesystem import FileSystem
from ossmount.fs.staging import Staging
from ossmount.oss._write_types import FileAlreadyExists
from ossmount.tree.errors import NotFound
from ossmount.tree.inodes import ROOT_INODE
from ossmount.write.journal import load
from tests.fs.test_filesystem import entries
from tests.fs.test_writes import BUCKET, WriteRig, emu, write_rig

__all__ = ["emu"]

HELD_S = 600.0  # held back for good: only a hurry, fsync or drain starts an upload
NOREPLACE = 1  # renameat2 RENAME_NOREPLACE, as pyfuse3 passes it


@pytest.fixture
async def wb(emu: Emulator, tmp_path: Path) -> AsyncIterator[WriteRig]:
    async for rig in write_rig(emu, tmp_path, rw=True, writeback_delay_s=HELD_S):
        yield rig


def _ops(emu: Emulator) -> list[tuple[str, str]]:
    return [(r.op, r.key) for r in emu.requests if r.op != "ListObjectsV2"]


async def _write_closed(fs: FileSystem, name: str, data: bytes) -> int:
    """create, write, close (a write-back close: sealed, upload held back); the inode."""
    opened, attr = await fs.create(ROOT_INODE, name, os.O_WRONLY | os.O_CREAT, 0o600)
    fs.write(opened.fh, 0, data)
    await fs.flush(opened.fh)
    await fs.release(opened.fh)
    return attr.inode


def _staging(rig: WriteRig) -> Staging:
    assert rig.staging is not None
    return rig.staging


async def test_rsyncs_temporary_file_is_renamed_without_a_request_and_uploaded_once(
    wb: WriteRig,
) -> None:
    fs, staging = wb.fs, _staging(wb)
    inode = await _write_closed(fs, ".f.Xy12", b"rsync's bytes")
    await fs.setattr(inode, size=None, mtime_ns=1_500_000_000 * 10**9, fh=None)  # rsync -a
    await fs.rename(ROOT_INODE, ".f.Xy12", ROOT_INODE, "f", 0)
    assert _ops(wb.emu) == [], "the rename of a file not on OSS yet costs no request"
    staged = staging.by_inode[inode]
    record = load(staged.files.journal)
    assert record is not None
    assert record.sealed
    assert record.key == "f", "a crash from here on uploads it under its new name"
    assert record.mtime_ns == 1_500_000_000 * 10**9
    assert (await fs.lookup(ROOT_INODE, "f")).inode == inode
    with pytest.raises(NotFound):
        await fs.lookup(ROOT_INODE, ".f.Xy12")
    with trio.fail_after(10):
        await staging.drain()  # unmount: the held-back upload starts at once
    assert _ops(wb.emu) == [("PutObject", "f")]
    assert wb.emu.get_bytes(BUCKET, "f") == b"rsync's bytes"
    head = wb.emu.head(BUCKET, "f")
    assert head is not None
    assert dict(head.meta)["x-oss-meta-mtime"] == "1500000000"
    assert (await fs.lookup(ROOT_INODE, "f")).size == len(b"rsync's bytes")


async def test_a_rename_over_a_file_whose_upload_is_held_back_uploads_only_the_new_one(
    wb: WriteRig,
) -> None:
    fs, staging = wb.fs, _staging(wb)
    old = await _write_closed(fs, "f", b"first version")
    old_journal = staging.by_inode[old].files.journal
    new = await _write_closed(fs, ".f.tmp", b"second")
    await fs.rename(ROOT_INODE, ".f.tmp", ROOT_INODE, "f", 0)
    assert not old_journal.exists(), "the replaced file's seal is gone: no crash brings it back"
    assert (await fs.lookup(ROOT_INODE, "f")).inode == new
    with trio.fail_after(10):
        await staging.drain()
    assert _ops(wb.emu) == [("PutObject", "f")]
    assert wb.emu.get_bytes(BUCKET, "f") == b"second"


async def test_a_file_with_an_older_version_on_oss_is_renamed_by_copy_and_delete(
    wb: WriteRig,
) -> None:
    fs, staging = wb.fs, _staging(wb)
    wb.emu.put_object(BUCKET, "g", b"on OSS")
    attr = await fs.lookup(ROOT_INODE, "g")
    opened = await fs.open(attr.inode, os.O_WRONLY | os.O_APPEND)
    fs.write(opened.fh, 6, b", appended")
    await fs.flush(opened.fh)
    await fs.release(opened.fh)
    wb.emu.requests.clear()
    with trio.fail_after(10):
        await fs.rename(ROOT_INODE, "g", ROOT_INODE, "h", 0)
    ops = _ops(wb.emu)
    assert ("PutObject", "g") in ops, "committed under its old key first"
    assert ops[-1] == ("DeleteObject", "g")
    assert wb.emu.get_bytes(BUCKET, "h") == b"on OSS, appended"
    assert wb.emu.head(BUCKET, "g") is None
    with trio.fail_after(10):
        await staging.drain()


async def test_a_write_to_a_file_whose_upload_is_held_back_starts_it_at_once(
    wb: WriteRig,
) -> None:
    fs = wb.fs
    inode = await _write_closed(fs, "log", b"line 1\n")
    opened = await fs.open(inode, os.O_WRONLY | os.O_APPEND)
    with trio.fail_after(10):  # not HELD_S: the write hurries the upload it waits for
        await fs.before_write(opened.fh)
    assert _ops(wb.emu) == [("PutObject", "log")]
    fs.write(opened.fh, 7, b"line 2\n")
    await fs.flush(opened.fh)
    await fs.release(opened.fh)
    with trio.fail_after(10):
        await _staging(wb).drain()
    assert wb.emu.get_bytes(BUCKET, "log") == b"line 1\nline 2\n"


async def test_an_unlinked_file_whose_upload_is_held_back_never_reaches_oss(
    wb: WriteRig,
) -> None:
    fs = wb.fs
    await _write_closed(fs, "scratch", b"x")
    await fs.unlink(ROOT_INODE, "scratch")
    with trio.fail_after(10):
        await _staging(wb).drain()
    assert _ops(wb.emu) == []


async def test_a_directory_whose_closed_files_are_held_back_is_renamed_after_their_upload(
    wb: WriteRig,
) -> None:
    fs = wb.fs
    d = await fs.mkdir(ROOT_INODE, "d", 0o755)
    opened, _ = await fs.create(d.inode, "f", os.O_WRONLY | os.O_CREAT, 0o644)
    fs.write(opened.fh, 0, b"inside")
    await fs.flush(opened.fh)
    await fs.release(opened.fh)
    with trio.fail_after(10):  # not EXDEV, and not HELD_S: the rename hurries the upload
        await fs.rename(ROOT_INODE, "d", ROOT_INODE, "e", 0)
    assert wb.emu.get_bytes(BUCKET, "e/f") == b"inside"
    assert wb.emu.head(BUCKET, "d/f") is None


async def test_a_readers_close_of_a_file_whose_upload_is_held_back_changes_nothing(
    wb: WriteRig,
) -> None:
    """It sealed the file again, stamping a new mtime: vim, which reads the file it is
    about to save, then refused to save it ("changed since reading it")."""
    fs, staging = wb.fs, _staging(wb)
    inode = await _write_closed(fs, "notes", b"alpha\n")
    before = (await fs.getattr(inode)).mtime_ns
    journal = load(staging.by_inode[inode].files.journal)
    opened = await fs.open(inode, os.O_RDONLY)
    assert await fs.read(opened.fh, 0, 100) == b"alpha\n"
    await fs.flush(opened.fh)
    await fs.release(opened.fh)
    assert (await fs.getattr(inode)).mtime_ns == before
    assert load(staging.by_inode[inode].files.journal) == journal
    assert staging.by_inode[inode].pending == 1


async def test_fsync_of_a_file_whose_upload_is_held_back_uploads_it_at_once(
    wb: WriteRig,
) -> None:
    fs = wb.fs
    opened, _ = await fs.create(ROOT_INODE, "db", os.O_WRONLY | os.O_CREAT, 0o644)
    fs.write(opened.fh, 0, b"committed by fsync")
    await fs.flush(opened.fh)  # a write-back close: held back
    assert _ops(wb.emu) == []
    with trio.fail_after(10):  # not HELD_S
        await fs.fsync(opened.fh)
    assert _ops(wb.emu) == [("PutObject", "db")]
    await fs.release(opened.fh)
    with trio.fail_after(10):
        await _staging(wb).drain()
    assert _ops(wb.emu) == [("PutObject", "db")], "the held-back upload had nothing left"


async def test_a_rename_that_must_not_replace_is_a_fenced_copy_made_at_once(
    wb: WriteRig,
) -> None:
    """RENAME_NOREPLACE must fail if the target exists now, which only OSS knows: the file is
    uploaded and copied with x-oss-forbid-overwrite, not re-keyed."""
    fs = wb.fs
    wb.emu.put_object(BUCKET, "taken", b"someone else's")
    await _write_closed(fs, ".tmp1", b"mine")
    with trio.fail_after(10), pytest.raises(FileAlreadyExists):  # EEXIST (fs/boundary.py)
        await fs.rename(ROOT_INODE, ".tmp1", ROOT_INODE, "taken", NOREPLACE)
    assert wb.emu.get_bytes(BUCKET, "taken") == b"someone else's"
    with trio.fail_after(10):
        await fs.rename(ROOT_INODE, ".tmp1", ROOT_INODE, "free", NOREPLACE)
    assert wb.emu.get_bytes(BUCKET, "free") == b"mine"
    assert [op for op, _ in _ops(wb.emu)] == ["PutObject", "CopyObject", "CopyObject",
                                              "DeleteObject"]  # fmt: skip


async def test_a_file_renamed_over_an_object_and_unlinked_before_its_upload_leaves_no_ghost(
    wb: WriteRig,
) -> None:
    """rsync updating `f`, then `rm f` before the upload: the re-keyed file never reached
    OSS, but the object it was to replace is there; the unlink must delete it."""
    fs = wb.fs
    wb.emu.put_object(BUCKET, "f", b"the old version")
    await fs.lookup(ROOT_INODE, "f")
    await _write_closed(fs, ".f.tmp", b"the new version")
    await fs.rename(ROOT_INODE, ".f.tmp", ROOT_INODE, "f", 0)
    await fs.unlink(ROOT_INODE, "f")
    with trio.fail_after(10):
        await _staging(wb).drain()
    assert wb.emu.head(BUCKET, "f") is None
    assert _ops(wb.emu) == [("DeleteObject", "f")]
    with pytest.raises(NotFound):
        await fs.lookup(ROOT_INODE, "f")


async def test_a_rename_over_a_file_whose_upload_lands_meanwhile_then_unlinked_leaves_no_ghost(
    wb: WriteRig,
) -> None:
    """The file staged under the new name was being uploaded: the rename waits for that
    upload (its lock), which lands; the re-keyed file replaces it, and its unlink before its
    own upload must delete what landed (found by the random walk, seed 35)."""
    fs, staging = wb.fs, _staging(wb)
    slow = FaultRule("stall", op="PutObject", key="t", times=1, seconds=0.3)
    wb.emu.faults.add(slow)
    target = await _write_closed(fs, "t", b"landing while the rename waits")
    await _write_closed(fs, ".t.tmp", b"renamed over it")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(staging.commit, staging.by_inode[target])  # as fsync would
        with trio.fail_after(10):
            while not slow.seen:
                await trio.sleep(0.01)  # the emulator's thread has the PUT
            await fs.rename(ROOT_INODE, ".t.tmp", ROOT_INODE, "t", 0)
    assert wb.emu.get_bytes(BUCKET, "t") == b"landing while the rename waits"
    await fs.unlink(ROOT_INODE, "t")
    with trio.fail_after(10):
        await staging.drain()
    assert wb.emu.head(BUCKET, "t") is None


async def test_a_rename_of_a_held_back_file_is_made_durable_by_an_fsync_of_the_directory(
    wb: WriteRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The re-sealed journal is fsynced, but not the staging directory: a power loss may
    undo the rename, as on a local disk, until the directory is fsynced."""
    fs, staging = wb.fs, _staging(wb)
    await _write_closed(fs, ".g.tmp", b"bytes")
    synced: list[int] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    directory = staging.directory.stat().st_ino
    await fs.rename(ROOT_INODE, ".g.tmp", ROOT_INODE, "g", 0)
    assert synced, "the new record is fsynced before it replaces the old one"
    assert directory not in synced
    fh = await fs.opendir(ROOT_INODE)
    await fs.fsyncdir(fh)
    fs.releasedir(fh)
    assert directory in synced


async def test_a_file_created_where_one_unlinked_still_waits_keeps_its_name(
    wb: WriteRig,
) -> None:
    """The unlinked file lingers until its held-back upload ends: its drop took the new
    file's name away, and the new file's later commits went to the old key (the random
    walk, seed 64, when both had the number the path derives). The lingering file keeps
    its number pinned (Staging.pins) though the kernel forgot it, so the new one gets
    another, and what each shows and commits stays its own."""
    fs, staging = wb.fs, _staging(wb)
    old = await _write_closed(fs, "c", b"closed, then unlinked")
    lingering = staging.by_inode[old]
    await fs.unlink(ROOT_INODE, "c")
    fs.forget(old, 1)  # the kernel lets go of the old inode
    opened, attr = await fs.create(ROOT_INODE, "c", os.O_WRONLY | os.O_CREAT, 0o644)
    assert attr.inode != old, "the lingering file's number is not reused"
    assert staging.by_inode[old] is lingering
    assert (await fs.getattr(attr.inode)).size == 0  # the new file's, not the lingering one's
    with trio.fail_after(10):
        await staging.drain()  # the lingering file's upload ends (it is orphaned: nothing)
    assert old not in staging.by_inode
    assert old not in fs._ns.table, "its number is free"
    assert staging.by_path.get("c") == attr.inode, "the new file keeps its name"
    fs.write(opened.fh, 0, b"the new file")
    await fs.flush(opened.fh)
    await fs.release(opened.fh)
    await fs.rename(ROOT_INODE, "c", ROOT_INODE, "d", 0)
    with trio.fail_after(10):
        await staging.drain()
    assert wb.emu.get_bytes(BUCKET, "d") == b"the new file"
    assert wb.emu.head(BUCKET, "c") is None


async def test_a_file_renamed_over_a_symlink_stays_a_file_until_its_upload_lands(
    wb: WriteRig,
) -> None:
    """The rename re-keys the held-back file onto the link's name: OSS lists the link there
    until the upload lands, and a listing learnt meanwhile must not turn the file (an inode
    the kernel holds as a regular file) into a link: the kernel takes a changed type for a
    bad inode and answers EIO to every call on it (the random walk, seed 370, write-back
    with directories: `chmod` of the renamed file)."""
    fs = wb.fs
    wb.emu.put_object(BUCKET, "target", b"t")
    await fs.symlink(ROOT_INODE, "link", "target")
    inode = await _write_closed(fs, "f", b"a file")
    await fs.rename(ROOT_INODE, "f", ROOT_INODE, "link", 0)
    fs._ns.invalidate()  # the next listing is read again: OSS still has the link there
    fh = await fs.opendir(ROOT_INODE)
    listed = entries(fs, fh)
    fs.releasedir(fh)
    assert [(name, stat.S_ISREG(a.mode)) for name, a in listed if a.inode == inode] == [
        ("link", True)
    ]
    attr = await fs.getattr(inode)
    assert stat.S_ISREG(attr.mode), oct(attr.mode)
    attr = await fs.setattr(inode, size=None, mtime_ns=None, fh=None, mode=0o640)
    assert attr.mode == stat.S_IFREG | 0o640
    with trio.fail_after(10):
        await _staging(wb).drain()
    assert wb.emu.get_bytes(BUCKET, "link") == b"a file"


async def test_a_symlink_made_where_one_unlinked_still_waits_shows_as_itself(
    wb: WriteRig,
) -> None:
    """The unlinked file lingers until its held-back upload ends, and a symlink made at its
    name meanwhile must not be shown with the lingering file's size and mode (the random
    walk, seeds 373-380, write-back with directories, when both had the number the path
    derives). The lingering file's number stays pinned, so the link gets another."""
    fs, staging = wb.fs, _staging(wb)
    wb.emu.put_object(BUCKET, "target", b"t")
    old = await _write_closed(fs, "c", b"closed, then unlinked")
    await fs.unlink(ROOT_INODE, "c")
    fs.forget(old, 1)  # the kernel lets go of the old inode
    attr = await fs.symlink(ROOT_INODE, "c", "target", 0, 0)
    assert attr.inode != old, "the lingering file's number is not reused"
    assert staging.by_inode[old].orphan
    for shown in (attr, await fs.getattr(attr.inode)):
        assert shown.mode == stat.S_IFLNK | 0o777, oct(shown.mode)
        assert shown.size != len(b"closed, then unlinked")
    with trio.fail_after(10):
        await staging.drain()
    assert wb.emu.head(BUCKET, "c") is not None
