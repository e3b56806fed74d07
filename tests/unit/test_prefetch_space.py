"""Room on the cache disk (prefetch.space): read-ahead waits for it, a full disk is retried.

Set-up and synchronisation as tests/unit/prefetch_helpers.py describes.
"""

from __future__ import annotations

import errno
import os
from collections import Counter
from pathlib import Path

import pytest

from ossmount.prefetch import (
    DownloadFailed,
)
from tests.unit.fake_source import FakeSource
from tests.unit.prefetch_helpers import (
    KEY,
    PART,
    PARTS,
    put_blob,
    read_all,
    running,
    settle,
)


async def test_readahead_waits_for_room_on_the_cache_disk(
    source: FakeSource, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read-ahead never fills the cache disk; parts a reader asks for still go."""
    data, meta = put_blob(source)
    async with running(source, cache_dir) as p:
        free = {"bytes": 0}
        monkeypatch.setattr(p.store, "free_bytes", lambda: free["bytes"])
        reader = p.open(meta)
        assert await reader.read(0, PART) == data[:PART]
        await settle(p)
        assert source.part_calls(KEY) == Counter({0: 1})  # no room: no read-ahead
        free["bytes"] = 1 << 30
        assert await read_all(reader, chunk=PART) == data
        await settle(p)
        assert source.part_calls(KEY) == Counter(range(PARTS))
        await reader.aclose()


def disk_full_once(monkeypatch: pytest.MonkeyPatch, file_offset: int) -> None:
    """The next write of a part into a cache file at `file_offset` finds the disk full."""
    real_pwrite = os.pwrite
    armed = [True]

    def pwrite(fd: int, data: bytes | memoryview, offset: int) -> int:
        if armed[0] and offset == file_offset:
            armed[0] = False
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)


async def test_a_part_that_met_a_full_disk_is_tried_again_once_there_is_room(
    source: FakeSource, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parallel GETs race for freed space: ENOSPC with room now free is worth another try;
    with no room to be had the read fails with the cache dir's name in the error."""
    data, meta = put_blob(source)
    async with running(source, cache_dir) as p:
        free = {"bytes": 1 << 30}
        monkeypatch.setattr(p.store, "free_bytes", lambda: free["bytes"])
        disk_full_once(monkeypatch, 2 * PART)
        reader = p.open(meta)
        assert await reader.read(2 * PART, 10) == data[2 * PART : 2 * PART + 10]
        assert source.part_calls(KEY)[2] == 2

        free["bytes"] = 0
        disk_full_once(monkeypatch, 5 * PART)
        with pytest.raises(DownloadFailed, match=f"the cache dir {p.store.root} is full"):
            await reader.read(5 * PART, 10)
        await reader.aclose()
