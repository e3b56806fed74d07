"""Dropping parts of one download's cache file to make room (objects bigger than the cache).

Eviction frees only closed entries. When that is not enough, a download *sheds* parts: the
bytes are punched out of the cache file, their CRCs kept (CacheEntry.shed), so a cp of an
object bigger than the cache streams through it and is still verified whole at the end. A shed
part read again is fetched again and must bring the same CRC.

* `consumed(need)`: parts every reader has read past (less `shed_margin`), lowest first.
  Parts ahead of the slowest reader are never shed this way, so the cap can be exceeded by the
  read-ahead of open files. The margin is there because the kernel sends several reads of one
  handle at once and they arrive in any order: a part just behind the furthest read may still
  be wanted by one not seen yet. `consumed(need, margin=0)` drops those too (such a late read
  then fetches its part again): the space policy's last resort before a bound would be passed
  by more than one part.
* `unread(index, need)`: a reader is blocked on part `index` and the disk is full of parts
  nobody has read yet: those beyond it, furthest first, except any a read is under way in.
  They were fetched early; the blocked reader comes first (else nobody would ever consume them
  and free the disk).

Only where the store's startup probe showed the filesystem punches and reports holes
(`CacheStore.can_shed`). A failed punch is a WARNING and frees nothing (the parts stay intact).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Collection
from typing import Protocol

from ossmount.cache.entry import CacheEntry
from ossmount.cache.errors import CacheIOError
from ossmount.observe import PrefetchObserver

__all__ = ["ReaderProgress", "Shedder"]

log = logging.getLogger(__name__)


class ReaderProgress(Protocol):
    """What shedding needs of an open handle."""

    @property
    def consumed(self) -> int: ...

    @property
    def reading(self) -> Counter[tuple[int, int]]: ...


class Shedder:
    def __init__(
        self,
        entry: CacheEntry,
        readers: Collection[ReaderProgress],
        *,
        can_shed: bool,
        margin: int,
        observer: PrefetchObserver,
        active: Callable[[], bool],
        forget_readahead: Callable[[], None],
        forget_parts: Callable[[list[int]], None],
    ) -> None:
        """`readers` is the download's live set of handles; `active()` is False once the
        download failed or closed (nothing to shed then); `forget_readahead()` is called when
        unread parts were shed (read-ahead would only fill the disk again); `forget_parts(parts)`
        when parts every reader has read past were (no read-ahead may fetch them again)."""
        self._entry = entry
        self._readers = readers
        self._can_shed = can_shed
        self._margin = margin
        self._observer = observer
        self._active = active
        self._forget_readahead = forget_readahead
        self._forget_parts = forget_parts
        self.shed_bytes = 0
        # Set when the object is about to go while readers still hold it (ObjectReader
        # fetch_all): a part shed now could not be fetched again, so none is; the cap may be
        # passed by such an entry until its readers close.
        self.pinned = False

    def consumed(self, need: int, *, margin: int | None = None) -> int:
        """Punch out parts every reader has read past (less `margin`, by default the
        configured one), lowest first, until `need` bytes are freed (the last part may
        overshoot); returns the bytes freed."""
        if need <= 0 or not self._can_shed or not self._active() or self._entry.discarded:
            return 0
        layout = self._entry.layout
        what = "read" if margin is None or margin >= self._margin else "read, inside the margin"
        margin = self._margin if margin is None else margin
        frontier = min((r.consumed for r in self._readers), default=0) - margin
        victims: list[int] = []
        planned = 0
        for index in self._entry.present_parts():
            start, length = layout.span(index)
            if planned >= need or start + length > frontier:
                break
            victims.append(index)
            planned += length
        if victims and not self.shed_bytes:
            log.info(
                "oss://%s/%s: the cache is full, so parts already read are dropped from its "
                "cache file as the read goes on (it is still verified whole at the end)",
                self._entry.bucket,
                self._entry.meta.key,
            )
        freed = self._shed(victims, what)
        if freed:
            self._forget_parts(victims)
        return freed

    def unread(self, index: int, need: int) -> int:
        """Shed parts beyond `index` nobody reads now, furthest first; bytes freed."""
        layout = self._entry.layout
        busy = {
            part
            for reader in self._readers
            for offset, size in reader.reading
            for part in layout.parts_for(offset, size)
        }
        victims: list[int] = []
        planned = 0
        for part in reversed(self._entry.present_parts()):
            if planned >= need or part <= index:
                break
            if part not in busy:
                victims.append(part)
                planned += layout.span(part)[1]
        freed = self._shed(victims, f"not read yet, for part {index}")
        if freed:
            self._forget_readahead()
        return freed

    def _shed(self, victims: list[int], what: str) -> int:
        if not victims or not self._can_shed or self.pinned:
            return 0
        try:
            freed = self._entry.shed(victims)
        except CacheIOError as exc:
            log.warning("could not drop cached parts: %s", exc)
            return 0
        self.shed_bytes += freed
        self._observer.shed(freed)
        log.debug(
            "oss://%s/%s: shed %d parts (%s) from %d: %d bytes, %d in all",
            self._entry.bucket,
            self._entry.meta.key,
            len(victims),
            what,
            min(victims),
            freed,
            self.shed_bytes,
        )
        return freed
