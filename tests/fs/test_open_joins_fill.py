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
from ossmount.tree.inodes import ROOT_INODE
from tests.fs.test_writes import BUCKET, WriteRig, _rig

DATA = b"0123456789" * 100


@pytest.fixture
async def rw(emu: Emulator, tmp_path: os.PathLike[str]) -> AsyncIterator[WriteRig]:
    async for rig in _rig(emu, tmp_path, rw=True):  # type: ignore[arg-type]
        yield rig


async def _second_open_while_the_first_fills(rw: WriteRig, *, fill_fails: bool) -> int:
    """Open "f" for writing twice, the second while the first one's GET is held back; return
    the second's handle (the first's error, if any, is swallowed)."""
    rw.emu.put_object(BUCKET, "f", DATA)
    fs, staging = rw.fs, rw.staging
    assert staging is not None
    inode = (await fs.lookup(ROOT_INODE, "f")).inode
    rw.emu.faults.add(FaultRule("latency", op="GetObject", key="f", seconds=0.3))
    if fill_fails:
        rw.emu.faults.add(
            FaultRule("error", op="GetObject", key="f", status=403, code="AccessDenied")
        )
    first_failed: list[BaseException] = []

    async def first() -> None:
        try:
            await fs.open(inode, os.O_RDWR)
        except Exception as exc:
            first_failed.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(first)
        await trio.testing.wait_all_tasks_blocked()
        assert inode in staging.by_inode, "the first open is staging the object"
        assert (await fs.getattr(inode)).size == len(DATA), "stat shows the object's size"
        second = await fs.open(inode, os.O_RDWR | os.O_APPEND)
    assert bool(first_failed) == fill_fails, first_failed
    return second.fh


async def test_a_second_open_sees_the_whole_object_and_appends_after_it(rw: WriteRig) -> None:
    fh = await _second_open_while_the_first_fills(rw, fill_fails=False)
    assert await rw.fs.read(fh, 0, 2000) == DATA
    assert (await rw.fs.getattr((await rw.fs.lookup(ROOT_INODE, "f")).inode)).size == len(DATA)
    rw.fs.write(fh, len(DATA), b"+")
    await rw.fs.flush(fh)
    await rw.fs.release(fh)
    assert rw.emu.get_bytes(BUCKET, "f") == DATA + b"+"


async def test_an_open_waiting_for_a_fill_that_failed_stages_the_object_afresh(
    rw: WriteRig,
) -> None:
    fh = await _second_open_while_the_first_fills(rw, fill_fails=True)
    assert await rw.fs.read(fh, 0, 2000) == DATA, "not the torn copy of the failed fill"
    rw.fs.write(fh, len(DATA), b"+")
    await rw.fs.flush(fh)
    await rw.fs.release(fh)
    assert rw.emu.get_bytes(BUCKET, "f") == DATA + b"+"
