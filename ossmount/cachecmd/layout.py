"""A cache directory read from outside its mount: which dir, its entries, its lock.

The layout is the one `ossmount.cache.layout` documents (LAYOUT_VERSION 2; a layout-1 dir is
read as it is): ROOT/VERSION, ROOT/lock, ROOT/BUCKET/ab/<sha256(key)>.data and .ckpt, or
<sha256(key)>.one with the checkpoint in its tail (cache.tail). Only the store writes it; these
commands read it, and verify/clear change it only while holding the same flock() a mount
takes, so a mount and a command never work on one directory at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ossmount.cache.checkpoint import Checkpoint, EntryState, decode
from ossmount.cache.errors import CorruptCheckpoint
from ossmount.cache.layout import LAYOUT_VERSION, UPGRADABLE_LAYOUTS
from ossmount.cache.store import key_hash
from ossmount.cache.tail import read_tail
from ossmount.cachecmd.codes import CommandError, Exit
from ossmount.cachecmd.mountstate import read_record
from ossmount.config import default_cache_dir

__all__ = [
    "Entry",
    "EntryFiles",
    "check_layout",
    "exclusive",
    "holder_pid",
    "iter_entries",
    "leftovers",
    "read_entries",
    "read_entry",
    "remove_entry",
    "resolve_cache_dir",
]

_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
_STEM_RE = re.compile(r"[0-9a-f]{64}")


def resolve_cache_dir(cache_dir: str | None, source: str | None) -> Path:
    """--cache-dir DIR as given, else the mount's default dir for BUCKET[:/PREFIX]."""
    if cache_dir is not None:
        if source is not None:
            raise CommandError(
                "give either --cache-dir DIR or BUCKET[:/PREFIX], not both", Exit.USAGE
            )
        return Path(cache_dir)
    if source is None:
        raise CommandError("which cache? give --cache-dir DIR or BUCKET[:/PREFIX]", Exit.USAGE)
    bucket, _, prefix = source.partition(":")
    prefix = prefix.strip("/")
    if not _BUCKET_RE.fullmatch(bucket):
        raise CommandError(f"invalid bucket name {bucket!r}", Exit.USAGE)
    # The same rule as the mount's config: "bkt:/a/b/" and "bkt:a/b" share one cache dir.
    return default_cache_dir(bucket, prefix + "/" if prefix else "")


def check_layout(root: Path) -> None:
    """Refuse a directory that is not an ossmount cache of the layout we know."""
    try:
        text = (root / "VERSION").read_text().strip()
    except FileNotFoundError:
        raise CommandError(
            f"{root} is not an ossmount cache directory (it has no VERSION file)", Exit.CACHE
        ) from None
    except OSError as exc:
        raise CommandError(f"cannot read {root}/VERSION: {exc.strerror}", Exit.CACHE) from exc
    if text != str(LAYOUT_VERSION) and text not in UPGRADABLE_LAYOUTS:
        raise CommandError(
            f"cache directory {root} has layout version {text!r}; this ossmount knows "
            f"{LAYOUT_VERSION}",
            Exit.CACHE,
        )


@dataclass(frozen=True, slots=True)
class EntryFiles:
    bucket: str
    stem: str  # sha256 of the key
    data: Path  # .data, or .one
    ckpt: Path | None  # None: a .one file, the checkpoint is its tail


def _bucket_dirs(root: Path) -> Iterator[Path]:
    for sub in sorted(root.iterdir()):
        if sub.is_dir() and _BUCKET_RE.fullmatch(sub.name):
            yield sub


def iter_entries(root: Path) -> Iterator[EntryFiles]:
    """Every (data, checkpoint) pair and `.one` file, in directory order. Loose files, and
    both kinds of one key, are `leftovers`."""
    for bucket_dir in _bucket_dirs(root):
        for sub in sorted(bucket_dir.iterdir()):
            if not sub.is_dir():
                continue
            names = {p.name for p in sub.iterdir()}
            for name in sorted(names):
                stem, _, ext = name.partition(".")
                if not _STEM_RE.fullmatch(stem) or (
                    stem + ".one" in names and stem + ".ckpt" in names
                ):
                    continue
                if ext == "ckpt" and stem + ".data" in names:
                    yield EntryFiles(bucket_dir.name, stem, sub / (stem + ".data"), sub / name)
                elif ext == "one":
                    yield EntryFiles(bucket_dir.name, stem, sub / name, None)


def leftovers(root: Path) -> list[Path]:
    """Temp files and halves of pairs: a mount deletes these at start-up, so may clear."""
    found = []
    for bucket_dir in _bucket_dirs(root):
        for sub in bucket_dir.iterdir():
            if not sub.is_dir():
                continue
            names = {p.name for p in sub.iterdir()}
            for name in names:
                stem, _, ext = name.partition(".")
                partner = {"data": stem + ".ckpt", "ckpt": stem + ".data"}.get(ext)
                both = ext in ("data", "ckpt", "one") and {stem + ".one", stem + ".ckpt"} <= names
                if name.endswith(".tmp") or both or (partner is not None and partner not in names):
                    found.append(sub / name)
    return sorted(found)


@dataclass(frozen=True, slots=True)
class Entry:
    """One cache entry as found on disk. `checkpoint` is None when `problem` says why."""

    files: EntryFiles
    checkpoint: Checkpoint | None
    problem: str | None
    disk_bytes: int  # allocated, at most the object size (as the store counts it)
    last_used_ns: int  # the checkpoint's mtime: the store's LRU order

    @property
    def state(self) -> str:
        """verified, unverifiable, partial (incl. complete, not yet verified) or damaged."""
        if self.checkpoint is None:
            return "damaged"
        if self.checkpoint.state is EntryState.PARTIAL:
            return "partial"
        return self.checkpoint.state.name.lower()

    @property
    def cached_bytes(self) -> int:
        """Bytes in recorded parts: what verify hashes."""
        cp = self.checkpoint
        if cp is None:
            return 0
        layout = cp.layout
        return sum(layout.span(i)[1] for i in cp.part_crcs)

    @property
    def name(self) -> str:
        cp = self.checkpoint
        if cp is None:
            return f"{self.files.ckpt or self.files.data} (unreadable checkpoint)"
        return f"oss://{cp.bucket}/{cp.key}"


def read_entry(files: EntryFiles) -> Entry:
    """Decode and cross-check one entry's checkpoint against its place and its data file.

    Read-only: unlike checkpoint.load, a damaged checkpoint is reported, not deleted (status
    must not change anything; verify decides).
    """
    st_data = files.data.stat()
    st_ckpt = st_data if files.ckpt is None else files.ckpt.stat()
    disk = min(st_data.st_size, st_data.st_blocks * 512)
    cp: Checkpoint | None = None
    problem: str | None = None
    try:
        cp = _read_checkpoint(files)
    except CorruptCheckpoint as exc:
        problem = f"damaged checkpoint: {exc}"
    if cp is not None:
        if cp.bucket != files.bucket or key_hash(cp.key) != files.stem:
            problem = f"checkpoint names oss://{cp.bucket}/{cp.key}, which does not belong here"
        elif files.ckpt is not None and st_data.st_size != cp.size:
            problem = f"data file is {st_data.st_size} bytes, the object {cp.size}"
        if problem is not None:
            problem = f"oss://{cp.bucket}/{cp.key}: {problem}"
            cp = None
    return Entry(files, cp, problem, disk, st_ckpt.st_mtime_ns)


def _read_checkpoint(files: EntryFiles) -> Checkpoint:
    if files.ckpt is not None:
        return decode(files.ckpt.read_bytes())
    fd = os.open(files.data, os.O_RDONLY | os.O_CLOEXEC)
    try:
        cp = read_tail(fd)
    finally:
        os.close(fd)
    if cp is None:
        raise CorruptCheckpoint("no checkpoint at the end of the file")
    return cp


def read_entries(root: Path) -> list[Entry]:
    """Every entry; one a running mount evicts while we look is simply not there."""
    entries = []
    for files in iter_entries(root):
        try:
            entries.append(read_entry(files))
        except FileNotFoundError:
            continue
    return entries


def remove_entry(files: EntryFiles) -> None:
    """Checkpoint first, then data: a crash in between leaves a data file without a
    checkpoint, which the next mount deletes (never a checkpoint naming missing bytes)."""
    if files.ckpt is not None:
        files.ckpt.unlink(missing_ok=True)
    files.data.unlink(missing_ok=True)


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


def holder_pid(root: Path) -> tuple[bool, int | None]:
    """(in use, pid written in the lock file) by probing the flock a mount holds.

    A shared, non-blocking probe released at once: it cannot stop a running mount. A mount
    starting in the same microseconds would see it as "in use" and fail; that window is
    accepted for a read-only status.
    """
    try:
        fd = os.open(root / "lock", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False, None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True, _read_pid(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False, None
    finally:
        os.close(fd)


def describe_holder(root: Path, pid: int | None) -> str:
    record = read_record(root)
    if pid is not None and record is not None and record.pid == pid:
        return f"the mount of {record.source} at {record.mountpoint} (process {pid})"
    return f"process {pid}" if pid is not None else "another process"


@contextlib.contextmanager
def exclusive(
    root: Path, action: str, hint: str = "unmount it first (fusermount3 -u MOUNTPOINT)"
) -> Iterator[None]:
    """Hold the cache dir's lock, as a mount does, for a command that changes it.

    Refuses with Exit.CACHE, naming the holder, while a mount (or another command) holds it.
    While held, a mount that starts fails with "in use by process <this pid>".
    """
    try:
        fd = os.open(root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise CommandError(f"cannot open {root}/lock: {exc.strerror}", Exit.CACHE) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = describe_holder(root, _read_pid(fd))
            raise CommandError(
                f"cannot {action} {root}: it is in use by {who}; {hint}",
                Exit.CACHE,
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
