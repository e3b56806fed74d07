"""Parts trusted from a checkpoint are re-hashed before a reader gets them (issue 14, 1 + 2)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from ossmount.cache.checkpoint import EntryState, load
from ossmount.cache.checks import PartChecks
from ossmount.cache.entry import CacheEntry
from ossmount.cache.errors import EntryStateError
from ossmount.cache.recheck import CHUNK, hash_span
from ossmount.crc64 import crc64
from ossmount.oss.models import ObjectMeta
from tests.unit.cache_helpers import entry_in, write_part

PART = 10
DATA = bytes(range(256)) * 2 + b"tail"  # 52 parts, the last one 6 bytes
KEY = "dir/damaged key"


def meta(crc: bool = True) -> ObjectMeta:
    return ObjectMeta(
        key=KEY,
        size=len(DATA),
        etag='"E1"',
        mtime_ns=1_700_000_000_000_000_000,
        crc64=crc64(DATA) if crc else None,
    )


def open_entry(tmp_path: Path, m: ObjectMeta | None = None) -> CacheEntry:
    return entry_in(tmp_path, m or meta(), PART)


def cached(tmp_path: Path, parts: range | list[int], *, verified: bool = False) -> None:
    entry = open_entry(tmp_path)
    for i in parts:
        write_part(entry, i, DATA[i * PART : (i + 1) * PART])
    if verified:
        assert entry.verify().state is EntryState.VERIFIED
    entry.close()


def flip(tmp_path: Path, offset: int) -> None:
    with open(tmp_path / "obj.data", "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


def test_hash_span_matches_crc64_across_chunks(tmp_path: Path) -> None:
    data = os.urandom(CHUNK * 2 + 123)
    path = tmp_path / "f"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert hash_span(fd, 0, len(data)) == crc64(data)
        assert hash_span(fd, 7, CHUNK + 5) == crc64(data[7 : CHUNK + 12])
        assert hash_span(fd, 0, 0) == crc64(b"")
    finally:
        os.close(fd)


def test_part_checks_judge_a_rehash_only_against_the_bytes_it_hashed() -> None:
    checks = PartChecks([0, 1, 2])
    done = {0: 10, 1: 11, 2: 12}
    assert checks.missing(range(4), done) == [0, 1, 2, 3]
    assert not checks.damaged(0, 10, 10, done)  # the hash matched
    assert checks.ready(0, done)
    assert checks.settle(1)  # fetched again while it was being hashed: the new bytes stand
    done[1] = 99
    assert not checks.damaged(1, 11, 0, done)
    assert checks.ready(1, done)
    assert checks.damaged(2, 12, 13, done)  # damaged at rest: the caller forgets it
    assert 2 not in checks
    assert len(checks) == 0


def test_resumed_parts_are_not_served_until_rechecked(tmp_path: Path) -> None:
    cached(tmp_path, [0, 1, 2])
    entry = open_entry(tmp_path)
    assert entry.present_parts() == [0, 1, 2]
    assert entry.missing_parts([0, 1, 2, 3]) == [0, 1, 2, 3]
    assert entry.is_unchecked(1)
    assert not entry.is_done(1)
    with pytest.raises(EntryStateError, match="re-checked"):
        entry.read(0, 5)
    assert entry.recheck(0)
    assert entry.is_done(0)
    assert not entry.is_unchecked(0)
    assert entry.read(0, 5) == DATA[:5]
    assert entry.missing_parts([0, 1, 2]) == [1, 2]
    entry.close()


def test_a_part_damaged_at_rest_is_dropped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cached(tmp_path, [0, 1, 2])
    flip(tmp_path, PART + 3)
    entry = open_entry(tmp_path)
    with caplog.at_level(logging.WARNING, logger="ossmount.cache.checks"):
        assert not entry.recheck(1)
    good = crc64(DATA[PART : 2 * PART])
    bad = bytearray(DATA[PART : 2 * PART])
    bad[3] ^= 1
    message = caplog.text
    assert f"oss://bkt/{KEY}" in message
    assert "part 1 " in message
    assert str(good) in message
    assert str(crc64(bytes(bad))) in message
    assert entry.present_parts() == [0, 2]
    assert not entry.is_unchecked(1)
    with pytest.raises(EntryStateError):
        entry.read(PART, 1)
    # Fetched again with the same (right) CRC: the next flush must still persist it.
    write_part(entry, 1, DATA[PART : 2 * PART])
    assert entry.needs_flush
    entry.flush()
    assert entry.read(PART, PART) == DATA[PART : 2 * PART]
    entry.close()
    assert load(tmp_path / "obj.ckpt").part_crcs[1] == good


def test_a_damaged_verified_entry_is_no_longer_verified(tmp_path: Path) -> None:
    cached(tmp_path, range(52), verified=True)
    flip(tmp_path, 5 * PART)
    entry = open_entry(tmp_path)
    assert entry.state is EntryState.VERIFIED
    assert not entry.complete
    assert not entry.all_present
    results = [entry.recheck(i) for i in range(52)]
    assert results.count(False) == 1
    assert not results[5]
    assert entry.state is EntryState.PARTIAL
    entry.flush()
    on_disk = load(tmp_path / "obj.ckpt")
    assert on_disk.state is EntryState.PARTIAL
    assert 5 not in on_disk.part_crcs
    write_part(entry, 5, DATA[5 * PART : 6 * PART])
    assert entry.complete
    assert entry.all_present
    assert entry.verify().state is EntryState.VERIFIED
    entry.close()
    assert load(tmp_path / "obj.ckpt").state is EntryState.VERIFIED


def test_verdict_never_combines_crcs_of_parts_not_rehashed(tmp_path: Path) -> None:
    """Finding 2: a resumed PARTIAL part damaged at rest must not make the object verified."""
    cached(tmp_path, [0])
    flip(tmp_path, 2)
    entry = open_entry(tmp_path)
    for i in range(1, 52):
        write_part(entry, i, DATA[i * PART : (i + 1) * PART])
    assert not entry.complete  # part 0 is unchecked
    with pytest.raises(EntryStateError, match="not re-checked"):
        entry.verify()
    assert not entry.recheck(0)
    write_part(entry, 0, DATA[:PART])
    assert entry.verify().state is EntryState.VERIFIED
    assert entry.read(0, len(DATA)) == DATA
    entry.close()
