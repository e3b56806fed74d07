"""A second open of an object that the first open is still staging (copying into the staging
file) waits for that copy: before, it joined the half-filled file at once, so stat showed 0
bytes, an O_APPEND write went to offset 0, and a fill that then failed left it the torn copy."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from ossmount.emulator import Emulator, FaultRule
from ossmount.fs.filesystem import FileSystem
from ossmount.tree.inodes import ROOT_INODE
from tests.fs.test_writes import BUCKET, WriteRig, write_rig

DATA = b"0123456789" * 100


@pytest.fixture
async def rw(emu: Emulator, tmp_path: os.PathLike[str]) -> AsyncIterator[WriteRig]:
    async for rig in write_rig(emu, tmp_path, rw=True):  # type: ignore[arg-type]
        yield rig


async def _second_open_while_the_first_fills(rw: WriteRig, *, cancel_first: bool) -> int:
    """Open "f" for writing twice, the second while the first one's GET is held back (and,
    with `cancel_first`, the first then cancelled mid-fill: its process interrupted); return
    the second's handle."""
    rw.emu.put_object(BUCKET, "f", DATA)
    fs, staging = rw.fs, rw.staging
    assert staging is not None
    inode = (await fs.lookup(ROOT_INODE, "f")).inode
    rw.emu.faults.add(FaultRule("latency", op="GetObject", key="f", seconds=0.5))
    handles: list[int] = []

    async def second() -> None:
        handles.append((await fs.open(inode, os.O_RDWR | os.O_APPEND)).fh)

    async with trio.open_nursery() as nursery:
        first = trio.CancelScope()
        nursery.start_soon(_open_in, fs, inode, first)
        await trio.testing.wait_all_tasks_blocked()
        assert inode in staging.by_inode, "the first open is staging the object"
        assert (await fs.getattr(inode)).size == len(DATA), "stat shows the object's size"
        nursery.start_soon(second)
        await trio.testing.wait_all_tasks_blocked()
        assert not handles, "the second open waits for the first one's fill"
        if cancel_first:
            first.cancel()
    return handles[0]


async def _open_in(fs: FileSystem, inode: int, scope: trio.CancelScope) -> None:
    with scope:
        await fs.open(inode, os.O_RDWR)


async def test_a_second_open_sees_the_whole_object_and_appends_after_it(rw: WriteRig) -> None:
    fh = await _second_open_while_the_first_fills(rw, cancel_first=False)
    assert await rw.fs.read(fh, 0, 2000) == DATA
    assert (await rw.fs.getattr((await rw.fs.lookup(ROOT_INODE, "f")).inode)).size == len(DATA)
    rw.fs.write(fh, len(DATA), b"+")
    await rw.fs.flush(fh)
    await rw.fs.release(fh)
    assert rw.emu.get_bytes(BUCKET, "f") == DATA + b"+"


async def test_an_open_waiting_for_a_fill_that_was_cancelled_stages_the_object_afresh(
    rw: WriteRig,
) -> None:
    fh = await _second_open_while_the_first_fills(rw, cancel_first=True)
    assert await rw.fs.read(fh, 0, 2000) == DATA, "not the torn copy of the cancelled fill"
    rw.fs.write(fh, len(DATA), b"+")
    await rw.fs.flush(fh)
    await rw.fs.release(fh)
    assert rw.emu.get_bytes(BUCKET, "f") == DATA + b"+"
