"""Writing into a big existing object reads only its last part (fs/staging.py `fill`): the
start stays unread, is read from the object while the file is open, copied server-side at
the commit, and checked there through the CRC-64 OSS states for the whole object. A write or
truncate into it fetches it first, checked the same way. In-process, over a real client
against the emulator, with parts of 1 MiB."""

from __future__ import annotations

import errno
import functools
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from ossmount.crc64 import crc64
from ossmount.emulator import Emulator, FaultRule
from ossmount.fs import unread
from ossmount.fs.staged import staged_state
from ossmount.fs.stagedspace import StagedSpace
from ossmount.fs.staging import Staging
from ossmount.fs.unread import upload_part_size
from ossmount.oss._write_types import CrcMismatch, StagingError
from ossmount.prefetch import ObjectCorrupt
from ossmount.tree.inodes import ROOT_INODE
from ossmount.write import UploadSettings
from ossmount.write.journal import load
from tests.fs.test_writes import BUCKET, WriteRig, emu, write_rig

__all__ = ["emu"]

MiB = 1 << 20
BIG = bytes(range(251)) * (33 * 1024) + b"tail"  # 8,482,820 bytes: 8 whole parts and a bit
START = 8 * MiB  # what stays unread: the whole parts before the last one


@pytest.fixture(params=[None, 600.0], ids=["sync", "writeback"])
async def rig(
    emu: Emulator, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[WriteRig]:
    """Without and with write-back (whose close commits such a file itself: no journal)."""
    async for rig in write_rig(emu, tmp_path, rw=True, writeback_delay_s=request.param):
        yield rig


@pytest.fixture
async def counted(emu: Emulator, tmp_path: Path) -> AsyncIterator[WriteRig]:
    """Staged bytes counted against a cache cap of 3 MiB (less than BIG)."""
    async for rig in write_rig(emu, tmp_path, rw=True):
        assert rig.staging is not None
        rig.store.max_bytes = 3 * MiB
        rig.staging.space = StagedSpace(rig.store)
        yield rig


@pytest.fixture
async def held(emu: Emulator, tmp_path: Path) -> AsyncIterator[WriteRig]:
    """-o writeback with uploads held back after a close (until `drain`)."""
    async for rig in write_rig(emu, tmp_path, rw=True, writeback_delay_s=600.0):
        yield rig


def _staging(rig: WriteRig) -> Staging:
    assert rig.staging is not None
    return rig.staging


async def _failed_close(rig: WriteRig, fh: int, error: type[Exception], match: str) -> None:
    """close(2) of a file whose commit fails: the close fails; under write-back it returns
    (sealed) and the upload fails later, leaving the file staged, unsent, for its retries."""
    staged = _staging(rig).by_inode[_staging(rig).by_path["big"]]
    if not _staging(rig).writeback:
        with pytest.raises(error, match=match):
            await _close(rig, fh)
        return
    await _close(rig, fh)
    assert staged.unsent, "kept for its retries"
    assert staged_state(staged) == "upload-failed"


def _get_bytes(emu: Emulator) -> int:
    return sum(r.bytes_sent for r in emu.requests if r.op == "GetObject")


def _count(emu: Emulator, op: str) -> int:
    return sum(1 for r in emu.requests if r.op == op)


async def _open(rig: WriteRig, flags: int, name: str = "big") -> tuple[int, int]:
    attr = await rig.fs.lookup(ROOT_INODE, name)
    opened = await rig.fs.open(attr.inode, flags)
    return attr.inode, opened.fh


async def _close(rig: WriteRig, fh: int) -> None:
    """close(2), and under write-back the upload it scheduled: a file whose start is still
    unread is committed by the close itself, one fetched whole is sealed."""
    with trio.fail_after(30):
        try:
            await rig.fs.flush(fh)
        finally:
            await rig.fs.release(fh)
        await _staging(rig).drain()


async def _append_and_close(rig: WriteRig, fh: int, data: bytes) -> None:
    """`data` written at the end of BIG through `fh`, then close(2) (`_close`)."""
    await rig.fs.write_waiting(fh, len(BIG), data)
    await _close(rig, fh)


async def test_an_append_reads_only_the_last_part_and_copies_the_rest(rig: WriteRig) -> None:
    rig.emu.put_object(BUCKET, "big", BIG)
    rig.emu.requests.clear()
    inode, fh = await _open(rig, os.O_WRONLY | os.O_APPEND)
    staged = _staging(rig).by_inode[inode]
    assert staged.unread_end == START
    assert await rig.fs.write_waiting(fh, len(BIG), b"one more line\n") == 14
    with trio.fail_after(30):
        await rig.fs.flush(fh)
    if _staging(rig).writeback:  # sealed with the start it left unread, uploaded later
        assert rig.emu.get_bytes(BUCKET, "big") == BIG
        record = load(staged.files.journal)
        assert record is not None
        assert record.sealed
        assert record.unread is not None
        assert record.unread.below == START
        assert record.unread.crc == crc64(BIG[:START])
    await rig.fs.release(fh)
    await _staging(rig).drain()
    assert rig.emu.get_bytes(BUCKET, "big") == BIG + b"one more line\n"
    assert _get_bytes(rig.emu) <= 2 * MiB, "the last part, not the object"
    assert _count(rig.emu, "UploadPartCopy") == 1, "the start in one piece of 8 parts"
    assert _count(rig.emu, "UploadPart") == 1
    assert os.listdir(_staging(rig).directory) == [], "not adopted: it has a hole"


async def test_the_open_file_reads_the_object_start_and_the_staged_rest(rig: WriteRig) -> None:
    rig.emu.put_object(BUCKET, "big", BIG)
    _, fh = await _open(rig, os.O_RDWR | os.O_APPEND)
    await rig.fs.write_waiting(fh, len(BIG), b"+")
    whole = BIG + b"+"
    for offset, size in ((0, 100), (START - 10, 20), (START - 1, 2 * MiB), (len(BIG) - 2, 9)):
        assert await rig.fs.read(fh, offset, size) == whole[offset : offset + size]
    got = b"".join([await rig.fs.read(fh, o, 300_000) for o in range(0, len(whole), 300_000)])
    assert got == whole
    await _close(rig, fh)
    assert rig.emu.get_bytes(BUCKET, "big") == whole


async def test_a_read_of_the_start_racing_the_commit_that_replaces_it_reads_the_new_one(
    rig: WriteRig,
) -> None:
    """The unread start is read from the version that holds it. A commit of the file
    replaces that version on the server before its reply comes back (held here for 1 s);
    a read in between got 412 from its GET and failed with ESTALE (a stress run, under
    write-back: `append`, then `cat`). It waits for the commit's end and reads the new
    version."""
    rig.emu.put_object(BUCKET, "big", BIG)
    old = rig.emu.head(BUCKET, "big")
    assert old is not None
    inode, fh = await _open(rig, os.O_RDWR | os.O_APPEND)
    await rig.fs.write_waiting(fh, len(BIG), b"+")
    reader = (await rig.fs.open(inode, os.O_RDONLY)).fh
    rig.emu.faults.add(FaultRule("latency", op="CompleteMultipartUpload", seconds=1.0))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_close, rig, fh)
            while (now := rig.emu.head(BUCKET, "big")) is None or now.etag == old.etag:
                await trio.sleep(0.01)  # until the new version is on the server
            assert await rig.fs.read(reader, 0, 100) == BIG[:100]
    await rig.fs.release(reader)
    assert rig.emu.get_bytes(BUCKET, "big") == BIG + b"+"


async def test_a_write_into_the_start_fetches_it_then_patches(rig: WriteRig) -> None:
    rig.emu.put_object(BUCKET, "big", BIG)
    inode, fh = await _open(rig, os.O_RDWR | os.O_APPEND)
    staged = _staging(rig).by_inode[inode]
    await rig.fs.write_waiting(fh, len(BIG), b"+")  # parts go early, copied unread
    await rig.fs.write_waiting(fh, 3 * MiB + 5, b"PATCH")
    assert staged.unread_end == 0
    await _close(rig, fh)
    want = BIG[: 3 * MiB + 5] + b"PATCH" + BIG[3 * MiB + 10 :] + b"+"
    assert rig.emu.get_bytes(BUCKET, "big") == want


async def test_a_truncate_into_the_start_fetches_it_and_one_to_zero_does_not(
    rig: WriteRig,
) -> None:
    rig.emu.put_object(BUCKET, "big", BIG)
    inode, fh = await _open(rig, os.O_RDWR | os.O_APPEND)
    rig.emu.requests.clear()
    await rig.fs.setattr(inode, size=2 * MiB + 1, mtime_ns=None, fh=fh)
    assert _get_bytes(rig.emu) >= 2 * MiB + 1
    await _close(rig, fh)
    assert rig.emu.get_bytes(BUCKET, "big") == BIG[: 2 * MiB + 1]

    rig.emu.put_object(BUCKET, "big2", BIG)
    inode, fh = await _open(rig, os.O_RDWR | os.O_APPEND, "big2")
    rig.emu.requests.clear()
    await rig.fs.setattr(inode, size=0, mtime_ns=None, fh=fh)
    await rig.fs.write_waiting(fh, 0, b"new")
    await _close(rig, fh)
    assert rig.emu.get_bytes(BUCKET, "big2") == b"new"
    assert _get_bytes(rig.emu) == 0


async def test_an_unlink_while_open_fetches_the_start_so_it_stays_readable(
    rig: WriteRig,
) -> None:
    rig.emu.put_object(BUCKET, "big", BIG)
    _, fh = await _open(rig, os.O_RDWR | os.O_APPEND)
    await rig.fs.unlink(ROOT_INODE, "big")
    assert rig.emu.head(BUCKET, "big") is None
    assert await rig.fs.read(fh, 0, 1000) == BIG[:1000]
    await _close(rig, fh)
    assert rig.emu.head(BUCKET, "big") is None


async def test_a_start_changed_on_the_server_fails_the_commit_and_keeps_that_version(
    rig: WriteRig,
) -> None:
    rig.emu.put_object(BUCKET, "big", BIG)
    _, fh = await _open(rig, os.O_WRONLY | os.O_APPEND)
    await rig.fs.write_waiting(fh, len(BIG), b"mine")
    theirs = b"t" * len(BIG)
    rig.emu.put_object(BUCKET, "big", theirs)
    await _failed_close(rig, fh, StagingError, "never fetched")
    assert rig.emu.get_bytes(BUCKET, "big") == theirs


async def test_a_wrong_whole_object_crc_fails_the_commit(rig: WriteRig) -> None:
    """The start's CRC-64 is solved from the whole object's and the tail read: when either
    is wrong (here the HEAD's), the commit's check fails rather than report the object
    written."""
    rig.emu.put_object(BUCKET, "big", BIG)
    rig.emu.faults.add(FaultRule("wrong-crc", op="HeadObject"))
    _, fh = await _open(rig, os.O_WRONLY | os.O_APPEND)
    await rig.fs.write_waiting(fh, len(BIG), b"x")
    await _failed_close(rig, fh, CrcMismatch, "CRC-64")


async def test_a_start_fetched_wrong_is_refused_and_the_file_stays_as_it_was(
    rig: WriteRig,
) -> None:
    """Fetched bytes that do not have the start's CRC-64 are not used: the write fails
    (EIO) and the file can still be appended to."""
    rig.emu.put_object(BUCKET, "big", BIG)
    rig.emu.faults.add(FaultRule("wrong-crc", op="HeadObject"))
    inode, fh = await _open(rig, os.O_RDWR | os.O_APPEND)
    with pytest.raises(OSError, match="CRC-64") as caught:
        await rig.fs.write_waiting(fh, 5, b"x")
    assert caught.value.errno == errno.EIO
    assert _staging(rig).by_inode[inode].unread_end == START


async def test_a_start_read_corrupt_fails_the_write(rig: WriteRig) -> None:
    """A flipped byte where the start is fetched: the read path's own check refuses it."""
    rig.emu.put_object(BUCKET, "big", BIG)
    _, fh = await _open(rig, os.O_RDWR | os.O_APPEND)
    rig.emu.faults.add(FaultRule("flip", op="GetObject", after=10))
    with pytest.raises(ObjectCorrupt, match="CRC-64"):
        await rig.fs.write_waiting(fh, 5, b"x")
    rig.emu.faults.clear()
    await _append_and_close(rig, fh, b"!")  # still an appendable file
    assert rig.emu.get_bytes(BUCKET, "big") == BIG + b"!"


async def test_an_open_to_patch_stages_the_object_whole(rig: WriteRig) -> None:
    """Without O_APPEND the writer patches in place: its start is read at open, so an object
    changed on the server meanwhile is replaced by ours (last writer wins)."""
    rig.emu.put_object(BUCKET, "big", BIG)
    inode, fh = await _open(rig, os.O_RDWR)
    assert _staging(rig).by_inode[inode].unread_end == 0
    rig.emu.put_object(BUCKET, "big", b"theirs")
    await rig.fs.write_waiting(fh, 0, b"Y")
    await _close(rig, fh)
    assert rig.emu.get_bytes(BUCKET, "big") == b"Y" + BIG[1:]


async def test_an_object_without_a_crc_is_staged_whole(rig: WriteRig) -> None:
    rig.emu.put_object(BUCKET, "big", BIG)
    rig.emu.faults.add(FaultRule("missing-crc", op="HeadObject", times=None))
    inode, fh = await _open(rig, os.O_WRONLY | os.O_APPEND)
    assert _staging(rig).by_inode[inode].unread_end == 0
    await _append_and_close(rig, fh, b"x")
    assert rig.emu.get_bytes(BUCKET, "big") == BIG + b"x"


async def test_an_object_bigger_than_the_cache_can_be_appended_to(counted: WriteRig) -> None:
    """Its unread start takes no room: with a 3 MiB cap, an 8 MiB object gains a line (it
    was ENOSPC when the object was staged whole)."""
    rig = counted
    rig.emu.put_object(BUCKET, "big", BIG)
    _, fh = await _open(rig, os.O_WRONLY | os.O_APPEND)
    await rig.fs.write_waiting(fh, len(BIG), b"x")
    assert 0 < rig.store.staged_bytes <= 2 * MiB
    await _close(rig, fh)
    assert rig.emu.get_bytes(BUCKET, "big") == BIG + b"x"
    assert rig.store.staged_bytes == 0


async def test_parts_copied_unread_while_the_start_is_fetched_are_copied_again(
    rig: WriteRig,
) -> None:
    """An append starts copying the unread parts in the background; a write into the start
    then fetches it while one copy is still held by the server. That copy has no CRC-64 of
    its own, so it must not count once the start is fetched: it is copied again, hashed."""
    rig.emu.put_object(BUCKET, "big", BIG)
    _, fh = await _open(rig, os.O_RDWR | os.O_APPEND)
    rig.emu.faults.add(FaultRule("stall", op="UploadPartCopy", seconds=1.0))
    await rig.fs.write_waiting(fh, len(BIG), b"+")  # parts go early, copied unread
    with trio.fail_after(10):
        while not any(r.op == "UploadPartCopy" for r in rig.emu.requests):
            await trio.sleep(0.01)
    await rig.fs.write_waiting(fh, 7, b"PATCH")  # fetched while one copy is stalled
    await _close(rig, fh)
    want = BIG[:7] + b"PATCH" + BIG[12:] + b"+"
    assert rig.emu.get_bytes(BUCKET, "big") == want


async def test_appends_after_an_fsync_copy_the_start_from_the_version_committed(
    rig: WriteRig,
) -> None:
    rig.emu.put_object(BUCKET, "big", BIG)
    inode, fh = await _open(rig, os.O_WRONLY | os.O_APPEND)
    await rig.fs.write_waiting(fh, len(BIG), b"1")
    with trio.fail_after(30):
        await rig.fs.fsync(fh)
    assert rig.emu.get_bytes(BUCKET, "big") == BIG + b"1"
    await rig.fs.write_waiting(fh, len(BIG) + 1, b"2")
    assert _staging(rig).by_inode[inode].unread_end == START, "still unread: copied again"
    await _close(rig, fh)
    assert rig.emu.get_bytes(BUCKET, "big") == BIG + b"12"


async def test_a_rename_while_open_reads_the_start_from_the_new_name(rig: WriteRig) -> None:
    rig.emu.put_object(BUCKET, "big", BIG)
    _, fh = await _open(rig, os.O_RDWR | os.O_APPEND)
    assert await rig.fs.read(fh, 0, 10) == BIG[:10]
    await rig.fs.rename(ROOT_INODE, "big", ROOT_INODE, "moved", 0)
    assert rig.emu.head(BUCKET, "big") is None
    assert await rig.fs.read(fh, 100, 10) == BIG[100:110]
    await _append_and_close(rig, fh, b"!")
    assert rig.emu.get_bytes(BUCKET, "moved") == BIG + b"!"


async def test_a_truncate_to_zero_waits_for_a_fetch_of_the_start_under_way(
    counted: WriteRig,
) -> None:
    """Else the fetch's writes landed after the truncate, and the room they took was never
    given back (the cache's count of staged bytes stayed up after the file was gone)."""
    rig = counted
    rig.store.max_bytes = 64 * MiB  # room for the start once fetched
    rig.emu.put_object(BUCKET, "big", BIG)
    inode, fh = await _open(rig, os.O_RDWR | os.O_APPEND)
    staged = _staging(rig).by_inode[inode]
    rig.emu.faults.add(FaultRule("stall", op="GetObject", seconds=0.5))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(functools.partial(rig.fs.setattr, inode, size=MiB, mtime_ns=None, fh=fh))
        with trio.fail_after(10):
            while staged.unread is None or staged.unread.fetching is None:
                await trio.sleep(0.005)
        await rig.fs.setattr(inode, size=0, mtime_ns=None, fh=fh)
    await rig.fs.write_waiting(fh, 0, b"z")
    await _close(rig, fh)
    assert rig.emu.get_bytes(BUCKET, "big") in (b"z", b"z" + bytes(MiB - 1))
    assert rig.store.staged_bytes == 0


async def test_an_object_the_cache_holds_whole_is_staged_from_it_and_adopted(
    rig: WriteRig,
) -> None:
    """Read whole before (a verified cache entry): the append copies it from the cache (no
    GET), and the version committed becomes the cache's entry, so reading it back costs no
    GET either; its start is not left unread."""
    rig.emu.put_object(BUCKET, "big", BIG)
    inode, fh = await _open(rig, os.O_RDONLY)
    got = b"".join([await rig.fs.read(fh, o, MiB) for o in range(0, len(BIG), MiB)])
    assert got == BIG
    await rig.fs.release(fh)
    with trio.fail_after(10):
        while rig.fs.getxattr(inode, "user.ossmount.state") != b"verified":
            await trio.sleep(0.01)
    rig.emu.requests.clear()
    _, fh = await _open(rig, os.O_WRONLY | os.O_APPEND)
    assert _staging(rig).by_inode[inode].unread_end == 0
    await _append_and_close(rig, fh, b"+")
    assert _count(rig.emu, "GetObject") == 0
    with trio.fail_after(10):  # adopted in the background (fs/staging.py `_hand_over`)
        while rig.fs.getxattr(inode, "user.ossmount.state") != b"verified":
            await trio.sleep(0.01)
    rig.emu.requests.clear()
    _, fh = await _open(rig, os.O_RDONLY)
    assert await rig.fs.read(fh, len(BIG) - 3, 10) == b"ail+"
    await rig.fs.release(fh)
    assert _count(rig.emu, "GetObject") == 0, "adopted: read back from the cache"


async def test_the_crc_a_read_learnt_spares_the_head(rig: WriteRig) -> None:
    rig.emu.put_object(BUCKET, "big", BIG)
    _, fh = await _open(rig, os.O_RDONLY)
    assert await rig.fs.read(fh, 0, 100) == BIG[:100]
    await rig.fs.release(fh)
    rig.emu.requests.clear()
    inode, fh = await _open(rig, os.O_WRONLY | os.O_APPEND)
    assert _staging(rig).by_inode[inode].unread_end == START
    assert _count(rig.emu, "HeadObject") == 0
    await _append_and_close(rig, fh, b"+")
    assert rig.emu.get_bytes(BUCKET, "big") == BIG + b"+"


async def test_a_completion_whose_reply_is_lost_is_taken_for_ours(rig: WriteRig) -> None:
    """CompleteMultipartUpload lands but its reply is lost: the retry finds the upload gone
    and the object completed. That object is ours (its CRC-64 is the one the unread start
    and the parts sent make), not a reason to copy the start again from a version that is
    no longer there."""
    rig.emu.put_object(BUCKET, "big", BIG)
    _, fh = await _open(rig, os.O_WRONLY | os.O_APPEND)
    await rig.fs.write_waiting(fh, len(BIG), b"mine")
    rig.emu.faults.add(FaultRule("reset", op="CompleteMultipartUpload", after=0))
    await _close(rig, fh)
    assert rig.emu.get_bytes(BUCKET, "big") == BIG + b"mine"
    assert not _staging(rig).by_path, "committed, nothing left staged"


async def test_an_upload_finding_this_very_file_on_the_server_takes_it_as_done(
    held: WriteRig,
) -> None:
    """The object changed since the append was opened, into exactly this file's bytes (what a
    crash between CompleteMultipartUpload and its journal leaves, when the next mount cannot
    tell it by time): the upload takes it as done instead of failing for good."""
    rig = held
    rig.emu.put_object(BUCKET, "big", BIG)
    inode, fh = await _open(rig, os.O_WRONLY | os.O_APPEND)
    staged = _staging(rig).by_inode[inode]
    await rig.fs.write_waiting(fh, len(BIG), b"mine")
    await rig.fs.flush(fh)  # sealed; the upload is held back
    await rig.fs.release(fh)
    rig.emu.put_object(BUCKET, "big", BIG + b"mine")
    rig.emu.requests.clear()
    with trio.fail_after(30):
        await _staging(rig).drain()
    assert not staged.unsent
    assert rig.emu.get_bytes(BUCKET, "big") == BIG + b"mine"
    assert _count(rig.emu, "CompleteMultipartUpload") == 0, "nothing completed: it was there"
    assert _count(rig.emu, "AbortMultipartUpload") == 1, "the upload its early parts began"
    assert _count(rig.emu, "HeadObject") == 1, "the conflict check's HEAD tells it is this file"


async def test_no_room_for_the_start_fails_the_write_and_leaves_the_file_appendable(
    counted: WriteRig,
) -> None:
    """A write into the unread start of an object bigger than the cache: ENOSPC, nothing
    changed, and the next try fails the same way (no fetch is left pending to wait on)."""
    rig = counted
    rig.emu.put_object(BUCKET, "big", BIG)
    _, fh = await _open(rig, os.O_RDWR | os.O_APPEND)
    before = rig.store.staged_bytes
    for _ in range(2):
        with trio.fail_after(10), pytest.raises(OSError, match="cache cap") as caught:
            await rig.fs.write_waiting(fh, 5, b"x")
        assert caught.value.errno == errno.ENOSPC
        assert rig.store.staged_bytes == before
    await _append_and_close(rig, fh, b"!")
    assert rig.emu.get_bytes(BUCKET, "big") == BIG + b"!"


async def test_an_append_heads_the_object_once_at_open_and_once_at_the_commit(
    rig: WriteRig,
) -> None:
    """The open's HEAD (for the whole object's CRC-64) also learns the headers the new
    version keeps, so the Initiate is not preceded by a HEAD of its own: two in all, the
    second the commit's check that the object did not change meanwhile."""
    rig.emu.put_object(BUCKET, "big", BIG, meta={"color": "blue"})
    rig.emu.requests.clear()
    _, fh = await _open(rig, os.O_WRONLY | os.O_APPEND)
    await _append_and_close(rig, fh, b"+")
    assert _count(rig.emu, "HeadObject") == 2
    assert rig.emu.get_bytes(BUCKET, "big") == BIG + b"+"
    head = rig.emu.head(BUCKET, "big")
    assert head is not None
    assert ("x-oss-meta-color", "blue") in head.meta


async def test_the_start_is_copied_wider_than_parts_are_sent(
    rig: WriteRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copies of the unread start move no byte over our link: all 8 are in flight at
    once (`copy_parallel`), not 4 at a time as parts sent are (`parallel`). (Pieces of one
    part each here: the 8 would otherwise be copied in one.)"""
    monkeypatch.setattr(unread, "upload_part_size", lambda below, settings: settings.part_size)
    writes = _staging(rig).uploader.writes
    real = writes.upload_part_copy
    in_flight, most, everyone = 0, 0, trio.Event()

    async def held(*args: Any, **kwargs: Any) -> Any:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        if in_flight == START // MiB:
            everyone.set()
        await everyone.wait()
        in_flight -= 1
        return await real(*args, **kwargs)

    monkeypatch.setattr(writes, "upload_part_copy", held)
    assert _staging(rig).uploader.settings.parallel < START // MiB
    rig.emu.put_object(BUCKET, "big", BIG)
    _, fh = await _open(rig, os.O_WRONLY | os.O_APPEND)
    await _append_and_close(rig, fh, b"!")
    assert most == START // MiB
    assert rig.emu.get_bytes(BUCKET, "big") == BIG + b"!"


@pytest.mark.parametrize(
    ("below_parts", "piece_parts"),
    [
        (128, 8),  # 1 GiB of 8 MiB parts: 16 copies of 64 MiB
        (127, 1),  # a prime number of parts past 64 MiB: one copy each
        (12, 6),  # the widest divisor within 64 MiB: 48 MiB
        (7, 7),  # 56 MiB in one piece
        (1, 1),
    ],
)
def test_the_upload_part_size_of_an_appender(below_parts: int, piece_parts: int) -> None:
    settings = UploadSettings(part_size=8 * MiB)
    assert upload_part_size(below_parts * 8 * MiB, settings) == piece_parts * 8 * MiB
