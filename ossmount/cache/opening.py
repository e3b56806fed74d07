"""Opening a cache entry: resume the one on disk if its checkpoint is for this exact version,
else start a fresh sparse file (the factory `CacheEntry` is built by, kept apart from it).

Two kinds of entry (cache layout 2, cache.layout): a one-part object is kept in one file, its
checkpoint in the file's tail (`one`, cache.tail); any other object, and a one-part object
cached by layout 1 or adopted by an older release, in a data file plus a checkpoint file. A new
entry takes the kind its object's size gives; an existing one of either kind is resumed if it
is this version, and otherwise both kinds' files are removed before the new one is created,
so a key never has two versions on disk.

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
from ossmount.cache.errors import CorruptCheckpoint, io_error
from ossmount.cache.holes import hole_spans
from ossmount.cache.ranges import PartLayout
from ossmount.cache.tail import read_tail
from ossmount.oss.models import ObjectMeta

__all__ = ["crcs_agree", "open_entry", "peek_one", "same_version"]

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
    one: Path | None = None,
    absent: bool = False,
) -> CacheEntry:
    """Resume the entry of `meta` if one on disk is for this exact version, else start it.

    `path` + `checkpoint_path`: the data file and checkpoint of the two-file kind; `one`: where
    a one-part object is kept in a single file (cache.tail), None to keep every object in two
    files (cache layout 1).

    Any other version (or a damaged checkpoint, or one whose data file is missing or has the
    wrong size) is deleted, checkpoint first, with both kinds' files, before a fresh sparse
    file is created, so two versions never mix; the directory is fsynced in between when a
    checkpoint file was removed: a crash can then only leave an orphan data file, which no
    checkpoint vouches for.

    `absent`: the caller (the store's index) knows no file of the key is there, so nothing is
    read or removed (three failing syscalls per cold small file); if a file is there after
    all, the full path above runs.
    """
    layout = PartLayout(meta.size, part_size)
    single = one if one is not None and layout.count <= 1 else None
    new_path, new_ckpt = (single, None) if single is not None else (path, checkpoint_path)
    try:
        if absent:
            try:
                fd = _create(new_path, meta.size)
            except FileExistsError:
                pass  # not absent after all: the full path below
            else:
                return _fresh(bucket, meta, layout, new_path, new_ckpt, fd)
        entry = None if single is None else _resume_single(bucket, meta, layout, single)
        if entry is None:
            entry = _resume_pair(bucket, meta, layout, path, checkpoint_path)
        if entry is not None:
            return entry
        fd = _start_fresh(checkpoint_path, [path, one], new_path, meta.size)
    except OSError as exc:
        raise io_error("open", bucket=bucket, key=meta.key, path=new_path, cause=exc) from exc
    return _fresh(bucket, meta, layout, new_path, new_ckpt, fd)


def _fresh(
    bucket: str, meta: ObjectMeta, layout: PartLayout, path: Path, ckpt: Path | None, fd: int
) -> CacheEntry:
    return CacheEntry(
        bucket=bucket, meta=meta, layout=layout, path=path, checkpoint_path=ckpt, fd=fd,
        durable={}, state=EntryState.PARTIAL, has_checkpoint=False,
    )  # fmt: skip


def _this_version(cp: Checkpoint | None, bucket: str, meta: ObjectMeta, part_size: int) -> bool:
    """Whether `cp` is for `meta`; another version is logged (it is about to be dropped)."""
    if cp is None:
        return False
    if same_version(cp, bucket=bucket, meta=meta, part_size=part_size):
        return True
    log.info(
        "cached oss://%s/%s is another version (etag %s size %d part %d, now etag %s "
        "size %d part %d): discarding it",
        bucket, meta.key, cp.etag, cp.size, cp.part_size, meta.etag, meta.size, part_size,
    )  # fmt: skip
    return False


def _resume_pair(
    bucket: str, meta: ObjectMeta, layout: PartLayout, path: Path, ckpt: Path
) -> CacheEntry | None:
    """The two-file entry at `path` + `ckpt` if it is this version, else None."""
    cp = load(ckpt, bucket=bucket, key=meta.key)
    if not _this_version(cp, bucket, meta, layout.part_size):
        return None
    assert cp is not None
    fd = _open_existing(bucket, meta, path)
    return None if fd is None else _resumed(bucket, meta, layout, path, ckpt, fd, cp)


def _resume_single(
    bucket: str, meta: ObjectMeta, layout: PartLayout, one: Path
) -> CacheEntry | None:
    """The one-file entry at `one` if its tail is a checkpoint of this version, else None."""
    try:
        fd = os.open(one, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            cp = read_tail(fd)
        except CorruptCheckpoint as exc:
            log.warning(
                "discarding unusable checkpoint for oss://%s/%s at %s: %s",
                bucket,
                meta.key,
                one,
                exc,
            )
            cp = None
        if _this_version(cp, bucket, meta, layout.part_size):
            assert cp is not None
            return _resumed(bucket, meta, layout, one, None, fd, cp)
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    return None


def _resumed(
    bucket: str, meta: ObjectMeta, layout: PartLayout, path: Path, ckpt: Path | None, fd: int,
    cp: Checkpoint,
) -> CacheEntry:  # fmt: skip
    try:
        meta, durable, state = _resume(bucket, meta, layout, path, fd, cp)
    except BaseException:
        os.close(fd)
        raise
    return CacheEntry(
        bucket=bucket, meta=meta, layout=layout, path=path, checkpoint_path=ckpt, fd=fd,
        durable=durable, state=state, has_checkpoint=True,
    )  # fmt: skip


def _start_fresh(checkpoint: Path, others: list[Path | None], path: Path, size: int) -> int:
    """Remove what is there (the checkpoint file first), create the sparse file; its fd."""
    removed_checkpoint = False
    with contextlib.suppress(FileNotFoundError):
        checkpoint.unlink()
        removed_checkpoint = True
    for other in others:
        if other is not None:
            other.unlink(missing_ok=True)
    if removed_checkpoint:
        # Only a removed checkpoint file must be durably gone before the new file exists;
        # a first download skips this fsync (it sits on the time to first byte). A `.one`
        # file needs none: its checkpoint goes with it, and were it to come back beside a
        # new `.data` after a crash, the startup scan drops both (cache.store).
        fsync_dir(path.parent)
    return _create(path, size)


def peek_one(one: Path, *, bucket: str, key: str) -> Checkpoint | None:
    """The checkpoint in the tail of the `.one` file `one` (cache.tail), for a freshness check
    before an open; None if there is no such file, no checkpoint in it, or a damaged one
    (logged: the next open replaces the file). CacheIOError if it cannot be read."""
    try:
        fd = os.open(one, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise io_error("checkpoint read", bucket=bucket, key=key, path=one, cause=exc) from exc
    try:
        return read_tail(fd)
    except CorruptCheckpoint as exc:
        log.warning("unusable checkpoint for oss://%s/%s at %s: %s", bucket, key, one, exc)
        return None
    except OSError as exc:
        raise io_error("checkpoint read", bucket=bucket, key=key, path=one, cause=exc) from exc
    finally:
        os.close(fd)


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
