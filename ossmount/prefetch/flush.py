"""When one download's recorded parts become durable in its checkpoint.

A part is recorded in memory at once (readers use it); `Flusher.flush` makes what is recorded
durable (`CacheEntry.flush`: the checkpoint saved, with no fdatasync: cache.checkpoint,
"Durability"), in the background: the readers of a part never wait for it. "Durable" here
means "survives a kill -9"; after a power loss the re-check of every listed part decides.

Where it runs: a one-part object's flush (every small file) runs on the trio thread: it is
one small file created and written, whose cost is the creation (0.1-0.4 ms of kernel time on
this VM's ext4, like the data file's creation at open, which is on the trio thread too); a
worker thread would not save that, only add the hop (~60 us of CPU: `trio.to_thread` of a
no-op, measured). A bigger object's checkpoint grows with its parts and is replaced through a
temp file and a rename: a worker thread.

Timing (issue 14 finding 3: kill -9 loses at most the parts in flight plus one part): a flush
starts as soon as a part is recorded and none is running; parts recorded while one runs go,
all together, with the next one, which starts as soon as it ends. So saves are batched by
themselves (one per flush, however many parts it covers; on a fast disk a flush covers one
part, on a slow one many) and nothing waits for a timer. Backpressure keeps the bound on a
disk slower than the network: a worker passes `room()` before it starts a GET, and `room()`
waits while more than one recorded part awaits durability (`waiting`). Counting a worker as
in flight from the moment it passed `room()`, in_flight + waiting only grows when a worker
passes, which it does with waiting <= 1 and at most parallel_count - 1 others in flight: so
at any moment at most parallel_count + 1 parts are fetched but not durable.

Invariants (trio thread): at most one flush of an entry runs (`flushing`); parts recorded
while it is in its thread are not in its snapshot and go with the next one; after `stop()`
(the download closed) nothing flushes again and `room()` no longer waits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from ossmount.cache.entry import CacheEntry
from ossmount.prefetch.tasks import Tasks

__all__ = ["Flusher"]

log = logging.getLogger(__name__)


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
        self._unflushed = 0  # parts recorded since the running flush took its snapshot
        self._in_flush = 0  # parts the running flush covers
        self._chain = False  # a background flush loop is scheduled or running
        self._stopped = False
        self._progress = trio.Event()  # set (and replaced) whenever `waiting` may have fallen
        self.flushing = False

    @property
    def waiting(self) -> int:
        """Recorded parts not yet durable (as far as this flusher counted them)."""
        return self._unflushed + self._in_flush

    def part_recorded(self, *, schedule: bool = True) -> None:
        """A part was recorded. `schedule=False` when the verdict comes next (it flushes)."""
        self._unflushed += 1
        if schedule:
            self.in_background()

    def force(self) -> None:
        """Make the next `flush` write even if no part was recorded since the last one."""
        self._unflushed = max(self._unflushed, 1)

    def in_background(self) -> None:
        """Flush now, and again while parts were recorded meanwhile (one loop at a time)."""
        if not self._chain and not self._stopped:
            self._chain = True
            self._tasks.start_soon(self._flush_chain)

    def stop(self) -> None:
        self._stopped = True
        self._wake()

    async def room(self) -> None:
        """Return once at most one recorded part awaits durability (see module docstring)."""
        while self.waiting > 1 and not self._stopped and not self._entry.discarded:
            if not self._chain and not self.flushing:
                self.in_background()  # e.g. recorded with schedule=False
            await self._progress.wait()

    def _wake(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    async def _flush_chain(self) -> None:
        try:
            while self._unflushed and not self._stopped and not self._entry.discarded:
                if self.flushing:
                    return  # a direct flush() runs: it wakes no loop, but persist() follows
                await self.flush()
        finally:
            self._chain = False
            self._after_background()

    async def flush(self) -> None:
        """Make recorded parts durable in the checkpoint (module docstring, "Where it runs")."""
        entry = self._entry
        if self._stopped or self.flushing or self._unflushed == 0 or entry.discarded:
            return
        self._in_flush, self._unflushed = self._unflushed, 0
        if not entry.needs_flush:
            self._in_flush = 0
            self._wake()
            return  # no hop to a thread for nothing (every close of a cached file)
        self.flushing = True
        try:
            if entry.layout.count <= 1:
                entry.flush()
            else:
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
            # Durable now, or still recorded for the next flush to retry (a failed checkpoint
            # save): either way no longer counted, so a failing disk cannot stall the workers
            # for ever.
            self._in_flush = 0
            self._wake()
        self._after_flush()
