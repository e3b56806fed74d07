"""Random reads (prefetch.spot): small ranged GETs into memory instead of whole parts.

The prefetcher runs over a FakeSource and a real CacheStore (see test_prefetch_*.py); the parts
are large (64 KiB) and the spot blocks small (1 KiB), so the GETs say which path a read took.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
import trio

from ossmount.cache.entry import EntryState
from ossmount.oss.models import ObjectMeta
from ossmount.prefetch import ObjectChanged, ObjectCorrupt, PrefetchConfig
from ossmount.prefetch.pattern import ReadaheadWindow
from tests.unit.fake_source import FakeSource
from tests.unit.prefetch_helpers import config, read_all, running, settle, state_of

PART = 64 * 1024
BLOCK = 1024
RUN = 8 * 1024
SIZE = 6 * PART + 777
KEY = "db/table.bin"


def spot_config(block: int = BLOCK) -> PrefetchConfig:
    return config(part_size=PART, spot_block=block, spot_run=RUN, spot_kept=4)


def blob(seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(SIZE)


def stored() -> tuple[FakeSource, bytes, ObjectMeta]:
    """A fake source holding one object of SIZE bytes; the source, the bytes and their meta."""
    source = FakeSource(PART)
    data = blob()
    return source, data, source.put(KEY, data)


async def test_a_random_read_gets_its_aligned_block_and_caches_no_part(tmp_path: Path) -> None:
    source, data, meta = stored()
    async with running(source, tmp_path, spot_config()) as p:
        reader = p.open(meta)
        offset = 3 * PART + 5000  # not at 0: a jump
        assert await reader.read(offset, 100) == data[offset : offset + 100]
        assert [(c.offset, c.length) for c in source.calls] == [(offset // BLOCK * BLOCK, BLOCK)]
        assert source.calls[0].if_match == meta.etag
        # Another page of the same block comes from memory; one that spans two blocks GETs
        # only the one it does not hold.
        assert await reader.read(offset + 200, 300) == data[offset + 200 : offset + 500]
        edge = offset // BLOCK * BLOCK + BLOCK - 10
        assert await reader.read(edge, 20) == data[edge : edge + 20]
        assert len(source.calls) == 2
        await settle(p)
        entry = reader._download.entry
        everything = range(entry.layout.count)
        assert entry.missing_parts(everything) == list(everything)  # nothing recorded
        await reader.aclose()


async def test_the_last_block_is_clipped_to_the_object(tmp_path: Path) -> None:
    source, data, meta = stored()
    async with running(source, tmp_path, spot_config()) as p:
        reader = p.open(meta)
        assert await reader.read(SIZE - 10, 4096) == data[-10:]
        start = (SIZE - 10) // BLOCK * BLOCK
        assert [(c.offset, c.length) for c in source.calls] == [(start, SIZE - start)]
        await reader.aclose()


async def test_a_random_reader_turning_sequential_gets_parts_again(tmp_path: Path) -> None:
    source, data, meta = stored()
    async with running(source, tmp_path, spot_config()) as p:
        reader = p.open(meta)
        offset = PART + 100
        got = bytearray()
        while len(got) < RUN + 2 * BLOCK:
            got += await reader.read(offset + len(got), 512)
        assert bytes(got) == data[offset : offset + len(got)]
        spots = [c for c in source.calls if c.length == BLOCK]
        parts = [c for c in source.calls if c.length == PART]
        assert len(spots) == -(-RUN // BLOCK)  # until the run reached spot_run
        assert parts  # then the part it is in, and read-ahead
        assert parts[0].offset == PART
        await reader.aclose()


async def test_reading_from_offset_0_never_takes_the_spot_path(tmp_path: Path) -> None:
    source, data, meta = stored()
    async with running(source, tmp_path, spot_config()) as p:
        reader = p.open(meta)
        assert await read_all(reader, 3000) == data
        assert all(c.length != BLOCK for c in source.calls)
        await settle(p)
        assert state_of(p, reader) is EntryState.VERIFIED
        await reader.aclose()


async def test_a_cached_part_is_read_from_the_cache_not_spotted(tmp_path: Path) -> None:
    source, data, meta = stored()
    async with running(source, tmp_path, spot_config()) as p:
        first = p.open(meta)
        assert await read_all(first) == data
        calls = len(source.calls)
        second = p.open(meta)
        assert await second.read(2 * PART + 9, 50) == data[2 * PART + 9 : 2 * PART + 59]
        assert len(source.calls) == calls
        await first.aclose()
        await second.aclose()


async def test_a_random_reader_covering_everything_waits_for_the_verdict(tmp_path: Path) -> None:
    """Spot reads record nothing, so the read that completes a handle's coverage fetches every
    part and waits for the whole-object CRC: a corrupt object fails that read."""
    source, _data, meta = stored()
    source.flip.add((KEY, 2 * PART + 3))  # only the part GET of part 2 carries the flip
    # Every read is a spot read (a run never reaches spot_run) but the one from offset 0.
    cfg = dataclasses.replace(spot_config(block=PART // 2), spot_run=2 * SIZE)
    async with running(source, tmp_path, cfg) as p:
        reader = p.open(meta)
        offsets = list(range(PART // 2, SIZE, PART // 2))
        random.Random(3).shuffle(offsets)
        for offset in offsets:
            got = await reader.read(offset, PART // 2)
            assert len(got) == min(PART // 2, SIZE - offset)
        with pytest.raises(ObjectCorrupt):
            await reader.read(0, PART // 2)  # completes the coverage (from offset 0: parts)
        await reader.aclose()


async def test_a_spot_read_of_a_replaced_object_fails_with_object_changed(tmp_path: Path) -> None:
    source = FakeSource(PART)
    meta = source.put(KEY, blob(1))
    source.put(KEY, blob(2))  # the version the handle reads is gone: If-Match fails
    async with running(source, tmp_path, spot_config()) as p:
        reader = p.open(meta)
        with pytest.raises(ObjectChanged):
            await reader.read(PART + 1, 10)
        with pytest.raises(ObjectChanged):  # the download failed as a whole
            await reader.read(3 * PART, 10)
        await reader.aclose()


async def test_two_reads_of_one_block_share_one_get(tmp_path: Path) -> None:
    source, data, meta = stored()
    offset = 2 * PART + 3 * BLOCK
    gate = source.gate(KEY, 0)
    source.gates[(KEY, offset)] = gate  # gate() keys by part index; ours is a block
    async with running(source, tmp_path, spot_config()) as p:
        a, b = p.open(meta), p.open(meta)
        results: list[bytes] = []

        async def read(reader: object, at: int) -> None:
            results.append(await reader.read(at, 16))  # type: ignore[attr-defined]

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read, a, offset + 1)
            await gate.arrived.wait()
            nursery.start_soon(read, b, offset + 100)
            await trio.testing.wait_all_tasks_blocked()
            gate.release.set()
        assert sorted(results) == sorted(
            [data[offset + 1 : offset + 17], data[offset + 100 : offset + 116]]
        )
        assert len(source.calls) == 1
        await a.aclose()
        await b.aclose()


async def test_a_read_of_several_blocks_gets_the_missing_ones_in_one_request(
    tmp_path: Path,
) -> None:
    """Before: one GET per block, in turn (a 128 KiB read of 16 KiB blocks was 8 round
    trips). Now the blocks neither held nor on their way come in one GET, and are kept."""
    source, data, meta = stored()
    async with running(source, tmp_path, spot_config()) as p:
        reader = p.open(meta)
        offset = 2 * PART + 5 * BLOCK + 10  # a jump; the read spans blocks 5..8 of that part
        assert await reader.read(offset, 3 * BLOCK) == data[offset : offset + 3 * BLOCK]
        first = offset // BLOCK * BLOCK
        assert [(c.offset, c.length) for c in source.calls] == [(first, 4 * BLOCK)]
        assert all(c.if_match == meta.etag for c in source.calls)
        # The blocks were kept: a read inside them GETs nothing.
        assert (
            await reader.read(first + BLOCK + 3, 2 * BLOCK)
            == data[first + BLOCK + 3 : first + 3 * BLOCK + 3]
        )
        assert len(source.calls) == 1
        # Blocks 9 and 11 are missing, 10 is held (read alone first): one GET for 9..11.
        ten = first + 5 * BLOCK
        assert await reader.read(ten + 1, 10) == data[ten + 1 : ten + 11]
        assert await reader.read(ten - BLOCK, 3 * BLOCK) == data[ten - BLOCK : ten + 2 * BLOCK]
        assert [(c.offset, c.length) for c in source.calls[1:]] == [
            (ten, BLOCK),
            (ten - BLOCK, 3 * BLOCK),
        ]
        await reader.aclose()


async def test_a_span_read_at_the_end_is_clipped_to_the_object(tmp_path: Path) -> None:
    source, data, meta = stored()
    async with running(source, tmp_path, spot_config()) as p:
        reader = p.open(meta)
        offset = SIZE - 2 * BLOCK - 5
        assert await reader.read(offset, 8 * BLOCK) == data[offset:]
        first = offset // BLOCK * BLOCK
        assert [(c.offset, c.length) for c in source.calls] == [(first, SIZE - first)]
        await reader.aclose()


def test_scattered_means_a_short_run_that_did_not_start_at_0() -> None:
    w = ReadaheadWindow(initial=100, maximum=400, slack=10, trigger=0, spot_run=1000)
    w.observe(0, 50)
    assert not w.scattered  # from offset 0
    w.observe(5000, 5100)
    assert w.scattered  # a jump
    w.observe(5100, 5900)
    assert w.scattered  # run of 900 < 1000
    w.observe(5900, 6000)
    assert not w.scattered  # the run reached spot_run
    w.observe(0, 10)
    assert not w.scattered  # back at the start
    off = ReadaheadWindow(initial=100, maximum=400, slack=10)
    off.observe(5000, 5100)
    assert not off.scattered  # spot_run 0: never
