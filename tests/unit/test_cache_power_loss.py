"""What a power loss can leave of a cache entry, now that nothing is synced (issue 13).

cache.checkpoint, "Durability": the checkpoint and the data file are written without fsync or
fdatasync, so after a power loss they may disagree in every way the kernel's writeback order
allows. Each test builds one such disagreement by hand and checks that it costs a fetch and
never serves a wrong byte. If one fails, the reasoning that made the syncs unnecessary broke.
(A byte flipped at rest is tests/unit/test_recheck.py; through a download,
tests/unit/test_recheck_download.py; through a mount, tests/mount/test_integrity.py.)
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from ossmount.cache.checkpoint import EntryState, encode, load
from ossmount.cache.entry import CacheEntry
from ossmount.cache.errors import EntryStateError
from ossmount.cache.opening import open_entry as open_cache_entry
from ossmount.crc64 import crc64
from ossmount.oss.models import ObjectMeta
from tests.unit.cache_helpers import write_part
from tests.unit.fake_source import FakeSource
from tests.unit.prefetch_helpers import KEY, PART, cache_whole, files, put_blob, read_all, running

__all__ = ["PART"]  # the `source` fixture reads the module's PART

SMALL = 10
DATA = bytes(range(256)) * 2 + b"tail"  # 52 parts of SMALL bytes, the last one 6


def meta(data: bytes = DATA, etag: str = '"E1"') -> ObjectMeta:
    return ObjectMeta(
        key="dir/obj", size=len(data), etag=etag, mtime_ns=1_700_000_000_000_000_000,
        crc64=crc64(data),
    )  # fmt: skip


def open_entry(tmp_path: Path, m: ObjectMeta | None = None) -> CacheEntry:
    return open_cache_entry(
        bucket="bkt",
        meta=m or meta(),
        part_size=SMALL,
        path=tmp_path / "obj.data",
        checkpoint_path=tmp_path / "obj.ckpt",
    )


def cache_verified(tmp_path: Path, data: bytes = DATA, etag: str = '"E1"') -> None:
    entry = open_entry(tmp_path, meta(data, etag))
    for i in range(entry.layout.count):
        write_part(entry, i, data[i * SMALL : (i + 1) * SMALL])
    assert entry.verify().state is EntryState.VERIFIED
    entry.close()
    assert load(tmp_path / "obj.ckpt").state is EntryState.VERIFIED


def served(entry: CacheEntry) -> list[int]:
    """The parts a reader may get after every re-check ran (as a download runs them)."""
    return [i for i in entry.present_parts() if entry.recheck(i)]


def test_a_checkpoint_whose_data_never_reached_the_disk_serves_nothing(tmp_path: Path) -> None:
    """The checkpoint was written back, the data pages were not: the file reads zeros."""
    cache_verified(tmp_path)
    os.truncate(tmp_path / "obj.data", 0)
    (tmp_path / "obj.data").write_bytes(bytes(len(DATA)))  # allocated zeros, not holes
    entry = open_entry(tmp_path)
    assert entry.state is EntryState.VERIFIED  # what the checkpoint claims...
    assert served(entry) == []  # ...and not one part of it is believed
    assert entry.state is EntryState.PARTIAL
    with pytest.raises(EntryStateError):
        entry.read(0, 1)
    entry.flush()
    entry.close()
    on_disk = load(tmp_path / "obj.ckpt")
    assert on_disk.state is EntryState.PARTIAL
    assert on_disk.part_crcs == {}


def test_data_lost_as_holes_is_fetched_again_before_any_recheck(tmp_path: Path) -> None:
    """Delayed allocation lost: the file has its size but no blocks (reads zeros)."""
    cache_verified(tmp_path)
    os.truncate(tmp_path / "obj.data", 0)
    os.truncate(tmp_path / "obj.data", len(DATA))
    entry = open_entry(tmp_path)
    assert entry.present_parts() == []
    assert entry.state is EntryState.PARTIAL
    entry.close()


def test_half_written_data_keeps_only_the_parts_that_landed(tmp_path: Path) -> None:
    cache_verified(tmp_path)
    with open(tmp_path / "obj.data", "r+b") as f:
        f.seek(20 * SMALL + 3)
        f.write(bytes(len(DATA) - 20 * SMALL - 3))  # writeback stopped inside part 20
    entry = open_entry(tmp_path)
    assert served(entry) == list(range(20))
    assert entry.read(0, 20 * SMALL) == DATA[: 20 * SMALL]
    entry.close()


def test_bytes_of_an_older_version_under_the_new_checkpoint_are_caught(tmp_path: Path) -> None:
    """The new version's checkpoint reached the disk, its bytes did not: the old ones remain."""
    new = bytes(b ^ 0x5A if i % 3 == 0 else b for i, b in enumerate(DATA))
    cache_verified(tmp_path, DATA, '"E1"')
    old_bytes = (tmp_path / "obj.data").read_bytes()
    os.unlink(tmp_path / "obj.ckpt")
    cache_verified(tmp_path, new, '"E2"')
    (tmp_path / "obj.data").write_bytes(old_bytes)
    entry = open_entry(tmp_path, meta(new, '"E2"'))
    assert len(entry.present_parts()) == entry.layout.count
    assert served(entry) == []  # every part differs somewhere between the versions
    entry.close()


def test_a_torn_checkpoint_means_fetching_again(tmp_path: Path) -> None:
    cache_verified(tmp_path)
    whole = (tmp_path / "obj.ckpt").read_bytes()
    for cut in (0, 1, 15, 16, len(whole) // 2, len(whole) - 32, len(whole) - 1):
        (tmp_path / "obj.ckpt").write_bytes(whole[:cut])
        entry = open_entry(tmp_path)
        assert entry.present_parts() == [], cut
        assert entry.state is EntryState.PARTIAL
        assert os.fstat(entry.fd).st_size == len(DATA)
        entry.close()  # nothing recorded: no checkpoint, the data file goes too
        assert not (tmp_path / "obj.data").exists()
        cache_verified(tmp_path)
    assert (tmp_path / "obj.ckpt").read_bytes() == whole


def test_a_missing_checkpoint_means_fetching_again(tmp_path: Path) -> None:
    cache_verified(tmp_path)
    os.unlink(tmp_path / "obj.ckpt")
    entry = open_entry(tmp_path)
    assert entry.present_parts() == []
    entry.close()


def test_an_older_checkpoint_trusts_fewer_parts(tmp_path: Path) -> None:
    """A replacement's rename was lost: the checkpoint before it is back."""
    entry = open_entry(tmp_path)
    for i in range(5):
        write_part(entry, i, DATA[i * SMALL : (i + 1) * SMALL])
    entry.flush()
    older = encode(entry.checkpoint())
    for i in range(5, entry.layout.count):
        write_part(entry, i, DATA[i * SMALL : (i + 1) * SMALL])
    entry.close()
    (tmp_path / "obj.ckpt").write_bytes(older)
    again = open_entry(tmp_path)
    assert served(again) == list(range(5))
    again.close()


async def test_a_download_after_a_lost_writeback_fetches_and_serves_the_right_bytes(
    source: FakeSource, cache_dir: Path
) -> None:
    """The same through the prefetcher: a verified object whose data file lost its pages is
    fetched again whole, read right, and verified again."""
    data, obj = put_blob(source)
    assert await cache_whole(source, cache_dir, obj) == data
    data_file = files(cache_dir, KEY)[0]
    with open(data_file, "r+b") as f:
        f.write(bytes(len(data)))
    source.calls.clear()
    async with running(source, cache_dir) as p:
        reader = p.open(obj)
        assert await read_all(reader) == data
        await reader.aclose()
    parts = source.part_calls(KEY)
    assert parts == Counter(dict.fromkeys(range(len(parts)), 1))
    assert len(parts) > 1
