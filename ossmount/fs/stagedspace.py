"""Staged bytes share the cache's two bounds: the cap (`--max-cache-size-mb`) and the floor
(`--min-free-mb` left free on the cache disk).

The read cache's space policy (ossmount.prefetch.space over ossmount.cache.store) already
keeps reads under both; staged files live beside it under `<cache dir>/staging/`. So the
store counts them (`CacheStore.staged_bytes`, part of `held_bytes`, which the read side's
reservations and evictions compare with the cap), and before a staged file grows, `grow`
makes room the way the read side does for a part:

* cap: idle read-cache entries are evicted (least recently used first) until the cache,
  staged bytes included, fits under it; if staged bytes alone would pass the cap, the write
  fails with ENOSPC (entries in use may keep the total above it for a while, as for reads:
  their downloads shed consumed parts after each flush);
* floor: idle entries are evicted until the disk keeps `min_free` free after the growth; if
  it still would not, ENOSPC.

Staged (dirty) files themselves are never evicted. A write that grows nothing (rewriting
bytes already staged) costs nothing here; one that grows the file costs a statvfs.

Trio thread only, no awaits: the count changes in the same step as the file it counts.
"""

from __future__ import annotations

import errno

from ossmount.cache.store import CacheStore

__all__ = ["StagedSpace"]


class StagedSpace:
    """The staged bytes' share of one cache store (see the module docstring)."""

    def __init__(self, store: CacheStore) -> None:
        self.store = store

    def grow(self, delta: int, where: str) -> None:
        """Count `delta` more staged bytes, making room first; OSError(ENOSPC) if there is
        none, naming `where` (oss://bucket/key) and the bound."""
        if delta <= 0:
            self.store.staged_bytes += delta
            return
        store = self.store
        cap = store.max_bytes
        if cap is not None and store.held_bytes() + delta > cap:
            if store.staged_bytes + delta > cap:
                raise _no_room(where, f"staged files would pass the cache cap ({cap >> 20} MiB)")
            store.evict_to(cap - delta)
        need = store.min_free + delta
        if store.min_free and store.free_bytes() < need:
            store.make_room(need)
            if store.free_bytes() < need:
                raise _no_room(
                    where, f"the cache disk would keep less than {store.min_free >> 20} MiB free"
                )
        store.staged_bytes += delta

    def already(self, size: int) -> None:
        """Count a staged file that is on disk already (one a previous process left): no
        room to make, it is taken."""
        self.store.staged_bytes += size

    def shrink(self, delta: int) -> None:
        self.store.staged_bytes -= delta


def _no_room(where: str, why: str) -> OSError:
    return OSError(errno.ENOSPC, f"{where}: staging: no room: {why} (--max-cache-size-mb, "
                   "--min-free-mb)")  # fmt: skip
