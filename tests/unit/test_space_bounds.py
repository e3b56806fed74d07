"""The cap and the free-space floor hold to within one part while one large object streams
(issue 14 finding 6): every part GET reserves its bytes before it writes one."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from tests.unit.fake_source import FakeSource
from tests.unit.prefetch_helpers import (
    KEY,
    PART,
    blob,
    config,
    files,
    read_all,
    running,
    settle,
)

__all__ = ["PART"]  # the `source` fixture reads the module's PART

BIG_PARTS = 40
BIG = (BIG_PARTS - 1) * PART + 777


def allocated(path: Path) -> int:
    """Bytes the file holds on disk (its blocks; the cache file is sparse)."""
    try:
        return os.stat(path).st_blocks * 512
    except FileNotFoundError:
        return 0


def watch_every_write(source: FakeSource, path: Path, peaks: list[int]) -> None:
    """After each part's bytes are written (before its GET returns), note the file's size."""
    for offset in range(0, BIG, PART):
        source.hooks[(KEY, offset)] = lambda: peaks.append(allocated(path))


async def stream_peaks(
    source: FakeSource,
    cache_dir: Path,
    *,
    cap: int | None = None,
    disk: tuple[int, int, pytest.MonkeyPatch] | None = None,
    shed_margin: int | None = None,
    chunk: int = PART,
) -> list[int]:
    """Read the BIG object through a prefetcher bounded by `cap`, or by a pretend `disk`
    (size, free-space floor, the test's monkeypatch); the file's allocated size after each
    part's write."""
    data = blob(BIG)
    meta = source.put(KEY, data)
    path = files(cache_dir)[0]
    peaks: list[int] = []
    watch_every_write(source, path, peaks)
    cfg = (
        config() if shed_margin is None else dataclasses.replace(config(), shed_margin=shed_margin)
    )
    async with running(source, cache_dir, cfg, max_bytes=cap) as p:
        if disk is not None:
            size, floor, monkeypatch = disk
            p.store.min_free = floor
            monkeypatch.setattr(p.store, "free_bytes", lambda: size - allocated(path))
        reader = p.open(meta)
        assert await read_all(reader, chunk=chunk) == data
        await settle(p)
        await reader.aclose()
    return peaks


async def test_the_cap_holds_to_within_one_part_while_an_object_streams(
    source: FakeSource, cache_dir: Path
) -> None:
    cap = 6 * PART
    peaks = await stream_peaks(source, cache_dir, cap=cap)
    assert len(peaks) >= BIG_PARTS - 1
    assert max(peaks) <= cap + PART, [x // PART for x in peaks]


async def test_the_free_space_floor_holds_to_within_one_part(
    source: FakeSource, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pretend 12-part disk with a 6-part floor: the file never takes more than 6 + 1."""
    disk, floor = 12 * PART, 6 * PART
    # Reads of 4 parts each: demand parts, which reserve too (not only read-ahead).
    peaks = await stream_peaks(source, cache_dir, disk=(disk, floor, monkeypatch), chunk=4 * PART)
    assert len(peaks) >= BIG_PARTS - 1
    assert disk - max(peaks) >= floor - PART, [x // PART for x in peaks]


async def test_the_cap_holds_when_the_shed_margin_is_wider_than_the_cap(
    source: FakeSource, cache_dir: Path
) -> None:
    """The mount's shed margin (twice the kernel read-ahead, 8 MiB) spans half of a 16 MiB
    cap: every part held may lie within it behind the reader, with no GET in flight to wait
    for. A demand part then sheds inside the margin rather than pass the cap by more than one
    part (it did, a part more each time: the mount test's 20 MiB against a 16 + 2 bound)."""
    cap = 3 * PART
    peaks = await stream_peaks(source, cache_dir, cap=cap, shed_margin=8 * PART)
    assert len(peaks) >= BIG_PARTS - 1
    assert max(peaks) <= cap + PART, [x // PART for x in peaks]


async def test_the_floor_holds_when_the_shed_margin_is_wider_than_the_room_above_it(
    source: FakeSource, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As above for the free-space floor: a pretend 9-part disk with a 6-part floor."""
    disk, floor = 9 * PART, 6 * PART
    peaks = await stream_peaks(
        source, cache_dir, disk=(disk, floor, monkeypatch), shed_margin=8 * PART
    )
    assert len(peaks) >= BIG_PARTS - 1
    assert disk - max(peaks) >= floor - PART, [x // PART for x in peaks]
