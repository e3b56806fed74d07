"""Blocks reserved ahead of a sequential writer (fs/staging.py `_reserve`, cache/holes.py
`reserve`): a file that grows past RESERVE_FROM gets them, one that stays under never costs
the syscall, and a commit gives back what was not used. Watched through `st_blocks` of the
staged file, in-process over a real client against the emulator."""

from __future__ import annotations

import os

from ossmount.fs.staging import RESERVE_FROM
from ossmount.tree.inodes import ROOT_INODE
from tests.fs.test_writes import BUCKET, WriteRig, emu, rw

__all__ = ["emu", "rw"]  # the fixtures, imported for pytest

MiB = 1 << 20


def _allocated(rig: WriteRig, inode: int) -> tuple[int, int]:
    """(bytes allocated on disk, size) of the staged file of `inode`."""
    assert rig.staging is not None
    st = os.stat(rig.staging.by_inode[inode].files.data)
    return st.st_blocks * 512, st.st_size


async def test_a_growing_file_gets_blocks_ahead_and_its_commit_gives_back_the_rest(
    rw: WriteRig,
) -> None:
    fs = rw.fs
    opened, attr = await fs.create(ROOT_INODE, "big", os.O_WRONLY | os.O_CREAT, 0o644)
    piece = os.urandom(MiB)
    for i in range(3):
        assert fs.write(opened.fh, i * MiB, piece) == MiB
    allocated, size = _allocated(rw, attr.inode)
    assert size == 3 * MiB, "the reservation keeps the file's size"
    assert allocated >= 4 * MiB, f"blocks reserved past the written end ({allocated})"
    await fs.flush(opened.fh)
    allocated, size = _allocated(rw, attr.inode)
    assert size == 3 * MiB
    assert allocated < 4 * MiB, f"the commit gave back the unused blocks ({allocated})"
    await fs.release(opened.fh)
    assert rw.emu.get_bytes(BUCKET, "big") == piece * 3


async def test_a_file_under_the_threshold_is_not_reserved_for(rw: WriteRig) -> None:
    fs = rw.fs
    opened, attr = await fs.create(ROOT_INODE, "small", os.O_WRONLY | os.O_CREAT, 0o644)
    size = RESERVE_FROM // 2
    assert fs.write(opened.fh, 0, b"s" * size) == size
    allocated, _ = _allocated(rw, attr.inode)
    assert allocated < RESERVE_FROM, f"no reservation under RESERVE_FROM ({allocated})"
    await fs.flush(opened.fh)
    await fs.release(opened.fh)


async def test_a_writer_that_seeks_back_is_not_reserved_for(rw: WriteRig) -> None:
    """Only an append at the sequential end reserves: a random writer gets no blocks ahead."""
    fs = rw.fs
    opened, attr = await fs.create(ROOT_INODE, "rand", os.O_WRONLY | os.O_CREAT, 0o644)
    assert fs.write(opened.fh, 3 * MiB, b"r" * MiB) == MiB  # a hole first: not sequential
    allocated, size = _allocated(rw, attr.inode)
    assert size == 4 * MiB
    assert allocated <= MiB, f"only the written block is allocated ({allocated})"
    await fs.flush(opened.fh)
    await fs.release(opened.fh)
