"""Opening a cache entry: resume the one on disk if its checkpoint is for this exact version,
else start a fresh sparse file (the factory `CacheEntry` is built by, kept apart from it).

One version equality (`same_version`): the checkpoint's `ObjectVersion` (key, ETag, size),
bucket and part size must match, and the CRC-64s must agree where both are known; Last-Modified
is not compared, so a checkpoint written by an older release from a listing's sub-second mtime
still resumes.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from ossmount.cache.checkpoint import Checkpoint, EntryState, fsync_dir, load
from ossmount.cache.entry import CacheEntry
from ossmount.cache.errors import io_error
from ossmount.cache.holes import hole_spans
from ossmount.cache.ranges import PartLayout
from ossmount.oss.models import ObjectMeta

__all__ = ["crcs_agree", "open_entry", "same_version"]

log = logging.getLogger(__name__)


def same_version(cp: Checkpoint, *, bucket: str, meta: ObjectMeta, part_size: int) -> bool:
    """Whether `cp` describes the object version `meta` cut into `part_size` parts.

    The version is `ObjectVersion`'s equality (key, ETag, size); Last-Modified is not compared
    (a checkpoint written from a listing's meta once held sub-second times). A missing CRC on
    either side is not a difference (listings carry no CRC), but two different CRCs are.
    """
    return (
        cp.bucket == bucket
        and cp.version == meta.version
        and cp.part_size == part_size
        and crcs_agree(cp.server_crc64, meta.crc64)
    )


def crcs_agree(a: int | None, b: int | None) -> bool:
    """Two whole-object CRC-64s that may be unknown: only two different known ones differ."""
    return a is None or b is None or a == b


def open_entry(
    *,
    bucket: str,
    meta: ObjectMeta,
    part_size: int,
    path: Path,
    checkpoint_path: Path,
    absent: bool = False,
) -> CacheEntry:
    """Resume the entry at `path` if its checkpoint is for this exact version, else start it.

    A checkpoint for any other version (or a damaged one, or one whose data file is
    missing or has the wrong size) is deleted together with the data file before a fresh
    sparse file is created, so two versions never mix. The old checkpoint goes first and
    the directory is fsynced before the new file exists: a crash in between can only leave
    an orphan data file, which no checkpoint vouches for.

    `absent`: the caller (the store's index) knows neither file is there, so the checkpoint
    is not read and nothing is removed (three failing syscalls per cold small file); if a
    data file is there after all, the full path above runs.
    """
    layout = PartLayout(meta.size, part_size)
    if absent:
        try:
            new_fd = _create(path, meta.size)
        except FileExistsError:
            pass  # not absent after all: the full path below
        except OSError as exc:
            raise io_error("open", bucket=bucket, key=meta.key, path=path, cause=exc) from exc
        else:
            return CacheEntry(
                bucket=bucket, meta=meta, layout=layout, path=path,
                checkpoint_path=checkpoint_path, fd=new_fd, durable={},
                state=EntryState.PARTIAL, has_checkpoint=False,
            )  # fmt: skip
    cp = load(checkpoint_path, bucket=bucket, key=meta.key)
    if cp is not None and not same_version(cp, bucket=bucket, meta=meta, part_size=part_size):
        log.info(
            "cached oss://%s/%s is another version (etag %s size %d part %d, now etag %s "
            "size %d part %d): discarding it",
            bucket,
            meta.key,
            cp.etag,
            cp.size,
            cp.part_size,
            meta.etag,
            meta.size,
            part_size,
        )
        cp = None
    durable: dict[int, int] = {}
    state = EntryState.PARTIAL
    try:
        fd = _open_existing(bucket, meta, path) if cp is not None else None
        resumed = fd is not None and cp is not None
        if fd is not None and cp is not None:
            meta, durable, state = _resume(bucket, meta, layout, path, fd, cp)
        else:
            fd = _start_fresh(path, checkpoint_path, meta.size)
    except OSError as exc:
        raise io_error("open", bucket=bucket, key=meta.key, path=path, cause=exc) from exc
    return CacheEntry(
        bucket=bucket,
        meta=meta,
        layout=layout,
        path=path,
        checkpoint_path=checkpoint_path,
        fd=fd,
        durable=durable,
        state=state,
        has_checkpoint=resumed,
    )


def _start_fresh(path: Path, checkpoint_path: Path, size: int) -> int:
    """Remove what is there (checkpoint first), create the sparse data file; its fd."""
    removed_checkpoint = False
    with contextlib.suppress(FileNotFoundError):
        checkpoint_path.unlink()
        removed_checkpoint = True
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    if removed_checkpoint:
        # Only a removed checkpoint must be durably gone before the new file exists;
        # a first download skips this fsync (it sits on the time to first byte).
        fsync_dir(path.parent)
    return _create(path, size)


def _create(path: Path, size: int) -> int:
    """A new sparse data file of `size` bytes (FileExistsError if there is one); its fd."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, size)
    except OSError:
        os.close(fd)
        raise
    return fd


def _open_existing(bucket: str, meta: ObjectMeta, path: Path) -> int | None:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        log.warning(
            "checkpoint for oss://%s/%s has no data file %s: starting over",
            bucket,
            meta.key,
            path,
        )
        return None
    size = os.fstat(fd).st_size
    if size != meta.size:
        os.close(fd)
        log.warning(
            "data file %s of oss://%s/%s has %d bytes, expected %d: starting over",
            path,
            bucket,
            meta.key,
            size,
            meta.size,
        )
        return None
    return fd


def _resume(
    bucket: str, meta: ObjectMeta, layout: PartLayout, path: Path, fd: int, cp: Checkpoint
) -> tuple[ObjectMeta, dict[int, int], EntryState]:
    """What the checkpoint vouches for: (meta with its CRC, durable parts, state)."""
    if meta.crc64 is None and cp.server_crc64 is not None:
        meta = replace(meta, crc64=cp.server_crc64)
    state = cp.state
    parts = cp.part_crcs
    punched = _parts_in_holes(fd, layout, parts)
    if punched:
        # Shed before a crash, while this checkpoint still listed them: zeros now.
        log.info(
            "oss://%s/%s: %d parts listed in the checkpoint were punched out of %s: "
            "fetching them again",
            bucket,
            meta.key,
            len(punched),
            path,
        )
        parts = {i: c for i, c in parts.items() if i not in punched}
        state = EntryState.PARTIAL
    if state is EntryState.UNVERIFIABLE and meta.crc64 is not None:
        state = EntryState.PARTIAL  # a CRC is known now: verify() can do better
    if parts:
        # A download picked up where it stopped is news; a whole, judged entry opened
        # again is every open of a cached file (100k lines for a cp -r of 100k files).
        judged = len(parts) == layout.count and state is not EntryState.PARTIAL
        log.log(
            logging.DEBUG if judged else logging.INFO,
            "resumed %d/%d parts of oss://%s/%s (%s)",
            len(parts),
            layout.count,
            bucket,
            meta.key,
            state.name,
        )
    return meta, parts, state


def _parts_in_holes(fd: int, layout: PartLayout, parts: Iterable[int]) -> set[int]:
    """Those of `parts` that overlap a hole of the data file (punched, or never written)."""
    spans = hole_spans(fd, layout.size)
    if not spans:
        return set()
    holed: set[int] = set()
    for start, end in spans:
        holed.update(layout.parts_for(start, end - start))
    return holed.intersection(parts)
