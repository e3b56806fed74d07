"""When one download's recorded parts become durable in its checkpoint.

A part is recorded in memory at once (readers use it); `Flusher.flush` makes what is recorded
durable (`CacheEntry.flush`: fdatasync + atomic checkpoint rewrite, in a worker thread). It
runs after FLUSH_EVERY_PARTS new parts or FLUSH_EVERY_S seconds, whichever comes first, so
after a crash at most that much finished work is fetched again, and in the background: the
readers of a part never wait for an fdatasync.

Invariants (trio thread): at most one flush of an entry runs (`flushing`); parts recorded
while it is in its thread are not in its snapshot and go with the next one; after `stop()`
(the download closed) nothing flushes again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from ossmount.cache.entry import CacheEntry
from ossmount.prefetch.tasks import Tasks

__all__ = ["FLUSH_EVERY_PARTS", "FLUSH_EVERY_S", "Flusher"]

log = logging.getLogger(__name__)

FLUSH_EVERY_PARTS = 8
FLUSH_EVERY_S = 1.0


class Flusher:
    def __init__(
        self,
        entry: CacheEntry,
        tasks: Tasks,
        *,
        after_flush: Callable[[], None],
        after_background: Callable[[], None],
    ) -> None:
        """`after_flush`: the cache grew, let the space policy look (cache.store, "Space").
        `after_background`: a flush the download did not wait for ended (it may close now)."""
        self._entry = entry
        self._tasks = tasks
        self._after_flush = after_flush
        self._after_background = after_background
        self._unflushed = 0
        self._timer = False
        self._stopped = False
        self.flushing = False

    def part_recorded(self, *, schedule: bool = True) -> None:
        """A part was recorded. `schedule=False` when the verdict comes next (it flushes)."""
        self._unflushed += 1
        if not schedule:
            return
        if self._unflushed >= FLUSH_EVERY_PARTS:
            self.in_background()
        elif not self._timer:
            self._timer = True
            self._tasks.start_untracked(self._flush_later)

    def force(self) -> None:
        """Make the next `flush` write even if no part was recorded since the last one."""
        self._unflushed = max(self._unflushed, 1)

    def in_background(self) -> None:
        self._tasks.start_soon(self._flush_in_background)

    def stop(self) -> None:
        self._stopped = True

    async def _flush_later(self) -> None:
        """Bound the work a crash can lose in time, not only in parts (slow links)."""
        try:
            await trio.sleep(FLUSH_EVERY_S)
        except BaseException:
            self._timer = False
            raise
        with self._tasks.busy():  # what follows counts as work until it has scheduled its own
            try:
                await self.flush()
            finally:
                self._timer = False
                self._after_background()

    async def _flush_in_background(self) -> None:
        try:
            await self.flush()
        finally:
            self._after_background()

    async def flush(self) -> None:
        """Make recorded parts durable in the checkpoint (fdatasync + atomic rewrite)."""
        entry = self._entry
        if self._stopped or self.flushing or self._unflushed == 0 or entry.discarded:
            return
        self._unflushed = 0
        if not entry.needs_flush:
            return  # no hop to a thread for nothing (every close of a cached file)
        self.flushing = True
        try:
            await trio.to_thread.run_sync(entry.flush)
        except OSError as exc:
            log.warning(
                "oss://%s/%s: could not persist the checkpoint: %s",
                entry.bucket,
                entry.meta.key,
                exc,
            )
        finally:
            self.flushing = False
        self._after_flush()
