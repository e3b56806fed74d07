"""Blank staging files made ahead (fs/blanks.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import trio
import trio.testing

from ossmount.fs.blanks import BLANK_SUFFIX, BlankFiles


def _files(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


async def test_creates_take_ready_blanks_and_the_thread_makes_more(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        blanks = BlankFiles(tmp_path, nursery, keep=3)
        first, fd = blanks.take()  # none ready yet: made here
        assert first.suffix == ".data"
        os.write(fd, b"x")
        os.close(fd)
        await trio.testing.wait_all_tasks_blocked()
        while len(_files(tmp_path)) < 4:  # the refill runs in a worker thread
            await trio.sleep(0.01)
        ready = _files(tmp_path) - {first.name}
        assert all(name.endswith(".blank") for name in ready), ready
        taken = [blanks.take() for _ in range(3)]
        renamed = {name.replace(".blank", ".data") for name in ready}
        assert {data.name for data, _ in taken} == renamed, "the ready ones, no new create"
        for data, fd in taken:
            st = os.fstat(fd)
            assert (st.st_size, stat.S_IMODE(st.st_mode)) == (0, 0o600)
            assert data.suffix == ".data"
            os.close(fd)
        blanks.close()
    assert first.read_bytes() == b"x"


async def test_close_removes_the_blanks_not_taken_and_makes_no_more(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        blanks = BlankFiles(tmp_path, nursery, keep=4)
        data, fd = blanks.take()
        os.close(fd)
        blanks.close()  # the refill may be running: what it makes is removed too
    assert _files(tmp_path) == {data.name}


async def test_a_directory_that_cannot_take_files_fails_the_create_as_before(
    tmp_path: Path,
) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    async with trio.open_nursery() as nursery:
        blanks = BlankFiles(gone, nursery, keep=2)
        gone.rmdir()
        with pytest.raises(FileNotFoundError):
            blanks.take()
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(FileNotFoundError):
            blanks.take()
        blanks.close()


def test_blanks_left_by_a_crash_are_removed_by_the_next_mounts_recovery(tmp_path: Path) -> None:
    from ossmount.fs.recovery import _drop_leftovers

    (tmp_path / f"a{BLANK_SUFFIX}").write_bytes(b"")
    (tmp_path / "b.data").write_bytes(b"staged")
    (tmp_path / "b.data.journal").write_bytes(b"")  # a journal: its data file stays
    _drop_leftovers(tmp_path)
    left = _files(tmp_path)
    assert f"a{BLANK_SUFFIX}" not in left
    assert "b.data" in left
