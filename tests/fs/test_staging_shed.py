"""A sequential writer of a file bigger than the room the cache has: the parts OSS confirmed
leave the staging file (punched out, fs/staging.py `_shed`), and the writer waits for parts
being sent when even that is not enough, instead of ENOSPC. Those bytes can then not be read
back, rewritten or sent again before the commit, and a failure says so rather than send the
zeros a punched range reads as. In-process, over a real client against the emulator, with a
cache cap of 3 MiB and parts of 1 MiB."""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from ossmount.emulator import Emulator, FaultRule
from ossmount.fs.staged import Staged
from ossmount.fs.staging import Staging
from ossmount.oss._write_types import StagingError
from ossmount.tree.inodes import ROOT_INODE
from tests.fs.test_writes import BUCKET, WriteRig, emu, write_rig

__all__ = ["emu"]

MiB = 1 << 20
CAP = 3 * MiB
DATA = bytes(range(256)) * (32 * 1024) + b"end"  # 8 MiB and 3 bytes: more than twice the cap


@pytest.fixture(params=[None, 600.0], ids=["sync", "writeback"])
async def capped(
    emu: Emulator, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[WriteRig]:
    """Without and with write-back (whose close commits a shed file itself: no journal)."""
    async for rig in write_rig(
        emu, tmp_path, rw=True, writeback_delay_s=request.param, cache_cap=CAP
    ):
        yield rig


def _staging(rig: WriteRig) -> Staging:
    assert rig.staging is not None
    return rig.staging


async def _write(rig: WriteRig, fh: int, data: bytes) -> None:
    """Write `data` in 64 KiB writes, as the kernel passes them."""
    with trio.fail_after(30):
        for offset in range(0, len(data), 64 * 1024):
            chunk = data[offset : offset + 64 * 1024]
            assert await rig.fs.write_waiting(fh, offset, chunk) == len(chunk)


async def _created_and_written(rig: WriteRig, name: str) -> tuple[int, Staged]:
    """create `name` (read-write) and write DATA into it; its handle and staged file."""
    opened, attr = await rig.fs.create(ROOT_INODE, name, os.O_RDWR | os.O_CREAT, 0o644)
    staged = _staging(rig).by_inode[attr.inode]
    await _write(rig, opened.fh, DATA)
    return opened.fh, staged


async def test_a_file_bigger_than_the_cache_is_written_and_committed_whole(
    capped: WriteRig,
) -> None:
    fs, staging = capped.fs, _staging(capped)
    fh, staged = await _created_and_written(capped, "huge")
    assert staged.shed > 0, "parts on OSS left the disk"
    assert capped.store.staged_bytes <= CAP
    assert not staged.files.journal.exists(), "no journal: a resume could only send zeros"
    with trio.fail_after(30):
        await fs.flush(fh)  # committed by the close
    await fs.release(fh)
    assert capped.emu.get_bytes(BUCKET, "huge") == DATA
    assert capped.store.staged_bytes == 0
    assert os.listdir(staging.directory) == [], "not adopted: it has holes"


async def test_shed_bytes_cannot_be_read_back_or_rewritten_before_the_commit(
    capped: WriteRig,
) -> None:
    fs = capped.fs
    fh, staged = await _created_and_written(capped, "f")
    with pytest.raises(OSError, match="left the staging disk") as read:
        await fs.read(fh, 0, 4096)
    assert read.value.errno == errno.EIO
    assert await fs.read(fh, len(DATA) - 3, 10) == b"end", "what is still staged"
    with pytest.raises(OSError, match="left the staging disk") as write:
        await fs.write_waiting(fh, 10, b"patch")
    assert write.value.errno == errno.EIO
    assert staged.broken is not None
    with pytest.raises(OSError, match="left the staging disk"):
        await fs.flush(fh)
    await fs.release(fh)
    assert capped.emu.head(BUCKET, "f") is None, "a file missing a write is never committed"


async def test_a_lost_upload_fails_the_commit_instead_of_sending_zeros(
    capped: WriteRig,
) -> None:
    fs = capped.fs
    fh, _ = await _created_and_written(capped, "g")
    capped.emu.faults.add(FaultRule("error", op="CompleteMultipartUpload", times=1, status=404,
                                    code="NoSuchUpload"))  # fmt: skip
    with pytest.raises(StagingError, match="removed from the staging disk"):
        await fs.flush(fh)
    await fs.release(fh)
    assert capped.emu.head(BUCKET, "g") is None


async def test_a_shed_file_renamed_while_open_is_committed_and_moved_whole(
    capped: WriteRig,
) -> None:
    fs = capped.fs
    fh, _ = await _created_and_written(capped, "tmp")
    with trio.fail_after(30):
        await fs.rename(ROOT_INODE, "tmp", ROOT_INODE, "final", 0)
    await fs.flush(fh)
    await fs.release(fh)
    assert capped.emu.get_bytes(BUCKET, "final") == DATA
    assert capped.emu.head(BUCKET, "tmp") is None
    assert capped.store.staged_bytes == 0


async def test_a_shed_file_unlinked_while_open_leaves_nothing(capped: WriteRig) -> None:
    fs, staging = capped.fs, _staging(capped)
    fh, _ = await _created_and_written(capped, "gone")
    await fs.unlink(ROOT_INODE, "gone")
    await fs.flush(fh)
    with trio.fail_after(30):
        await fs.release(fh)
        while "AbortMultipartUpload" not in [r.op for r in capped.emu.requests]:
            await trio.sleep(0.01)
    assert capped.emu.head(BUCKET, "gone") is None
    assert capped.store.staged_bytes == 0
    assert os.listdir(staging.directory) == []


async def test_a_shed_file_appended_to_after_an_fsync_copies_its_start_server_side(
    capped: WriteRig,
) -> None:
    """fsync commits it; bytes written after go in a new upload, which copies the parts
    that left the disk from the object fsync committed (UploadPartCopy), with the CRC-64
    OSS confirmed when they were first sent: Complete still checks the whole object."""
    fs = capped.fs
    fh, _ = await _created_and_written(capped, "log")
    with trio.fail_after(30):
        await fs.fsync(fh)
    assert capped.emu.get_bytes(BUCKET, "log") == DATA
    capped.emu.requests.clear()
    assert await fs.write_waiting(fh, len(DATA), b"more") == 4
    with trio.fail_after(30):
        await fs.flush(fh)
    await fs.release(fh)
    assert capped.emu.get_bytes(BUCKET, "log") == DATA + b"more"
    assert "UploadPartCopy" in [r.op for r in capped.emu.requests]
    assert capped.store.staged_bytes == 0


async def test_a_writer_with_nothing_of_its_own_on_oss_takes_room_from_another_writer(
    capped: WriteRig,
) -> None:
    """Two files being written whose bytes together pass the cap: the one with no part of
    its own on OSS yet sheds the other's confirmed parts (`_shed_ones`) instead of failing
    with ENOSPC, and both are committed whole. The other's writer goes on in order; only
    its reads of what left the disk fail, as after shedding its own."""
    fs = capped.fs
    first = DATA[: 5 * MiB // 2]
    one, attr = await fs.create(ROOT_INODE, "first", os.O_RDWR | os.O_CREAT, 0o644)
    await _write(capped, one.fh, first)
    staged = _staging(capped).by_inode[attr.inode]
    assert staged.session is not None
    with trio.fail_after(30):
        while (sending := staged.session.in_flight()) is not None:
            await sending.wait()
    assert staged.shed == 0, "it fit: nothing of it left the disk yet"
    second = DATA[: 3 * MiB // 2][::-1]
    two, _ = await fs.create(ROOT_INODE, "second", os.O_RDWR | os.O_CREAT, 0o644)
    await _write(capped, two.fh, second)
    assert staged.shed == 2 * MiB, "the confirmed parts of the first made room"
    assert capped.store.staged_bytes <= CAP
    rest = b"more, in order"
    assert await fs.write_waiting(one.fh, len(first), rest) == len(rest)
    for fh in (one.fh, two.fh):
        with trio.fail_after(30):
            await fs.fsync(fh)  # under write-back too (its close only seals)
            await fs.flush(fh)
        await fs.release(fh)
    assert capped.emu.get_bytes(BUCKET, "first") == first + rest
    assert capped.emu.get_bytes(BUCKET, "second") == second
