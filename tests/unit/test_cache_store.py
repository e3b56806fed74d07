"""CacheStore: layout, the one-mount lock, sharing, version replacement, LRU eviction."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ossmount.cache import (
    CacheEntry,
    CacheLayoutError,
    CacheLocked,
    CacheStore,
    EntryState,
    EntryStateError,
)
from ossmount.crc64 import crc64
from ossmount.oss.models import ObjectMeta
from tests.unit.cache_helpers import recheck_all, write_part

PART = 16
BUCKET = "my-bucket"


def obj(key: str, data: bytes, etag: str = '"E1"', *, crc: bool = True) -> ObjectMeta:
    return ObjectMeta(
        key=key,
        size=len(data),
        etag=etag,
        mtime_ns=1_700_000_000_000_000_000,
        crc64=crc64(data) if crc else None,
    )


def fill(entry: CacheEntry, data: bytes) -> None:
    for i in range(entry.layout.count):
        if not entry.is_done(i):
            start, length = entry.layout.span(i)
            write_part(entry, i, data[start : start + length])


def cache_idle(store: CacheStore, keys: str) -> dict[str, bytes]:
    """One cached, closed (idle) entry of 100 random bytes per key, in order; their bytes."""
    blobs = {k: os.urandom(100) for k in keys}
    for key in keys:
        e = store.open_entry(obj(key, blobs[key]), PART)
        fill(e, blobs[key])
        store.release(e)
    return blobs


def entry_files(root: Path, key: str) -> tuple[Path, Path]:
    h = hashlib.sha256(key.encode()).hexdigest()
    d = root / BUCKET / h[:2]
    return d / f"{h}.data", d / f"{h}.ckpt"


def test_layout_on_disk(store: CacheStore) -> None:
    root = store.root
    assert (root / "VERSION").read_text() == "2\n"
    assert (root / "lock").read_text() == f"{os.getpid()}\n"
    key = "weird/" + "\x00\n/..é" * 100 + "x" * 400  # long and full of anything
    data = b"hello world" * 5
    entry = store.open_entry(obj(key, data), PART)
    data_path, ckpt_path = entry_files(root, key)
    assert entry.path == data_path
    assert entry.checkpoint_path == ckpt_path
    fill(entry, data)
    entry.verify()
    store.release(entry)
    assert data_path.read_bytes() == data
    assert ckpt_path.exists()
    assert sorted(p.name for p in (root / BUCKET).iterdir()) == [data_path.parent.name]


def test_use_before_lock_is_refused(tmp_path: Path) -> None:
    s = CacheStore(tmp_path, bucket=BUCKET)
    with pytest.raises(EntryStateError, match="lock"):
        s.open_entry(obj("k", b"x"), PART)
    with pytest.raises(ValueError, match="bucket"):
        CacheStore(tmp_path, bucket="Bad_Bucket")


def test_lock_held_by_another_process(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    root.mkdir()
    holder = textwrap.dedent(
        f"""
        import fcntl, os, sys
        fd = os.open({str(root / "lock")!r}, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, f"{{os.getpid()}}\\n".encode())
        print("locked", flush=True)
        sys.stdin.read()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"locked\n"
        store = CacheStore(root, bucket=BUCKET)
        with pytest.raises(CacheLocked) as info:
            store.lock()
        assert info.value.pid == proc.pid
        assert info.value.root == root
        assert str(root) in str(info.value)
        assert str(proc.pid) in str(info.value)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)
        assert proc.stdout is not None
        proc.stdout.close()
    store.lock()  # the holder is gone: free again
    assert (root / "lock").read_text() == f"{os.getpid()}\n"
    store.close()


def test_second_store_in_same_process_is_locked_out(store: CacheStore) -> None:
    other = CacheStore(store.root, bucket="other-bucket")
    with pytest.raises(CacheLocked) as info:
        other.lock()
    assert info.value.pid == os.getpid()
    store.close()
    other.lock()
    other.close()


def test_foreign_layout_version_is_refused(tmp_path: Path) -> None:
    (tmp_path / "VERSION").write_text("99\n")
    s = CacheStore(tmp_path, bucket=BUCKET)
    with pytest.raises(CacheLayoutError, match="99"):
        s.lock()
    # The lock was not kept after the failure.
    (tmp_path / "VERSION").write_text("1\n")
    s.lock()
    s.close()


def test_same_version_is_shared_and_refcounted(store: CacheStore) -> None:
    data = os.urandom(100)
    a = store.open_entry(obj("k", data), PART)
    b = store.open_entry(obj("k", data, crc=False), PART)  # listing meta: no CRC, same version
    assert a is b
    assert store.statistics().in_use == 1
    store.release(a)
    assert a.fd >= 0  # still used by the second opener
    store.release(b)
    assert a.fd == -1
    with pytest.raises(EntryStateError):
        store.release(a)


def test_resume_across_stores_after_crash(tmp_path: Path) -> None:
    data = os.urandom(200)
    root = tmp_path / "cache"
    s1 = CacheStore(root, bucket=BUCKET)
    s1.lock()
    e = s1.open_entry(obj("k", data), PART)
    for i in (0, 1, 4):
        start, length = e.layout.span(i)
        write_part(e, i, data[start : start + length])
    e.flush()
    write_part(e, 2, data[32:48])  # never flushed
    # Crash: the process dies; the kernel closes its fds (and so drops the flock).
    os.close(e.fd)
    assert s1._lock_fd is not None
    os.close(s1._lock_fd)

    s2 = CacheStore(root, bucket=BUCKET)
    s2.lock()
    e2 = recheck_all(s2.open_entry(obj("k", data), PART))
    assert e2.missing_parts(range(e2.layout.count)) == [2, 3, *range(5, e2.layout.count)]
    fill(e2, data)
    assert e2.verify().state is EntryState.VERIFIED
    s2.release(e2)
    s2.close()


def test_new_version_while_old_in_use(store: CacheStore) -> None:
    old, new = os.urandom(64), os.urandom(80)
    e1 = store.open_entry(obj("k", old, '"v1"'), PART)
    fill(e1, old)
    e1.flush()
    e2 = store.open_entry(obj("k", new, '"v2"'), PART)
    assert e2 is not e1
    assert e2.missing_parts([0]) == [0]
    # The reader of the old version still reads the old bytes, from its unlinked file.
    assert e1.read(0, 64) == old
    fill(e2, new)
    e2.flush()
    store.release(e1)  # must not remove or overwrite the new version's files
    assert e2.path.read_bytes() == new
    assert e2.verify().state is EntryState.VERIFIED
    store.release(e2)
    cp = store.cached_checkpoint("k")
    assert cp is not None
    assert cp.etag == '"v2"'


def test_new_version_after_release_discards_old(store: CacheStore) -> None:
    old, new = os.urandom(64), os.urandom(64)
    e1 = store.open_entry(obj("k", old, '"v1"'), PART)
    fill(e1, old)
    store.release(e1)
    e2 = store.open_entry(obj("k", new, '"v2"'), PART)
    assert e2.missing_parts(range(4)) == [0, 1, 2, 3]
    store.release(e2)


def test_discarded_entry_is_not_handed_out_again(store: CacheStore) -> None:
    data = os.urandom(40)
    e1 = store.open_entry(obj("k", data), PART)
    fill(e1, b"\x00" * 40)
    assert e1.verify().state is EntryState.CORRUPT
    e1.discard()
    e2 = store.open_entry(obj("k", data), PART)  # another reader arrives before release
    assert e2 is not e1
    assert e2.missing_parts([0]) == [0]
    store.release(e1)
    fill(e2, data)
    assert e2.verify().state is EntryState.VERIFIED
    store.release(e2)
    assert store.statistics().entries == 1


def test_cached_checkpoint_reports_what_is_on_disk(store: CacheStore) -> None:
    data = os.urandom(50)
    m = obj("k", data)
    assert store.cached_checkpoint("k") is None
    e = store.open_entry(m, PART)
    fill(e, data)
    e.flush()
    assert store.cached_checkpoint("k") == e.checkpoint()  # in use: the live snapshot
    store.release(e)
    cp = store.cached_checkpoint("k")
    assert cp is not None
    assert cp.state is EntryState.PARTIAL  # complete but not verified
    e = recheck_all(store.open_entry(m, PART))
    e.verify()
    store.release(e)
    cp = store.cached_checkpoint("k")
    assert cp is not None
    assert cp.state is EntryState.VERIFIED
    assert cp.etag == '"E1"'


def test_startup_scan_cleans_orphans_and_accounts(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    s = CacheStore(root, bucket=BUCKET)
    s.lock()
    data = os.urandom(100)
    e = s.open_entry(obj("kept", data), PART)
    fill(e, data)
    s.release(e)
    s.close()
    sub = root / BUCKET / "ab"
    sub.mkdir()
    orphans = [sub / "ab12.data", sub / "ab34.ckpt", sub / "ab56.ckpt.tmp"]
    for p in orphans:
        p.write_bytes(b"x")
    s = CacheStore(root, bucket=BUCKET)
    s.lock()
    assert not any(p.exists() for p in orphans)
    stats = s.statistics()
    assert (stats.entries, stats.bytes, stats.in_use) == (1, 100, 0)
    s.close()


def test_entry_that_never_flushed_leaves_nothing(store: CacheStore) -> None:
    e = store.open_entry(obj("k", b"x" * 40), PART)
    store.release(e)
    assert not e.path.exists()
    assert store.statistics().entries == 0


def test_eviction_is_lru_and_never_touches_entries_in_use(tmp_path: Path) -> None:
    store = CacheStore(tmp_path, bucket=BUCKET, max_bytes=250)
    store.lock()
    blobs = {k: os.urandom(100) for k in "abcde"}

    def opened(key: str) -> CacheEntry:
        e = store.open_entry(obj(key, blobs[key]), PART)
        fill(e, blobs[key])
        e.flush()
        store.evict_to_fit()  # as the prefetcher does after each flush
        return e

    def on_disk(key: str) -> bool:
        return entry_files(tmp_path, key)[0].exists()

    store.release(opened("a"))
    store.release(opened("b"))
    a_again = store.open_entry(obj("a", blobs["a"]), PART)  # a is now more recent than b
    store.release(a_again)
    c = opened("c")  # 300 > 250: the least recently used released entry (b) goes
    assert not on_disk("b")
    assert on_disk("a")
    assert store.statistics().evictions == 1
    d = opened("d")  # a goes; c and d are in use
    assert not on_disk("a")
    e = opened("e")  # all three in use: over the limit, nothing evicted
    assert store.statistics().bytes == 300
    assert all(on_disk(k) for k in "cde")
    assert store.evict_to_fit() == 0
    assert e.read(0, 100) == blobs["e"]
    store.release(d)  # released and least recent among released: evicted at once
    assert not on_disk("d")
    assert on_disk("c")
    assert on_disk("e")
    assert store.statistics() == type(store.statistics())(
        bytes=200, entries=2, in_use=2, evictions=3, max_bytes=250
    )
    store.release(c)
    store.release(e)
    store.close()


def test_space_is_what_entries_hold_not_their_object_sizes(tmp_path: Path) -> None:
    """A footer read of a huge object holds a few parts; counting its size would evict all."""
    store = CacheStore(tmp_path, bucket=BUCKET, max_bytes=1000)
    store.lock()
    small = os.urandom(300)
    s = store.open_entry(obj("small", small), PART)
    fill(s, small)
    store.release(s)
    huge = ObjectMeta(key="huge", size=1 << 40, etag='"H"', mtime_ns=0, crc64=None)
    h = store.open_entry(huge, PART)  # 1 TiB, sparse
    last = h.layout.count - 1
    footer = os.urandom(PART)
    write_part(h, last, footer)  # the footer: one part
    h.flush()
    store.evict_to_fit()
    assert store.statistics().bytes == 300 + PART
    assert entry_files(tmp_path, "small")[0].exists()
    store.release(h)
    assert store.statistics().bytes == 300 + PART  # idle now, counted as it was released
    store.close()

    # After a restart: min(size, allocated blocks) of each data file, so block rounding, but
    # nowhere near 1 TiB.
    again = CacheStore(tmp_path, bucket=BUCKET, max_bytes=1 << 20)
    again.lock()
    held = again.statistics().bytes
    assert 300 + PART <= held <= 300 + 2 * 65536
    assert again.evict_to_fit() == 0
    again.close()


def test_a_growing_download_makes_room_before_it_is_released(tmp_path: Path) -> None:
    store = CacheStore(tmp_path, bucket=BUCKET, max_bytes=10 * PART)
    store.lock()
    old = os.urandom(6 * PART)
    e = store.open_entry(obj("old", old), PART)
    fill(e, old)
    store.release(e)
    big = os.urandom(8 * PART)
    growing = store.open_entry(obj("growing", big), PART)
    for i in range(4):  # 4 + 6 parts: at the limit, nothing to do yet
        write_part(growing, i, big[i * PART : (i + 1) * PART])
    assert store.evict_to_fit() == 0
    write_part(growing, 4, big[4 * PART : 5 * PART])  # 11 parts > 10
    assert store.evict_to_fit() == 1
    assert not entry_files(tmp_path, "old")[0].exists()
    assert store.statistics().bytes == 5 * PART
    store.release(growing)
    store.close()


def test_make_room_evicts_idle_entries_until_the_disk_has_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = CacheStore(tmp_path, bucket=BUCKET)  # no cap: only the disk is full
    store.lock()
    blobs = cache_idle(store, "abc")
    busy = store.open_entry(obj("a", blobs["a"]), PART)  # in use: never evicted
    free = {"bytes": 0}
    monkeypatch.setattr(store, "free_bytes", lambda: free["bytes"])

    real_evict = store._evict

    def evict(h: str) -> bool:
        ok = real_evict(h)
        free["bytes"] += 100 if ok else 0
        return ok

    monkeypatch.setattr(store, "_evict", evict)
    assert store.make_room(150) == 2  # b then c (a is in use); stops once 150 are free
    assert not entry_files(tmp_path, "b")[0].exists()
    assert not entry_files(tmp_path, "c")[0].exists()
    assert entry_files(tmp_path, "a")[0].exists()
    assert store.make_room(10_000) == 0  # nothing idle left
    assert store.statistics().evictions == 2
    store.release(busy)
    store.close()


def test_lru_order_survives_restart(tmp_path: Path) -> None:
    store = CacheStore(tmp_path, bucket=BUCKET)
    store.lock()
    cache_idle(store, "xyz")
    store.close()
    for age, key in enumerate("yzx"):  # y oldest, then z, then x
        ckpt = entry_files(tmp_path, key)[1]
        os.utime(ckpt, ns=(1_000_000_000 * (age + 1), 1_000_000_000 * (age + 1)))
    store = CacheStore(tmp_path, bucket=BUCKET, max_bytes=150)
    store.lock()
    assert store.evict_to_fit() == 2
    assert entry_files(tmp_path, "x")[0].exists()
    assert not entry_files(tmp_path, "y")[0].exists()
    assert not entry_files(tmp_path, "z")[0].exists()
    store.close()


def test_close_flushes_open_entries_and_unlocks(tmp_path: Path) -> None:
    store = CacheStore(tmp_path, bucket=BUCKET)
    store.lock()
    data = os.urandom(64)
    e = store.open_entry(obj("k", data), PART)
    write_part(e, 0, data[:16])
    store.close()
    assert e.fd == -1
    again = CacheStore(tmp_path, bucket=BUCKET)
    again.lock()
    e2 = recheck_all(again.open_entry(obj("k", data), PART))
    assert e2.missing_parts(range(4)) == [1, 2, 3]
    again.release(e2)
    again.close()


def test_discarded_but_unreleased_entry_is_closed_by_store_close(tmp_path: Path) -> None:
    store = CacheStore(tmp_path, bucket=BUCKET)
    store.lock()
    data = os.urandom(32)
    e1 = store.open_entry(obj("k", data), PART)
    e1.discard()
    e2 = store.open_entry(obj("k", data), PART)
    assert e2 is not e1
    assert e1.fd >= 0  # stays open for stragglers until released or the store closes
    store.release(e2)
    store.close()
    assert e1.fd == -1


def test_package_exports() -> None:
    import ossmount.cache as pkg

    assert sorted(pkg.__all__) == pkg.__all__
    for name in pkg.__all__:
        assert getattr(pkg, name).__module__.startswith("ossmount.cache.")


def test_drop_idle_deletes_idle_entries_in_batches_and_keeps_those_in_use(
    store: CacheStore,
) -> None:
    blobs = cache_idle(store, "abcd")
    held = recheck_all(store.open_entry(obj("b", blobs["b"]), PART))  # in use: must stay
    first = store.drop_idle(2)
    assert (first.entries, first.bytes) == (2, 200)
    assert (first.kept_entries, first.kept_bytes) == (1, 100)
    rest = store.drop_idle(2)
    assert (rest.entries, rest.bytes, rest.kept_entries) == (1, 100, 1)
    assert store.drop_idle(2).entries == 0
    assert [entry_files(store.root, k)[0].exists() for k in "abcd"] == [False, True, False, False]
    assert held.read(0, 100) == blobs["b"]
    assert store.statistics().bytes == 100  # the accounting followed the deletions
    assert store.statistics().evictions == 0  # a clear is not an eviction
    store.release(held)
    assert store.drop_idle(10).entries == 1
    assert store.statistics().bytes == 0
    assert store.statistics().entries == 0
