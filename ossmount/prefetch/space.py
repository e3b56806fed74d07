"""The one space policy: how the cache stays under its cap and leaves `min_free` on its disk.

The store (ossmount.cache.store) does the mechanics: it counts what entries hold, evicts idle
entries (`evict_to_fit` under the cap at open and release, `make_room` until a free-space
target), and says what the disk has free. This module decides, for the read path, with one
entry point per question:

* `may_start_readahead(length)`: a read-ahead part may start only if the disk has room for it,
  every GET in flight and `min_free`, after evicting and shedding if need be. Read-ahead never
  fills the cache disk. One statvfs per read-ahead part while the disk has room.
* `after_disk_full(shedder, index, urgent)`: a part write hit ENOSPC/EDQUOT: evict idle
  entries whatever the cap, then shed consumed parts of open downloads; for a part a reader
  is blocked on, also that download's unread parts. Whether it is worth trying again.
* `after_flush()`: a download grew its entry (a checkpoint flush): evict to the cap, shed what
  is still over it, and make room when the disk is below `min_free`, so a long download does
  not overshoot until it is released.

Trio thread only; nothing here awaits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import trio

from ossmount.cache.store import CacheStore
from ossmount.prefetch.shed import Shedder

__all__ = ["SpacePolicy"]


class SpacePolicy:
    def __init__(
        self,
        store: CacheStore,
        limiter: trio.CapacityLimiter,
        part_size: int,
        shedders: Callable[[], Iterable[Shedder]],
    ) -> None:
        """`shedders()`: those of the open downloads, in the order to ask them."""
        self._store = store
        self._limiter = limiter
        self._part_size = part_size
        self._shedders = shedders

    def may_start_readahead(self, length: int) -> bool:
        store = self._store
        need = length + self._limiter.borrowed_tokens * self._part_size + store.min_free
        if store.free_bytes() >= need:
            return True
        self._make_room(need)
        return store.free_bytes() >= need

    def after_disk_full(self, shedder: Shedder, index: int, urgent: bool) -> bool:
        """Whether there may be room now. Also the blocked reader's own download sheds its
        unread parts (returned > 0: the caller forgets its read-ahead queue, which would only
        fill the disk again)."""
        need = 2 * self._part_size
        return self._make_room(need) or (urgent and shedder.unread(index, need) > 0)

    def after_flush(self) -> None:
        store = self._store
        store.evict_to_fit()
        if store.max_bytes is not None:
            excess = store.held_bytes() - store.max_bytes
            if excess > 0:
                self._shed(excess)
        if store.min_free and store.free_bytes() < store.min_free:
            self._make_room(store.min_free)

    def _make_room(self, need: int) -> bool:
        """Evict idle entries, then shed consumed parts, until `need` bytes are free. Whether
        it is worth trying again: something was freed, or there is room now (others freed it
        meanwhile; ext4 may only count blocks freed by a punch once its journal commits, so
        freeing counts even unseen)."""
        store = self._store
        evicted = store.make_room(need)
        shortfall = need - store.free_bytes()
        shed = self._shed(shortfall) if shortfall > 0 else 0
        return bool(evicted or shed) or store.free_bytes() >= need

    def _shed(self, need: int) -> int:
        freed = 0
        for shedder in list(self._shedders()):
            if freed >= need:
                break
            freed += shedder.consumed(need - freed)
        return freed
