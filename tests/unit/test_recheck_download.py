"""A download re-hashes parts resumed from a checkpoint before any reader gets them, and
fetches a part damaged at rest again (issue 14, findings 1 and 2), through the fake source."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pytest

from ossmount.cache.checkpoint import EntryState
from tests.unit.fake_source import BUCKET, FakeSource
from tests.unit.prefetch_helpers import (
    KEY,
    PART,
    PARTS,
    cache_whole,
    files,
    put_blob,
    read_all,
    reading,
    running,
    settle,
    state_of,
)

__all__ = ["PART"]  # the `source` fixture reads the module's PART


def damage(cache_dir: Path, offset: int, length: int = 1) -> None:
    with open(files(cache_dir, KEY)[0], "r+b") as f:
        f.seek(offset)
        old = f.read(length)
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in old))


async def test_a_verified_entry_damaged_at_rest_is_fetched_again(
    source: FakeSource, cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data, meta = put_blob(source)
    assert await cache_whole(source, cache_dir, meta) == data
    damage(cache_dir, 3 * PART + 17)
    damage(cache_dir, 6 * PART, PART)  # a whole part inverted
    source.calls.clear()
    async with running(source, cache_dir) as p:
        reader = p.open(meta)
        with caplog.at_level(logging.WARNING):
            assert await read_all(reader) == data
        assert source.part_calls(KEY) == Counter({3: 1, 6: 1})
        await settle(p)
        assert state_of(p, reader) is EntryState.VERIFIED
        await reader.aclose()
    warnings = [r.getMessage() for r in caplog.records if "damaged at rest" in r.getMessage()]
    assert len(warnings) == 2
    assert all(f"oss://{BUCKET}/{KEY}" in w for w in warnings)
    assert "part 3 " in warnings[0] + warnings[1]
    assert "part 6 " in warnings[0] + warnings[1]
    source.calls.clear()
    async with running(source, cache_dir) as p:  # the re-fetched bytes were made durable
        reader = p.open(meta)
        assert await read_all(reader) == data
        await reader.aclose()
    assert source.calls == []


async def test_a_damaged_partial_part_never_becomes_verified(
    source: FakeSource, cache_dir: Path
) -> None:
    async with reading(source, cache_dir) as (p, reader, data, meta):
        assert await reader.read(0, 100) == data[:100]  # a peek: only the head part
        await settle(p)
        await reader.aclose()
    damage(cache_dir, 50)
    source.calls.clear()
    async with running(source, cache_dir) as p:
        reader = p.open(meta)
        assert await read_all(reader) == data
        await settle(p)
        assert state_of(p, reader) is EntryState.VERIFIED
        await reader.aclose()
    assert source.part_calls(KEY)[0] == 1  # the damaged head part was fetched again
    assert set(source.part_calls(KEY)) == set(range(PARTS))


async def test_rechecks_run_ahead_of_a_sequential_reader(
    source: FakeSource, cache_dir: Path
) -> None:
    data, meta = put_blob(source)
    assert await cache_whole(source, cache_dir, meta) == data
    source.calls.clear()
    async with running(source, cache_dir) as p:
        reader = p.open(meta)
        assert await reader.read(0, 3000) == data[:3000]
        assert await reader.read(3000, 3000) == data[3000:6000]  # sequential: read-ahead
        await settle(p)
        entry = p._downloads[meta.version].entry
        # Read-ahead re-checked parts beyond those read, as it would have fetched them.
        assert entry.missing_parts(range(PARTS)) == list(range(4, PARTS))
        await reader.aclose()
    assert source.calls == []
