"""The cache dirs ask ext4 to spread their subdirectories over free inodes (cache.spread)."""

from __future__ import annotations

import errno
import fcntl
from pathlib import Path

import pytest

from ossmount.cache import spread
from ossmount.cache.spread import topdir_flag
from ossmount.cache.store import CacheStore


def test_the_root_and_bucket_dirs_get_the_topdir_flag(tmp_path: Path) -> None:
    if topdir_flag(tmp_path) is None:
        pytest.skip(f"{tmp_path} is on a filesystem without inode flags")
    root = tmp_path / "cache"
    store = CacheStore(root, bucket="my-bucket")
    store.lock()
    try:
        assert topdir_flag(root) is True
        assert topdir_flag(root / "my-bucket") is True
        (root / "my-bucket" / "ab").mkdir()
        assert topdir_flag(root / "my-bucket" / "ab") is False  # only where asked
    finally:
        store.close()


def test_a_filesystem_that_refuses_the_flag_is_no_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def refuse(fd: int, request: int, *args: object) -> int:
        calls.append(request)
        raise OSError(errno.ENOTTY, "Inappropriate ioctl for device")

    monkeypatch.setattr(fcntl, "ioctl", refuse)
    store = CacheStore(tmp_path / "cache", bucket="my-bucket")
    store.lock()
    store.close()
    assert calls == [spread.FS_IOC_GETFLAGS, spread.FS_IOC_GETFLAGS]
