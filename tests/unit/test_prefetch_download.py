"""A download's life cycle (prefetch.download): cancelled reads, late handles, `wait_idle`.

Set-up and synchronisation as tests/unit/prefetch_helpers.py describes.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import trio
import trio.testing
from trio.testing import MockClock, wait_all_tasks_blocked

from ossmount.prefetch import ObjectReader
from tests.unit.fake_source import FakeSource, Gate
from tests.unit.prefetch_helpers import (
    KEY,
    PART,
    blob,
    put_blob,
    running,
    settle,
)


async def read_behind(gate: Gate, reader: ObjectReader) -> bytes:
    """Read 100 bytes inside part 4, whose GET waits at `gate`: the read starts, every task
    blocks, then the gate opens."""
    got: list[bytes] = []
    async with trio.open_nursery() as nursery:

        async def read() -> None:
            got.append(await reader.read(4 * PART + 1, 100))

        nursery.start_soon(read)
        await wait_all_tasks_blocked()
        gate.release.set()
    return got[0]


async def test_cancelled_read_leaves_the_download_going_for_other_readers(
    source: FakeSource, cache_dir: Path, autojump_clock: MockClock
) -> None:
    data, meta = put_blob(source)
    gate = source.gate(KEY, 4)
    want = data[4 * PART + 1 : 4 * PART + 101]
    async with running(source, cache_dir) as p:
        a, b = p.open(meta), p.open(meta)
        with trio.move_on_after(1) as scope:
            await a.read(4 * PART + 1, 100)
        assert scope.cancelled_caught
        assert gate.arrived.is_set()
        got = [await read_behind(gate, b)]
        assert got == [want]
        assert await a.read(4 * PART + 1, 100) == want
        assert source.part_calls(KEY) == Counter({4: 1})
        await a.aclose()
        await b.aclose()


async def test_a_handle_opened_after_the_cancelled_one_closed_joins_the_running_get(
    source: FakeSource, cache_dir: Path, autojump_clock: MockClock
) -> None:
    data, meta = put_blob(source)
    gate = source.gate(KEY, 4)
    async with running(source, cache_dir) as p:
        a = p.open(meta)
        with trio.move_on_after(1):
            await a.read(4 * PART + 1, 100)
        await a.aclose()  # the last handle is gone, the GET is still in flight
        b = p.open(meta)
        assert p.statistics()["downloads"] == 1
        got = [await read_behind(gate, b)]
        assert got == [data[4 * PART + 1 : 4 * PART + 101]]
        assert source.part_calls(KEY) == Counter({4: 1})
        await b.aclose()
        await settle(p)
        assert p.statistics()["downloads"] == 0
        assert p.store.statistics().in_use == 0


async def test_wait_idle_returns_only_once_the_gets_and_their_work_are_done(
    source: FakeSource, cache_dir: Path
) -> None:
    gate = source.gate(KEY, 1)
    async with running(source, cache_dir) as p:
        reader = p.open(source.put(KEY, blob()))
        idle = trio.Event()

        async def wait_idle() -> None:
            await p.wait_idle()
            idle.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader.read, PART, 10)
            await gate.arrived.wait()
            nursery.start_soon(wait_idle)
            await wait_all_tasks_blocked()
            assert not idle.is_set()  # every task waits, but a GET is under way
            gate.release.set()
        assert idle.is_set()
        assert p.statistics()["gets_in_flight"] == 0
        await reader.aclose()
