"""Local cache of object versions: part arithmetic, checkpoints, entries and the store.

Plain synchronous classes with no FUSE, HTTP or trio dependency; the prefetcher drives them
from trio (blocking calls such as `CacheEntry.flush` go to a worker thread there). See each
module's docstring for its invariants: `ranges` (what a part is), `checkpoint` (the persisted
record and its encoding), `entry` (durability order, states and shedding), `holes` (punching
and finding holes), `layout` (on-disk layout, version, lock), `store` (sharing, space, eviction).
"""

from __future__ import annotations

from ossmount.cache.checkpoint import Checkpoint, EntryState
from ossmount.cache.entry import CacheEntry
from ossmount.cache.errors import (
    CacheError,
    CacheFull,
    CacheIOError,
    CacheLayoutError,
    CacheLocked,
    CorruptCheckpoint,
    EntryStateError,
    PartMismatch,
)
from ossmount.cache.partbook import VerifyResult
from ossmount.cache.ranges import PartLayout
from ossmount.cache.store import CacheStats, CacheStore

__all__ = [
    "CacheEntry",
    "CacheError",
    "CacheFull",
    "CacheIOError",
    "CacheLayoutError",
    "CacheLocked",
    "CacheStats",
    "CacheStore",
    "Checkpoint",
    "CorruptCheckpoint",
    "EntryState",
    "EntryStateError",
    "PartLayout",
    "PartMismatch",
    "VerifyResult",
]
