"""fs/stagedspace.py: staged bytes share the cache cap and the free-space floor."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from ossmount.cache.adopt import seal_for_cache
from ossmount.cache.store import CacheStore
from ossmount.crc64 import crc64
from ossmount.fs.stagedspace import StagedSpace
from ossmount.oss.models import ObjectMeta

KiB = 1024


def idle_entry(store: CacheStore, tmp_path: Path, key: str, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / f"{key}.data"
    path.write_bytes(data)
    meta = ObjectMeta(key, size, '"e"', 0, crc64(data))
    out = tmp_path / f"{key}.ckpt"
    assert seal_for_cache(path, meta, bucket=store.bucket, part_size=64 * KiB, out=out)
    store.adopt(key, path, out, size)


def test_growth_evicts_idle_entries_and_staged_bytes_alone_never_pass_the_cap(
    tmp_path: Path,
) -> None:
    store = CacheStore(tmp_path / "cache", bucket="bkt", max_bytes=100 * KiB)
    store.lock()
    idle_entry(store, tmp_path, "old", 60 * KiB)
    space = StagedSpace(store)
    space.grow(50 * KiB, "oss://bkt/w")
    assert not store.holds("old"), "the idle entry made room"
    assert store.held_bytes() == 50 * KiB
    with pytest.raises(OSError, match="cache cap") as caught:
        space.grow(60 * KiB, "oss://bkt/w2")
    assert caught.value.errno == errno.ENOSPC
    assert store.staged_bytes == 50 * KiB, "a refused growth is not counted"
    space.shrink(50 * KiB)
    assert store.held_bytes() == 0
    store.close()


def test_growth_that_would_pass_the_free_space_floor_is_enospc(tmp_path: Path) -> None:
    store = CacheStore(tmp_path / "cache", bucket="bkt", min_free=1 << 62)
    store.lock()
    with pytest.raises(OSError, match="free") as caught:
        StagedSpace(store).grow(1, "oss://bkt/w")
    assert caught.value.errno == errno.ENOSPC
    assert store.staged_bytes == 0
    store.close()
