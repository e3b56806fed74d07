"""The one space policy: how the cache stays under its cap and leaves `min_free` on its disk.

The store (ossmount.cache.store) does the mechanics: it counts what entries hold, evicts idle
entries (`evict_to_fit` under the cap at open and release, `make_room` until a free-space
target), and says what the disk has free. This module decides, for the read path, with one
entry point per question:

* `reserve(length, urgent, ...)` / `release(length)`: every part GET (demand and read-ahead)
  reserves its bytes before it writes a byte (issue 14 finding 6). It fits when the cache
  holds, with every reservation in flight and this one, at most the cap, and the disk keeps
  `min_free` free after every reservation in flight and this one is written; else idle
  entries are evicted and consumed parts shed (for a demand part, also its download's unread
  parts) until it fits. A read-ahead part that still does not fit does not start (read-ahead
  never fills the cache disk nor passes the cap). A demand part must go, so it may overdraw,
  but only one at a time mount-wide and only while the bounds hold without it (else it waits
  for a release, which sheds again): both bounds hold to within one part. With nothing in
  flight to wait for (the bounds already passed by the last overdraft, and every byte held
  within the shed margin behind its reader, as the kernel's read-ahead spreads a reader's
  reads out), the parts in that margin are shed too (`_tighten`): a late read of one fetches
  it again, but the bound holds. Only if even that leaves the bounds passed (every byte held
  is under a read running now, or the filesystem cannot punch holes) does it go regardless,
  rather than wait for ever. One statvfs per part while the disk has room.
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
from dataclasses import dataclass

import trio

from ossmount.cache.store import CacheStore
from ossmount.prefetch.shed import Shedder

__all__ = ["Reservation", "SpacePolicy"]


@dataclass(frozen=True, slots=True)
class Reservation:
    """Bytes reserved for one part GET; `overdraft`: the one demand part beyond the bounds."""

    length: int
    overdraft: bool


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
        self.reserved = 0  # bytes of part GETs in flight (reserved, not yet released)
        self._overdraft = False  # a demand part runs beyond the bounds (at most one)
        self._released = trio.Event()  # set (and replaced) at each release

    async def reserve(
        self, length: int, urgent: bool, shedder: Shedder, index: int
    ) -> Reservation | None:
        """Reserve `length` bytes for part `index` before its GET; None: a read-ahead part
        that finds no room (do not start it). Else `release` it when the GET ends. A demand
        part waits while another demand part overdraws."""
        while True:
            if self._fits(length) or self._make_fit(length, urgent, shedder, index):
                self.reserved += length
                return Reservation(length, overdraft=False)
            if not urgent:
                return None
            if not self._overdraft and self.reserved == 0 and not self._fits(0):
                self._tighten()
                if self._fits(length):
                    self.reserved += length
                    return Reservation(length, overdraft=False)
            if not self._overdraft and (self._fits(0) or self.reserved == 0):
                # The bounds hold now, so this part passes them by itself at most; or nothing
                # is in flight whose release could make room (waiting would never end).
                self._overdraft = True
                self.reserved += length
                return Reservation(length, overdraft=True)
            await self._released.wait()

    def release(self, reservation: Reservation) -> None:
        self.reserved -= reservation.length
        if reservation.overdraft:
            self._overdraft = False
        self._released.set()
        self._released = trio.Event()

    def _fits(self, length: int) -> bool:
        store = self._store
        after = self.reserved + length
        if store.max_bytes is not None and store.held_bytes() + after > store.max_bytes:
            return False
        return store.free_bytes() - after >= store.min_free

    def _tighten(self) -> None:
        """Shed consumed parts within the shed margin too, until the bounds hold without a
        part in flight (module docstring: what passing them would otherwise take)."""
        store = self._store
        need = store.min_free - store.free_bytes()
        if store.max_bytes is not None:
            need = max(need, store.held_bytes() - store.max_bytes)
        self._shed(need, margin=0)

    def _make_fit(self, length: int, urgent: bool, shedder: Shedder, index: int) -> bool:
        """Evict idle entries and shed consumed parts (a demand part: also its download's
        unread ones) until `length` more bytes fit; whether they do now."""
        store = self._store
        after = self.reserved + length
        if store.max_bytes is not None:
            limit = store.max_bytes - after
            store.evict_to(limit)
            excess = store.held_bytes() - limit
            if excess > 0:
                excess -= self._shed(excess)
            if excess > 0 and urgent:
                shedder.unread(index, excess)
        free_need = store.min_free + after
        if store.free_bytes() < free_need:
            self._make_room(free_need)
            if urgent and store.free_bytes() < free_need:
                shedder.unread(index, free_need - store.free_bytes())
        return self._fits(length)

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

    def _shed(self, need: int, margin: int | None = None) -> int:
        """Shed consumed parts of the open downloads until `need` bytes are freed; `margin`
        None: each keeps its shed margin."""
        freed = 0
        for shedder in list(self._shedders()):
            if freed >= need:
                break
            freed += shedder.consumed(need - freed, margin=margin)
        return freed
