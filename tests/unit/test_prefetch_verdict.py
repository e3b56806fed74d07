"""The whole-object verdict (prefetch.verdict): CRC-64 mismatch, no CRC, an empty object.

Set-up and synchronisation as tests/unit/prefetch_helpers.py describes.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from ossmount.cache.entry import EntryState
from ossmount.prefetch import (
    ObjectCorrupt,
)
from tests.unit.fake_source import FakeSource
from tests.unit.prefetch_helpers import (
    KEY,
    PART,
    PARTS,
    SIZE,
    blob,
    durable_parts,
    files,
    put_blob,
    read_all,
    running,
    settle,
    state_of,
)


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
