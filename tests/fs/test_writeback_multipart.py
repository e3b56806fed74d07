"""-o writeback for a file whose parts went while it was written (fs/writeback.py): its close
seals the upload's journal (upload id, parts sent, size) and returns; the rest is sent and
the upload completed in the background. In-process, over a real client against the emulator,
with parts of 1 MiB and uploads held back until a hurry, fsync or drain starts them."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
import trio

from ossmount.emulator import Emulator, FaultRule
from ossmount.fs.filesystem import FileSystem
from ossmount.fs.staged import Staged, staged_state
from ossmount.fs.staging import Staging
from ossmount.tree.inodes import ROOT_INODE
from ossmount.write.journal import load
from tests.fs.test_writes import BUCKET, WriteRig, emu, write_rig

__all__ = ["emu"]

HELD_S = 600.0
MiB = 1 << 20
BIG = bytes(range(256)) * (14 * 1024) + b"tail"  # 3.5 MiB and 4 bytes: four parts


@pytest.fixture
async def wb(emu: Emulator, tmp_path: Path) -> AsyncIterator[WriteRig]:
    async for rig in write_rig(emu, tmp_path, rw=True, writeback_delay_s=HELD_S):
        yield rig


def _ops(emu: Emulator) -> list[str]:
    return [r.op for r in emu.requests if r.op not in ("ListObjectsV2", "HeadObject")]


def _staging(rig: WriteRig) -> Staging:
    assert rig.staging is not None
    return rig.staging


async def _write_sequentially(rig: WriteRig, name: str, data: bytes) -> tuple[int, int]:
    """create and write `data` in 64 KiB writes, until the server has its full parts (sent
    while it was written); (inode, fh), still open."""
    opened, attr = await rig.fs.create(ROOT_INODE, name, os.O_WRONLY | os.O_CREAT, 0o644)
    for offset in range(0, len(data), 64 * 1024):
        rig.fs.write(opened.fh, offset, data[offset : offset + 64 * 1024])
    with trio.fail_after(10):
        while _ops(rig.emu).count("UploadPart") < len(data) // MiB:
            await trio.sleep(0.01)
    return attr.inode, opened.fh


async def _close(fs: FileSystem, fh: int) -> None:
    await fs.flush(fh)
    await fs.release(fh)


async def test_the_close_of_a_file_whose_parts_went_early_seals_them_and_returns(
    wb: WriteRig,
) -> None:
    fs, staging = wb.fs, _staging(wb)
    inode, fh = await _write_sequentially(wb, "big", BIG)
    staged = staging.by_inode[inode]
    await _close(fs, fh)
    assert "CompleteMultipartUpload" not in _ops(wb.emu), "the close did not wait for it"
    record = load(staged.files.journal)
    assert record is not None
    assert record.sealed, "a crash resumes it"
    assert not record.boot_id, "fsynced: a power loss does not lose it"
    assert record.size == len(BIG)
    with trio.fail_after(10):  # a part confirmed after the seal is journaled, still sealed
        while len(record.parts) < 3:
            await trio.sleep(0.01)
            record = load(staged.files.journal)
            assert record is not None
            assert record.sealed
    assert record.upload_id, "the upload the parts went to"
    assert sorted(p.number for p in record.parts) == [1, 2, 3]
    shown = await fs.getattr(inode)
    assert shown.size == len(BIG)
    assert staged_state(staged, staging.held(staged)) == "queued", (
        "its upload waits out --writeback-delay"
    )
    with trio.fail_after(10):
        await staging.drain()
        await staging.owed.store("big")  # the close's mtime, which the Initiate lacked
    ops = _ops(wb.emu)
    assert ops.count("UploadPart") == 4, "the three early parts are not sent again"
    assert ops.count("CompleteMultipartUpload") == 1
    assert wb.emu.get_bytes(BUCKET, "big") == BIG
    head = wb.emu.head(BUCKET, "big")
    assert head is not None
    assert int(Decimal(dict(head.meta)["x-oss-meta-mtime"]) * 10**9) == shown.mtime_ns
    assert (await fs.getattr(inode)).mtime_ns == shown.mtime_ns, "stat's mtime stays"


async def test_a_write_to_such_a_file_waits_for_its_upload_and_is_uploaded_after(
    wb: WriteRig,
) -> None:
    fs = wb.fs
    inode, fh = await _write_sequentially(wb, "log", BIG)
    await _close(fs, fh)
    opened = await fs.open(inode, os.O_WRONLY | os.O_APPEND)
    with trio.fail_after(10):  # not HELD_S: the write hurries the upload it waits for
        await fs.before_write(opened.fh)
    assert _ops(wb.emu).count("CompleteMultipartUpload") == 1
    assert wb.emu.get_bytes(BUCKET, "log") == BIG
    fs.write(opened.fh, len(BIG), b"appended")
    await _close(fs, opened.fh)
    with trio.fail_after(10):
        await _staging(wb).drain()
    assert wb.emu.get_bytes(BUCKET, "log") == BIG + b"appended"


async def test_an_unlinked_one_is_never_completed_and_its_upload_is_aborted(
    wb: WriteRig,
) -> None:
    fs, staging = wb.fs, _staging(wb)
    _, fh = await _write_sequentially(wb, "scratch", BIG)
    await _close(fs, fh)
    await fs.unlink(ROOT_INODE, "scratch")
    with trio.fail_after(10):
        await staging.drain()
        while "AbortMultipartUpload" not in _ops(wb.emu):
            await trio.sleep(0.01)
    assert "CompleteMultipartUpload" not in _ops(wb.emu)
    assert wb.emu.head(BUCKET, "scratch") is None
    assert sorted(os.listdir(staging.directory)) == [], "nothing left staged"


async def test_a_failed_seal_fails_the_close_and_leaves_no_sealed_record(
    wb: WriteRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal could not be written: the close says EIO, nothing is pending, and no
    later save of the upload's journal claims a seal the close never made."""
    fs, staging = wb.fs, _staging(wb)
    inode, fh = await _write_sequentially(wb, "f", BIG)
    staged = staging.by_inode[inode]

    def broken(*_: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr("ossmount.fs.writeback._seal", broken)
    with pytest.raises(OSError, match="Input/output error"):
        await fs.flush(fh)
    assert staged.pending == 0
    assert staged.landed.is_set()
    assert staged.session is not None
    assert not staged.session.record.sealed
    monkeypatch.undo()
    with trio.fail_after(10):
        await _close(fs, fh)  # sealed this time
        await staging.drain()
    assert wb.emu.get_bytes(BUCKET, "f") == BIG


async def _failed_upload(rig: WriteRig, name: str) -> Staged:
    """A file written so that its parts went early, closed, and its upload failed for good
    (CompleteMultipartUpload refused until the test clears the faults): unsent."""
    inode, fh = await _write_sequentially(rig, name, BIG)
    refused = FaultRule("error", op="CompleteMultipartUpload", times=None, status=503,
                        code="ServiceUnavailable")  # fmt: skip
    rig.emu.faults.add(refused)
    staging = _staging(rig)
    staged = staging.by_inode[inode]
    await _close(rig.fs, fh)
    with trio.fail_after(30):
        await staging.drain()  # the upload fails (retries spent): kept, unsent
    assert staged.unsent
    assert staging.holds(staged)
    return staged


async def test_a_failed_upload_is_resumed_by_its_retry_without_sending_its_parts_again(
    wb: WriteRig,
) -> None:
    """The retry resumes the multipart upload the failed one kept (the server still has
    its parts), as a crash's recovery does; before, each try sent every part again."""
    staging = _staging(wb)
    staged = await _failed_upload(wb, "retried")
    wb.emu.faults.clear()
    with trio.fail_after(30):
        while staging.holds(staged):  # the background retry lands it, then it goes
            await trio.sleep(0.05)
    assert wb.emu.get_bytes(BUCKET, "retried") == BIG
    ops = _ops(wb.emu)
    assert ops.count("InitiateMultipartUpload") == 1
    assert ops.count("UploadPart") == 4, "each part sent once"
    assert "AbortMultipartUpload" not in ops


async def test_an_unsent_one_unlinked_aborts_the_upload_it_kept(wb: WriteRig) -> None:
    staging = _staging(wb)
    await _failed_upload(wb, "gone")
    assert "AbortMultipartUpload" not in _ops(wb.emu), "kept for the retry"
    await wb.fs.unlink(ROOT_INODE, "gone")
    with trio.fail_after(10):
        while "AbortMultipartUpload" not in _ops(wb.emu):
            await trio.sleep(0.01)
    wb.emu.faults.clear()
    assert wb.emu.head(BUCKET, "gone") is None
    assert sorted(os.listdir(staging.directory)) == []


async def test_a_resumed_upload_keeps_the_headers_of_the_version_it_replaces(
    wb: WriteRig,
) -> None:
    """The retry resumes an upload initiated by the failed try, with the headers kept from
    the replaced version (user metadata, as ossfs keeps them); the close's mtime then goes
    by a copy, which must send them again. The retry's session never sent them: it HEADs
    them (it claimed the object had none, and the copy dropped them)."""
    fs, staging = wb.fs, _staging(wb)
    wb.emu.put_object(BUCKET, "kept", BIG, meta={"owner-tool": "keep me"})
    attr = await fs.lookup(ROOT_INODE, "kept")
    opened = await fs.open(attr.inode, os.O_RDWR)
    await fs.write_waiting(opened.fh, 10, b"PATCHED")  # its start is fetched: staged whole
    staged = staging.by_inode[attr.inode]
    wb.emu.faults.add(FaultRule("error", op="CompleteMultipartUpload", times=None,
                                status=503, code="ServiceUnavailable"))  # fmt: skip
    await _close(fs, opened.fh)
    with trio.fail_after(30):
        await staging.drain()
    assert staged.unsent
    wb.emu.faults.clear()
    with trio.fail_after(30):
        while staging.holds(staged):
            await trio.sleep(0.05)
        await staging.owed.store("kept")
    assert wb.emu.get_bytes(BUCKET, "kept") == BIG[:10] + b"PATCHED" + BIG[17:]
    head = wb.emu.head(BUCKET, "kept")
    assert head is not None
    meta = dict(head.meta)
    assert meta["x-oss-meta-owner-tool"] == "keep me"
    assert "x-oss-meta-mtime" in meta, "the close's mtime, stored by the copy"


async def test_a_close_of_an_unsent_one_seals_the_upload_it_kept(wb: WriteRig) -> None:
    """Closed again (opened for writing, nothing written) while its upload waits for a
    retry: the seal names the upload the failed try kept, so a crash now would not make the
    next mount send every part again."""
    staging = _staging(wb)
    staged = await _failed_upload(wb, "again")
    assert staged.resumable is not None
    kept = staged.resumable.upload_id
    opened = await wb.fs.open(staged.inode, os.O_WRONLY)
    await _close(wb.fs, opened.fh)
    record = load(staged.files.journal)
    assert record is not None
    assert record.sealed
    assert record.upload_id == kept
    assert record.size == len(BIG)
    wb.emu.faults.clear()
    with trio.fail_after(30):
        await staging.drain()
        while staging.holds(staged):
            await trio.sleep(0.05)
    assert wb.emu.get_bytes(BUCKET, "again") == BIG
    assert _ops(wb.emu).count("InitiateMultipartUpload") == 1


async def test_a_part_confirmed_after_the_unlink_does_not_bring_the_seal_back(
    wb: WriteRig,
) -> None:
    """Found by the crash walk (seed 396, write-back). The unlink removed the sealed
    journal; a part still in flight was then confirmed, and the session's saver wrote the
    sealed record again: after a crash, the next mount uploaded the unlinked file."""
    fs, staging = wb.fs, _staging(wb)
    slow = FaultRule("stall", op="UploadPart", key="ghost", nth=3, seconds=1.0)
    wb.emu.faults.add(slow)
    opened, attr = await fs.create(ROOT_INODE, "ghost", os.O_WRONLY | os.O_CREAT, 0o644)
    for offset in range(0, len(BIG), 64 * 1024):
        fs.write(opened.fh, offset, BIG[offset : offset + 64 * 1024])
    with trio.fail_after(10):
        while slow.fired < 1:  # the third part is being sent, and held
            await trio.sleep(0.01)
    staged = staging.by_inode[attr.inode]
    session = staged.session
    assert session is not None
    await _close(fs, opened.fh)  # sealed, with the parts confirmed so far
    await fs.unlink(ROOT_INODE, "ghost")
    assert not staged.files.journal.exists()
    with trio.fail_after(10):
        await session.drain()  # the third part is confirmed, and its saver has run
    assert not staged.files.journal.exists(), "no journal: a crash must not upload it"
    with trio.fail_after(10):
        await staging.drain()
    assert wb.emu.head(BUCKET, "ghost") is None
