"""The cache directory on disk: its layout, the layout's version, and the one-mount lock.

Apart from the store (cache.store), which keeps the entries in memory, shares them and counts
their space, because this changes only with the on-disk format: a new layout version, an
upgrade rule, a new kind of file. `ossmount cache` (cachecmd.layout) reads the same layout
without a mount.

On-disk layout (format version 2, recorded in `VERSION`):

    ROOT/
      VERSION                  "2\\n": layout format; "1" is upgraded (below), another value
                               -> CacheLayoutError
      lock                     flock()ed (exclusive, non-blocking) by the mount; holds its pid
      shown.attrs              modes, owners and times the mount stored on objects, kept for
                               the next mount (ossmount.fs.shownfile); not a cache entry:
                               `ossmount cache clear` leaves it
      owed-BUCKET.attrs        with --rw: modes, owners and times acknowledged, not on OSS
                               yet (ossmount.write.owedlog); the next --rw mount sends them
      BUCKET/                  one directory per bucket (bucket names are [a-z0-9-], 3..63)
        ab/                    first two hex digits of the key hash, to keep directories small
          <sha256(key)>.data   sparse file, ftruncated to the object size; parts pwritten in
          <sha256(key)>.ckpt   checkpoint (ossmount.cache.checkpoint) naming bucket, key, etag..
          <...>.ckpt.tmp       transient, from save_atomic; removed at startup
          <sha256(key)>.one    a one-part object (<= 256 KiB): its bytes, then its checkpoint
                               (ossmount.cache.tail); one file created per cold small file

The root and bucket dirs carry ext4's FS_TOPDIR_FL (cache.spread): the fan-out dirs then land
in block groups with free inodes (a file created there: 14 us of CPU, not ~700 us).

Layout 2 only added `.one` files: a layout-1 directory is a valid layout-2 one, so
`check_version` upgrades it by rewriting VERSION (its one-part entries stay `.data` + `.ckpt`
and are resumed as such; a new version of such a key becomes a `.one`). A release that knows
only layout 1 refuses the upgraded directory with its own CacheLayoutError. The write path's
adopted files (cache/adopt.py) take the kind the read path gives their size: `.one` for one
part.

The key is hashed (UTF-8, surrogates passed through; `key_hash` in cache.store) because keys
may be 1023 bytes of anything. The version (ETag, size, Last-Modified, CRC) lives only in the
checkpoint, so a key maps to at most one version on disk by construction; opening another
version replaces it. A hash collision would look like "another version" (the checkpoint
stores the full key) and is handled the same way: never mixed, only re-fetched.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

from ossmount.cache.errors import CacheLayoutError, CacheLocked, io_error

__all__ = ["LAYOUT_VERSION", "UPGRADABLE_LAYOUTS", "check_version", "take_lock"]

log = logging.getLogger(__name__)

LAYOUT_VERSION = 2
UPGRADABLE_LAYOUTS = ("1",)  # older layouts that are valid layout-2 directories as they are


def take_lock(root: Path, bucket: str) -> int:
    """Create `root` if needed and flock its `lock` file for this process, writing our pid in
    it; the descriptor holds the lock until closed.

    Raises CacheLocked (with the holder's pid when it wrote one) if another process, or another
    descriptor in this process, holds it; CacheIOError when the file cannot be opened or locked.
    """
    lock_path = root / "lock"
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise io_error("lock", bucket=bucket, key="", path=lock_path, cause=exc) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _read_pid(fd)
        os.close(fd)
        raise CacheLocked(root, pid) from None
    except OSError as exc:
        os.close(fd)
        raise io_error("lock", bucket=bucket, key="", path=lock_path, cause=exc) from exc
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_version(root: Path) -> None:
    """Write VERSION into a new directory, upgrade an upgradable one, refuse any other
    (CacheLayoutError). Call with the lock held."""
    path = root / "VERSION"
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        path.write_text(f"{LAYOUT_VERSION}\n")
        return
    if text in UPGRADABLE_LAYOUTS:
        path.write_text(f"{LAYOUT_VERSION}\n")
        log.info("cache dir %s upgraded from layout %s to %d", root, text, LAYOUT_VERSION)
    elif text != str(LAYOUT_VERSION):
        raise CacheLayoutError(
            f"cache directory {root} has layout version {text!r}, this ossmount "
            f"uses {LAYOUT_VERSION}: remove the directory or choose another (use_cache=DIR)"
        )


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
