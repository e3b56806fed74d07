"""The cache store: one bucket's entries shared between their users, space accounting, eviction.

Its files are laid out as cache.layout describes (one directory per bucket, `<sha256(key)>`
stems, `.data` + `.ckpt` or one `.one` file per entry, VERSION and the lock file), which also
takes the lock and checks the layout version: that part changes only with the on-disk format,
this one with how entries are shared and space is kept.

Startup (`lock()`): after taking the lock, every bucket subdirectory is scanned (cache.scan):
what no checkpoint vouches for is deleted; the rest is indexed for space accounting, oldest
first. Checkpoints are not decoded at startup (that would read every one); a damaged one is
found and deleted when its key is next opened, and until then it is evictable like any other.

In memory: `_index` is an LRU (OrderedDict, oldest first) of key hash -> bytes for every entry
on disk; `_current` maps a key hash to the open entry for its current version with a reference
count; `_open` finds the slot of any handed-out entry (including superseded ones, which stay
readable for the readers that hold them).

Parked entries (cache.parked): the last 64 entries released with their checkpoint saved stay
open, so a reopen of the same version (every file of a directory walk the read-ahead fetched)
takes the entry back instead of reading and re-hashing it.

Space is counted as the bytes an entry holds, not its object's size: a Parquet footer read of
a 100 GiB object holds a few MiB, and counting 100 GiB would evict every other entry. An entry
in use counts its recorded parts (`CacheEntry.cached_bytes`, live); an idle one counts what
it held at release, or, after a restart, min(size, allocated blocks) of its data file (no
checkpoint is decoded at startup). `_idle_bytes` is the sum over idle entries, so the total
costs O(entries in use). Eviction deletes only idle entries, least recently released first;
an entry in use is never touched. When to evict beyond open and release, and when to shed
instead, is the read path's one space policy (ossmount.prefetch.space): it calls `evict_to_fit`
after every checkpoint flush, so a long download makes room as it grows instead of overshooting
the limit until it is released, and frees what eviction cannot (an object bigger than the cap,
or than the disk) by shedding parts its readers have consumed (`CacheEntry.shed`), where the
startup probe (`can_shed`, ossmount.cache.holes) showed the filesystem punches and reports
holes.

Not thread-safe: the store is driven from the trio thread only (entries allow a flush in a
worker thread, see ossmount.cache.entry).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ossmount.cache import opening
from ossmount.cache.checkpoint import Checkpoint, load
from ossmount.cache.entry import CacheEntry
from ossmount.cache.errors import CacheError, CacheFull, EntryStateError, io_error
from ossmount.cache.holes import probe
from ossmount.cache.layout import check_version, take_lock
from ossmount.cache.parked import ParkedEntries
from ossmount.cache.scan import CKPT, DATA, ONE, scan
from ossmount.cache.spread import spread_subdirectories
from ossmount.oss.addressing import valid_bucket_name
from ossmount.oss.models import ObjectMeta

__all__ = ["CacheStats", "CacheStore", "Dropped", "key_hash"]

log = logging.getLogger(__name__)

_DATA, _CKPT, _ONE = DATA, CKPT, ONE


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Point-in-time figures. `bytes` are what the entries hold (cached parts, not sizes)."""

    bytes: int
    entries: int
    in_use: int
    evictions: int
    max_bytes: int | None


@dataclass(frozen=True, slots=True)
class Dropped:
    """What `drop_idle` deleted, and what it left because it is in use."""

    entries: int
    bytes: int
    kept_entries: int
    kept_bytes: int


class _Slot:
    __slots__ = ("entry", "hash", "refs")

    def __init__(self, entry: CacheEntry, key_hash: str) -> None:
        self.entry = entry
        self.hash = key_hash
        self.refs = 1


def key_hash(key: str) -> str:
    """Hex SHA-256 of the key: its file name stem."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class CacheStore:
    """All cache entries of one bucket under `root`. Call `lock()` before anything else.

    Every `open_entry` must be paired with one `release`.
    """

    def __init__(
        self, root: Path, *, bucket: str, max_bytes: int | None = None, min_free: int = 0
    ) -> None:
        if not valid_bucket_name(bucket):
            raise ValueError(f"invalid bucket name {bucket!r}")
        if max_bytes is not None and max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.root = Path(root)
        self.bucket = bucket
        self.max_bytes = max_bytes
        self.min_free = min_free  # bytes to leave free on the cache filesystem
        self._bucket_dir = self.root / bucket
        self._lock_fd: int | None = None
        self._index: OrderedDict[str, int] = OrderedDict()  # LRU; the bytes of idle entries
        self._idle_bytes = 0  # sum of _index over entries not in _current
        self._current: dict[str, _Slot] = {}  # changed only by _enter / _leave
        self._live_sizes = 0  # sum of the object sizes of _current: a bound on what they hold
        self._made_dirs: set[Path] = set()  # fan-out dirs known to exist (never removed)
        self._open: dict[int, _Slot] = {}
        self._parked = ParkedEntries()
        self._evictions = 0
        # Bytes of files being written (staged beside the cache, fs/stagedspace.py): they
        # count against the cap like entries, but are never evicted.
        self.staged_bytes = 0
        self.shed_refusal: str | None = "the cache dir is not locked yet"

    # ----------------------------------------------------------------- lock and startup

    def lock(self) -> None:
        """Take the cache directory for this process, then check the layout and scan it.

        Raises CacheLocked (with the holder's pid when it wrote one) if another process, or
        another CacheStore in this process, holds it; CacheLayoutError for a foreign VERSION.
        """
        if self._lock_fd is not None:
            return
        fd = take_lock(self.root, self.bucket)
        try:
            check_version(self.root)
            spread_subdirectories(self.root)  # before the bucket dir and staging/ are made
            self._bucket_dir.mkdir(exist_ok=True)
            spread_subdirectories(self._bucket_dir)  # before the fan-out dirs are made
            self._scan()
            self.shed_refusal = probe(self._bucket_dir)
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd = fd
        free = self.free_bytes()
        if free < self.min_free:
            log.warning(
                "cache dir %s has %d MiB free, less than the %d MiB to keep free "
                "(--min-free-mb): reads will evict and drop cached data as they go",
                self.root,
                free >> 20,
                self.min_free >> 20,
            )
        if self.shed_refusal is not None:
            log.warning(
                "cache dir %s: %s, so an object bigger than the cache cannot stream through "
                "it (reading one fails once the disk is full)",
                self.root,
                self.shed_refusal,
            )

    @property
    def can_shed(self) -> bool:
        """Whether parts of entries in use may be punched out (see ossmount.cache.holes)."""
        return self.shed_refusal is None

    def _scan(self) -> None:
        for stem, held in scan(self._bucket_dir):
            self._index[stem] = held
            self._idle_bytes += held

    def _require_lock(self) -> None:
        if self._lock_fd is None:
            raise EntryStateError(f"cache store {self.root} used before lock() or after close()")

    # ----------------------------------------------------------------- entries

    def _paths(self, key: str) -> tuple[str, Path, Path]:
        h = key_hash(key)
        directory = self._bucket_dir / h[:2]
        return h, directory / (h + _DATA), directory / (h + _CKPT)

    @staticmethod
    def _one(data: Path) -> Path:
        """The `.one` file beside `data`: the key's file if its object is of one part."""
        return data.with_suffix(_ONE)

    def open_entry(self, meta: ObjectMeta, part_size: int) -> CacheEntry:
        """The entry for exactly this version, shared with other users of it; resumed if cached.

        If the key's current entry is another version (or was discarded), it is detached:
        its holders keep reading their (now unlinked) file, and this version starts fresh.
        """
        self._require_lock()
        h, path, ckpt = self._paths(meta.key)
        slot = self._current.get(h)
        if slot is not None:
            entry = slot.entry
            if entry.usable and _same_open_version(entry, meta, part_size):
                slot.refs += 1
                self._touch(h)
                return entry
            entry.detach()
            self._leave(h)
        parked = self._parked.take(h)
        if parked is not None and _same_open_version(parked, meta, part_size):
            entry = parked
        else:
            if parked is not None:
                _close_tolerating_a_full_disk(parked)  # another version: opening replaces it
            try:
                if path.parent not in self._made_dirs:  # a mkdir per open: ~5 % of a small file
                    path.parent.mkdir(exist_ok=True)
                    self._made_dirs.add(path.parent)
            except OSError as exc:
                raise io_error(
                    "mkdir", bucket=self.bucket, key=meta.key, path=path, cause=exc
                ) from exc
            entry = opening.open_entry(
                bucket=self.bucket,
                meta=meta,
                part_size=part_size,
                path=path,
                checkpoint_path=ckpt,
                one=self._one(path),
                absent=h not in self._index,  # indexed at startup and at every open since
            )
        if slot is None:  # it was idle (or new): from now on it is counted live
            self._idle_bytes -= self._index.get(h, 0)
        slot = _Slot(entry, h)
        self._enter(h, slot)
        self._open[id(entry)] = slot
        self._index[h] = 0  # a placeholder for its LRU place: current entries count live
        self._touch(h)
        self.evict_to_fit()
        return entry

    def adopt(self, key: str, data: Path, checkpoint: Path | None, held: int) -> None:
        """Make `data` with its sealed `checkpoint` (same filesystem) the idle entry of `key`:
        a file the write path just committed (cache/adopt.py). `checkpoint` None: it is in
        `data`'s tail already (cache.tail), and `data` becomes the key's `.one` file. The
        key's current entry is detached first, as `open_entry` does for a new version, so it
        never writes over them. OSError as raised; the key then has no entry on disk."""
        self._require_lock()
        h, path, ckpt = self._paths(key)
        slot = self._leave(h)
        if slot is not None:
            slot.entry.detach()  # its readers keep their (unlinked) file
        self._parked.drop(h, detach=True)  # an older version: it must not write over them either
        self._idle_bytes -= self._index.pop(h, 0)  # a current entry's is a placeholder 0
        one = self._one(path)
        try:
            path.parent.mkdir(exist_ok=True)
            ckpt.unlink(missing_ok=True)  # no old checkpoint ever beside the new bytes
            if checkpoint is None:
                path.unlink(missing_ok=True)  # an older pair's data (the scan's orphan)
                os.rename(data, one)  # replaces an older one-file version at once
            else:
                one.unlink(missing_ok=True)  # nor an older one-file version
                os.rename(data, path)
                os.rename(checkpoint, ckpt)
        except OSError:
            for leftover in (ckpt, path, one):  # never a data file no index entry counts
                with contextlib.suppress(OSError):
                    leftover.unlink(missing_ok=True)
            raise
        self._index[h] = held
        self._idle_bytes += held
        self.evict_to_fit()

    def holds(self, key: str) -> bool:
        """Whether some version of `key` is in the cache (open or not), from memory only."""
        return key_hash(key) in self._index

    def cached_checkpoint(self, key: str) -> Checkpoint | None:
        """What is on disk for `key`, for a freshness check before deciding to open it."""
        self._require_lock()
        h, _, ckpt = self._paths(key)
        slot = self._current.get(h)
        if slot is not None and slot.entry.usable:
            return slot.entry.checkpoint()
        parked = self._parked.peek(h)
        if parked is not None:
            return parked.checkpoint()
        cp = opening.peek_one(self._one(ckpt), bucket=self.bucket, key=key)
        if cp is None:
            cp = load(ckpt, bucket=self.bucket, key=key)
        if cp is not None and (cp.bucket != self.bucket or cp.key != key):
            return None
        return cp

    def release(self, entry: CacheEntry) -> None:
        """One user of `entry` is done; the last one closes it and makes it evictable."""
        slot = self._open.get(id(entry))
        if slot is None or slot.entry is not entry:
            raise EntryStateError(f"release of an entry this store does not hold: {entry!r}")
        slot.refs -= 1
        if slot.refs > 0:
            return
        del self._open[id(entry)]
        is_current = self._current.get(slot.hash) is slot
        if is_current:
            self._leave(slot.hash)
        try:
            if not (is_current and self._parked.park(slot.hash, entry)):
                _close_tolerating_a_full_disk(entry)
        finally:
            if is_current:
                self._after_close(slot.hash, entry)
        if self.max_bytes is not None:
            self.evict_to_fit()

    def _after_close(self, h: str, entry: CacheEntry) -> None:
        if entry.discarded or not entry.has_checkpoint:
            self._index.pop(h, None)
            return
        self._index[h] = held = entry.cached_bytes
        self._idle_bytes += held
        self._touch(h)
        # The file's mtime is the recency the next startup's LRU order reads; a save within the
        # last second set it already (every cold small file: one utime less).
        if time.monotonic() - entry.saved_at > 1.0:
            with contextlib.suppress(OSError):
                os.utime(entry.checkpoint_path or entry.path)

    def _enter(self, h: str, slot: _Slot) -> None:
        self._current[h] = slot
        self._live_sizes += slot.entry.layout.size

    def _leave(self, h: str) -> _Slot | None:
        if (slot := self._current.pop(h, None)) is not None:
            self._live_sizes -= slot.entry.layout.size
        return slot

    def _touch(self, h: str) -> None:
        if h in self._index:
            self._index.move_to_end(h)

    # ----------------------------------------------------------------- space

    def evict_to_fit(self) -> int:
        """Delete least recently used entries not in use until under `max_bytes`.

        Returns how many entries were evicted. Entries in use are skipped, so the total may
        stay above the limit while they are open.
        """
        if self.max_bytes is None:
            return 0
        return self.evict_to(self.max_bytes)

    def evict_to(self, limit: int) -> int:
        """Delete least recently used entries not in use until they hold at most `limit`
        bytes (the cap less what part GETs in flight reserved: prefetch.space)."""
        if self._lock_fd is None:
            return 0
        if self._idle_bytes + self._live_sizes + self.staged_bytes <= limit:
            return 0  # an O(1) bound (entries in use hold at most their sizes): the usual case
        evicted = self._evict_idle(lambda: self.held_bytes() <= limit)
        if evicted:
            log.debug("evicted %d cache entries of bucket %s", evicted, self.bucket)
        return evicted

    def make_room(self, need: int) -> int:
        """The cache filesystem is full (or below `min_free`): evict idle entries, least recent
        first, until it has `need` bytes free (whatever the cap says). Returns how many were
        evicted.

        The cap bounds what ossmount holds; the disk may also fill from elsewhere, or be
        smaller than the cap. Without this a full disk stays full: every later part fails.
        """
        self._require_lock()
        evicted = self._evict_idle(lambda: self.free_bytes() >= need)
        if evicted:
            log.info(
                "cache dir %s is short of space: evicted %d idle cache entries to free %d MiB",
                self.root,
                evicted,
                need >> 20,
            )
        return evicted

    def _evict_idle(self, enough: Callable[[], bool]) -> int:
        """Evict idle entries, least recently used first, until `enough()`; how many went."""
        if enough():
            return 0  # the usual case, at every open and flush: no copy of a 100k-entry index
        evicted = 0
        for h in list(self._index):
            if enough():
                break
            if h not in self._current and self._evict(h):
                evicted += 1
        self._evictions += evicted
        return evicted

    def free_bytes(self) -> int:
        """Bytes free for us on the cache filesystem (0 if it cannot be asked)."""
        try:
            st = os.statvfs(self._bucket_dir)
        except OSError:
            return 0
        return st.f_bavail * st.f_frsize

    def _evict(self, h: str) -> bool:
        """Delete idle entry `h`'s files and forget it; False (logged) if they stay."""
        directory = self._bucket_dir / h[:2]
        self._parked.drop(h)
        try:
            for ext in (_CKPT, _DATA, _ONE):  # checkpoint file first, as everywhere
                (directory / (h + ext)).unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot evict cache entry %s in %s: %s", h, directory, exc)
            return False
        self._idle_bytes -= self._index.pop(h)
        return True

    def drop_idle(self, limit: int) -> Dropped:
        """Delete up to `limit` idle entries (`ossmount cache clear --through-mount`), least
        recently used first, by the path eviction takes, so the accounting stays right.

        Entries in use (open for reading or downloading) stay and are counted in the answer.
        Bounded by `limit` so that the caller can yield to the event loop between batches: a
        store of 100k entries is not unlinked in one step of the loop that serves FUSE.
        """
        self._require_lock()
        dropped = freed = 0
        # The first limit + in-use keys hold `limit` idle ones if there are: no copy of a
        # 100k-entry index per batch.
        for h in list(itertools.islice(self._index, limit + len(self._current))):
            if dropped >= limit:
                break
            held = self._index[h]
            if h not in self._current and self._evict(h):
                dropped += 1
                freed += held
        kept = sum(slot.entry.cached_bytes for slot in self._current.values())
        return Dropped(dropped, freed, len(self._current), kept)

    def distrust_open(self) -> int:
        """The disk under the cache reported a write error (cache.writeback): every entry open
        in this process re-hashes its parts before serving them again, and parked entries are
        closed (a reopen reads the checkpoint, whose parts are all re-hashed). Entries not
        open are re-hashed at their next open anyway. How many parts were distrusted."""
        self._parked.close_all()
        return sum(slot.entry.distrust() for slot in self._open.values())

    def held_bytes(self) -> int:
        """Bytes the cache holds: idle entries as released, entries in use as of now, and
        staged files."""
        live = sum(slot.entry.cached_bytes for slot in self._current.values())
        return self._idle_bytes + live + self.staged_bytes

    def statistics(self) -> CacheStats:
        return CacheStats(
            bytes=self.held_bytes(),
            entries=len(self._index),
            in_use=len(self._open),
            evictions=self._evictions,
            max_bytes=self.max_bytes,
        )

    # ----------------------------------------------------------------- shutdown

    def close(self) -> None:
        """Flush and close every open entry (even ones still referenced), then unlock.

        Failures to flush one entry are logged and do not stop the others; the first is
        re-raised at the end, after the lock is released (a full disk is only a WARNING).
        """
        first: CacheError | None = None
        self._parked.close_all()
        for slot in list(self._open.values()):
            try:
                _close_tolerating_a_full_disk(slot.entry)
            except CacheError as exc:
                log.error(
                    "closing cache entry oss://%s/%s failed: %s",
                    self.bucket,
                    slot.entry.meta.key,
                    exc,
                )
                first = first or exc
        self._open.clear()
        self._current.clear()
        self._live_sizes = 0
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if first is not None:
            raise first


def _close_tolerating_a_full_disk(entry: CacheEntry) -> None:
    """Close `entry`; a checkpoint that cannot be saved for lack of space is a WARNING.

    Nothing is wrong with the bytes: the parts since the last saved checkpoint are simply
    fetched again next time (and without any checkpoint the data file is removed, which gives
    the space back). Failing `release` or the unmount's exit status over it would not help.
    """
    try:
        entry.close()
    except CacheFull as exc:
        log.warning(
            "oss://%s/%s: its checkpoint could not be saved (%s): parts since the last one "
            "will be fetched again",
            entry.bucket,
            entry.meta.key,
            exc.cause.strerror or exc.cause,
        )


def _same_open_version(entry: CacheEntry, meta: ObjectMeta, part_size: int) -> bool:
    m = entry.meta
    return (
        m.version == meta.version
        and entry.layout.part_size == part_size
        and opening.crcs_agree(m.crc64, meta.crc64)
    )
