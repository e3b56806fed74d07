"""A file committed by its close keeps its room in the cache until the kernel's release
comes, a moment later. A writer waiting for room in between waits for that release
(Staging._room_coming) instead of failing with ENOSPC, for a bounded time: a descriptor
kept open (a dup'd one, an fsync'd file still being read) gives ENOSPC once
`release_grace_s` has passed. In-process, over a real client against the emulator, sync
mode, a cache cap of 3 MiB and files of 2 MiB (one PutObject each, so no part of them goes
early and no file makes room by shedding)."""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing

from ossmount.emulator import Emulator
from ossmount.fs.staging import Staging
from tests.fs.test_writeback_room import _create, _write
from tests.fs.test_writes import BUCKET, WriteRig, emu, write_rig

__all__ = ["emu"]

MiB = 1 << 20
A = os.urandom(2 * MiB)
B = os.urandom(2 * MiB)


@pytest.fixture
async def tight(emu: Emulator, tmp_path: Path) -> AsyncIterator[WriteRig]:
    async for rig in write_rig(emu, tmp_path, rw=True, part_mib=4, cache_cap=3 * MiB):
        yield rig


def _staging(rig: WriteRig) -> Staging:
    assert rig.staging is not None
    return rig.staging


async def _committed_open(rig: WriteRig) -> int:
    """`a` written and flushed (committed), its handle not released yet."""
    fh = await _create(rig, "a")
    await _write(rig, fh, A)
    await rig.fs.flush(fh)
    assert rig.emu.get_bytes(BUCKET, "a") == A
    return fh


async def test_a_writer_waits_for_the_release_of_a_file_its_close_just_committed(
    tight: WriteRig,
) -> None:
    rig = tight
    fh_a = await _committed_open(rig)
    fh_b = await _create(rig, "b")
    wrote = trio.Event()

    async def write_b() -> None:
        await _write(rig, fh_b, B)
        wrote.set()

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write_b)
            await trio.testing.wait_all_tasks_blocked()
            assert not wrote.is_set(), "b waits: a still holds its room"
            await rig.fs.release(fh_a)  # the kernel's release, after the close's flush
    await rig.fs.flush(fh_b)
    await rig.fs.release(fh_b)
    assert rig.emu.get_bytes(BUCKET, "b") == B


async def test_a_file_kept_open_after_its_commit_gives_enospc_after_the_grace(
    tight: WriteRig,
) -> None:
    rig = tight
    _staging(rig).release_grace_s = 0.2
    fh_a = await _committed_open(rig)
    committed_at = _staging(rig).by_inode[_staging(rig).by_path["a"]].committed_at
    assert committed_at is not None
    fh_b = await _create(rig, "b")
    with trio.fail_after(30), pytest.raises(OSError, match="cache cap") as caught:
        await _write(rig, fh_b, B)
    assert caught.value.errno == errno.ENOSPC
    assert trio.current_time() >= committed_at + 0.2, "it waited for the release first"
    await rig.fs.release(fh_b)
    await rig.fs.release(fh_a)
    assert rig.emu.head(BUCKET, "b") is None, "b's close was never reached: nothing stored"
    assert rig.emu.get_bytes(BUCKET, "a") == A
