"""Under `-o writeback`, files closed but not uploaded yet hold their room in the cache: a
write that finds none waits while uploads are pending (Staging._room_coming), each giving
its file's room back as it lands, instead of failing with ENOSPC. Without anything pending,
or once the uploads failed, ENOSPC comes as before. In-process, over a real client against
the emulator, with a cache cap of 3 MiB and files of 2 MiB (one PutObject each: no part of
them goes early, so no file makes room of its own by shedding)."""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from ossmount.emulator import Emulator, FaultRule
from ossmount.fs.staging import Staging
from ossmount.tree.inodes import ROOT_INODE
from tests.fs.test_writes import BUCKET, WriteRig, emu, write_rig

__all__ = ["emu"]

MiB = 1 << 20
CAP = 3 * MiB
A = os.urandom(2 * MiB)
B = os.urandom(2 * MiB)


@pytest.fixture
async def tight(emu: Emulator, tmp_path: Path) -> AsyncIterator[WriteRig]:
    """Write-back whose uploads are held back 600 s after a close (so one is pending for
    as long as the test needs), parts of 4 MiB, a 3 MiB cache cap."""
    async for rig in write_rig(
        emu, tmp_path, rw=True, part_mib=4, writeback_delay_s=600.0, cache_cap=CAP
    ):
        yield rig


def _staging(rig: WriteRig) -> Staging:
    assert rig.staging is not None
    return rig.staging


async def _create(rig: WriteRig, name: str) -> int:
    opened, _ = await rig.fs.create(ROOT_INODE, name, os.O_WRONLY | os.O_CREAT, 0o644)
    return opened.fh


async def _write(rig: WriteRig, fh: int, data: bytes) -> None:
    """`data` in 64 KiB writes, as the kernel passes them."""
    for offset in range(0, len(data), 64 * 1024):
        chunk = data[offset : offset + 64 * 1024]
        assert await rig.fs.write_waiting(fh, offset, chunk) == len(chunk)


async def _closed_pending(rig: WriteRig, name: str, data: bytes) -> None:
    """`name` written and closed: sealed, its upload held back."""
    fh = await _create(rig, name)
    await _write(rig, fh, data)
    await rig.fs.flush(fh)
    await rig.fs.release(fh)
    assert rig.emu.head(BUCKET, name) is None, "held back: not uploaded yet"


async def test_a_write_with_no_room_waits_for_the_pending_uploads(tight: WriteRig) -> None:
    rig = tight
    await _closed_pending(rig, "a", A)
    fh = await _create(rig, "b")
    with trio.fail_after(30):
        await _write(rig, fh, B)  # past the cap with a's bytes: waits for a to land
    assert rig.emu.get_bytes(BUCKET, "a") == A, "the wait started a's upload at once"
    assert rig.store.staged_bytes <= CAP
    await rig.fs.flush(fh)
    await rig.fs.release(fh)
    with trio.fail_after(30):
        await _staging(rig).drain()
    assert rig.emu.get_bytes(BUCKET, "b") == B


async def test_a_truncate_that_grows_waits_too(tight: WriteRig) -> None:
    rig = tight
    await _closed_pending(rig, "a", A)
    fh = await _create(rig, "b")
    with trio.fail_after(30):
        attr = await rig.fs.setattr(_staging(rig).by_path["b"], size=2 * MiB, mtime_ns=None,
                                    fh=fh)  # fmt: skip
    assert attr.size == 2 * MiB
    assert rig.emu.get_bytes(BUCKET, "a") == A
    await rig.fs.release(fh)


async def test_a_truncate_that_grows_a_file_no_handle_has_open_waits_too(
    tight: WriteRig,
) -> None:
    """`truncate -s` of an object nobody has open stages it, grows it (waiting for room as
    a write does) and commits it at once."""
    rig = tight
    rig.emu.put_object(BUCKET, "c", b"c")
    await _closed_pending(rig, "a", A)
    inode = (await rig.fs.lookup(ROOT_INODE, "c")).inode
    with trio.fail_after(30):
        attr = await rig.fs.setattr(inode, size=2 * MiB, mtime_ns=None, fh=None)
    assert attr.size == 2 * MiB
    assert rig.emu.get_bytes(BUCKET, "a") == A, "the wait started a's upload at once"
    assert rig.emu.get_bytes(BUCKET, "c") == b"c" + bytes(2 * MiB - 1)


async def test_with_no_upload_pending_no_room_is_enospc_at_once(tight: WriteRig) -> None:
    rig = tight
    fh = await _create(rig, "b")
    with trio.fail_after(5), pytest.raises(OSError, match="cache cap") as caught:
        await _write(rig, fh, B + B)
    assert caught.value.errno == errno.ENOSPC
    await rig.fs.release(fh)


async def test_a_write_waiting_for_room_gets_enospc_once_the_uploads_failed(
    tight: WriteRig,
) -> None:
    """The pending upload fails for good: its file stays staged (unsent, still holding its
    room, retried in the background), and the waiting write is answered ENOSPC, not left
    waiting for the retries."""
    rig = tight
    rig.emu.faults.add(FaultRule("error", op="PutObject", key="a", status=503,
                                 code="ServiceUnavailable", times=None))  # fmt: skip
    await _closed_pending(rig, "a", A)
    fh = await _create(rig, "b")
    with trio.fail_after(60), pytest.raises(OSError, match="cache cap") as caught:
        await _write(rig, fh, B)
    assert caught.value.errno == errno.ENOSPC
    assert _staging(rig).by_path.get("a") is not None, "a stays staged, unsent"
    assert rig.emu.head(BUCKET, "a") is None
    await rig.fs.release(fh)


@pytest.fixture
async def small_parts(emu: Emulator, tmp_path: Path) -> AsyncIterator[WriteRig]:
    """`tight` with parts of 1 MiB: an object of 2 MiB + 5 opened to append keeps its first
    2 MiB unread (whole parts), which fit under the cap once nothing else is staged."""
    async for rig in write_rig(
        emu, tmp_path, rw=True, part_mib=1, writeback_delay_s=600.0, cache_cap=CAP
    ):
        yield rig


async def test_fetching_the_unread_start_of_an_appended_file_waits_for_room_too(
    small_parts: WriteRig,
) -> None:
    """A write into the start of a file opened to append fetches that start first; with the
    room held by a pending upload, the fetch waits for it as a write does (a stress run got
    ENOSPC at once: fs/unread.py counted the start without Staging's waiting)."""
    rig = small_parts
    old = os.urandom(2 * MiB + 5)
    rig.emu.put_object(BUCKET, "old", old)
    await _closed_pending(rig, "a", A)
    inode = (await rig.fs.lookup(ROOT_INODE, "old")).inode
    fh = (await rig.fs.open(inode, os.O_WRONLY | os.O_APPEND)).fh
    staging = _staging(rig)
    assert staging.by_inode[staging.by_path["old"]].unread_end == 2 * MiB
    with trio.fail_after(30):
        assert await rig.fs.write_waiting(fh, 1, b"PATCH") == 5
    assert rig.emu.get_bytes(BUCKET, "a") == A, "the wait started a's upload at once"
    await rig.fs.flush(fh)
    await rig.fs.release(fh)
    with trio.fail_after(30):
        await _staging(rig).drain()
    assert rig.emu.get_bytes(BUCKET, "old") == old[:1] + b"PATCH" + old[6:]
