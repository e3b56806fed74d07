"""Released cache entries kept open for a reopen of the same version (the store's park).

An entry whose last user released it with its checkpoint saved stays open, idle, with its file
descriptor and its part maps, so a reopen of the same version takes it back instead of reading
the checkpoint, opening the file, looking for holes and re-hashing every part (cache.checks:
its parts were hashed in this process, as they arrived or at their re-check). That is every
file of a directory walk: the directory read-ahead (prefetch.siblings) downloads the next
files, their downloads release them, and the walker opens each a moment later. Measured with
the store's cold open (`absent`, cache.opening): a cold `rsync -a` / `cp -r` of 2,000 x 8 KiB
files went from 3.84 / 4.03 to 3.44 / 3.33 ms of daemon CPU per file (medians of 3 interleaved
runs through a mount).

The last `PARKED` released are kept (one descriptor each), oldest closed first. A parked entry
is idle in every other respect: the store counts it in its idle bytes, evicts it (`drop`
closes it first) and closes it at `close_all`; only an entry still `usable` is taken back, and
the store takes it back only for the same version. Owner (trio) thread only, like the store.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from ossmount.cache.entry import CacheEntry
from ossmount.cache.errors import CacheError

__all__ = ["PARKED", "ParkedEntries"]

log = logging.getLogger(__name__)

PARKED = 64


class ParkedEntries:
    def __init__(self) -> None:
        self._entries: OrderedDict[str, CacheEntry] = (
            OrderedDict()
        )  # key hash -> entry, oldest first

    def park(self, h: str, entry: CacheEntry) -> bool:
        """Keep a released entry open; False: the caller closes it. Only a clean one (its
        download saved its checkpoint before releasing it): one that still needs a flush takes
        the store's close path, which saves or warns."""
        if not (entry.usable and entry.has_checkpoint) or entry.needs_flush:
            return False
        self._entries[h] = entry
        while len(self._entries) > PARKED:
            _close_quietly(self._entries.popitem(last=False)[1])
        return True

    def take(self, h: str) -> CacheEntry | None:
        """`h`'s parked entry, out of the park, if there is one still usable."""
        entry = self._entries.pop(h, None)
        if entry is not None and not entry.usable:
            _close_quietly(entry)
            return None
        return entry

    def peek(self, h: str) -> CacheEntry | None:
        entry = self._entries.get(h)
        return entry if entry is not None and entry.usable else None

    def drop(self, h: str, *, detach: bool = False) -> None:
        """Close `h`'s parked entry, if any; `detach`: its files now belong to another version,
        so it must not touch them even while closing."""
        entry = self._entries.pop(h, None)
        if entry is not None:
            if detach:
                entry.detach()
            _close_quietly(entry)

    def close_all(self) -> None:
        while self._entries:
            _close_quietly(self._entries.popitem()[1])


def _close_quietly(entry: CacheEntry) -> None:
    """Close a parked entry: clean when parked, so nothing is lost if its close fails."""
    try:
        entry.close()
    except CacheError as exc:
        log.warning("closing idle cache entry %r failed: %s", entry, exc)
