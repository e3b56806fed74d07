"""Which recorded parts of a cache entry this process may serve: its re-check state.

Issue 14 findings 1, 2: no byte of a cache file reaches a reader unless it was hashed against
its CRC-64 since this process opened the file. A part received by this process is hashed on
receipt (cache.sink); a part trusted from the checkpoint is *unchecked* until
`CacheEntry.recheck(index)` (a worker thread: cache.recheck.hash_span of one part, so the first
byte of a large file waits for one part, not the whole file) found the stored CRC. Until then it
counts as missing for every query a reader or the verdict uses (`is_done`, `missing_parts`,
`complete`, `all_present`, `read`), so the whole-object verdict never combines a CRC whose bytes
were not re-hashed. A mismatch forgets the part (`warn_damaged`: a WARNING with bucket, key, part
and both CRCs): it is fetched again, and a VERIFIED/UNVERIFIABLE entry goes back to PARTIAL.

A part received in this process joins the set again when the disk reported a write error
(`distrust`, from cache.writeback): the bytes it holds for that part may no longer be the ones
hashed on receipt.

A part leaves the unchecked set once: re-hashed (good or damaged), recorded again by a fetch
(its new bytes were hashed on receipt), or shed (its CRC was never matched to bytes here, so the
entry forgets it rather than keep it for the verdict).

Threads: `PartChecks` has no lock of its own. The entry reads and changes it under its `_lock`,
together with its map of recorded parts (`done`: index → CRC-64), so a query sees both in one
state; the hash itself runs between two such sections, outside the lock.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

from ossmount.crc64 import format_crc

__all__ = ["PartChecks", "warn_damaged"]

log = logging.getLogger(__name__)


class PartChecks:
    """The parts recorded from the checkpoint at open and not re-hashed yet (see module doc)."""

    __slots__ = ("_unchecked",)

    def __init__(self, trusted: Iterable[int]) -> None:
        self._unchecked = set(trusted)

    def __len__(self) -> int:
        return len(self._unchecked)

    def __contains__(self, index: int) -> bool:
        """Still unchecked: its bytes are in the file but must be re-hashed before use."""
        return index in self._unchecked

    def ready(self, index: int, done: Mapping[int, int]) -> bool:
        """Recorded and checked in this process: a reader may have its bytes."""
        return index in done and index not in self._unchecked

    def missing(self, indices: Iterable[int], done: Mapping[int, int]) -> list[int]:
        """Those of `indices` not ready, in the given order."""
        unchecked = self._unchecked
        return [i for i in indices if i not in done or i in unchecked]

    def distrust(self, indices: Iterable[int]) -> None:
        """These recorded parts must be re-hashed again before use (a write error was seen)."""
        self._unchecked.update(indices)

    def settle(self, index: int) -> bool:
        """The part was recorded anew or shed: no longer unchecked. True if it was."""
        if index in self._unchecked:
            self._unchecked.discard(index)
            return True
        return False

    def damaged(self, index: int, stored: int, actual: int, done: Mapping[int, int]) -> bool:
        """Take the outcome of re-hashing `index` (`stored` was its CRC when the hash began,
        `actual` what the bytes hash to). True: the part is damaged at rest and the caller
        must forget it. False: it passed, or was shed or fetched meanwhile (that outcome
        stands; ask `ready`)."""
        if index not in self._unchecked or done.get(index) != stored:
            return False
        self._unchecked.discard(index)
        return actual != stored


def warn_damaged(
    where: str, index: int, start: int, length: int, stored: int, actual: int, path: Path
) -> None:
    """Tell the operator that part `index` of object `where` (oss://bucket/key) no longer
    matches the CRC its checkpoint lists: the disk changed it at rest."""
    log.warning(
        "%s: cached part %d (bytes %d-%d) is damaged at rest: CRC-64 %s in the "
        "checkpoint, %s in the file %s; fetching it again",
        where,
        index,
        start,
        start + length - 1,
        format_crc(stored),
        format_crc(actual),
        path,
    )
