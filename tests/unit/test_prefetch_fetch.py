"""Part fetches (prefetch.fetch): one download shared by its readers, the GET limits, a failed part.

Set-up and synchronisation as tests/unit/prefetch_helpers.py describes.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import trio
import trio.testing
from trio.testing import MockClock, wait_all_tasks_blocked

from ossmount.cache.entry import EntryState
from ossmount.prefetch import (
    DownloadFailed,
    ObjectReader,
)
from tests.unit.fake_source import FakeSource
from tests.unit.prefetch_helpers import (
    KEY,
    PART,
    PARTS,
    SIZE,
    blob,
    config,
    put_blob,
    read_all,
    running,
    settle,
    state_of,
)


async def test_two_readers_of_one_version_share_one_download(
    source: FakeSource, cache_dir: Path, autojump_clock: MockClock
) -> None:
    data, meta = put_blob(source)
    source.delay_s = 0.01  # keep GETs in flight while both readers ask
    results: dict[str, bytes] = {}
    async with running(source, cache_dir) as p:
        a, b = p.open(meta), p.open(meta)
        assert p.statistics()["downloads"] == 1

        async def run(name: str, reader: ObjectReader, chunk: int) -> None:
            results[name] = await read_all(reader, chunk)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "a", a, 3000)
            nursery.start_soon(run, "b", b, 5000)
        await settle(p)
        assert results == {"a": data, "b": data}
        assert source.part_calls(KEY) == Counter(range(PARTS))
        await a.aclose()
        await b.aclose()


async def test_parallel_count_bounds_gets_per_object(
    source: FakeSource, cache_dir: Path, autojump_clock: MockClock
) -> None:
    data, meta = put_blob(source)
    source.delay_s = 0.01
    async with running(source, cache_dir, config(parallel_count=2, max_gets=8)) as p:
        reader = p.open(meta)
        assert await reader.read(1, SIZE) == data[1:]
        assert source.max_in_flight_by_key[KEY] == 2
        await reader.aclose()


async def test_max_gets_bounds_gets_across_objects(
    source: FakeSource, cache_dir: Path, autojump_clock: MockClock
) -> None:
    keys = [f"k{i}" for i in range(3)]
    datas = {key: blob(seed=i) for i, key in enumerate(keys)}
    metas = {key: source.put(key, datas[key]) for key in keys}
    source.delay_s = 0.01
    got: dict[str, bytes] = {}
    async with running(source, cache_dir, config(parallel_count=2, max_gets=3)) as p:

        async def run(key: str) -> None:
            reader = p.open(metas[key])
            got[key] = await reader.read(1, SIZE)
            await reader.aclose()

        async with trio.open_nursery() as nursery:
            for key in keys:
                nursery.start_soon(run, key)
    assert got == {key: datas[key][1:] for key in keys}
    assert source.max_in_flight == 3
    assert max(source.max_in_flight_by_key.values()) <= 2
    for key in keys:
        assert source.part_calls(key) == Counter(range(PARTS))


# --------------------------------------------------------------------- part failures


async def test_failed_part_raises_download_failed_and_the_next_read_retries(
    source: FakeSource, cache_dir: Path
) -> None:
    data, meta = put_blob(source)
    source.fail_once[(KEY, 3 * PART)] = None
    async with running(source, cache_dir) as p:
        reader = p.open(meta)
        with pytest.raises(DownloadFailed, match="part 3"):
            await reader.read(3 * PART + 1, 100)
        assert await reader.read(3 * PART + 1, 100) == data[3 * PART + 1 : 3 * PART + 101]
        assert source.part_calls(KEY)[3] == 2
        # Only that part failed: the download goes on, and the whole object still verifies.
        assert await read_all(reader) == data
        assert state_of(p, reader) is EntryState.VERIFIED
        await reader.aclose()


async def test_every_waiter_of_a_failed_part_gets_download_failed(
    source: FakeSource, cache_dir: Path
) -> None:
    data, meta = put_blob(source)
    gate = source.gate(KEY, 3)
    source.fail_once[(KEY, 3 * PART)] = None
    outcomes: dict[str, BaseException | bytes] = {}
    async with running(source, cache_dir) as p:
        readers = {"a": p.open(meta), "b": p.open(meta)}

        async def run(name: str) -> None:
            try:
                outcomes[name] = await readers[name].read(3 * PART + 1, 100)
            except DownloadFailed as exc:
                outcomes[name] = exc

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "a")
            nursery.start_soon(run, "b")
            await gate.arrived.wait()
            await wait_all_tasks_blocked()
            gate.release.set()
        kinds = {name: type(o).__name__ for name, o in outcomes.items()}
        assert kinds == {"a": "DownloadFailed", "b": "DownloadFailed"}
        assert source.part_calls(KEY)[3] == 1  # no silent retry behind a reader's back
        assert await readers["b"].read(3 * PART + 1, 100) == data[3 * PART + 1 : 3 * PART + 101]
        for reader in readers.values():
            await reader.aclose()
