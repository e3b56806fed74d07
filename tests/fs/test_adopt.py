"""cache/adopt.py: a committed staged file becomes a verified cache entry only if its bytes
are the committed version's."""

from __future__ import annotations

import os
from pathlib import Path

from ossmount.cache.adopt import Adopter, seal_for_cache
from ossmount.cache.checkpoint import EntryState, load
from ossmount.cache.store import CacheStore
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
