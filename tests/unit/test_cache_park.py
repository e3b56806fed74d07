"""CacheStore parks released entries: a reopen of the same version in this process takes the
open entry back (no checkpoint read, no file open, no re-hash), within a bound (issue 13)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ossmount.cache import CacheEntry, CacheStore, EntryState, opening
from ossmount.cache import parked as parked_module
from ossmount.cache.adopt import seal_for_cache
from ossmount.crc64 import crc64
from ossmount.oss.models import ObjectMeta
from tests.unit.cache_helpers import write_part

PART = 16
BUCKET = "my-bucket"


def obj(key: str, data: bytes, etag: str = '"E1"') -> ObjectMeta:
    return ObjectMeta(
        key=key, size=len(data), etag=etag, mtime_ns=1_700_000_000_000_000_000,
        crc64=crc64(data),
    )  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CacheStore]:
    s = CacheStore(tmp_path / "cache", bucket=BUCKET)
    s.lock()
    yield s
    s.close()


def cache_clean(store: CacheStore, key: str, data: bytes, etag: str = '"E1"') -> CacheEntry:
    """Open, fill, verify and flush an entry, then release it as a download does."""
    entry = store.open_entry(obj(key, data, etag), PART)
    for i in range(entry.layout.count):
        start, length = entry.layout.span(i)
        write_part(entry, i, data[start : start + length])
    assert entry.verify().state is EntryState.VERIFIED
    entry.flush()
    store.release(entry)
    return entry


def fd_is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def no_reopen(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(**kwargs: object) -> CacheEntry:
        raise AssertionError("the checkpoint was read and the file opened again")

    monkeypatch.setattr(opening, "open_entry", refuse)


def test_a_reopen_takes_the_parked_entry_back_without_reading_anything(
    store: CacheStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(100)
    first = cache_clean(store, "a", data)
    assert first.usable
    assert fd_is_open(first.fd)
    assert store.statistics().in_use == 0
    assert store.held_bytes() == 100  # idle, counted as released
    no_reopen(monkeypatch)
    again = store.open_entry(obj("a", data), PART)
    assert again is first
    assert again.all_present  # hashed as received in this process: no re-check needed
    assert again.read(0, 100) == data
    assert store.cached_checkpoint("b") is None
    store.release(again)
    assert store.cached_checkpoint("a") == first.checkpoint()


def test_another_version_closes_the_parked_entry_and_starts_fresh(store: CacheStore) -> None:
    old, new = os.urandom(100), os.urandom(60)
    first = cache_clean(store, "a", old)
    second = store.open_entry(obj("a", new, '"E2"'), PART)
    assert second is not first
    assert not first.usable
    assert first.fd == -1
    assert second.present_parts() == []
    store.release(second)


def test_parked_entries_are_bounded_and_the_oldest_closed(
    store: CacheStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parked_module, "PARKED", 3)
    entries = [cache_clean(store, f"k{i}", os.urandom(40)) for i in range(5)]
    assert [e.usable for e in entries] == [False, False, True, True, True]
    assert all(e.fd == -1 for e in entries[:2])
    again = store.open_entry(entries[0].meta, PART)  # closed: opened from disk again
    assert again is not entries[0]
    assert again.present_parts() == [0, 1, 2]
    assert not again.all_present  # trusted from the checkpoint: re-checked before served
    store.release(again)


def test_an_unsaved_entry_is_closed_not_parked(store: CacheStore) -> None:
    data = os.urandom(50)
    entry = store.open_entry(obj("a", data), PART)
    write_part(entry, 0, data[:PART])
    store.release(entry)  # recorded but not flushed: the close path saves it
    assert not entry.usable
    again = store.open_entry(obj("a", data), PART)
    assert again is not entry
    assert again.present_parts() == [0]
    store.release(again)


def test_evicting_or_dropping_a_parked_entry_closes_it_first(tmp_path: Path) -> None:
    store = CacheStore(tmp_path / "cache", bucket=BUCKET, max_bytes=150)
    store.lock()
    try:
        a = cache_clean(store, "a", os.urandom(100))
        b = cache_clean(store, "b", os.urandom(100))  # over the cap: "a" goes
        assert not a.usable
        assert a.fd == -1
        assert b.usable
        assert store.drop_idle(10).entries == 1
        assert not b.usable
        assert b.fd == -1
        assert store.held_bytes() == 0
        assert list((tmp_path / "cache" / BUCKET).rglob("*.data")) == []
    finally:
        store.close()


def test_closing_the_store_closes_parked_entries(tmp_path: Path) -> None:
    store = CacheStore(tmp_path / "cache", bucket=BUCKET)
    store.lock()
    entry = cache_clean(store, "a", os.urandom(100))
    fd = entry.fd
    store.close()
    assert entry.fd == -1
    assert not fd_is_open(fd)
    again = CacheStore(tmp_path / "cache", bucket=BUCKET)
    again.lock()  # the files stayed for the next mount
    try:
        assert again.holds("a")
    finally:
        again.close()


def test_a_cold_open_reads_no_checkpoint_and_removes_nothing(
    store: CacheStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key the store's index does not hold has no files: nothing to read or remove."""
    touched: list[str] = []
    real_load = opening.load

    def load(path: Path, **kwargs: str) -> object:
        touched.append(path.name)
        return real_load(path, **kwargs)

    monkeypatch.setattr(opening, "load", load)
    data = os.urandom(50)
    entry = store.open_entry(obj("a", data), PART)
    assert touched == []
    assert os.fstat(entry.fd).st_size == 50
    store.release(entry)
    cache_clean(store, "b", data)
    store.close()  # a restart: "b" is on disk, so its open reads its checkpoint
    again = CacheStore(store.root, bucket=BUCKET)
    again.lock()
    try:
        b = again.open_entry(obj("b", data), PART)
        assert len(touched) == 1
        assert b.present_parts() == [0, 1, 2, 3]
        again.release(b)
    finally:
        again.close()


def test_a_stray_data_file_under_an_absent_key_takes_the_full_path(tmp_path: Path) -> None:
    """`absent` is a hint: a data file nobody indexed is replaced, never trusted."""
    data = os.urandom(50)
    path, ckpt = tmp_path / "x.data", tmp_path / "x.ckpt"
    path.write_bytes(b"stale bytes of some other run")
    entry = opening.open_entry(
        bucket=BUCKET, meta=obj("a", data), part_size=PART, path=path, checkpoint_path=ckpt,
        absent=True,
    )  # fmt: skip
    assert entry.present_parts() == []
    assert os.fstat(entry.fd).st_size == 50
    assert os.pread(entry.fd, 5, 0) == bytes(5)
    entry.close()
    assert not path.exists()


def test_adopting_a_committed_version_closes_the_parked_older_one(
    store: CacheStore, tmp_path: Path
) -> None:
    """cache.adopt renames a committed file in under the key: the parked entry of the version
    before must neither be handed out again nor touch the adopted files when it closes."""
    old, new = os.urandom(100), os.urandom(70)
    parked = cache_clean(store, "a", old)
    staged = tmp_path / "staged"
    staged.write_bytes(new)
    out = tmp_path / "staged.ckpt"
    committed = obj("a", new, '"E2"')
    assert seal_for_cache(staged, committed, bucket=BUCKET, part_size=PART, out=out) == 70
    store.adopt("a", staged, out, 70)
    assert parked.fd == -1
    assert not parked.usable
    entry = store.open_entry(committed, PART)
    assert entry is not parked
    assert entry.state is EntryState.VERIFIED
    for i in entry.present_parts():
        assert entry.recheck(i)
    assert entry.read(0, 70) == new
    store.release(entry)
