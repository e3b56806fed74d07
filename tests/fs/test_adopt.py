"""cache/adopt.py: a committed staged file becomes a verified cache entry only if its bytes
are the committed version's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ossmount.cache.adopt import Adopter, _append_tail, _checkpoint, seal_for_cache
from ossmount.cache.checkpoint import Checkpoint, EntryState, load
from ossmount.cache.store import CacheStore, key_hash
from ossmount.cache.tail import read_tail
from ossmount.crc64 import crc64
from ossmount.oss.models import ObjectMeta

BUCKET = "bkt"
PART = 4096


def _staged(tmp_path: Path, data: bytes) -> tuple[Path, int]:
    path = tmp_path / "x.data"
    path.write_bytes(data)
    return path, os.open(path, os.O_RDONLY)


def test_bytes_that_are_not_the_committed_version_are_not_sealed(tmp_path: Path) -> None:
    data = os.urandom(3 * PART + 17)
    path, fd = _staged(tmp_path, data)
    out = tmp_path / "x.ckpt"
    try:
        wrong = ObjectMeta("k", len(data), '"e"', 0, crc64(data) ^ 1)
        assert seal_for_cache(path, wrong, bucket=BUCKET, part_size=PART, out=out) is None
        assert not out.exists()
        right = ObjectMeta("k", len(data), '"e"', 0, crc64(data))
        assert seal_for_cache(path, right, bucket=BUCKET, part_size=PART, out=out) == len(data)
    finally:
        os.close(fd)
    cp = load(out)
    assert cp is not None
    assert cp.state is EntryState.VERIFIED
    assert cp.complete


async def test_adopted_file_replaces_an_open_older_version_without_disturbing_it(
    tmp_path: Path,
) -> None:
    store = CacheStore(tmp_path / "cache", bucket=BUCKET)
    store.lock()
    old = store.open_entry(ObjectMeta("k", 10, '"old"', 0, None), PART)
    data = os.urandom(PART + 1)
    path, fd = _staged(tmp_path, data)
    meta = ObjectMeta("k", len(data), '"new"', 0, crc64(data))
    adopter = Adopter(store, PART)
    try:
        checkpoint = await adopter.prepare(path, meta)
    finally:
        os.close(fd)
    assert checkpoint is not None
    assert adopter.install(meta, path, checkpoint)
    assert not path.exists()
    assert not checkpoint.exists()
    store.release(old)  # the detached old entry never writes over the adopted one
    entry = store.open_entry(meta, PART)
    try:
        assert entry.checkpoint().state is EntryState.VERIFIED
        assert os.pread(entry.fd, len(data), 0) == data
    finally:
        store.release(entry)
    assert store.held_bytes() == len(data)
    store.close()


def _on_disk(root: Path, key: str) -> list[str]:
    h = key_hash(key)
    return sorted(p.suffix[1:] for p in (root / BUCKET / h[:2]).glob(h + ".*"))


def _restarted(root: Path) -> CacheStore:
    store = CacheStore(root, bucket=BUCKET)
    store.lock()
    return store


@pytest.mark.parametrize("size", [0, 100, PART])
def test_a_one_part_file_is_adopted_as_the_one_file_the_read_path_keeps(
    tmp_path: Path, size: int
) -> None:
    """One file in the cache, as a download of it makes (cache.tail), not `.data` + `.ckpt`:
    its checkpoint is its tail, and it resumes verified after a restart."""
    root = tmp_path / "cache"
    store = _restarted(root)
    data = os.urandom(size)
    staged = tmp_path / "x.data"
    staged.write_bytes(data)
    meta = ObjectMeta("k", size, '"e"', 0, crc64(data))
    assert Adopter(store, PART).adopt_known(staged, meta)
    assert _on_disk(root, "k") == ["one"]
    assert not staged.exists()
    assert not list(tmp_path.glob("x.*"))
    assert store.held_bytes() == size
    store.close()
    store = _restarted(root)
    assert store.holds("k")
    entry = store.open_entry(meta, PART)
    try:
        assert entry.checkpoint_path is None, "the one-file kind"
        assert entry.state is EntryState.VERIFIED
        for i in entry.present_parts():
            assert entry.recheck(i)
        assert entry.missing_parts(range(entry.layout.count)) == []
        assert entry.read(0, size) == data
    finally:
        store.release(entry)
    assert _on_disk(root, "k") == ["one"]
    store.close()


def test_the_tail_is_written_before_the_file_takes_its_name_in_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Crash safety (cache.tail): at the moment a `.one` name appears, the file already ends
    in the complete checkpoint of the bytes before it, so no crash leaves a `.one` without
    its tail or with one that lists bytes written after it."""
    store = _restarted(tmp_path / "cache")
    data = os.urandom(PART - 1)
    staged = tmp_path / "x.data"
    staged.write_bytes(data)
    meta = ObjectMeta("k", len(data), '"e"', 0, crc64(data))
    seen: list[Checkpoint | None] = []
    real_rename = os.rename

    def rename(src: Path, dst: Path) -> None:
        if str(dst).endswith(".one"):
            fd = os.open(src, os.O_RDONLY)
            try:
                seen.append(read_tail(fd))
                assert os.pread(fd, len(data), 0) == data
            finally:
                os.close(fd)
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    assert Adopter(store, PART).adopt_known(staged, meta)
    (cp,) = seen
    assert cp is not None
    assert cp.state is EntryState.VERIFIED
    assert (cp.key, cp.etag, cp.size, cp.part_crcs) == ("k", '"e"', len(data), {0: crc64(data)})
    store.close()


def test_a_crash_between_the_tail_and_the_rename_leaves_the_cached_version_alone(
    tmp_path: Path,
) -> None:
    """The tail is appended to the staged file, outside the cache: a crash then leaves the
    key's cached (older) version as it was, which a read of the new version replaces by a
    fetch, never serving a byte of either as the other."""
    root = tmp_path / "cache"
    store = _restarted(root)
    old, new = os.urandom(50), os.urandom(60)
    old_meta = ObjectMeta("k", len(old), '"old"', 0, crc64(old))
    staged = tmp_path / "x.data"
    staged.write_bytes(old)
    assert Adopter(store, PART).adopt_known(staged, old_meta)
    staged.write_bytes(new)
    new_meta = ObjectMeta("k", len(new), '"new"', 0, crc64(new))
    _append_tail(staged, _checkpoint(new_meta, BUCKET, PART, {0: crc64(new)}))
    store.close()  # the crash: no rename
    store = _restarted(root)
    assert _on_disk(root, "k") == ["one"]
    cp = store.cached_checkpoint("k")
    assert cp is not None
    assert cp.etag == '"old"'
    entry = store.open_entry(new_meta, PART)
    try:
        assert entry.present_parts() == [], "the new version is fetched"
    finally:
        store.release(entry)
    store.close()


def test_adopted_bytes_that_never_reached_the_disk_are_never_served(tmp_path: Path) -> None:
    """Nothing is fsynced (module docstring): after a power loss the tail may be on disk and
    the bytes before it not. The re-check before the first read drops the part."""
    root = tmp_path / "cache"
    store = _restarted(root)
    data = os.urandom(PART)
    staged = tmp_path / "x.data"
    staged.write_bytes(data)
    meta = ObjectMeta("k", len(data), '"e"', 0, crc64(data))
    assert Adopter(store, PART).adopt_known(staged, meta)
    store.close()
    (one,) = (root / BUCKET).rglob("*.one")
    whole = one.read_bytes()
    one.write_bytes(bytes(len(data)) + whole[len(data) :])  # zeros, the tail intact
    store = _restarted(root)
    entry = store.open_entry(meta, PART)
    try:
        assert entry.present_parts() == [0]
        assert not entry.recheck(0)
        assert entry.missing_parts([0]) == [0], "fetched again"
    finally:
        store.release(entry)
    store.close()


def test_the_cache_commands_accept_an_adopted_one_file(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    store = _restarted(root)
    data = os.urandom(PART // 2)
    staged = tmp_path / "x.data"
    staged.write_bytes(data)
    assert Adopter(store, PART).adopt_known(
        staged, ObjectMeta("k", len(data), '"e"', 0, crc64(data))
    )
    store.close()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ossmount", "cache", *args, "--cache-dir", str(root)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    result = cli("verify")
    assert result.returncode == 0, result.stdout + result.stderr
    status = json.loads(cli("status", "--json").stdout)
    assert status["states"]["verified"] == 1
    assert _on_disk(root, "k") == ["one"]
