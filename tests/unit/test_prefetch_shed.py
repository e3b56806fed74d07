"""Shedding (prefetch.shed): an object bigger than the cache streams through it.

Set-up and synchronisation as tests/unit/prefetch_helpers.py describes.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from ossmount.cache.entry import EntryState
from ossmount.cache.store import key_hash
from ossmount.oss.models import ObjectMeta
from ossmount.prefetch import ObjectCorrupt, ObjectReader, Prefetcher
from tests.unit.cache_helpers import write_part
from tests.unit.fake_source import FakeSource
from tests.unit.prefetch_helpers import (
    KEY,
    PART,
    blob,
    crash,
    durable_parts,
    files,
    open_store,
    read_all,
    running,
    settle,
    state_of,
)

BIG_PARTS = 40
BIG = (BIG_PARTS - 1) * PART + 777
CAP = 6 * PART


@asynccontextmanager
async def read_through_once(
    source: FakeSource, cache_dir: Path
) -> AsyncIterator[tuple[Prefetcher, ObjectReader, bytes, ObjectMeta]]:
    """A BIG object read whole, and right, by one handle of a prefetcher capped at CAP; then
    settled: its first parts are shed by now."""
    data = blob(BIG)
    meta = source.put(KEY, data)
    async with running(source, cache_dir, max_bytes=CAP) as p:
        reader = p.open(meta)
        assert await read_all(reader, chunk=PART) == data
        await settle(p)
        yield p, reader, data, meta


async def test_an_object_bigger_than_the_cap_streams_through_and_is_verified_whole(
    source: FakeSource, cache_dir: Path
) -> None:
    async with read_through_once(source, cache_dir) as (p, reader, data, meta):
        assert state_of(p, reader) is EntryState.VERIFIED  # every part's CRC, shed or not, combined
        assert source.part_calls(KEY) == Counter(range(BIG_PARTS))  # nothing fetched twice
        held = p.store.held_bytes()
        # Shed after each flush (which starts as soon as a part is recorded): what is left is
        # at most one flush's worth (parts in flight + 1) plus the read-ahead, far below it.
        assert held <= CAP + (1 + 4) * PART < BIG
        data_file, _ = files(cache_dir)
        assert os.stat(data_file).st_blocks * 512 <= held + PART  # really punched out
        shed = p.metrics.registry.get_sample_value("ossmount_shed_bytes_total")
        assert shed == BIG - held  # every byte fetched once: what is not held was shed
        await reader.aclose()
        await settle(p)
        # The checkpoint lists only the parts still in the file, so it cannot claim VERIFIED.
        assert p.cached_state(meta)[0] == "partial"

        again = p.open(meta)  # the first parts were shed: fetched again, same CRCs
        assert await again.read(0, 2 * PART) == data[: 2 * PART]
        assert source.part_calls(KEY)[0] == 2
        await again.aclose()


async def test_a_shed_part_that_comes_back_different_is_corrupt_and_discarded(
    source: FakeSource, cache_dir: Path
) -> None:
    async with read_through_once(source, cache_dir) as (p, reader, _data, meta):
        assert not p.store._current[key_hash(KEY)].entry.is_done(1)  # shed
        source.flip.add((KEY, PART + 5))
        with pytest.raises(ObjectCorrupt, match=r"part 1 .* fetched again with CRC-64"):
            await reader.read(PART, 10)
        await reader.aclose()
        await settle(p)
        assert not files(cache_dir)[0].exists()
        assert p.cached_state(meta) == ("uncached", None)


async def test_parts_a_reader_has_not_read_past_are_never_shed(
    source: FakeSource, cache_dir: Path
) -> None:
    data = blob(BIG)
    meta = source.put(KEY, data)
    async with running(source, cache_dir, max_bytes=CAP) as p:
        slow = p.open(meta)
        assert await slow.read(0, 100) == data[:100]  # still at the start
        fast = p.open(meta)
        assert await read_all(fast, chunk=PART) == data
        await settle(p)
        assert p.store.held_bytes() == BIG  # over the cap, but the slow reader needs it all
        assert source.part_calls(KEY) == Counter(range(BIG_PARTS))
        assert await read_all(slow, chunk=PART) == data
        await fast.aclose()
        await slow.aclose()


async def test_a_crash_after_shedding_never_resumes_the_punched_parts(
    source: FakeSource, cache_dir: Path
) -> None:
    """The checkpoint on disk may still list a part shed after it was saved: on reopen the
    punched part (zeros now) is found by its hole and fetched again, never served."""
    data = blob(BIG)
    meta = source.put(KEY, data)
    store = open_store(cache_dir)
    entry = store.open_entry(meta, PART)
    for index in range(BIG_PARTS):
        start, length = entry.layout.span(index)
        write_part(entry, index, data[start : start + length])
    entry.flush()
    assert entry.shed([0, 1, 2]) == 3 * PART
    crash(store)  # no flush after the shed: the checkpoint still lists parts 0..2
    assert durable_parts(cache_dir) == set(range(BIG_PARTS))

    async with running(source, cache_dir) as p:
        reader = p.open(meta)
        assert await read_all(reader, chunk=PART) == data
        await settle(p)
        assert source.part_calls(KEY) == Counter(range(3))
        assert state_of(p, reader) is EntryState.VERIFIED
        await reader.aclose()


async def test_an_object_fetched_whole_for_readers_it_is_taken_from_is_never_shed(
    source: FakeSource, cache_dir: Path
) -> None:
    """ObjectReader.fetch_all (the object is about to be deleted under open handles): its
    parts could not be fetched again, so none is shed, whatever the readers have read past
    and however full the cache (a stress run: a read of a file unlinked while held open got
    ESTALE, its early parts shed for room after the unlink had fetched them)."""
    data = blob(BIG)
    meta = source.put(KEY, data)
    async with running(source, cache_dir, max_bytes=CAP) as p:
        reader = p.open(meta)
        assert await reader.fetch_all(max_bytes=BIG)
        assert await read_all(reader, chunk=PART) == data
        await settle(p)
        assert p.store.held_bytes() == BIG  # over the cap: all of it, while it is open
        assert await reader.read(0, PART) == data[:PART]
        assert source.part_calls(KEY) == Counter(range(BIG_PARTS))  # nothing fetched twice
        await reader.aclose()


async def test_fetch_all_fetches_nothing_past_its_bound(
    source: FakeSource, cache_dir: Path
) -> None:
    data = blob(BIG)
    meta = source.put(KEY, data)
    async with running(source, cache_dir, max_bytes=CAP) as p:
        reader = p.open(meta)
        assert await reader.read(0, 100) == data[:100]
        assert not await reader.fetch_all(max_bytes=BIG - 2 * PART)
        await settle(p)
        assert sum(source.part_calls(KEY).values()) < BIG_PARTS
        await reader.aclose()
