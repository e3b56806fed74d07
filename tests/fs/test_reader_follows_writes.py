"""A handle opened for reading before this mount writes the file reads what was written, as
through a local file's descriptor: once the file is staged, every handle of it reads the staged
bytes (fs/filesystem.py `_open_staged`), instead of the version it opened, which the commit
replaces (ESTALE on its next GET, old bytes from its cached parts). In-process, over a real
client against the emulator, with parts of 1 MiB."""

from __future__ import annotations

import logging
import os

import pytest
import trio

from ossmount.emulator import Emulator, FaultRule
from ossmount.fs import filesystem
from ossmount.prefetch import ObjectChanged
from ossmount.tree.inodes import ROOT_INODE
from tests.fs.test_append_unread import rig
from tests.fs.test_writes import BUCKET, WriteRig, emu

__all__ = ["emu", "rig"]

MiB = 1 << 20
OLD = bytes(range(251)) * (13 * 1024)  # 3,342,336 bytes: three parts and a bit
NEW = b"new!" * (MiB // 2)  # 2 MiB


def _count(emu: Emulator, op: str) -> int:
    return sum(1 for r in emu.requests if r.op == op)


async def _open(rig: WriteRig, flags: int) -> int:
    attr = await rig.fs.lookup(ROOT_INODE, "f")
    return (await rig.fs.open(attr.inode, flags)).fh


async def _close(rig: WriteRig, fh: int) -> None:
    await rig.fs.flush(fh)
    await rig.fs.release(fh)
    assert rig.staging is not None
    await rig.staging.drain()


async def _reading_f(rig: WriteRig) -> int:
    """ "f" (OLD) opened for reading, its first bytes read: the rest is not cached yet."""
    rig.emu.put_object(BUCKET, "f", OLD)
    reader = await _open(rig, os.O_RDONLY)
    assert await rig.fs.read(reader, 0, 16) == OLD[:16]
    return reader


async def _reads_on_to_the_end(rig: WriteRig, reader: int) -> None:
    assert await rig.fs.read(reader, 3 * MiB - 4, 8) == OLD[3 * MiB - 4 : 3 * MiB + 4]
    await _close(rig, reader)


async def test_a_reader_opened_before_an_overwrite_reads_the_new_bytes(rig: WriteRig) -> None:
    rig.emu.put_object(BUCKET, "f", OLD)
    reader = await _open(rig, os.O_RDONLY)
    assert await rig.fs.read(reader, 0, 4096) == OLD[:4096]
    writer = await _open(rig, os.O_WRONLY | os.O_TRUNC)
    assert await rig.fs.read(reader, 0, 4096) == b"", "truncated, as the writer sees it"
    await rig.fs.write_waiting(writer, 0, NEW)
    assert await rig.fs.read(reader, MiB, 8) == NEW[MiB : MiB + 8], "the staged bytes"
    await _close(rig, writer)
    assert rig.emu.get_bytes(BUCKET, "f") == NEW
    # After the commit the object is the new version: the handle reads it, not an ESTALE
    # from a GET fenced on the old ETag, nor old bytes from the old version's parts.
    assert await rig.fs.read(reader, 2 * MiB - 8, 4096) == NEW[-8:]
    assert await rig.fs.read(reader, 3 * MiB, 4096) == b""
    await _close(rig, reader)


async def test_a_reader_sees_a_patch_in_the_middle(rig: WriteRig) -> None:
    reader = await _reading_f(rig)
    patcher = await _open(rig, os.O_RDWR)
    await rig.fs.write_waiting(patcher, 2 * MiB, b"PATCH")
    expected = OLD[: 2 * MiB] + b"PATCH" + OLD[2 * MiB + 5 :]
    assert await rig.fs.read(reader, 2 * MiB - 2, 9) == expected[2 * MiB - 2 : 2 * MiB + 7]
    await _close(rig, patcher)
    assert rig.emu.get_bytes(BUCKET, "f") == expected
    assert await rig.fs.read(reader, 2 * MiB, 5) == b"PATCH"
    assert await rig.fs.read(reader, len(OLD) - 3, 10) == OLD[-3:]
    await _close(rig, reader)


async def test_a_reader_of_a_file_renamed_meanwhile_goes_on_reading(rig: WriteRig) -> None:
    reader = await _reading_f(rig)
    await rig.fs.rename(ROOT_INODE, "f", ROOT_INODE, "g", 0)
    assert rig.emu.head(BUCKET, "f") is None
    await _reads_on_to_the_end(rig, reader)


async def test_a_reader_of_a_file_unlinked_meanwhile_goes_on_reading(rig: WriteRig) -> None:
    reader = await _reading_f(rig)
    inode = (await rig.fs.lookup(ROOT_INODE, "f")).inode
    await rig.fs.unlink(ROOT_INODE, "f")
    # The kernel asks for the attributes before a read past the size it knows (and for
    # fstat): ENOENT there would fail the read.
    assert (await rig.fs.getattr(inode)).size == len(OLD)
    await _reads_on_to_the_end(rig, reader)


async def test_a_reader_of_a_file_replaced_by_a_rename_goes_on_reading_it(
    rig: WriteRig,
) -> None:
    rig.emu.put_object(BUCKET, "other", NEW)
    reader = await _reading_f(rig)
    inode = (await rig.fs.lookup(ROOT_INODE, "f")).inode
    await rig.fs.rename(ROOT_INODE, "other", ROOT_INODE, "f", 0)
    assert rig.emu.get_bytes(BUCKET, "f") == NEW
    assert (await rig.fs.getattr(inode)).size == len(OLD)
    await _reads_on_to_the_end(rig, reader)


async def test_a_reader_of_a_file_in_a_directory_renamed_meanwhile_goes_on_reading(
    rig: WriteRig,
) -> None:
    rig.emu.put_object(BUCKET, "d/f", OLD)
    d = await rig.fs.lookup(ROOT_INODE, "d")
    f = await rig.fs.lookup(d.inode, "f")
    reader = (await rig.fs.open(f.inode, os.O_RDONLY)).fh
    assert await rig.fs.read(reader, 0, 16) == OLD[:16]
    await rig.fs.rename(ROOT_INODE, "d", ROOT_INODE, "e", 0)
    assert rig.emu.head(BUCKET, "d/f") is None
    await _reads_on_to_the_end(rig, reader)


async def test_an_unlink_does_not_wait_to_fetch_more_than_its_bound(
    rig: WriteRig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Past `_KEEP_MAX_BYTES` not cached, the unlink goes on at once: the handle's read of
    what is not cached fails as the object is gone (ESTALE), and the log says why."""
    monkeypatch.setattr(filesystem, "_KEEP_MAX_BYTES", MiB)
    caplog.set_level(logging.INFO, logger="ossmount.fs.filesystem")
    reader = await _reading_f(rig)
    gets = _count(rig.emu, "GetObject")
    await rig.fs.unlink(ROOT_INODE, "f")
    assert _count(rig.emu, "GetObject") == gets
    assert "not kept for its open handles: more than 1 MiB of it not cached" in caplog.text
    with pytest.raises(ObjectChanged):
        await rig.fs.read(reader, 3 * MiB - 4, 8)
    await _close(rig, reader)


async def test_a_read_under_way_when_the_writer_opens_finishes_on_the_old_version(
    rig: WriteRig,
) -> None:
    """The switch does not pull the version from under a read waiting for its GET: that
    read returns the old bytes (its reader is closed at the handle's release), the next one
    the staged file's."""
    reader = await _reading_f(rig)
    held = FaultRule("latency", op="GetObject", key="f", times=1, seconds=0.5)
    rig.emu.faults.add(held)
    got: list[bytes] = []

    async def read_under_way() -> None:
        got.append(await rig.fs.read(reader, 2 * MiB, 8))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_under_way)
        with trio.fail_after(10):
            while not held.seen:  # the emulator's thread counts the GET as it arrives
                await trio.sleep(0.005)
        writer = await _open(rig, os.O_WRONLY | os.O_TRUNC)
    assert got == [OLD[2 * MiB : 2 * MiB + 8]]
    assert await rig.fs.read(reader, 0, 16) == b""
    await rig.fs.write_waiting(writer, 0, b"new")
    await _close(rig, writer)
    assert await rig.fs.read(reader, 0, 16) == b"new"
    await _close(rig, reader)


async def test_a_reader_of_a_file_replaced_by_rsyncs_rename_goes_on_reading_it(
    rig: WriteRig,
) -> None:
    """rsync's temporary file renamed over the file: under write-back a rename without a
    request (its upload goes to the new key later, Staging.rekey), which must not take the
    old version from its reader either."""
    reader = await _reading_f(rig)
    opened, _ = await rig.fs.create(ROOT_INODE, ".f.tmp", os.O_WRONLY | os.O_CREAT, 0o644)
    await rig.fs.write_waiting(opened.fh, 0, b"one part")
    await rig.fs.flush(opened.fh)  # under write-back: sealed, its upload held back
    await rig.fs.release(opened.fh)
    assert rig.staging is not None
    uploads = _count(rig.emu, "PutObject")
    await rig.fs.rename(ROOT_INODE, ".f.tmp", ROOT_INODE, "f", 0)
    assert _count(rig.emu, "CopyObject") == 0 or not rig.staging.writeback
    await rig.staging.drain()
    assert _count(rig.emu, "PutObject") == uploads + rig.staging.writeback
    assert rig.emu.get_bytes(BUCKET, "f") == b"one part"
    await _reads_on_to_the_end(rig, reader)


async def test_an_unlink_waiting_for_the_rest_of_a_file_ends_when_its_reader_closes(
    rig: WriteRig,
) -> None:
    """The reader's process exits while the unlink fetches the rest of the file for it: the
    unlink still ends (the fetch holds its own reader on the download, so the handle's close
    does not stop the download under it; this passed before that too, the parts left being
    asked for again as the wait reaches them, but nothing promised it)."""
    reader = await _reading_f(rig)
    held = FaultRule("latency", op="GetObject", key="f", times=None, seconds=0.3)
    rig.emu.faults.add(held)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(rig.fs.unlink, ROOT_INODE, "f")
        with trio.fail_after(10):
            while not held.seen:
                await trio.sleep(0.005)
        await rig.fs.release(reader)
        with trio.fail_after(10):
            while rig.emu.head(BUCKET, "f") is not None:
                await trio.sleep(0.01)
