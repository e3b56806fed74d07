"""The read-path scheduler (ossmount/prefetch/) against an in-memory source and a real cache.

Every test runs a `Prefetcher` in a nursery over a `FakeSource` (tests/unit/fake_source.py) and
a real, locked `CacheStore` under tmp_path. Synchronisation is by gates, events,
`wait_all_tasks_blocked` and trio's MockClock, never by wall-clock sleeps.

Reads that must not trigger read-ahead start at a non-zero offset on a fresh handle: a
handle's first read is "sequential" only at offset 0 (pattern.ReadaheadWindow).
"""

from __future__ import annotations

import errno
import os
import threading
from collections import Counter
from pathlib import Path

import pytest
import trio
import trio.testing
from trio.testing import MockClock, wait_all_tasks_blocked

from ossmount.cache.entry import CacheEntry, EntryState
from ossmount.cache.store import key_hash
from ossmount.oss.models import ObjectMeta
from ossmount.prefetch import (
    DownloadFailed,
    ObjectChanged,
    ObjectCorrupt,
    ObjectReader,
    Prefetcher,
)
from ossmount.prefetch.fence import CRC_DISPUTES
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
    files,
    flushed,
    open_store,
    part_of,
    put_blob,
    read_all,
    running,
    settle,
    state_of,
    without_crc,
)

# --------------------------------------------------------------------- reading patterns


async def test_sequential_read_returns_the_exact_bytes_and_fetches_each_part_once(
    source: FakeSource, cache_dir: Path
) -> None:
    data, meta = put_blob(source)
    async with running(source, cache_dir) as p:
        reader = p.open(meta)
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
    data, meta = put_blob(source)
    async with running(source, cache_dir) as p:
        reader = p.open(meta)
        assert await reader.read(0, PART) == data[:PART]
        await settle(p)
        # A first read of the whole head part opens a window of two parts past its end.
        assert source.part_calls(KEY) == Counter({0: 1, 1: 1, 2: 1})
        await reader.aclose()


async def test_a_peek_inside_the_head_part_fetches_nothing_more(
    source: FakeSource, cache_dir: Path
) -> None:
    data, meta = put_blob(source)
    async with running(source, cache_dir) as p:
        reader = p.open(meta)
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
    data, meta = put_blob(source)
    async with running(source, cache_dir) as p:
        reader = p.open(meta)
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
    data, meta = put_blob(source)
    async with running(source, cache_dir) as p:
        reader = p.open(meta)
        assert await reader.read(SIZE, 4096) == b""
        assert await reader.read(SIZE + 10 * PART, 1) == b""
        assert await reader.read(SIZE - 10, 4096) == data[-10:]
        await reader.aclose()


# --------------------------------------------------------------------- sharing and limits


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


# --------------------------------------------------------------------- object changed


async def test_precondition_failed_is_object_changed_and_the_new_version_reads(
    source: FakeSource, cache_dir: Path
) -> None:
    old = blob(seed=1)
    meta1 = source.put(KEY, old)
    async with running(source, cache_dir) as p:
        reader = p.open(meta1)
        assert await reader.read(1, 10) == old[1:11]
        new = blob(seed=2)
        meta2 = source.put(KEY, new)  # replaced: If-Match on the old ETag now gets a 412
        with pytest.raises(ObjectChanged, match="changed or deleted"):
            await reader.read(5 * PART + 1, 10)
        with pytest.raises(ObjectChanged):  # the download failed for good, even cached parts
            await reader.read(1, 10)
        assert not files(cache_dir)[1].exists()
        fresh = p.open(meta2)
        assert await read_all(fresh) == new
        assert state_of(p, fresh) is EntryState.VERIFIED
        await reader.aclose()
        await fresh.aclose()


async def test_deleted_object_is_object_changed(source: FakeSource, cache_dir: Path) -> None:
    meta = source.put(KEY, blob())
    source.delete(KEY)
    async with running(source, cache_dir) as p:
        reader = p.open(meta)
        with pytest.raises(ObjectChanged):
            await reader.read(1, 10)
        await reader.aclose()


async def test_different_etag_in_a_response_is_object_changed(
    source: FakeSource, cache_dir: Path
) -> None:
    old = blob(seed=1)
    meta1 = source.put(KEY, old)
    source.honour_if_match = False  # e.g. a stale replica: only the reply's ETag tells
    source.etag_header[(KEY, 2 * PART)] = '"another-version"'
    async with running(source, cache_dir) as p:
        reader = p.open(meta1)
        assert await reader.read(1, 10) == old[1:11]
        with pytest.raises(ObjectChanged, match="another-version"):
            await reader.read(2 * PART + 1, 10)
        data_file, ckpt = files(cache_dir)
        assert not data_file.exists()
        assert not ckpt.exists()
        new = blob(seed=2)
        meta2 = source.put(KEY, new)
        source.etag_header.clear()
        fresh = p.open(meta2)
        assert await read_all(fresh) == new
        await reader.aclose()
        await fresh.aclose()


async def test_crc_header_disputed_between_parts_is_eio_naming_both_crcs(
    source: FakeSource, cache_dir: Path
) -> None:
    """Same ETag, a CRC header that keeps disagreeing: a bad server, not a new version
    (issue 14 finding 5). Tried CRC_DISPUTES times, settled by a HEAD, then EIO."""
    data, meta = put_blob(source)
    assert meta.crc64 is not None
    source.crc_header[(KEY, 2 * PART)] = meta.crc64 ^ 1
    async with running(source, cache_dir) as p:
        reader = p.open(without_crc(meta))  # a listing's meta: the CRC comes from part 0
        assert await reader.read(1, 10) == data[1:11]
        with pytest.raises(DownloadFailed, match="CRC headers disagree") as caught:
            await reader.read(2 * PART + 1, 10)
        assert not isinstance(caught.value, ObjectChanged)
        assert str(meta.crc64) in str(caught.value)
        assert str(meta.crc64 ^ 1) in str(caught.value)
        assert source.part_calls(KEY)[2] == CRC_DISPUTES
        assert source.heads == [KEY]
        await reader.aclose()


def put_with_wrong_crc_header(source: FakeSource, *, once: bool) -> tuple[bytes, ObjectMeta]:
    """The standard object, whose part-0 GET replies carry a wrong CRC-64 header: all of
    them, or (`once`) only the first."""
    data, meta = put_blob(source)
    assert meta.crc64 is not None
    source.crc_header[(KEY, 0)] = meta.crc64 ^ 1
    if once:

        def drop_the_lie() -> None:
            source.crc_header.pop((KEY, 0))

        source.hooks[(KEY, 0)] = drop_the_lie
    return data, meta


async def test_crc_header_disagreeing_with_the_opened_meta_is_not_object_changed(
    source: FakeSource, cache_dir: Path
) -> None:
    meta = put_with_wrong_crc_header(source, once=False)[1]
    async with running(source, cache_dir) as p:
        reader = p.open(meta)
        with pytest.raises(DownloadFailed, match="CRC headers disagree"):
            await reader.read(1, 10)
        await reader.aclose()


async def test_one_reply_with_a_wrong_crc_header_is_fetched_again(
    source: FakeSource, cache_dir: Path
) -> None:
    data, meta = put_with_wrong_crc_header(source, once=True)
    async with running(source, cache_dir) as p:
        reader = p.open(meta)
        assert await read_all(reader) == data
        assert source.part_calls(KEY)[0] == 2
        assert state_of(p, reader) is EntryState.VERIFIED
        await reader.aclose()


async def test_a_wrong_crc_learnt_from_the_first_reply_is_corrected_by_head(
    source: FakeSource, cache_dir: Path
) -> None:
    """A listing's meta has no CRC: the first reply's (wrong) header is learnt; the later
    replies and a HEAD agree on another one, so that one is right and the read goes on."""
    data, meta = put_with_wrong_crc_header(source, once=True)
    async with running(source, cache_dir) as p:
        reader = p.open(without_crc(meta))
        assert await read_all(reader) == data
        await settle(p)
        assert p.cached_state(meta) == ("verified", meta.crc64)
        assert source.heads == [KEY]
        await reader.aclose()


async def test_a_part_landing_after_the_download_failed_is_dropped(
    source: FakeSource, cache_dir: Path
) -> None:
    """Two GETs complete in the same scheduling step; the first says the object changed.

    The second worker was already rescheduled, so the failure's cancellation does not reach
    it: it must notice the failure itself instead of recording into the discarded entry
    (which raises, and would take the whole service nursery down).
    """
    _data, meta = put_blob(source)
    gate0, gate1 = source.gate(KEY, 0), source.gate(KEY, 1)
    source.etag_header[(KEY, 0)] = '"another-version"'
    source.honour_if_match = False
    source.hooks[(KEY, 0)] = gate1.release.set  # part 1's reply arrives with part 0's
    async with running(source, cache_dir) as p:
        reader = p.open(meta)
        async with trio.open_nursery() as nursery:

            async def read() -> None:
                with pytest.raises(ObjectChanged):
                    await reader.read(1, 2 * PART - 1)

            nursery.start_soon(read)
            await gate0.arrived.wait()
            await gate1.arrived.wait()
            gate0.release.set()
        await settle(p)
        assert source.part_calls(KEY) == Counter({0: 1, 1: 1})
        assert not files(cache_dir)[0].exists()
        await reader.aclose()


# --------------------------------------------------------------------- integrity verdict


async def test_crc_mismatch_fails_the_final_read_discards_and_the_next_open_refetches(
    source: FakeSource, cache_dir: Path
) -> None:
    data, meta = put_blob(source)
    source.flip.add((KEY, 3 * PART + 7))
    async with running(source, cache_dir) as p:
        reader = p.open(meta)
        with pytest.raises(ObjectCorrupt, match="CRC-64 mismatch"):
            await read_all(reader)
        data_file, ckpt = files(cache_dir)
        assert not data_file.exists()
        assert not ckpt.exists()
        assert p.cached_state(meta) == ("uncached", None)
        with pytest.raises(ObjectCorrupt):
            await reader.read(0, 10)
        await reader.aclose()

        source.flip.clear()
        fresh = p.open(meta)
        assert await read_all(fresh) == data
        assert state_of(p, fresh) is EntryState.VERIFIED
        assert source.part_calls(KEY) == Counter(dict.fromkeys(range(PARTS), 2))
        await fresh.aclose()


async def test_a_whole_object_read_never_returns_bytes_that_failed_verification(
    source: FakeSource, cache_dir: Path
) -> None:
    _data, meta = put_blob(source)
    source.flip.add((KEY, SIZE - 1))
    async with running(source, cache_dir) as p:
        reader = p.open(meta)
        with pytest.raises(ObjectCorrupt):
            await reader.read(0, SIZE)
        await reader.aclose()


async def test_object_without_crc_header_is_unverifiable(
    source: FakeSource, cache_dir: Path
) -> None:
    data = blob()
    meta = source.put(KEY, data, crc=False)
    async with running(source, cache_dir) as p:
        reader = p.open(meta)
        assert await read_all(reader) == data
        assert state_of(p, reader) is EntryState.UNVERIFIABLE
        assert p.cached_state(meta) == ("unverifiable", None)
        await reader.aclose()
    assert durable_parts(cache_dir) == set(range(PARTS))


# --------------------------------------------------------------------- durability


async def test_a_flush_starts_as_soon_as_a_part_is_recorded(
    source: FakeSource, cache_dir: Path, mock_clock: MockClock
) -> None:
    """No timer, no batch of eight (issue 14 finding 3): the clock stands still here."""
    _data, meta = put_blob(source)
    async with running(source, cache_dir) as p:
        reader = p.open(meta)
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
    """While a flush hangs in its fdatasync, workers start no GET once more than one recorded
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
        assert len(flushes) < PARTS  # fdatasyncs are batched: not one per part
        await reader.aclose()


async def test_the_last_handle_closing_during_a_background_flush_still_releases_the_entry(
    source: FakeSource, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _data, meta = put_blob(source)
    async with running(source, cache_dir) as p:
        reader = p.open(meta)
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
    data, meta = put_blob(source)
    async with running(source, cache_dir) as p:
        reader = p.open(meta)
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


async def test_zero_byte_object_needs_no_get(source: FakeSource, cache_dir: Path) -> None:
    meta = source.put(KEY, b"")
    async with running(source, cache_dir) as p:
        reader = p.open(meta)
        assert await reader.read(0, 4096) == b""
        assert await reader.read(10, 4096) == b""
        await settle(p)
        assert state_of(p, reader) is EntryState.VERIFIED
        await reader.aclose()
    assert source.calls == []
    assert source.heads == []


# --------------------------------------------------------------------- cancellation


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
        got: list[bytes] = []
        async with trio.open_nursery() as nursery:

            async def read() -> None:
                got.append(await b.read(4 * PART + 1, 100))

            nursery.start_soon(read)
            await wait_all_tasks_blocked()
            gate.release.set()
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
        got: list[bytes] = []
        async with trio.open_nursery() as nursery:

            async def read() -> None:
                got.append(await b.read(4 * PART + 1, 100))

            nursery.start_soon(read)
            await wait_all_tasks_blocked()
            gate.release.set()
        assert got == [data[4 * PART + 1 : 4 * PART + 101]]
        assert source.part_calls(KEY) == Counter({4: 1})
        await b.aclose()
        await settle(p)
        assert p.statistics()["downloads"] == 0
        assert p.store.statistics().in_use == 0


# --------------------------------------------------------------------- bigger than the cache

BIG_PARTS = 40
BIG = (BIG_PARTS - 1) * PART + 777
CAP = 6 * PART


async def test_an_object_bigger_than_the_cap_streams_through_and_is_verified_whole(
    source: FakeSource, cache_dir: Path
) -> None:
    data = blob(BIG)
    meta = source.put(KEY, data)
    async with running(source, cache_dir, max_bytes=CAP) as p:
        reader = p.open(meta)
        assert await read_all(reader, chunk=PART) == data
        await settle(p)
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
    data = blob(BIG)
    meta = source.put(KEY, data)
    async with running(source, cache_dir, max_bytes=CAP) as p:
        reader = p.open(meta)
        assert await read_all(reader, chunk=PART) == data
        await settle(p)
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


async def test_readahead_waits_for_room_on_the_cache_disk(
    source: FakeSource, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read-ahead never fills the cache disk; parts a reader asks for still go."""
    data, meta = put_blob(source)
    async with running(source, cache_dir) as p:
        free = {"bytes": 0}
        monkeypatch.setattr(p.store, "free_bytes", lambda: free["bytes"])
        reader = p.open(meta)
        assert await reader.read(0, PART) == data[:PART]
        await settle(p)
        assert source.part_calls(KEY) == Counter({0: 1})  # no room: no read-ahead
        free["bytes"] = 1 << 30
        assert await read_all(reader, chunk=PART) == data
        await settle(p)
        assert source.part_calls(KEY) == Counter(range(PARTS))
        await reader.aclose()


def disk_full_once(monkeypatch: pytest.MonkeyPatch, file_offset: int) -> None:
    """The next write of a part into a cache file at `file_offset` finds the disk full."""
    real_pwrite = os.pwrite
    armed = [True]

    def pwrite(fd: int, data: bytes | memoryview, offset: int) -> int:
        if armed[0] and offset == file_offset:
            armed[0] = False
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)


async def test_a_part_that_met_a_full_disk_is_tried_again_once_there_is_room(
    source: FakeSource, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parallel GETs race for freed space: ENOSPC with room now free is worth another try;
    with no room to be had the read fails with the cache dir's name in the error."""
    data, meta = put_blob(source)
    async with running(source, cache_dir) as p:
        free = {"bytes": 1 << 30}
        monkeypatch.setattr(p.store, "free_bytes", lambda: free["bytes"])
        disk_full_once(monkeypatch, 2 * PART)
        reader = p.open(meta)
        assert await reader.read(2 * PART, 10) == data[2 * PART : 2 * PART + 10]
        assert source.part_calls(KEY)[2] == 2

        free["bytes"] = 0
        disk_full_once(monkeypatch, 5 * PART)
        with pytest.raises(DownloadFailed, match=f"the cache dir {p.store.root} is full"):
            await reader.read(5 * PART, 10)
        await reader.aclose()


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
