"""The part queue (prefetch.parts): which parts a read fetches, in which order.

Set-up and synchronisation as tests/unit/prefetch_helpers.py describes.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

from ossmount.cache.entry import EntryState
from tests.unit.fake_source import FakeSource
from tests.unit.prefetch_helpers import (
    KEY,
    PART,
    PARTS,
    SIZE,
    config,
    put_blob,
    read_all,
    reading,
    running,
    settle,
    state_of,
)


async def test_sequential_read_returns_the_exact_bytes_and_fetches_each_part_once(
    source: FakeSource, cache_dir: Path
) -> None:
    async with reading(source, cache_dir) as (p, reader, data, meta):
        assert await read_all(reader) == data
        await settle(p)
        assert source.part_calls(KEY) == Counter(range(PARTS))
        assert {c.if_match for c in source.calls} == {meta.etag}
        assert state_of(p, reader) is EntryState.VERIFIED
        assert p.cached_state(meta) == ("verified", meta.crc64)
        await reader.aclose()


async def test_readahead_requests_parts_beyond_the_read(
    source: FakeSource, cache_dir: Path
) -> None:
    async with reading(source, cache_dir) as (p, reader, data, _meta):
        assert await reader.read(0, PART) == data[:PART]
        await settle(p)
        # A first read of the whole head part opens a window of two parts past its end.
        assert source.part_calls(KEY) == Counter({0: 1, 1: 1, 2: 1})
        await reader.aclose()


async def test_a_peek_inside_the_head_part_fetches_nothing_more(
    source: FakeSource, cache_dir: Path
) -> None:
    async with reading(source, cache_dir) as (p, reader, data, _meta):
        assert await reader.read(0, 100) == data[:100]  # head -c 100, file(1)
        assert await reader.read(100, 100) == data[100:200]
        await settle(p)
        assert source.part_calls(KEY) == Counter({0: 1})
        assert await reader.read(200, PART) == data[200 : 200 + PART]  # now it is a copy
        await settle(p)
        assert source.part_calls(KEY) == Counter({0: 1, 1: 1, 2: 1, 3: 1})
        await reader.aclose()


async def test_demand_parts_go_before_readahead_which_goes_in_ascending_order(
    source: FakeSource, cache_dir: Path
) -> None:
    _data, meta = put_blob(source)
    gate = source.gate(KEY, 0)
    async with running(source, cache_dir, config(parallel_count=1)) as p:
        sequential, footer = p.open(meta), p.open(meta)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sequential.read, 0, PART)  # demands 0, read-ahead 1 and 2
            await gate.arrived.wait()  # the only worker holds part 0
            nursery.start_soon(footer.read, SIZE - 10, 10)  # demands the last part
            await wait_all_tasks_blocked()
            gate.release.set()
        await settle(p)
        assert [c.offset // PART for c in source.calls] == [0, PARTS - 1, 1, 2]
        await sequential.aclose()
        await footer.aclose()


async def test_footer_read_fetches_only_the_last_part_without_waiting_for_the_object(
    source: FakeSource, cache_dir: Path
) -> None:
    async with reading(source, cache_dir) as (p, reader, data, _meta):
        # Nothing but the last part will ever be served: a wait for the whole object hangs.
        for part in range(PARTS - 1):
            source.gate(KEY, part)
        with trio.fail_after(5):
            assert await reader.read(SIZE - 1024, 1024) == data[-1024:]
        await settle(p)
        assert source.part_calls(KEY) == Counter({PARTS - 1: 1})
        assert state_of(p, reader) is EntryState.PARTIAL
        await reader.aclose()


async def test_reads_past_the_end_are_empty(source: FakeSource, cache_dir: Path) -> None:
    async with reading(source, cache_dir) as (_p, reader, data, _meta):
        assert await reader.read(SIZE, 4096) == b""
        assert await reader.read(SIZE + 10 * PART, 1) == b""
        assert await reader.read(SIZE - 10, 4096) == data[-10:]
        await reader.aclose()
