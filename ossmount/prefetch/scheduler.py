"""The read path: shared per-object downloads of parts into the cache, and the readers that wait.

Shape
-----
`Prefetcher.open(meta)` returns an `ObjectReader` for one file handle. All handles of the
same object version (bucket, key, ETag, size) share one `Download`, which owns the
`CacheEntry` (one cache file + checkpoint) and fetches parts with ranged GETs straight into
the cache file. Downloads run in the prefetcher's service nursery, never in a FUSE request
task: a reader only *asks* for parts (`Download.want`) and waits for their events, so a reader
that is interrupted (its request cancelled) never leaves other readers without data.

Scheduling
----------
Each `Download` keeps two queues: parts readers are blocked on (demand) and parts wanted by
read-ahead. Up to `parallel_count` worker tasks per download pop demand parts first, then
read-ahead parts in ascending order, and every GET also holds the mount-wide
`trio.CapacityLimiter(max_gets)`. Part bodies go from the socket to the cache file through a
reused buffer inside the client, so memory in flight is bounded by `max_gets` buffers however
many files are open; read-ahead costs disk, not memory.

Integrity
---------
* Every part GET carries `If-Match: <ETag>` and its response's ETag, size and whole-object
  CRC-64 header must match the version the download belongs to; a mismatch, a 412 or a 404
  fails the download with `ObjectChanged` (ESTALE): two versions are never mixed in one file.
* A part is marked done only after its bytes are in the cache file, and persisted as done in
  the checkpoint only after an fdatasync (`CacheEntry.flush`, run in a thread).
* When the last part lands, the per-part CRCs are combined and compared with the server's
  `x-oss-hash-crc64ecma`. On a mismatch the entry is discarded, the download fails with
  `ObjectCorrupt` (EIO) for every reader, and it is dropped from the registry so the next open
  starts afresh. A whole-object reader's last read waits for this verdict (see pattern.py).

Objects bigger than the cache
-----------------------------
Eviction frees only closed entries. When the cache is still over its cap after a checkpoint
flush, or the cache disk is full and evicting closed entries was not enough, downloads *shed*
parts every one of their readers has already read past (`Download.shed_consumed`, lowest
first): the bytes are punched out of the cache file, the CRCs kept, so a cp of an object
bigger than the cache streams through it and is still verified whole at the end. A shed part
read again is fetched again and must bring the same CRC. Parts ahead of the slowest reader
(read-ahead) are never shed, so the cap can be exceeded by the read-ahead of open files.

Concurrency invariants (single trio thread)
-------------------------------------------
* `Download._in_flight`, `_done events`, queues and `failure` change only on the trio thread,
  between awaits. `want()` is synchronous and never blocks.
* A part index is in at most one of: done (entry.is_done), in flight, queued.
* `CacheEntry` is only touched from the trio thread, except `flush`, which runs in a worker
  thread while `_flushing` is set; its snapshot of the done parts is taken before it returns to
  us (see cache.entry), so parts recorded meanwhile are simply flushed next time.
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import trio

from ossmount.cache.entry import CacheEntry, EntryState
from ossmount.cache.errors import CacheError, CacheFull, CacheIOError, PartMismatch
from ossmount.cache.ranges import PartLayout
from ossmount.cache.sink import PartSink, ScratchPool
from ossmount.cache.store import CacheStore
from ossmount.crc64 import format_crc
from ossmount.oss import InvalidObjectState, NoSuchKey, OssError, PreconditionFailed
from ossmount.oss.models import GetResult, ObjectMeta, ObjectVersion, Sink
from ossmount.prefetch.pattern import Coverage, ReadaheadWindow
from ossmount.service.metrics import MountMetrics

__all__ = [
    "DownloadFailed",
    "ObjectArchived",
    "ObjectChanged",
    "ObjectCorrupt",
    "ObjectReader",
    "Prefetcher",
    "RangeSource",
    "ReadError",
]

log = logging.getLogger(__name__)

# Flush the checkpoint after this many newly recorded parts or seconds, whichever comes first:
# after a crash at most this much finished work is fetched again.
FLUSH_EVERY_PARTS = 8
FLUSH_EVERY_S = 1.0

# A part write that finds the cache disk full is tried this often in all, making room between.
DISK_FULL_TRIES = 3


# How many warmed versions are remembered until opened, for ossmount_warmed_objects_opened.
WARMED_REMEMBERED = 4096


class RangeSource(Protocol):
    """What the prefetcher needs from the OSS client (a fake stands in for it in tests)."""

    async def get(
        self,
        key: str,
        offset: int,
        length: int,
        sink: Sink,
        *,
        if_match: str | None = None,
    ) -> GetResult: ...

    async def head(self, key: str) -> ObjectMeta: ...


def disk_full_advice(root: object, exc: CacheFull) -> str:
    """What an operator reads when a part found the cache disk full with nothing idle left to
    evict: where, and what to do."""
    return (
        f"the cache dir {root} is full ({exc.strerror}) and holds no closed file to evict: "
        "free space there, or lower --max-cache-size-mb below its free space"
    )


class ReadError(Exception):
    """A read could not be answered; names the object and the cause."""

    def __init__(self, bucket: str, key: str, cause: str) -> None:
        super().__init__(f"oss://{bucket}/{key}: {cause}")
        self.bucket = bucket
        self.key = key
        self.cause = cause


class ObjectCorrupt(ReadError):
    """The cached bytes' CRC-64 does not match the server's: never served as good."""


class ObjectChanged(ReadError):
    """The object was replaced or deleted while it was being read."""


class DownloadFailed(ReadError):
    """A part could not be fetched (after the client's retries)."""


class ObjectArchived(ReadError):
    """An Archive/ColdArchive object that is not restored: OSS refuses to serve its bytes."""


@dataclass(frozen=True, slots=True)
class PrefetchConfig:
    bucket: str
    part_size: int
    parallel_count: int
    max_gets: int
    readahead_bytes: int
    # Parts this close behind what a handle has read are never shed: the kernel's read-ahead
    # sends several reads of one handle at once and they finish in any order. The mount
    # passes twice its read_ahead_kb.
    shed_margin: int = 8 * 1024 * 1024
    # Directory read-ahead (prefetch.siblings): at most this many objects are warmed at once,
    # each at most `warm_max_size` bytes. 0 turns warming off.
    warm_limit: int = 0
    warm_max_size: int = 8 * 1024 * 1024
    # A GET's receive window (a reused scratch buffer the body is pwritten from).
    window_size: int = 1024 * 1024


class Download:
    """One object version being (or already) cached; shared by every handle reading it."""

    def __init__(self, prefetcher: Prefetcher, meta: ObjectMeta, entry: CacheEntry) -> None:
        self._p = prefetcher
        self.meta = meta
        self.entry = entry
        self.layout: PartLayout = entry.layout
        self.users = 0
        self.readers: set[ObjectReader] = set()  # open handles, for what they have read
        self.failure: ReadError | None = None
        self._events: dict[int, trio.Event] = {}  # part -> set when done or failed
        self._part_errors: dict[int, ReadError] = {}
        self._in_flight: set[int] = set()
        self._urgent: set[int] = set()  # in-flight parts a reader is blocked on
        self._demand: list[int] = []  # heap
        self._ahead: list[int] = []  # heap
        self._in_demand: set[int] = set()  # what the heaps hold, so a part is queued once
        self._in_ahead: set[int] = set()
        self._workers = 0
        self._verdict = trio.Event()
        self._unflushed = 0
        self._flushing = False
        self._server_crc: int | None = entry.meta.crc64
        self.closed = False
        self._scopes: set[trio.CancelScope] = set()  # one per worker; cancelled on failure
        self._flush_timer = False
        self._shed_bytes = 0
        if entry.complete:
            self._p.nursery.start_soon(self._finish)

    # -- asking for parts (synchronous, never blocks) --------------------------------------

    def want(self, parts: Iterable[int], *, demand: bool) -> None:
        if self.failure is not None:
            return
        queue, queued = (self._demand, self._in_demand) if demand else (self._ahead, self._in_ahead)
        for index in parts:
            if index in queued or index in self._in_flight or self.entry.is_done(index):
                continue
            queued.add(index)
            heapq.heappush(queue, index)
        self._spawn_workers()

    def _spawn_workers(self) -> None:
        while self._workers < self._p.config.parallel_count and (self._demand or self._ahead):
            self._workers += 1
            self._p.nursery.start_soon(self._worker)

    def _next_part(self) -> tuple[int, bool] | None:
        """(part, urgent): demand parts first; read-ahead only while no reader is blocked.

        On a 2-core machine the GETs share one event loop, so read-ahead started next to a
        blocked reader's part slows that part down (time to first byte, a seek): read-ahead
        waits until the urgent parts are in, then runs `parallel_count` wide.
        """
        while self._demand:
            index = heapq.heappop(self._demand)
            self._in_demand.discard(index)
            if not self.entry.is_done(index) and index not in self._in_flight:
                return index, True
        while self._ahead and not self._urgent:
            index = heapq.heappop(self._ahead)
            self._in_ahead.discard(index)
            if not self.entry.is_done(index) and index not in self._in_flight:
                return index, False
        return None

    @property
    def idle(self) -> bool:
        return self._workers == 0 and not self._flushing

    def force_flush(self) -> None:
        """Make the next `flush` write even if no part was recorded since the last one."""
        self._unflushed = max(self._unflushed, 1)

    def shed_consumed(self, need: int) -> int:
        """Punch out parts every reader of this download has read past, lowest first, until
        `need` bytes are freed (the last part may overshoot); returns the bytes freed.

        Those bytes are already in the kernel's page cache or the reader's hands; reading
        them again fetches them again.
        """
        if self.failure is not None or self.closed or self.entry.discarded or need <= 0:
            return 0
        if not self._p.store.can_shed:
            return 0
        frontier = min((r.consumed for r in self.readers), default=0) - self._p.config.shed_margin
        victims: list[int] = []
        planned = 0
        for index in self.entry.present_parts():
            start, length = self.layout.span(index)
            if planned >= need or start + length > frontier:
                break
            victims.append(index)
            planned += length
        if victims and not self._shed_bytes:
            log.info(
                "oss://%s/%s: the cache is full, so parts already read are dropped from its "
                "cache file as the read goes on (it is still verified whole at the end)",
                self._p.config.bucket,
                self.meta.key,
            )
        return self._shed(victims, "read")

    def _shed_readahead(self, index: int, need: int) -> int:
        """A reader is blocked on part `index` and the disk is full of parts nobody has read
        yet: shed those beyond it, furthest first, except any a read is under way in. They
        were fetched early; the blocked reader comes first (else nobody would ever consume
        them and free the disk). Returns the bytes freed."""
        busy = {
            part
            for reader in self.readers
            for offset, size in reader.reading
            for part in self.layout.parts_for(offset, size)
        }
        victims: list[int] = []
        planned = 0
        for part in reversed(self.entry.present_parts()):
            if planned >= need or part <= index:
                break
            if part not in busy:
                victims.append(part)
                planned += self.layout.span(part)[1]
        freed = self._shed(victims, f"not read yet, for part {index}")
        if freed:
            self._ahead.clear()  # it would only fill the disk again
            self._in_ahead.clear()
        return freed

    def _shed(self, victims: list[int], what: str) -> int:
        """Punch `victims` out of the cache file where the store allows it; bytes freed. A
        failed punch is a WARNING and frees nothing (the parts stay, intact)."""
        if not victims or not self._p.store.can_shed:
            return 0
        try:
            freed = self.entry.shed(victims)
        except CacheIOError as exc:
            log.warning("could not drop cached parts: %s", exc)
            return 0
        self._shed_bytes += freed
        self._p.metrics.shed_bytes.inc(freed)  # metrics
        log.debug(
            "oss://%s/%s: shed %d parts (%s) from %d: %d bytes, %d in all",
            self._p.config.bucket,
            self.meta.key,
            len(victims),
            what,
            min(victims),
            freed,
            self._shed_bytes,
        )
        return freed

    def drop_readahead(self) -> None:
        """No reader is left: finish the parts in flight, start no more."""
        self._ahead.clear()
        self._demand.clear()
        self._in_ahead.clear()
        self._in_demand.clear()

    # -- waiting ---------------------------------------------------------------------------

    async def wait_parts(self, parts: range) -> None:
        """Return when every part in `parts` is done; raise the download's or a part's error."""
        for index in parts:
            while not self.entry.is_done(index):
                if self.failure is not None:
                    raise self.failure
                event = self._events.get(index)
                if event is None:
                    event = self._events[index] = trio.Event()
                    if index not in self._in_flight:
                        self.want((index,), demand=True)
                await event.wait()
                # Not popped: every waiter of the failed attempt gets the error; the next
                # attempt (a later read's want) clears it when it starts.
                error = self._part_errors.get(index)
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

    # -- fetching (service nursery) --------------------------------------------------------

    async def _worker(self) -> None:
        scope = trio.CancelScope()
        self._scopes.add(scope)
        try:
            with scope:
                while self.failure is None:
                    picked = self._next_part()
                    if picked is None:
                        return
                    index, urgent = picked
                    if not urgent and not self._p.room_for_readahead(self.layout.part_size):
                        # Read-ahead never fills the cache disk. The part stays wanted:
                        # the next read that spawns workers offers it again.
                        self._in_ahead.add(index)
                        heapq.heappush(self._ahead, index)
                        return
                    self._in_flight.add(index)
                    if urgent:
                        self._urgent.add(index)
                    self._part_errors.pop(index, None)  # a new attempt supersedes old failures
                    try:
                        async with self._p.limiter:
                            with self._p.metrics.parts_in_flight.track_inprogress():  # metrics
                                await self._fetch(index)
                    finally:
                        self._in_flight.discard(index)
                        self._urgent.discard(index)
                        event = self._events.pop(index, None)
                        if event is not None:
                            event.set()
                        if urgent:
                            self._spawn_workers()  # read-ahead held back for it may go now
        finally:
            self._scopes.discard(scope)
            self._workers -= 1
            if self._workers == 0 and self.users == 0:
                self._p.nursery.start_soon(self._p.close_download, self)

    async def _get_part(self, index: int, start: int, length: int) -> tuple[GetResult, PartSink]:
        """The part's ranged GET into the cache file, through the entry's part sink. On a full
        cache disk: make room (evict idle entries whatever the cap, then shed consumed parts;
        for a part a reader is blocked on, read-ahead parts too) and try again, up to
        DISK_FULL_TRIES in all (parallel GETs race for the space freed); if there is no room
        to be had, the sink's CacheFull goes up."""
        meta = self.meta
        scratch = self._p.scratch.take()
        try:
            tries = 1
            while True:
                sink = self.entry.part_sink(index, memoryview(scratch))
                try:
                    result = await self._p.source.get(
                        meta.key, start, length, sink, if_match=meta.etag
                    )
                except CacheFull:
                    need = 2 * self.layout.part_size
                    room = self._p.make_room(need) or (
                        index in self._urgent and self._shed_readahead(index, need) > 0
                    )
                    if not room or tries == DISK_FULL_TRIES:
                        raise
                    tries += 1
                else:
                    return result, sink
        finally:
            self._p.scratch.give(scratch)  # no await between the GET's end and this

    async def _fetch(self, index: int) -> None:
        start, length = self.layout.span(index)
        key = self.meta.key
        try:
            result, sink = await self._get_part(index, start, length)
        except (PreconditionFailed, NoSuchKey) as exc:
            self._p.metrics.parts.labels("changed").inc()  # metrics
            self._fail(
                ObjectChanged(
                    self._p.config.bucket, key, f"changed or deleted while reading ({exc.code})"
                )
            )
            return
        except InvalidObjectState:
            self._p.metrics.parts.labels("failed").inc()  # metrics
            log.warning(
                "oss://%s/%s: %s object is not restored (InvalidObjectState): restore it "
                "(e.g. ossutil restore) before reading",
                self._p.config.bucket,
                key,
                self.meta.storage_class or "archived",
            )
            self._fail(ObjectArchived(self._p.config.bucket, key, "archived, not restored"))
            return
        except (OssError, OSError) as exc:
            self._p.metrics.parts.labels("failed").inc()  # metrics
            if isinstance(exc, CacheFull) and index not in self._urgent:
                # Read-ahead raced others for the last free space: nobody asked for this
                # part yet, so no error is kept; a reader that needs it fetches it again.
                log.debug(
                    "oss://%s/%s: read-ahead part %d: %s", self._p.config.bucket, key, index, exc
                )
                return
            cause = disk_full_advice(self._p.store.root, exc) if isinstance(exc, CacheFull) else exc
            log.warning(
                "oss://%s/%s: part %d (bytes %d-%d) failed: %s",
                self._p.config.bucket,
                key,
                index,
                start,
                start + length - 1,
                cause,
            )
            self._part_errors[index] = DownloadFailed(
                self._p.config.bucket, key, f"part {index} failed: {cause}"
            )
            return
        except trio.Cancelled:
            raise
        if self.failure is not None:
            # The download failed while this reply was being delivered (a task already
            # rescheduled does not see its scope's cancel): the entry may be discarded.
            return
        got = result.meta
        if got.version != self.meta.version:
            self._fail(
                ObjectChanged(
                    self._p.config.bucket,
                    key,
                    f"version changed while reading: expected ETag {self.meta.etag} size "
                    f"{self.meta.size}, got ETag {got.etag} size {got.size}",
                )
            )
            return
        if got.crc64 is not None:
            if self._server_crc is None:
                self._server_crc = got.crc64
                self.entry.set_server_crc64(got.crc64)
            elif got.crc64 != self._server_crc:
                self._fail(
                    ObjectChanged(
                        self._p.config.bucket,
                        key,
                        f"CRC-64 header changed from {self._server_crc} to {got.crc64} while "
                        "reading",
                    )
                )
                return
        try:
            sink.record(result)
        except PartMismatch as exc:
            log.error("%s: the cached object is discarded", exc)
            self._fail(ObjectCorrupt(self._p.config.bucket, key, str(exc)))
            return
        self._p.metrics.parts.labels("done").inc()  # metrics
        self._p.metrics.fetched_bytes.inc(result.length)  # metrics
        self._unflushed += 1
        if self.entry.complete:
            await self._finish()
        elif self._unflushed >= FLUSH_EVERY_PARTS:
            # In the background: the readers of this part must not wait for an fdatasync.
            self._p.nursery.start_soon(self._flush_in_background)
        elif not self._flush_timer:
            self._flush_timer = True
            self._p.nursery.start_soon(self._flush_later)

    async def _flush_later(self) -> None:
        """Bound the work a crash can lose in time, not only in parts (slow links)."""
        try:
            await trio.sleep(FLUSH_EVERY_S)
            await self.flush()
        finally:
            self._flush_timer = False
            self._close_if_abandoned()

    async def _flush_in_background(self) -> None:
        try:
            await self.flush()
        finally:
            self._close_if_abandoned()

    def _close_if_abandoned(self) -> None:
        """The last handle closed while a flush ran (release saw us busy): close now."""
        if self.users == 0 and self.idle and not self.closed:
            self._p.nursery.start_soon(self._p.close_download, self)

    async def flush(self) -> None:
        """Make recorded parts durable in the checkpoint (fdatasync + atomic rewrite)."""
        if self.closed or self._flushing or self._unflushed == 0 or self.entry.discarded:
            return
        self._unflushed = 0
        if not self.entry.needs_flush:
            return  # no hop to a thread for nothing (every close of a cached file)
        self._flushing = True
        try:
            await trio.to_thread.run_sync(self.entry.flush)
        except OSError as exc:
            log.warning(
                "oss://%s/%s: could not persist the checkpoint: %s",
                self._p.config.bucket,
                self.meta.key,
                exc,
            )
        finally:
            self._flushing = False
        # A download grows its entry part by part: make room now, not only at open/release,
        # so the cache limit is not overshot by a long download (cache.store, "Space").
        store = self._p.store
        store.evict_to_fit()
        excess = store.excess_bytes()
        if excess:
            self._p.shed(excess)
        if store.space_short():
            self._p.make_room(store.min_free)

    async def _finish(self) -> None:
        """All parts are in: combine CRCs, compare with the server's, and publish the verdict."""
        if self._verdict.is_set():
            return
        resumed = self.entry.state  # (a local: mypy must not narrow entry.state past verify())
        if resumed in (EntryState.VERIFIED, EntryState.UNVERIFIABLE):
            # Judged in an earlier life and resumed from its checksummed checkpoint: nothing
            # to recompute (combining the CRCs of a 100 GiB object takes ~50 ms of this loop).
            self._verdict.set()
            return
        bucket, key = self._p.config.bucket, self.meta.key
        if (
            self.entry.state is EntryState.PARTIAL
            and self._server_crc is None
            and self.meta.size > 0
        ):
            # Resumed with every part present but no CRC header seen in this life: ask once.
            head: ObjectMeta | None
            try:
                head = await self._p.source.head(key)
            except Exception as exc:
                log.warning("oss://%s/%s: HEAD for the CRC-64 failed: %s", bucket, key, exc)
                head = None
            if self.closed:
                # Every handle closed meanwhile and the entry with them: nobody awaits this
                # verdict, and the next open (a new Download) reaches its own.
                return
            if head is not None:
                if head.version != self.meta.version:
                    self._fail(ObjectChanged(bucket, key, "changed while reading"))
                    return
                if head.crc64 is not None:
                    self._server_crc = head.crc64
                    self.entry.set_server_crc64(head.crc64)
        verdict = self.entry.verify()
        state = self.entry.state
        self._p.metrics.verdicts.labels(state.name.lower()).inc()  # metrics
        if state is EntryState.CORRUPT:
            # entry.verify() logged the ERROR (bucket, key, both CRCs, cache path).
            self._fail(
                ObjectCorrupt(
                    bucket,
                    key,
                    f"CRC-64 mismatch: server {format_crc(verdict.expected)}, "
                    f"downloaded {format_crc(verdict.actual)}",
                )
            )
            return
        if state is EntryState.UNVERIFIABLE:
            log.info(
                "oss://%s/%s: cached (%d bytes); server sent no CRC-64, so unverifiable",
                bucket,
                key,
                self.meta.size,
            )
        elif self.entry.all_present:
            log.info(
                "oss://%s/%s: cached and verified (%d bytes, CRC-64 %s)",
                bucket,
                key,
                self.meta.size,
                format_crc(verdict.actual),
            )
        else:
            log.info(
                "oss://%s/%s: verified (%d bytes, CRC-64 %s); read through a full cache, "
                "so only %d bytes of it stay cached",
                bucket,
                key,
                self.meta.size,
                format_crc(verdict.actual),
                self.entry.cached_bytes,
            )
        # The verdict is published first: a reader must not wait for the fdatasync of the
        # whole object (seconds for a GiB), only for the CRC comparison above.
        self._verdict.set()
        self._unflushed += 1
        self._p.nursery.start_soon(self._flush_in_background)

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
        self._p.forget(self)
        if isinstance(error, ObjectCorrupt | ObjectChanged):
            # Unlinks the files now (a fresh download may create them again at once); our
            # fd stays valid for workers still unwinding and is closed when we are idle.
            self.entry.discard()


class ObjectReader:
    """One open file handle's view of a download: its read-ahead and coverage."""

    def __init__(self, prefetcher: Prefetcher, download: Download) -> None:
        self._p = prefetcher
        self._download = download
        size = download.meta.size
        part = prefetcher.config.part_size
        self._window = ReadaheadWindow(
            initial=2 * part,
            maximum=max(prefetcher.config.readahead_bytes, part),
            slack=8 * 1024 * 1024,
            trigger=download.layout.head_size,  # a peek within the head part is not a copy
        )
        self._coverage = Coverage(size)
        self._ahead_until = 0  # read-ahead already requested for parts below this index
        self._read_until = 0  # the furthest end of a read that returned
        self.reading: Counter[tuple[int, int]] = Counter()  # (offset, size) of reads under way
        self.read_to_end = False  # a read returned the object's last byte (or it is empty)
        self.closed = False

    @property
    def meta(self) -> ObjectMeta:
        return self._download.meta

    @property
    def consumed(self) -> int:
        """Bytes below this offset were read by this handle, and no read of it still runs
        there: what shedding may drop (less the config's shed_margin)."""
        if self.reading:
            return min(self._read_until, min(offset for offset, _ in self.reading))
        return self._read_until

    @property
    def state(self) -> EntryState:
        return self._download.entry.state

    async def read(self, offset: int, size: int) -> bytes:
        download = self._download
        if download.settled and download.entry.all_present:
            # Fast path for a fully cached, judged object (e.g. after a remount): no part
            # bookkeeping, read-ahead, coverage or `consumed` (nothing of an entry with every
            # byte present needs shedding while it is read); the pread is all that is left.
            # No await between the check and the read.
            end = min(offset + size, download.meta.size)
            if end == download.meta.size:
                self.read_to_end = True
            return download.entry.read(offset, end - offset) if offset < end else b""
        self.reading[offset, size] += 1
        try:
            data = await self._read(offset, size)
        finally:
            self.reading[offset, size] -= 1
            if not self.reading[offset, size]:
                del self.reading[offset, size]
        self._read_until = max(self._read_until, offset + len(data))
        if self._read_until >= self._download.meta.size:
            self.read_to_end = True
        return data

    async def _read(self, offset: int, size: int) -> bytes:
        download = self._download
        if download.failure is not None:
            raise download.failure
        total = download.meta.size
        end = min(offset + size, total)
        if offset >= end:
            return b""
        layout = download.layout
        parts = layout.parts_for(offset, end - offset)
        download.want(parts, demand=True)
        window = self._window.observe(offset, end)
        if window:
            ahead = layout.parts_for(end, min(total, end + window) - end)
            # Ask only for parts beyond what this handle already asked for: a sequential read
            # of 1 MiB would otherwise re-offer the whole window (~16 parts) every time.
            first = max(ahead.start, self._ahead_until)
            if first < ahead.stop:
                download.want(range(first, ahead.stop), demand=False)
                self._ahead_until = ahead.stop
        else:
            self._ahead_until = 0  # a jump: the next sequential run starts its own window
        await download.wait_parts(parts)
        if self._coverage.add(offset, end):
            await download.wait_verdict()
        while download.entry.missing_parts(parts):
            # Shed while we waited for a later part or the verdict (a full cache disk):
            # fetched again. entry.read right after the check is atomic on this thread.
            await download.wait_parts(parts)
        return download.entry.read(offset, end - offset)

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            self._download.readers.discard(self)
            await self._p.release(self._download)


class Prefetcher:
    """Registry of downloads and the mount-wide GET limit; lives for the whole mount."""

    def __init__(
        self,
        source: RangeSource,
        store: CacheStore,
        nursery: trio.Nursery,
        config: PrefetchConfig,
        metrics: MountMetrics | None = None,
    ) -> None:
        self.source = source
        self.store = store
        self.nursery = nursery
        self.config = config
        # metrics: the mount's, or a private registry nobody scrapes (tests, tools)
        self.metrics = metrics or MountMetrics(bucket=config.bucket)
        self.limiter = trio.CapacityLimiter(config.max_gets)
        self.scratch = ScratchPool(config.window_size)  # one window per GET in flight
        self._downloads: dict[ObjectVersion, Download] = {}
        # Started by warm(), until closed or failed; those not yet judged hold the slots.
        self._warming: set[Download] = set()
        # Versions warmed and not opened yet (oldest first, bounded): for the metric only.
        self._warmed: OrderedDict[ObjectVersion, None] = OrderedDict()
        self.warm_limit = config.warm_limit  # in effect: 0 when the cap is too small (below)
        window = config.warm_limit * config.warm_max_size
        if window and store.max_bytes is not None and store.max_bytes < 2 * window:
            # Warmed entries are closed until their reader comes: a cache this small would
            # evict them first and every such object would be fetched twice.
            log.info(
                "directory read-ahead is off: the cache cap (%d MiB) is under twice its window "
                "(%d objects of up to %d MiB)",
                store.max_bytes >> 20,
                config.warm_limit,
                config.warm_max_size >> 20,
            )
            self.warm_limit = 0

    def open(self, meta: ObjectMeta) -> ObjectReader:
        """A reader for `meta`'s version; joins the running download for it if there is one."""
        ident = meta.version
        if ident in self._warmed:
            del self._warmed[ident]
            self.metrics.warmed_opened.inc()  # metrics
        download = self._downloads.get(ident)
        if download is None:
            entry = self.store.open_entry(meta, self.config.part_size)
            download = Download(self, meta, entry)
            self._downloads[ident] = download
        download.users += 1
        reader = ObjectReader(self, download)
        download.readers.add(reader)
        return reader

    def warm(self, meta: ObjectMeta) -> bool:
        """Start caching `meta` whole with no reader (directory read-ahead). Whether it started.

        Nothing starts for an empty or too big object, one being downloaded already, one with
        some version in the cache (a stale one is the next open's business: it may not be read
        at all), when `warm_limit` warm downloads are still fetching, or at all with a cache cap
        under twice the warm window (see __init__). The download is an ordinary
        one with no users: its parts are read-ahead (a reader's demand parts go first, the
        cache disk must have room), it is verified like any other, and it closes itself when
        its workers finish; a reader that opens the object meanwhile joins it.
        """
        config = self.config
        ident = meta.version
        fetching = sum(1 for d in self._warming if not d.settled and d.failure is None)
        if (
            fetching >= self.warm_limit
            or not 0 < meta.size <= config.warm_max_size
            or ident in self._downloads
            or self.store.holds(meta.key)
        ):
            return False
        try:
            entry = self.store.open_entry(meta, config.part_size)
        except (OSError, CacheError) as exc:  # the reader's own open will say it, if it comes
            log.debug("not warming oss://%s/%s: %s", config.bucket, meta.key, exc)
            return False
        log.debug(
            "warming oss://%s/%s (%d bytes) ahead of a directory walk",
            config.bucket,
            meta.key,
            meta.size,
        )
        download = Download(self, meta, entry)
        self._downloads[ident] = download
        self._warming.add(download)
        self.metrics.warmed.inc()  # metrics
        self._warmed[ident] = None
        if len(self._warmed) > WARMED_REMEMBERED:
            self._warmed.popitem(last=False)
        download.want(range(download.layout.count), demand=False)
        if download.idle:  # nothing to fetch after all (or no room for read-ahead)
            self.nursery.start_soon(self.close_download, download)
        return True

    def shed(self, need: int) -> int:
        """Free `need` bytes by shedding consumed parts of open downloads; bytes freed."""
        freed = 0
        for download in list(self._downloads.values()):
            if freed >= need:
                break
            freed += download.shed_consumed(need - freed)
        return freed

    def room_for_readahead(self, length: int) -> bool:
        """Whether a read-ahead part of `length` bytes may start now: the cache disk must
        have room for it, every GET in flight and `min_free`, after evicting and shedding if
        need be.

        One statvfs per read-ahead part while the disk has room.
        """
        need = length + self.limiter.borrowed_tokens * self.config.part_size + self.store.min_free
        if self.store.free_bytes() >= need:
            return True
        self.make_room(need)
        return self.store.free_bytes() >= need

    def make_room(self, need: int) -> bool:
        """The cache disk is full: evict closed entries, then shed consumed parts of open
        ones, until `need` bytes are free. Whether it is worth trying again: something was
        freed, or there is room now (others freed it meanwhile; ext4 may only count blocks
        freed by a punch once its journal commits, so freeing counts even unseen)."""
        evicted = self.store.make_room(need)
        shortfall = need - self.store.free_bytes()
        shed = self.shed(shortfall) if shortfall > 0 else 0
        return bool(evicted or shed) or self.store.free_bytes() >= need

    def forget(self, download: Download) -> None:
        self._warming.discard(download)
        ident = download.meta.version
        if self._downloads.get(ident) is download:
            del self._downloads[ident]

    async def release(self, download: Download) -> None:
        """A handle closed. The last one stops read-ahead; the entry is closed once idle.

        The download stays registered while parts are in flight, so a handle opened in the
        meantime joins it instead of opening a second entry on the same cache file.
        """
        download.users -= 1
        if download.users > 0:
            return
        download.drop_readahead()
        if download.idle:
            await self.close_download(download)

    async def close_download(self, download: Download) -> None:
        if download.users > 0 or not download.idle or download.closed:
            return
        self.forget(download)
        download.force_flush()
        with trio.CancelScope(shield=True):
            await download.flush()
        download.closed = True
        self.store.release(download.entry)

    def cached_state(self, meta: ObjectMeta) -> tuple[str, int | None]:
        """(state, server CRC-64) of `meta`'s version in the cache, for `user.ossmount.state`.

        state is one of verified, unverifiable, partial, corrupt or uncached.
        """
        download = self._downloads.get(meta.version)
        if download is not None:
            entry = download.entry
            return entry.state.name.lower(), entry.meta.crc64
        cp = self.store.cached_checkpoint(meta.key)
        if cp is None or cp.version != meta.version:
            return "uncached", None
        return cp.state.name.lower(), cp.server_crc64

    def statistics(self) -> dict[str, int]:
        return {
            "downloads": len(self._downloads),
            "gets_in_flight": self.limiter.borrowed_tokens,
        }

    def abort_all(self, reason: str) -> None:
        """Unmount is under way: every blocked reader gets EIO now (see Download.abort)."""
        for download in list(self._downloads.values()):
            download.abort(DownloadFailed(self.config.bucket, download.meta.key, reason))

    async def aclose(self) -> None:
        """Persist every checkpoint (called at unmount, after the nursery was cancelled)."""
        for download in list(self._downloads.values()):
            download.force_flush()
            with trio.CancelScope(shield=True):
                await download.flush()
