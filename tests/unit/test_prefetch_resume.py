"""Resuming a cache entry after a crash or a clean shutdown, and serving a verified one.

Set-up and synchronisation as tests/unit/prefetch_helpers.py describes.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import trio
import trio.testing
from trio.testing import MockClock, wait_all_tasks_blocked

from ossmount.cache.entry import CacheEntry, EntryState
from ossmount.oss.models import ObjectMeta
from ossmount.prefetch import (
    Prefetcher,
)
from tests.unit.cache_helpers import write_part
from tests.unit.fake_source import FakeSource
from tests.unit.prefetch_helpers import (
    KEY,
    PART,
    PARTS,
    SIZE,
    blob,
    cache_whole,
    config,
    crash,
    durable_parts,
    flushed,
    open_store,
    part_of,
    put_blob,
    read_all,
    reading,
    running,
    settle,
    state_of,
    without_crc,
)


async def test_resume_after_a_crash_fetches_only_the_missing_parts(
    source: FakeSource, cache_dir: Path, autojump_clock: MockClock
) -> None:
    data, meta = put_blob(source)
    store = open_store(cache_dir)
    async with trio.open_nursery() as nursery:
        p = Prefetcher(source, store, nursery, config())
        reader = p.open(meta)
        await reader.read(1, 3 * PART - 1)  # parts 0..2
        await flushed(p)
        entry = p._downloads[meta.version].entry
        entry.flush = lambda: None  # type: ignore[method-assign]  # the crash comes first
        await reader.read(5 * PART + 1, 10)  # part 5: recorded, not yet durable
        nursery.cancel_scope.cancel()
    assert durable_parts(cache_dir) == {0, 1, 2}
    crash(store)

    source.calls.clear()
    async with running(source, cache_dir) as p:
        reader = p.open(meta)
        assert p.cached_state(meta)[0] == "partial"
        assert await read_all(reader) == data
        assert source.part_calls(KEY) == Counter(range(3, PARTS))
        assert state_of(p, reader) is EntryState.VERIFIED
        await reader.aclose()


async def test_resume_after_a_clean_shutdown_keeps_every_recorded_part(
    source: FakeSource, cache_dir: Path
) -> None:
    async with reading(source, cache_dir) as (p, reader, data, meta):
        await reader.read(1, 2 * PART - 1)  # parts 0, 1; the reader is never closed
    assert durable_parts(cache_dir) == {0, 1}
    source.calls.clear()
    async with running(source, cache_dir) as p:
        reader = p.open(meta)
        assert await read_all(reader) == data
        assert source.part_calls(KEY) == Counter(range(2, PARTS))
        await reader.aclose()


async def test_verified_entry_after_reopen_serves_reads_with_zero_gets(
    source: FakeSource, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, meta = put_blob(source)
    assert await cache_whole(source, cache_dir, meta) == data
    source.calls.clear()

    def verify_again(entry: CacheEntry) -> None:
        raise AssertionError("a verdict from the checkpoint is not recomputed")

    monkeypatch.setattr(CacheEntry, "verify", verify_again)
    async with running(source, cache_dir) as p:
        assert p.cached_state(meta) == ("verified", meta.crc64)
        opened = p.open(meta)  # open and close at once (`stat`-like tools, `file`)
        await opened.aclose()
        reader = p.open(without_crc(meta))
        assert state_of(p, reader) is EntryState.VERIFIED
        assert await read_all(reader) == data
        assert await reader.read(SIZE - 1024, 1024) == data[-1024:]
        await reader.aclose()
    assert source.calls == []
    assert source.heads == []


async def _complete_unverified_entry(
    source: FakeSource, cache_dir: Path, data: bytes
) -> ObjectMeta:
    """A cache entry with every part durable but no CRC known: a crash before the verdict."""
    meta = source.put(KEY, data)
    store = open_store(cache_dir)
    entry = store.open_entry(without_crc(meta), PART)
    for i in range(PARTS):
        write_part(entry, i, part_of(i, data))
    store.release(entry)
    store.close()
    return meta


async def test_resumed_complete_entry_without_crc_asks_head_once_and_verifies(
    source: FakeSource, cache_dir: Path
) -> None:
    data = blob()
    meta = await _complete_unverified_entry(source, cache_dir, data)
    async with running(source, cache_dir) as p:
        reader = p.open(without_crc(meta))
        assert await read_all(reader) == data
        assert state_of(p, reader) is EntryState.VERIFIED
        await reader.aclose()
    assert source.calls == []
    assert source.heads == [KEY]


async def test_closing_while_the_resumed_entry_asks_head_does_not_crash(
    source: FakeSource, cache_dir: Path
) -> None:
    data = blob()
    meta = await _complete_unverified_entry(source, cache_dir, data)
    source.head_gate = trio.Event()
    async with running(source, cache_dir) as p:
        reader = p.open(without_crc(meta))
        # Every resumed part is re-hashed before the verdict; a read short of the object's
        # end has them re-checked without waiting for the verdict itself.
        assert await reader.read(0, len(data) - 1) == data[:-1]
        await wait_all_tasks_blocked()
        assert source.heads == [KEY]  # the verdict is waiting for HEAD
        await reader.aclose()  # the entry is released meanwhile
        source.head_gate.set()
        await settle(p)
        again = p.open(without_crc(meta))
        source.head_gate = None
        assert await read_all(again) == data
        await again.aclose()
    assert source.calls == []
