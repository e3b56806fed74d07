"""The version fence (prefetch.fence): a replaced or deleted object, disagreeing CRC-64 headers.

Set-up and synchronisation as tests/unit/prefetch_helpers.py describes.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import trio
import trio.testing

from ossmount.cache.entry import EntryState
from ossmount.oss.models import ObjectMeta
from ossmount.prefetch import (
    DownloadFailed,
    ObjectChanged,
)
from ossmount.prefetch.fence import CRC_DISPUTES
from tests.unit.fake_source import FakeSource
from tests.unit.prefetch_helpers import (
    KEY,
    PART,
    blob,
    files,
    put_blob,
    read_all,
    running,
    settle,
    state_of,
    without_crc,
)


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
