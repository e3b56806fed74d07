"""Write-back errors of the cache disk (ossmount.cache.writeback): after one, no part this
process hashed on receipt is served again without being re-hashed, through the fake source."""

from __future__ import annotations

import errno
import logging
import os
from collections import Counter
from pathlib import Path

import pytest
import trio
import trio.testing

from ossmount.cache.checkpoint import EntryState
from ossmount.cache.writeback import check_once, syncfs, watch_writeback
from tests.unit.fake_source import FakeSource
from tests.unit.prefetch_helpers import (
    KEY,
    PART,
    open_store,
    put_blob,
    read_all,
    running,
    settle,
    state_of,
)
from tests.unit.test_recheck_download import damage

__all__ = ["PART"]  # the `source` fixture reads the module's PART


def _eio(fd: int) -> None:
    raise OSError(errno.EIO, "Input/output error")


def test_syncfs_of_a_real_filesystem_succeeds(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        syncfs(fd)
    finally:
        os.close(fd)


async def test_a_write_back_error_makes_every_served_part_be_rehashed(
    source: FakeSource, cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data, meta = put_blob(source)
    async with running(source, cache_dir) as p:
        reader = p.open(meta)
        assert await read_all(reader) == data
        await settle(p)
        assert state_of(p, reader) is EntryState.VERIFIED
        # What a failed write-back can leave: the file no longer holds what was hashed.
        damage(cache_dir, 3 * PART + 17)
        assert (await reader.read(3 * PART, PART)) != data[3 * PART : 4 * PART]  # the threat
        source.calls.clear()
        with caplog.at_level(logging.WARNING):
            assert not await check_once(p.store, 0, cache_dir, _eio)
            assert await read_all(reader) == data
        assert source.part_calls(KEY) == Counter({3: 1})  # only the damaged part again
        await settle(p)
        assert state_of(p, reader) is EntryState.VERIFIED
        await reader.aclose()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert f"cache dir {cache_dir}" in errors[0]
    assert "re-hashed" in errors[0]
    assert any("damaged at rest" in r.getMessage() for r in caplog.records)


async def test_the_watch_asks_every_interval_and_stops_where_syncfs_is_missing(
    cache_dir: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store(cache_dir)
    asked: list[float] = []

    def sync(fd: int) -> None:
        asked.append(autojump_clock.current_time())
        if len(asked) == 3:
            raise OSError(errno.ENOSYS, "Function not implemented")

    with caplog.at_level(logging.WARNING):
        await watch_writeback(store, 5.0, sync)  # returns: nothing to watch with
    assert asked == [5.0, 10.0, 15.0]
    assert "cannot watch for write errors" in caplog.text
    store.close()
