"""Directory read-ahead: the walk detector (prefetch/siblings.py) against fake callbacks, and
`Prefetcher.warm` against the fake source and a real cache (as tests/unit/test_prefetch_*.py)."""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from pathlib import Path

import pytest

from ossmount.cache.entry import EntryState
from ossmount.cache.errors import EntryStateError
from ossmount.oss.models import ObjectMeta
from ossmount.prefetch.siblings import DirectoryReadAhead
from ossmount.tree.listing import WalkOrder
from tests.unit.fake_source import FakeSource
from tests.unit.prefetch_helpers import PART, blob, config, read_all, running, settle, state_of

# -- the detector ----------------------------------------------------------------------------

# Directory "d" holds files 1..20; their inode order is the reverse of their name order.
NAMES = {ino: f"f{ino:02d}" for ino in range(1, 21)}


def meta(ino: int) -> ObjectMeta:
    return ObjectMeta(key=f"d/{NAMES[ino]}", size=10, etag='"e"', mtime_ns=0, crc64=None)


def files_after(ino: int, count: int, order: WalkOrder) -> list[tuple[int, ObjectMeta]]:
    nexts = range(ino + 1, 21) if order == "name" else range(ino - 1, 0, -1)
    return [(i, meta(i)) for i in list(nexts)[:count]]


class Detector:
    def __init__(self, depth: int = 3) -> None:
        self.warmed: list[str] = []
        self.ahead = DirectoryReadAhead(depth=depth, files_after=files_after, warm=self.warm)

    def warm(self, m: ObjectMeta) -> bool:
        self.warmed.append(m.key)
        return True

    def open(self, *inodes: int) -> list[int]:
        return [self.ahead.opened(ino, f"d/{NAMES[ino]}") for ino in inodes]

    def read(self, *inodes: int, whole: bool = True) -> None:
        """Open each file, read it (whole or not), close it: the walker's way."""
        for ino in inodes:
            self.ahead.opened(ino, f"d/{NAMES[ino]}")
            self.ahead.closed(f"d/{NAMES[ino]}", whole)


def test_a_step_in_name_order_warms_the_next_files() -> None:
    d = Detector()
    assert d.open(1, 2) == [0, 3]
    assert d.warmed == ["d/f03", "d/f04", "d/f05"]
    d.open(3)  # each further step offers the window again; warm() skips what it has
    assert d.warmed[3:] == ["d/f04", "d/f05", "d/f06"]


def test_a_step_in_inode_order_warms_too() -> None:
    d = Detector()
    d.open(20, 19)
    assert d.warmed == ["d/f18", "d/f17", "d/f16"]


def test_jumps_warm_nothing() -> None:
    d = Detector()
    assert d.open(5, 9, 2, 14, 3, 12) == [0] * 6
    assert d.warmed == []


def test_walks_of_different_directories_do_not_mix() -> None:
    d = Detector()
    d.ahead.opened(1, "d/f01")
    d.ahead.opened(2, "e/f02")  # the next name, but in another directory
    assert d.warmed == []
    d.ahead.opened(2, "d/f02")
    assert d.warmed == ["d/f03", "d/f04", "d/f05"]


def test_a_walker_that_reads_whole_files_warms() -> None:
    d = Detector()
    d.read(1, 2)
    assert d.warmed == ["d/f03", "d/f04", "d/f05"]


def test_a_scanner_that_peeks_at_each_file_warms_nothing() -> None:
    """`file *` or a thumbnailer: whole objects ahead of it would multiply its traffic."""
    d = Detector()
    d.read(1, 2, 3, 4, whole=False)
    assert d.warmed == []
    d.read(5)  # it reads one whole: the walk warms again
    d.read(6)
    assert d.warmed == ["d/f07", "d/f08", "d/f09"]


def test_depth_zero_is_off() -> None:
    d = Detector(depth=0)
    assert d.open(1, 2, 3) == [0, 0, 0]
    assert d.warmed == []


# -- Prefetcher.warm -------------------------------------------------------------------------


async def test_warm_caches_and_verifies_with_no_reader_then_a_reader_fetches_nothing(
    source: FakeSource, cache_dir: Path
) -> None:
    data = blob(3 * PART)
    m = source.put("d/a", data)
    cfg = dataclasses.replace(config(), warm_limit=2, warm_max_size=4 * PART)
    async with running(source, cache_dir, cfg) as p:
        assert p.warm(m)
        await settle(p)
        assert p.cached_state(m) == ("verified", m.crc64)
        assert p.statistics()["downloads"] == 0  # closed itself once done
        assert not p.warm(m)  # cached already
        fetched = Counter(source.calls)
        reader = p.open(m)
        assert await read_all(reader) == data
        assert Counter(source.calls) == fetched
        assert state_of(p, reader) is EntryState.VERIFIED
        await reader.aclose()


async def test_a_reader_joins_a_warm_download_under_way(
    source: FakeSource, cache_dir: Path
) -> None:
    data = blob(3 * PART)
    m = source.put("d/a", data)
    gate = source.gate("d/a", 1)
    cfg = dataclasses.replace(config(), warm_limit=2, warm_max_size=4 * PART)
    async with running(source, cache_dir, cfg) as p:
        assert p.warm(m)
        reader = p.open(m)
        gate.release.set()
        assert await read_all(reader) == data
        await reader.aclose()
        await settle(p)
        assert source.part_calls("d/a") == Counter(range(3))  # each part once


async def test_warm_limits(source: FakeSource, cache_dir: Path) -> None:
    small = [source.put(f"d/{i}", blob(PART, seed=i)) for i in range(3)]
    big = source.put("d/big", blob(5 * PART))
    empty = source.put("d/empty", b"")
    gates = [source.gate(m.key, 0) for m in small]
    cfg = dataclasses.replace(config(), warm_limit=2, warm_max_size=4 * PART)
    async with running(source, cache_dir, cfg) as p:
        assert not p.warm(big)  # over warm_max_size
        assert not p.warm(empty)
        assert p.warm(small[0])
        assert p.warm(small[1])
        assert not p.warm(small[2])  # two running: the limit
        assert not p.warm(small[0])  # already downloading
        for gate in gates:
            gate.release.set()
        await settle(p)
        assert p.warm(small[2])  # a slot is free again
        await settle(p)
        assert {c.key for c in source.calls} == {m.key for m in small}


async def test_warming_is_off_by_default(source: FakeSource, cache_dir: Path) -> None:
    m = source.put("d/a", blob(PART))
    async with running(source, cache_dir) as p:
        assert not p.warm(m)


@pytest.mark.parametrize(
    "error",
    [
        OSError(28, "No space left on device"),
        EntryStateError("cache store used after close()"),
    ],
)
async def test_a_cache_that_cannot_open_an_entry_only_skips_warming(
    source: FakeSource, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    """Warming is best effort: it runs inside the open of another file, which must not fail."""
    m = source.put("d/a", blob(PART))
    cfg = dataclasses.replace(config(), warm_limit=2, warm_max_size=4 * PART)
    async with running(source, cache_dir, cfg) as p:

        def refuse(*_: object) -> None:
            raise error

        monkeypatch.setattr(p.store, "open_entry", refuse)
        assert not p.warm(m)
        assert source.calls == []


async def test_a_cache_cap_under_twice_the_window_turns_warming_off(
    source: FakeSource, cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Warmed entries wait closed for their reader: a smaller cache would evict them first."""
    caplog.set_level(logging.INFO, logger="ossmount.prefetch")
    m = source.put("d/a", blob(PART))
    cfg = dataclasses.replace(config(), warm_limit=2, warm_max_size=4 * PART)
    async with running(source, cache_dir, cfg, max_bytes=16 * PART - 1) as p:
        assert not p.warm(m)
    assert "directory read-ahead is off" in caplog.text
    async with running(source, cache_dir, cfg, max_bytes=16 * PART) as p:
        assert p.warm(m)


async def test_metrics_count_warmed_objects_and_those_then_opened(
    source: FakeSource, cache_dir: Path
) -> None:
    metas = [source.put(f"d/{i}", blob(PART, seed=i)) for i in range(3)]
    cfg = dataclasses.replace(config(), warm_limit=4, warm_max_size=4 * PART)
    async with running(source, cache_dir, cfg) as p:
        for m in metas:
            assert p.warm(m)
        await settle(p)
        reader = p.open(metas[1])
        await reader.aclose()
        reader = p.open(metas[1])  # a second open is not a second use of the warming
        await reader.aclose()
        sample = p.metrics.registry.get_sample_value
        assert sample("ossmount_warmed_objects_total") == 3
        assert sample("ossmount_warmed_objects_opened_total") == 1
