"""One-part objects kept in one file, their checkpoint in its tail (cache layout 2, cache.tail).

What must stay true of the `.one` kind, as of the `.data` + `.ckpt` one: a cached version is
resumed after a restart without a fetch; every crash state (no tail, a torn tail, a tail naming
bytes that never reached the disk, a stale version) costs a fetch and never serves a wrong
byte; a key has one version on disk whatever kinds its versions take; a layout-1 directory is
upgraded and its entries still serve.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ossmount.cache.checkpoint import Checkpoint, EntryState, encode, save_first
from ossmount.cache.entry import CacheEntry
from ossmount.cache.errors import CorruptCheckpoint
from ossmount.cache.opening import open_entry
from ossmount.cache.store import CacheStore
from ossmount.cache.tail import TAIL_MAGIC, read_tail, write_tail
from ossmount.cachecmd.layout import iter_entries, leftovers, read_entries
from ossmount.crc64 import crc64
from ossmount.oss.models import ObjectMeta
from tests.unit.cache_helpers import recheck_all, write_part

BUCKET = "my-bucket"
PART = 64
SMALL = bytes(range(40))  # one part
BIG = os.urandom(200)  # four parts


def obj(data: bytes, etag: str = '"E1"', key: str = "dir/k") -> ObjectMeta:
    return ObjectMeta(
        key=key, size=len(data), etag=etag, mtime_ns=1_700_000_000_000_000_000,
        crc64=crc64(data),
    )  # fmt: skip


def files(root: Path, key: str = "dir/k") -> dict[str, Path]:
    h = hashlib.sha256(key.encode()).hexdigest()
    d = root / BUCKET / h[:2]
    return {ext: d / f"{h}.{ext}" for ext in ("one", "data", "ckpt")}


def on_disk(root: Path, key: str = "dir/k") -> list[str]:
    return sorted(ext for ext, p in files(root, key).items() if p.exists())


def fill(entry: CacheEntry, data: bytes) -> None:
    for i in range(entry.layout.count):
        start, length = entry.layout.span(i)
        write_part(entry, i, data[start : start + length])


def cache(store: CacheStore, data: bytes, etag: str = '"E1"', key: str = "dir/k") -> None:
    """Download `data` whole into `store` and release it, as a GET and its verdict do."""
    entry = store.open_entry(obj(data, etag, key), PART)
    fill(entry, data)
    assert entry.verify().state is EntryState.VERIFIED
    entry.flush()
    store.release(entry)


def restarted(root: Path) -> CacheStore:
    s = CacheStore(root, bucket=BUCKET)
    s.lock()
    return s


def served(entry: CacheEntry) -> list[int]:
    """The parts a reader may have after every re-check ran (as a download runs them)."""
    return [i for i in entry.present_parts() if entry.recheck(i)]


def test_a_one_part_object_is_one_file_and_resumes_after_a_restart(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    s = restarted(root)
    cache(s, SMALL)
    assert on_disk(root) == ["one"]
    one = files(root)["one"]
    assert one.read_bytes()[: len(SMALL)] == SMALL
    assert one.read_bytes().endswith(TAIL_MAGIC)
    s.close()
    s = restarted(root)
    assert s.statistics().entries == 1
    cp = s.cached_checkpoint("dir/k")
    assert cp is not None
    assert cp.state is EntryState.VERIFIED
    entry = recheck_all(s.open_entry(obj(SMALL), PART))
    assert entry.state is EntryState.VERIFIED
    assert entry.missing_parts([0]) == []
    assert entry.read(0, 100) == SMALL
    s.release(entry)
    s.close()


def test_a_bigger_object_keeps_two_files(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    s = restarted(root)
    cache(s, BIG)
    assert on_disk(root) == ["ckpt", "data"]
    s.close()


@pytest.mark.parametrize(("first", "then"), [(SMALL, BIG), (BIG, SMALL), (SMALL, SMALL[::-1])])
def test_a_new_version_replaces_the_old_whatever_their_kinds(
    tmp_path: Path, first: bytes, then: bytes
) -> None:
    root = tmp_path / "cache"
    s = restarted(root)
    cache(s, first, '"E1"')
    s.close()
    s = restarted(root)  # the key is indexed: the full open path runs
    entry = s.open_entry(obj(then, '"E2"'), PART)
    assert entry.present_parts() == []
    fill(entry, then)
    entry.verify()
    s.release(entry)
    assert on_disk(root) == (["one"] if len(then) <= PART else ["ckpt", "data"])
    s.close()
    s = restarted(root)
    entry = recheck_all(s.open_entry(obj(then, '"E2"'), PART))
    assert entry.read(0, 1000) == then
    s.release(entry)
    s.close()


def test_an_entry_that_never_saved_leaves_no_file(store: CacheStore) -> None:
    entry = store.open_entry(obj(SMALL), PART)
    store.release(entry)
    assert on_disk(store.root) == []
    assert store.statistics().entries == 0


def test_eviction_and_drop_remove_the_one_file(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    s = CacheStore(root, bucket=BUCKET, max_bytes=100)
    s.lock()
    for key in ("a", "b", "c"):
        cache(s, SMALL, key=key)
    assert s.statistics().entries == 2  # 3 x 40 bytes held, 100 allowed
    assert on_disk(root, "a") == []
    assert on_disk(root, "c") == ["one"]
    assert s.drop_idle(10).entries == 2
    assert on_disk(root, "b") == on_disk(root, "c") == []
    s.close()


# ----------------------------------------------------------------- crash states


def test_no_tail_a_crash_before_the_first_save_means_fetching_again(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    s = restarted(root)
    cache(s, SMALL)
    s.close()
    one = files(root)["one"]
    os.truncate(one, len(SMALL))  # the bytes reached the disk, the tail did not
    s = restarted(root)
    assert s.cached_checkpoint("dir/k") is None
    entry = s.open_entry(obj(SMALL), PART)
    assert entry.present_parts() == []
    s.release(entry)
    assert on_disk(root) == []
    s.close()


def test_a_torn_tail_means_fetching_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "cache"
    s = restarted(root)
    cache(s, SMALL)
    s.close()
    one = files(root)["one"]
    whole = one.read_bytes()
    cut_short = [whole[:cut] for cut in range(len(SMALL) + 1, len(whole))]
    frame_zeroed = [  # the trailer reached the disk, part of the frame did not
        whole[:cut] + bytes(len(whole) - 12 - cut) + whole[-12:]
        for cut in range(len(SMALL), len(whole) - 12)
    ]
    for torn in cut_short + frame_zeroed:
        one.write_bytes(torn)
        s = restarted(root)
        entry = s.open_entry(obj(SMALL), PART)
        assert entry.present_parts() == [], len(torn)
        s.release(entry)
        assert on_disk(root) == []  # nothing recorded: the file is gone
        cache(s, SMALL)
        s.close()
        assert one.read_bytes() == whole
    assert "discarding unusable checkpoint" in caplog.text


def test_a_flipped_tail_byte_is_caught_at_every_position(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    s = restarted(root)
    cache(s, SMALL)
    s.close()
    one = files(root)["one"]
    whole = one.read_bytes()
    fd = os.open(one, os.O_RDONLY)
    try:
        for pos in range(len(SMALL), len(whole)):
            flipped = bytearray(whole)
            flipped[pos] ^= 0x01
            one.write_bytes(bytes(flipped))
            cp = None
            with contextlib.suppress(CorruptCheckpoint):
                cp = read_tail(fd)
            assert cp is None, pos  # no tail (trailer magic hit) or a damaged one
    finally:
        os.close(fd)


def test_a_tail_whose_bytes_never_reached_the_disk_serves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    s = restarted(root)
    cache(s, SMALL)
    s.close()
    one = files(root)["one"]
    whole = one.read_bytes()
    one.write_bytes(bytes(len(SMALL)) + whole[len(SMALL) :])  # allocated zeros, tail intact
    s = restarted(root)
    entry = s.open_entry(obj(SMALL), PART)
    assert entry.present_parts() == [0]
    assert served(entry) == []  # the re-check drops it: fetched again, never served
    with pytest.raises(Exception, match="not yet cached"):
        entry.read(0, 10)
    s.release(entry)
    s.close()


def test_a_hole_where_the_bytes_should_be_is_found_before_any_recheck(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    s = restarted(root)
    data = os.urandom(8192)  # whole blocks, so the tail is in a block of its own
    entry = s.open_entry(obj(data), 16384)
    write_part(entry, 0, data)
    entry.verify()
    s.release(entry)
    s.close()
    one = files(root)["one"]
    tail = one.read_bytes()[len(data) :]
    os.truncate(one, 0)
    os.truncate(one, len(data))  # a hole: the bytes never reached the disk
    with open(one, "ab") as f:
        f.write(tail)
    s = restarted(root)
    entry = s.open_entry(obj(data), 16384)
    assert entry.present_parts() == []
    s.release(entry)
    s.close()


def test_a_stale_tail_of_another_version_is_replaced(tmp_path: Path) -> None:
    """The new version's bytes reached the disk, its tail did not: the old tail remains."""
    root = tmp_path / "cache"
    s = restarted(root)
    cache(s, SMALL, '"E1"')
    old = files(root)["one"].read_bytes()
    new = SMALL[::-1]
    entry = s.open_entry(obj(new, '"E2"'), PART)
    s.release(entry)
    s.close()
    files(root)["one"].write_bytes(new + old[len(SMALL) :])
    s = restarted(root)
    entry = s.open_entry(obj(new, '"E2"'), PART)
    assert entry.present_parts() == []  # the tail names E1: another version, dropped
    fill(entry, new)
    entry.verify()
    s.release(entry)
    s.close()


def test_both_kinds_of_one_key_after_a_crash_are_both_dropped(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    s = restarted(root)
    cache(s, BIG, '"E1"')
    s.close()
    f = files(root)
    kept_pair = f["data"].read_bytes(), f["ckpt"].read_bytes()
    s = restarted(root)
    cache(s, SMALL, '"E2"')
    s.close()
    f["data"].write_bytes(kept_pair[0])  # the unlinks of the old pair were lost
    f["ckpt"].write_bytes(kept_pair[1])
    assert {p.name for p in leftovers(root)} == {f[e].name for e in ("one", "data", "ckpt")}
    assert list(iter_entries(root)) == []
    s = restarted(root)
    assert on_disk(root) == []
    assert s.statistics().entries == 0
    s.close()


def test_a_rewritten_tail_of_another_length_is_trimmed(tmp_path: Path) -> None:
    m = obj(SMALL, key="k" * 300)
    entry = open_entry(
        bucket=BUCKET, meta=m, part_size=PART, path=tmp_path / "x.data",
        checkpoint_path=tmp_path / "x.ckpt", one=tmp_path / "x.one",
    )  # fmt: skip
    assert entry.checkpoint_path is None
    write_part(entry, 0, SMALL)
    entry.flush()
    long = entry.path.stat().st_size
    short = dataclasses.replace(entry.checkpoint(), key="k")
    write_tail(entry.fd, short, again=True)
    assert entry.path.stat().st_size == len(SMALL) + len(encode(short)) + 12 < long
    assert read_tail(entry.fd) == short
    entry.close()


# ----------------------------------------------------------------- layout 1


def test_a_layout_1_dir_is_upgraded_and_its_entries_still_serve(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "cache"
    f = files(root)
    f["data"].parent.mkdir(parents=True)
    (root / "VERSION").write_text("1\n")
    f["data"].write_bytes(SMALL)  # a one-part object as layout 1 kept it
    m = obj(SMALL)
    assert m.crc64 is not None
    save_first(
        f["ckpt"],
        Checkpoint(
            bucket=BUCKET, key=m.key, etag=m.etag, size=m.size, mtime_ns=m.mtime_ns,
            server_crc64=m.crc64, part_size=PART, part_crcs={0: m.crc64},
            state=EntryState.VERIFIED,
        ),
    )  # fmt: skip
    with caplog.at_level(logging.INFO):
        s = restarted(root)
    assert (root / "VERSION").read_text() == "2\n"
    assert "upgraded from layout 1 to 2" in caplog.text
    cp = s.cached_checkpoint("dir/k")
    assert cp is not None
    assert cp.state is EntryState.VERIFIED
    entry = recheck_all(s.open_entry(m, PART))
    assert entry.state is EntryState.VERIFIED
    assert entry.checkpoint_path == f["ckpt"]
    assert entry.read(0, 100) == SMALL
    s.release(entry)
    assert [e.state for e in read_entries(root)] == ["verified"]
    cache(s, SMALL[::-1], '"E2"')  # a new version of the key takes the new kind
    assert on_disk(root) == ["one"]
    assert [(e.state, e.name) for e in read_entries(root)] == [
        ("verified", "oss://my-bucket/dir/k")
    ]
    s.close()


# ----------------------------------------------------------------- cache commands


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ossmount", *args], capture_output=True, text=True, timeout=60
    )


def test_cache_commands_see_verify_and_clear_one_files(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    s = restarted(root)
    cache(s, SMALL, key="good")
    cache(s, SMALL[::-1], key="bad")
    cache(s, BIG, key="big")
    s.close()
    status = json.loads(_cli("cache", "status", "--cache-dir", str(root), "--json").stdout)
    assert status["states"]["verified"] == 3
    bad = files(root, "bad")["one"]
    raw = bytearray(bad.read_bytes())
    raw[3] ^= 1  # a byte of the object, the tail intact
    bad.write_bytes(bytes(raw))
    result = _cli("cache", "verify", "--cache-dir", str(root))
    assert result.returncode == 11, result.stdout + result.stderr
    assert "oss://my-bucket/bad: part 0 (bytes 0..39) has CRC-64" in result.stdout
    assert not bad.exists()
    assert on_disk(root, "good") == ["one"]
    result = _cli("cache", "clear", "--cache-dir", str(root))
    assert result.returncode == 0, result.stderr
    assert on_disk(root, "good") == on_disk(root, "big") == []


def test_a_release_right_after_a_save_leaves_the_mtime_it_set(
    store: CacheStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mtime is the LRU order a restart reads; a save within the last second set it, so
    a cold small file's release costs no utime. Later releases still set it."""
    touched: list[object] = []
    real_utime = os.utime
    monkeypatch.setattr(
        os, "utime", lambda path, *a, **k: (touched.append(path), real_utime(path, *a, **k))
    )
    cache(store, SMALL)
    assert touched == []
    entry = store.open_entry(obj(SMALL), PART)
    entry.saved_at -= 2.0  # the save was two seconds ago
    store.release(entry)
    assert touched == [files(store.root)["one"]]


def test_eviction_checks_need_no_walk_of_open_entries_far_under_the_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every open, flush and release asks whether to evict; far under the cap the answer comes
    from a sum kept as entries come and go (their sizes bound what they hold), not from
    asking each open entry what it holds."""
    s = CacheStore(tmp_path / "cache", bucket=BUCKET, max_bytes=10_000)
    s.lock()
    asked: list[int] = []
    real = CacheStore.held_bytes
    monkeypatch.setattr(CacheStore, "held_bytes", lambda self: asked.append(1) or real(self))
    held = [s.open_entry(obj(SMALL, key=f"k{i}"), PART) for i in range(3)]
    old = s.open_entry(obj(BIG, key="k0x"), PART)
    new = s.open_entry(obj(BIG[::-1], '"E2"', key="k0x"), PART)  # detaches the old version
    for e in (*held, old, new):
        fill(e, SMALL if e.layout.size == len(SMALL) else e.meta.size * b"\0")
    for e in (*held, old, new):
        s.evict_to_fit()
        s.release(e)
    assert asked == []
    assert s._live_sizes == 0
    big = CacheStore(tmp_path / "other", bucket=BUCKET, max_bytes=len(SMALL) * 2)
    big.lock()
    for i in range(3):
        cache(big, SMALL, key=f"k{i}")
    assert asked  # near the cap: the exact figure
    assert big.statistics().entries == 2
    big.close()
    s.close()


def test_adopting_a_written_file_replaces_an_older_one_file_version(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    s = restarted(root)
    cache(s, SMALL, '"E1"')
    new = SMALL[::-1]
    m = obj(new, '"E2"')
    assert m.crc64 is not None
    staged, ckpt = tmp_path / "staged.data", tmp_path / "staged.data.ckpt"
    staged.write_bytes(new)
    save_first(
        ckpt,
        Checkpoint(
            bucket=BUCKET, key=m.key, etag=m.etag, size=m.size, mtime_ns=m.mtime_ns,
            server_crc64=m.crc64, part_size=PART, part_crcs={0: m.crc64},
            state=EntryState.VERIFIED,
        ),
    )  # fmt: skip
    s.adopt(m.key, staged, ckpt, m.size)
    assert on_disk(root) == ["ckpt", "data"]
    entry = recheck_all(s.open_entry(m, PART))
    assert entry.state is EntryState.VERIFIED
    assert entry.read(0, 100) == new
    s.release(entry)
    s.close()
