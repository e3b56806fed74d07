"""Flushing (prefetch.flush): parts made durable as soon as recorded, and a slow disk.

Set-up and synchronisation as tests/unit/prefetch_helpers.py describes.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import trio
import trio.testing
from trio.testing import MockClock, wait_all_tasks_blocked

from tests.unit.fake_source import FakeSource
from tests.unit.prefetch_helpers import (
    PART,
    PARTS,
    config,
    durable_parts,
    flushed,
    put_blob,
    read_all,
    reading,
    running,
    settle,
)


async def test_a_flush_starts_as_soon_as_a_part_is_recorded(
    source: FakeSource, cache_dir: Path, mock_clock: MockClock
) -> None:
    """No timer, no batch of eight (issue 14 finding 3): the clock stands still here."""
    async with reading(source, cache_dir) as (p, reader, _data, _meta):
        await reader.read(2 * PART + 1, 10)
        await flushed(p)
        assert durable_parts(cache_dir) == {2}
        await reader.read(5 * PART + 1, 10)
        await flushed(p)
        assert durable_parts(cache_dir) == {2, 5}
        await reader.aclose()


async def test_a_slow_disk_holds_fetched_but_not_durable_parts_to_in_flight_plus_one(
    source: FakeSource, cache_dir: Path
) -> None:
    """While a flush hangs (a slow disk), workers start no GET once more than one recorded
    part waits for durability: a kill -9 then loses at most parallel_count + 1 parts."""
    data, meta = put_blob(source)
    cfg = config(parallel_count=4)
    async with running(source, cache_dir, cfg) as p:
        reader = p.open(meta)
        entry = p._downloads[meta.version].entry
        started, proceed = threading.Event(), threading.Event()
        real_flush = entry.flush
        flushes: list[int] = []

        def slow_flush() -> None:
            if not flushes:
                started.set()
                proceed.wait()
            flushes.append(len(entry.present_parts()))
            real_flush()

        entry.flush = slow_flush  # type: ignore[method-assign]
        got = bytearray()

        async def copy() -> None:
            got.extend(await read_all(reader, chunk=PART))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(copy)
            await trio.to_thread.run_sync(started.wait)
            await wait_all_tasks_blocked()
            # Nothing is durable yet: every GET made is a part a crash would lose.
            assert durable_parts(cache_dir) == set()
            assert 2 <= len(source.calls) <= cfg.parallel_count + 1 < PARTS
            proceed.set()
        assert bytes(got) == data
        assert len(flushes) < PARTS  # flushes are batched: not one per part
        await reader.aclose()


async def test_the_last_handle_closing_during_a_background_flush_still_releases_the_entry(
    source: FakeSource, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with reading(source, cache_dir) as (p, reader, _data, meta):
        entry = p._downloads[meta.version].entry
        started, proceed = threading.Event(), threading.Event()
        real_flush = entry.flush

        def slow_flush() -> None:
            started.set()
            proceed.wait()
            real_flush()

        monkeypatch.setattr(entry, "flush", slow_flush)
        await reader.read(2 * PART + 1, 10)  # readers never wait for the flush it starts
        await trio.to_thread.run_sync(started.wait)  # the flush is in its thread
        await reader.aclose()  # the last handle goes while it runs
        proceed.set()
        await settle(p)
        assert p.statistics()["downloads"] == 0
        assert p.store.statistics().in_use == 0
        assert durable_parts(cache_dir) == {2}
