"""What the read-path scheduler's unit tests share (test_prefetch_*.py, test_recheck_download.py,
test_warm.py, test_spot.py, test_space_bounds.py): one object's geometry, a prefetcher running
over a fresh store, and the ways the tests read and inspect it.

Each test runs a `Prefetcher` in a nursery over a `FakeSource` (tests/unit/fake_source.py) and
a real, locked `CacheStore` under tmp_path. Synchronisation is by gates, events,
`wait_all_tasks_blocked` and trio's MockClock, never by wall-clock sleeps.

Reads that must not trigger read-ahead start at a non-zero offset on a fresh handle: a
handle's first read is "sequential" only at offset 0 (pattern.ReadaheadWindow).
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio
from trio.testing import wait_all_tasks_blocked

from ossmount.cache.checkpoint import load
from ossmount.cache.entry import EntryState
from ossmount.cache.store import CacheStore, key_hash
from ossmount.observe import PrefetchObserver
from ossmount.oss.models import ObjectMeta
from ossmount.prefetch import ObjectReader, PrefetchConfig, Prefetcher, RangeSource
from ossmount.service.metrics import MountMetrics
from tests.unit.fake_source import BUCKET, FakeSource

PART = 4096
PARTS = 9
SIZE = (PARTS - 1) * PART + 1500  # the last part is short
KEY = "data/file.parquet"


def blob(size: int = SIZE, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def part_of(index: int, data: bytes) -> bytes:
    return data[index * PART : (index + 1) * PART]


def open_store(cache_dir: Path, max_bytes: int | None = None) -> CacheStore:
    store = CacheStore(cache_dir, bucket=BUCKET, max_bytes=max_bytes)
    store.lock()
    return store


def config(
    *,
    part_size: int = PART,
    parallel_count: int = 4,
    max_gets: int = 8,
    readahead_parts: int = 4,
    **more: int,
) -> PrefetchConfig:
    """The read path's settings for tests: small parts, read-ahead and shed margin counted in
    parts; `more` sets any other PrefetchConfig field (spot reads, warming)."""
    return PrefetchConfig(
        bucket=BUCKET,
        part_size=part_size,
        parallel_count=parallel_count,
        max_gets=max_gets,
        readahead_bytes=readahead_parts * part_size,
        shed_margin=part_size,
        **more,
    )


@asynccontextmanager
async def running(
    source: FakeSource,
    cache_dir: Path,
    cfg: PrefetchConfig | None = None,
    *,
    max_bytes: int | None = None,
) -> AsyncIterator[Prefetcher]:
    """A prefetcher over a fresh store on `cache_dir`, shut down as the mount does."""
    store = open_store(cache_dir, max_bytes)
    metrics = MountMetrics(bucket=BUCKET)
    async with prefetcher_over(source, store, cfg or config(), metrics) as prefetcher:
        yield prefetcher


@asynccontextmanager
async def prefetcher_over(
    source: RangeSource,
    store: CacheStore,
    cfg: PrefetchConfig,
    metrics: PrefetchObserver | None = None,
) -> AsyncIterator[Prefetcher]:
    """A prefetcher in its own nursery over a locked `store`, torn down as the mount does:
    its tasks cancelled, then `aclose` shielded (so in-flight flushes finish), then the store
    closed, which this context owns from the start even if the nursery fails to open."""
    try:
        async with trio.open_nursery() as nursery:
            prefetcher = Prefetcher(source, store, nursery, cfg, metrics)
            try:
                yield prefetcher
            finally:
                nursery.cancel_scope.cancel()
                with trio.CancelScope(shield=True):
                    await prefetcher.aclose()
    finally:
        store.close()


def crash(store: CacheStore) -> None:
    """Drop the store like a killed process: close the descriptors, flush nothing."""
    for slot in store._open.values():
        os.close(slot.entry.fd)
    assert store._lock_fd is not None
    os.close(store._lock_fd)


async def settle(prefetcher: Prefetcher) -> None:
    """Return once every task is blocked and the prefetcher has no work scheduled or running
    (part GETs, flushes in their threads, closes); a flush timer asleep is allowed."""
    await wait_all_tasks_blocked()
    await prefetcher.wait_idle()
    await wait_all_tasks_blocked()


flushed = settle  # a flush is work: once settled, none runs


def state_of(prefetcher: Prefetcher, reader: ObjectReader) -> EntryState:
    """The cache state of the version `reader` reads, as `user.ossmount.state` reports it."""
    return EntryState[prefetcher.cached_state(reader.meta)[0].upper()]


async def read_all(reader: ObjectReader, chunk: int = 3000) -> bytes:
    """Read the way `cp` does: sequential chunks until an empty read."""
    out = bytearray()
    while True:
        data = await reader.read(len(out), chunk)
        if not data:
            return bytes(out)
        out += data


def files(cache_dir: Path, key: str = KEY) -> tuple[Path, Path]:
    h = key_hash(key)
    d = cache_dir / BUCKET / h[:2]
    return d / f"{h}.data", d / f"{h}.ckpt"


def durable_parts(cache_dir: Path, key: str = KEY) -> set[int]:
    cp = load(files(cache_dir, key)[1], bucket=BUCKET, key=key)
    return set() if cp is None else set(cp.part_crcs)


def without_crc(meta: ObjectMeta) -> ObjectMeta:
    """`meta` as a listing reports it: no CRC-64."""
    return dataclasses.replace(meta, crc64=None)


def put_blob(source: FakeSource, key: str = KEY) -> tuple[bytes, ObjectMeta]:
    """Store the standard object under `key`; return its bytes and metadata."""
    data = blob()
    return data, source.put(key, data)


@asynccontextmanager
async def reading(
    source: FakeSource, cache_dir: Path, cfg: PrefetchConfig | None = None
) -> AsyncIterator[tuple[Prefetcher, ObjectReader, bytes, ObjectMeta]]:
    """The standard object (`put_blob`) and a handle open on it, in a prefetcher as `running`
    gives; the test closes the handle (some check what closing does)."""
    data, meta = put_blob(source)
    async with running(source, cache_dir, cfg) as p:
        yield p, p.open(meta), data, meta


async def cache_whole(source: FakeSource, cache_dir: Path, meta: ObjectMeta) -> bytes:
    """Read `meta` once end to end through a prefetcher that then shuts down, leaving the
    object cached on disk (verified when it has a CRC); return the bytes read."""
    async with running(source, cache_dir) as p:
        reader = p.open(meta)
        data = await read_all(reader)
        await reader.aclose()
    return data
