"""Shedding parts of a cache entry (objects bigger than the cache) and the holes it relies on.

Parts here are one 4 KiB block, so every punch deallocates whole blocks and shows as a hole.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from ossmount.cache.checkpoint import EntryState, load
from ossmount.cache.entry import CacheEntry
from ossmount.cache.errors import EntryStateError, PartMismatch
from ossmount.cache.holes import hole_spans, probe, punch_hole
from ossmount.cache.opening import open_entry as open_cache_entry
from ossmount.crc64 import crc64
from ossmount.oss.models import ObjectMeta
from tests.unit.cache_helpers import write_part

BLOCK = 4096
PARTS = 6
DATA = random.Random(7).randbytes(PARTS * BLOCK - 100)  # the last part is short
KEY = "big/object.bin"
META = ObjectMeta(key=KEY, size=len(DATA), etag='"E"', mtime_ns=1, crc64=crc64(DATA))


def open_entry(tmp_path: Path) -> CacheEntry:
    return open_cache_entry(
        bucket="bkt",
        meta=META,
        part_size=BLOCK,
        path=tmp_path / "obj.data",
        checkpoint_path=tmp_path / "obj.ckpt",
    )


def full_entry(tmp_path: Path) -> CacheEntry:
    entry = open_entry(tmp_path)
    for index in range(PARTS):
        start, length = entry.layout.span(index)
        write_part(entry, index, DATA[start : start + length])
    return entry


def test_holes_are_punched_found_and_the_filesystem_probed(tmp_path: Path) -> None:
    assert probe(tmp_path) is None
    assert list(tmp_path.iterdir()) == []  # the probe's scratch file is gone
    path = tmp_path / "f"
    path.write_bytes(b"x" * (5 * BLOCK))
    fd = os.open(path, os.O_RDWR)
    try:
        assert hole_spans(fd, 5 * BLOCK) == []
        punch_hole(fd, BLOCK, BLOCK)
        punch_hole(fd, 4 * BLOCK, BLOCK)
        assert hole_spans(fd, 5 * BLOCK) == [(BLOCK, 2 * BLOCK), (4 * BLOCK, 5 * BLOCK)]
        assert os.pread(fd, BLOCK, BLOCK) == bytes(BLOCK)
        assert os.fstat(fd).st_size == 5 * BLOCK  # the size is kept
        with pytest.raises(OSError, match="PUNCH_HOLE"):
            punch_hole(-1, 0, BLOCK)
    finally:
        os.close(fd)


def test_shed_parts_free_their_blocks_keep_their_crcs_and_refuse_reads(tmp_path: Path) -> None:
    entry = full_entry(tmp_path)
    assert entry.verify().state is EntryState.VERIFIED
    before = os.fstat(entry.fd).st_blocks
    assert entry.shed([0, 1, 3]) == 3 * BLOCK
    assert os.fstat(entry.fd).st_blocks == before - 3 * BLOCK // 512
    assert entry.cached_bytes == len(DATA) - 3 * BLOCK
    assert entry.complete
    assert not entry.all_present
    assert entry.present_parts() == [2, 4, 5]
    with pytest.raises(EntryStateError, match=r"needs parts \[1\]"):
        entry.read(BLOCK, 10)
    assert entry.verify().state is EntryState.VERIFIED  # from the kept CRCs, no re-read
    assert entry.shed([0]) == 0  # already shed: nothing to do
    entry.close()


def test_a_shed_part_comes_back_only_with_the_same_crc(tmp_path: Path) -> None:
    entry = full_entry(tmp_path)
    entry.verify()
    entry.shed([2])
    with pytest.raises(PartMismatch, match=r"part 2 .* fetched again with CRC-64"):
        entry.record_part(2, crc64(b"other bytes"))
    assert not entry.is_done(2)
    start, length = entry.layout.span(2)
    write_part(entry, 2, DATA[start : start + length])  # allowed though VERIFIED
    assert entry.all_present
    assert entry.read(0, len(DATA)) == DATA
    entry.close()


def test_the_checkpoint_lists_present_parts_and_claims_no_verdict_while_any_is_shed(
    tmp_path: Path,
) -> None:
    entry = full_entry(tmp_path)
    entry.verify()
    entry.shed([0, 1])
    entry.flush()
    cp = load(tmp_path / "obj.ckpt")
    assert cp is not None
    assert set(cp.part_crcs) == {2, 3, 4, 5}
    assert cp.state is EntryState.PARTIAL
    inode = (tmp_path / "obj.ckpt").stat().st_ino
    entry.flush()  # nothing changed since: no rewrite (a rewrite renames a new file in)
    assert (tmp_path / "obj.ckpt").stat().st_ino == inode
    entry.close()

    resumed = open_entry(tmp_path)
    assert resumed.present_parts() == [2, 3, 4, 5]
    assert resumed.state is EntryState.PARTIAL
    resumed.close()


def test_a_checkpoint_listing_a_punched_part_is_not_trusted_for_it(tmp_path: Path) -> None:
    entry = full_entry(tmp_path)
    entry.verify()
    entry.flush()  # VERIFIED with every part on disk
    entry.shed([4])  # ... then punched, and the process dies before the next flush
    os.close(entry.fd)
    cp = load(tmp_path / "obj.ckpt")
    assert cp is not None
    assert cp.state is EntryState.VERIFIED
    assert 4 in cp.part_crcs

    resumed = open_entry(tmp_path)
    assert resumed.state is EntryState.PARTIAL
    assert resumed.present_parts() == [0, 1, 2, 3, 5]
    with pytest.raises(EntryStateError):
        resumed.read(4 * BLOCK, 1)
    resumed.close()


def test_a_part_without_a_whole_block_is_never_shed(tmp_path: Path) -> None:
    """A punch would only zero it, leaving no hole to find after a crash: it stays."""
    tiny = b"small object"
    meta = ObjectMeta(key="tiny", size=len(tiny), etag='"T"', mtime_ns=1, crc64=crc64(tiny))
    entry = open_cache_entry(
        bucket="bkt",
        meta=meta,
        part_size=BLOCK,
        path=tmp_path / "t.data",
        checkpoint_path=tmp_path / "t.ckpt",
    )
    write_part(entry, 0, tiny)
    assert entry.shed([0]) == 0
    assert entry.read(0, len(tiny)) == tiny
    entry.close()
