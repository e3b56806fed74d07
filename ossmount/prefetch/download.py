"""One object version being (or already) cached, shared by every handle reading it: its life.

A `Download` owns the `CacheEntry` and puts the one-job types together: a `PartQueue` says
what to fetch next, up to `width` workers run `fetch_part` (each GET also holds the
mount-wide `max_gets` limiter) and apply its outcome, the `VersionFence` keeps versions apart,
the `Flusher` makes parts durable, `judge` reaches the verdict once every part has a CRC, and
the `Shedder` gives space back when the space policy asks; `width` (prefetch.width) starts
at `parallel_count` and grows while each added stream brings its own rate. Readers only
*ask* for parts (`want`, synchronous) and wait for their events, so a reader that is
interrupted never leaves other readers without data.

Life cycle: open (registered by the prefetcher) → parts fetched → verdict → the last reader
gone and no work left → `close` (flush, release the entry). A terminal failure (the object
changed, the CRC mismatched, archived) wakes every waiter with the error, cancels the GETs and
`forget`s the download at once, so the next open starts afresh; ObjectChanged/ObjectCorrupt
also discard the entry's files.

Concurrency invariants (single trio thread)
-------------------------------------------
* The queue, `_events`, `_part_errors` and `failure` change only on the trio thread, between
  awaits. `want()` is synchronous and never blocks.
* A part is marked done only after its bytes are in the cache file (the part sink records it
  once the fence accepted the reply); persisted by the next checkpoint save (flush.py).
* `CacheEntry` is only touched from the trio thread, except `flush`, which runs in a worker
  thread while `Flusher.flushing` is set (see cache.entry).
* A part's event is set when its attempt ends (done or failed); every waiter of a failed
  attempt gets its error; the next attempt (a later read's `want`) clears it when it starts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from ossmount.cache.entry import CacheEntry, EntryState
from ossmount.cache.errors import EntryStateError, PartMismatch
from ossmount.cache.sink import ScratchPool
from ossmount.cache.store import CacheStore
from ossmount.observe import PrefetchObserver
from ossmount.oss.models import ObjectMeta
from ossmount.prefetch.config import PrefetchConfig, RangeSource
from ossmount.prefetch.dropbehind import DropBehind
from ossmount.prefetch.errors import DownloadFailed, ObjectChanged, ObjectCorrupt, ReadError
from ossmount.prefetch.fence import CRC_DISPUTES, CrcDisputed, VersionFence
from ossmount.prefetch.fetch import Dropped, Failed, Fetched, PartJob, PartOutcome, fetch_part
from ossmount.prefetch.flush import Flusher
from ossmount.prefetch.parts import PartQueue
from ossmount.prefetch.shed import Shedder
from ossmount.prefetch.space import SpacePolicy
from ossmount.prefetch.spot import SpotContext, SpotReads
from ossmount.prefetch.tasks import Tasks
from ossmount.prefetch.verdict import judge
from ossmount.prefetch.width import StreamWidth

if TYPE_CHECKING:
    from ossmount.prefetch.reader import ObjectReader

__all__ = ["Download", "Services"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Services:
    """What every download of a mount shares; built once by the prefetcher."""

    config: PrefetchConfig
    source: RangeSource
    store: CacheStore
    tasks: Tasks
    limiter: trio.CapacityLimiter
    scratch: ScratchPool
    space: SpacePolicy
    observer: PrefetchObserver


class Download:
    def __init__(
        self,
        services: Services,
        meta: ObjectMeta,
        entry: CacheEntry,
        forget: Callable[[Download], None],
    ) -> None:
        """`forget(self)` unregisters it (a terminal failure, or closing)."""
        self._s = services
        self._forget = forget
        self.meta = meta
        self.entry = entry
        self.layout = entry.layout
        self.readers: set[ObjectReader] = set()  # open handles
        self._behind = DropBehind(self.layout, self.entry.let_go)
        self.failure: ReadError | None = None
        self.closed = False
        self.queue = PartQueue(entry.is_done)
        self._events: dict[int, trio.Event] = {}  # part -> set when its attempt ends
        self._part_errors: dict[int, ReadError] = {}
        self._disputes: dict[int, int] = {}  # part -> replies in a row with a disputed CRC
        self._workers = 0
        config = services.config
        self.width = StreamWidth(
            config.parallel_count, max(config.parallel_count, config.max_width)
        )
        self._scopes: set[trio.CancelScope] = set()  # one per worker; cancelled on failure
        self._verdict = trio.Event()
        self._judging = False  # a `_finish` is under way (re-checks may end in one tick)
        bucket = services.config.bucket
        self.fence = VersionFence(bucket, meta, entry)
        self.flusher = Flusher(
            entry,
            services.tasks,
            after_flush=services.space.after_flush,
            after_background=self._close_if_abandoned,
        )
        spot = SpotContext(
            bucket,
            meta,
            services.source,
            services.limiter,
            self.fence,
            services.observer,
            self._fail,
        )
        self.spot = SpotReads(
            spot, block=services.config.spot_block, kept=services.config.spot_kept
        )
        self.shedder = Shedder(
            entry,
            self.readers,
            can_shed=services.store.can_shed,
            margin=services.config.shed_margin,
            observer=services.observer,
            active=lambda: self.failure is None and not self.closed,
            forget_readahead=self.queue.drop_readahead,
            forget_parts=self.queue.forget,
        )
        if entry.complete:
            services.tasks.start_soon(self._finish)

    # -- asking and waiting (readers) ------------------------------------------------------

    def want(self, parts: range | tuple[int, ...], *, demand: bool) -> None:
        if self.failure is None:
            self.queue.want(parts, demand=demand)
            self._spawn_workers()

    async def wait_parts(self, parts: range) -> None:
        """Return when every part in `parts` is done; raise the download's or a part's error."""
        for index in parts:
            while not self.entry.is_done(index):
                if self.failure is not None:
                    raise self.failure
                event = self._events.get(index)
                if event is None:
                    event = self._events[index] = trio.Event()
                    if index not in self.queue.in_flight:
                        self.want((index,), demand=True)
                await event.wait()
                error = self._part_errors.get(index)  # not popped: see module docstring
                if error is not None:
                    raise error
        if self.failure is not None:
            raise self.failure

    @property
    def settled(self) -> bool:
        """Every part is cached and the CRC verdict is in (verified or unverifiable)."""
        return self._verdict.is_set() and self.failure is None

    async def wait_verdict(self) -> None:
        await self._verdict.wait()
        if self.failure is not None:
            raise self.failure

    @property
    def idle(self) -> bool:
        return self._workers == 0 and not self.flusher.flushing

    # -- fetching (service nursery) --------------------------------------------------------

    def _spawn_workers(self) -> None:
        while self._workers < self.width.width and self.queue.pending:
            self._workers += 1
            self._s.tasks.start_soon(self._worker)

    async def _worker(self) -> None:
        scope = trio.CancelScope()
        self._scopes.add(scope)
        try:
            with scope:
                while self.failure is None:
                    # Backpressure: a crash loses at most the parts in flight plus one (flush.py).
                    await self.flusher.room()
                    if self._workers > self.width.width:
                        return  # the width shrank (prefetch.width): one fewer stream
                    picked = self.queue.take()
                    if picked is None:
                        return
                    index, urgent = picked
                    if not await self._reserved_part(index, urgent):
                        return
        finally:
            self._scopes.discard(scope)
            self._workers -= 1
            if self._workers == 0 and not self.readers:
                self._s.tasks.start_soon(self.close)

    async def _reserved_part(self, index: int, urgent: bool) -> bool:
        """Run part `index` with its bytes reserved (space.py); a re-check needs no room.
        False: a read-ahead part found no room; it stays wanted (put back), the next read that
        spawns workers offers it again, and this worker stops."""
        space = self._s.space
        if self.entry.is_unchecked(index):
            await self._run_part(index, urgent)
            return True
        reservation = await space.reserve(self.layout.span(index)[1], urgent, self.shedder, index)
        if reservation is None:
            self.queue.put_back(index)
            return False
        try:
            await self._run_part(index, urgent)
        finally:
            space.release(reservation)
        return True

    async def _run_part(self, index: int, urgent: bool) -> None:
        self._part_errors.pop(index, None)  # a new attempt supersedes old failures
        s = self._s
        job = PartJob(s.config.bucket, self.entry, index, urgent, s.store.root)
        try:
            if self.entry.is_unchecked(index) and await self._recheck(index):
                return
            async with s.limiter:
                s.observer.part_started()
                counted: tuple[str | None, int] = (None, 0)
                try:
                    started = trio.current_time()
                    try:
                        outcome = await fetch_part(s.source, s.scratch, job, self._room_maker(job))
                        counted = self._apply(index, outcome)
                    except EntryStateError as exc:
                        if self.entry.usable:
                            raise  # a bug in the caller, not a discard
                        self._discarded_under_us(exc)
                        return
                    if self._disputes.get(index, 0) >= CRC_DISPUTES:
                        await self._settle_dispute(index, outcome)
                    now = trio.current_time()
                    if counted[0] == "done" and self.width.part_done(
                        counted[1], now - started, started=started, now=now
                    ):
                        log.debug(
                            "oss://%s/%s: %d GETs at once (last round: %s)", s.config.bucket,
                            self.meta.key, self.width.width, self.width.last,
                        )  # fmt: skip
                        self._spawn_workers()
                    if counted[0] == "done":
                        complete = self.entry.complete
                        self.flusher.part_recorded(schedule=not complete)
                        if complete:
                            await self._finish()
                finally:
                    s.observer.part_ended(*counted)
        finally:
            self.queue.finished(index)
            event = self._events.pop(index, None)
            if event is not None:
                event.set()
            if urgent:
                self._spawn_workers()  # read-ahead held back for it may go now

    def _discarded_under_us(self, exc: EntryStateError) -> None:
        """The entry was discarded by another party while this download filled it: an open
        of the key that found a newer version (CacheStore.open_entry). The object changed, so
        this download ends as if a GET had said so (ESTALE for its readers); it must not
        take the mount down."""
        log.info("oss://%s/%s: its cache entry was discarded meanwhile (%s)",
                 self._s.config.bucket, self.meta.key, exc)  # fmt: skip
        why = "changed while reading (a newer version is being read)"
        self._fail(ObjectChanged(self._s.config.bucket, self.meta.key, why))

    async def _recheck(self, index: int) -> bool:
        """Re-hash a part trusted from the checkpoint (cache.checks) in a
        thread, outside the GET limiter; True: it is done (its waiters are woken). False: it
        was damaged at rest and forgotten, so the caller fetches it as any missing part.

        Read-ahead takes unchecked parts like missing ones, so the checks of a sequential
        reader's next parts run ahead of it and warm the page cache for its reads.
        """
        try:
            good = await trio.to_thread.run_sync(self.entry.recheck, index)
        except EntryStateError:
            return False  # discarded meanwhile (the download failed): nothing to check
        except OSError as exc:
            log.warning("%s: fetching the part again", exc)
            good = False
        if good and self.entry.complete:
            # Not awaited: this part's readers need not wait for a HEAD the verdict may ask.
            self._s.tasks.start_soon(self._finish)
        return good or self.entry.is_done(index)

    async def _settle_dispute(self, index: int, outcome: PartOutcome) -> None:
        """Replies for part `index` kept disputing the CRC: a HEAD says whether the object
        changed (ESTALE) or the replies are wrong (EIO for this part's readers, naming both
        CRCs). The count starts over, so a later read tries again."""
        del self._disputes[index]
        assert isinstance(outcome, Fetched)
        dispute = self.fence.check(outcome.result.meta)
        if not isinstance(dispute, CrcDisputed):
            return
        try:
            head = await self._s.source.head(self.meta.key)
        except Exception as exc:
            error: ReadError = DownloadFailed(
                self._s.config.bucket,
                self.meta.key,
                f"part {index}: replies disagree on the CRC-64 ({dispute.got} vs "
                f"{dispute.known}) and the HEAD to settle it failed: {exc}",
            )
        else:
            settled = self.fence.settle(head, dispute, index)
            if settled is None:
                return  # the known CRC was corrected: the part's next fetch records it
            error = settled
        if isinstance(error, ObjectChanged):
            self._fail(error)
        else:
            log.error("%s", error)
            self._part_errors[index] = error

    def _room_maker(self, job: PartJob) -> Callable[[], bool]:
        return lambda: self._s.space.after_disk_full(self.shedder, job.part, job.urgent)

    def _apply(self, index: int, outcome: PartOutcome) -> tuple[str | None, int]:
        """Act on a part's outcome; (metrics label, bytes fetched) to report."""
        if isinstance(outcome, Dropped):
            return "failed", 0
        if isinstance(outcome, Failed):
            if outcome.fatal:
                self._fail(outcome.error)
            else:
                self._part_errors[index] = outcome.error
            return outcome.outcome, 0
        assert isinstance(outcome, Fetched)
        if self.failure is not None:
            # The download failed while this reply was being delivered (a task already
            # rescheduled does not see its scope's cancel): the entry may be discarded.
            return None, 0
        changed = self.fence.check(outcome.result.meta)
        if isinstance(changed, CrcDisputed):
            # Not recorded: a waiter's next `wait_parts` round asks for the part again.
            self._disputes[index] = self._disputes.get(index, 0) + 1
            log.warning(
                "oss://%s/%s: part %d reply carried CRC-64 header %d, but this version "
                "(ETag %s) has %d: fetching the part again",
                self._s.config.bucket,
                self.meta.key,
                index,
                changed.got,
                self.meta.etag,
                changed.known,
            )
            return "failed", 0
        if changed is not None:
            self._fail(changed)
            return None, 0
        self._disputes.pop(index, None)
        try:
            outcome.sink.record(outcome.result)
        except PartMismatch as exc:
            log.error("%s: the cached object is discarded", exc)
            self._fail(ObjectCorrupt(self._s.config.bucket, self.meta.key, str(exc)))
            return None, 0
        self._behind.armed = True  # freshly written pages: let them go behind the readers
        return "done", outcome.result.length

    async def _finish(self) -> None:
        """All parts are in: reach and publish the verdict. Once, unless the entry went back
        to PARTIAL after it (a part found damaged by a re-check, cache.writeback): then its
        parts are all in again and the whole object is judged again."""
        if self._judging or self.failure is not None:
            return
        if self._verdict.is_set() and self.entry.state is not EntryState.PARTIAL:
            return
        self._judging = True
        try:
            judgement = await judge(
                self._s.config.bucket,
                self.meta,
                self.entry,
                self.fence,
                self._s.source,
                closed=lambda: self.closed,
            )
        finally:
            self._judging = False
        if judgement.abandoned:
            return
        if judgement.counted is not None:
            self._s.observer.verdict(judgement.counted)
        if judgement.error is not None:
            self._fail(judgement.error)
            return
        # Published first: a reader must not wait for the checkpoint save, only for the CRC
        # comparison.
        self._verdict.set()
        if judgement.fresh:
            self.flusher.force()
            self.flusher.in_background()

    # -- ending ----------------------------------------------------------------------------

    def drop_readahead(self) -> None:
        """No reader is left: finish the parts in flight, start no more."""
        self.queue.drop_all()

    def abort(self, error: ReadError) -> None:
        """Stop: wake every waiter with `error`, cancel the GETs; recorded parts stay valid.

        Used at unmount so that readers blocked on a slow part return at once (pyfuse3.main
        waits for every request handler before it returns).
        """
        if self.failure is not None:
            return
        self.failure = error
        self.drop_readahead()
        for event in self._events.values():
            event.set()
        self._events.clear()
        self._verdict.set()
        for scope in self._scopes:
            scope.cancel()

    def _fail(self, error: ReadError) -> None:
        """Terminal failure: wake every waiter with `error` and forget this download."""
        if self.failure is not None:
            return
        self.abort(error)
        self._forget(self)
        if isinstance(error, ObjectCorrupt | ObjectChanged):
            # Unlinks the files now (a fresh download may create them again at once); our
            # fd stays valid for workers still unwinding and is closed when we are idle.
            self.entry.discard()

    def read_past(self) -> None:
        """A reader's read returned: the pages every reader has passed may go
        (prefetch/dropbehind.py)."""
        if self._behind.armed:  # else nothing to let go: no per-read work on a cached copy
            self._behind.passed(min((r.consumed for r in self.readers), default=0))

    async def release(self, reader: ObjectReader) -> None:
        """A handle closed. The last one stops read-ahead; the entry is closed once idle.

        The download stays registered while parts are in flight, so a handle opened in the
        meantime joins it instead of opening a second entry on the same cache file.
        """
        self.readers.discard(reader)
        if self.readers:
            return
        self.drop_readahead()
        if self.idle:
            await self.close()

    def _close_if_abandoned(self) -> None:
        """The last handle closed while a flush ran (release saw us busy): close now."""
        if not self.readers and self.idle and not self.closed:
            self._s.tasks.start_soon(self.close)

    async def close(self) -> None:
        """Flush and release the entry, once no handle and no work is left."""
        if self.readers or not self.idle or self.closed:
            return
        self._forget(self)
        await self.persist()
        self.closed = True
        self.spot.clear()
        self.flusher.stop()
        self._s.store.release(self.entry)

    async def persist(self) -> None:
        """Flush whatever is recorded, even when nothing new was (unmount, close)."""
        self.flusher.force()
        with trio.CancelScope(shield=True):
            await self.flusher.flush()
