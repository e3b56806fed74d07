"""The read path's front: a registry of shared downloads, the mount-wide GET limit, warming.

`Prefetcher.open(meta)` returns an `ObjectReader` for one file handle. All handles of the same
object version (`ObjectVersion`: key, ETag, size) share one `Download`, which owns the
`CacheEntry` (one cache file + checkpoint) and fetches parts with ranged GETs straight into
the cache file (cache.sink). Every GET holds the mount-wide `trio.CapacityLimiter(max_gets)`
and one reused receive window (`ScratchPool`), so memory in flight is bounded by `max_gets`
windows however many files are open; read-ahead costs disk, not memory.

The module map (one job each): parts.py (what to fetch next), fetch.py (one part's GET, as an
outcome), fence.py (one version per file), flush.py (durability timing), verdict.py (the
whole-object CRC verdict), shed.py and space.py (room on the cache disk), download.py (the
life cycle that puts them together), reader.py (one handle), tasks.py (background work and
`wait_idle`). What happens is reported to a `PrefetchObserver` (ossmount.observe).

Concurrency: single trio thread; the registry changes only between awaits. Background work
runs in the service nursery given at construction, never in a FUSE request task.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import trio

from ossmount.cache.entry import CacheEntry
from ossmount.cache.errors import CacheError
from ossmount.cache.sink import ScratchPool
from ossmount.cache.store import CacheStore
from ossmount.observe import NO_PREFETCH_OBSERVER, PrefetchObserver
from ossmount.oss.models import ObjectMeta, ObjectVersion
from ossmount.prefetch.config import PrefetchConfig, RangeSource
from ossmount.prefetch.download import Download, Services
from ossmount.prefetch.errors import DownloadFailed
from ossmount.prefetch.reader import ObjectReader
from ossmount.prefetch.space import SpacePolicy
from ossmount.prefetch.tasks import Tasks

__all__ = ["WARMED_REMEMBERED", "Prefetcher"]

log = logging.getLogger(__name__)

# How many warmed versions are remembered until opened, for ossmount_warmed_objects_opened.
WARMED_REMEMBERED = 4096


class Prefetcher:
    """Registry of downloads and the mount-wide GET limit; lives for the whole mount."""

    def __init__(
        self,
        source: RangeSource,
        store: CacheStore,
        nursery: trio.Nursery,
        config: PrefetchConfig,
        metrics: PrefetchObserver | None = None,
    ) -> None:
        """`metrics`: where to report (the mount's MountMetrics), or nobody."""
        self.source = source
        self.store = store
        self.config = config
        observer = metrics if metrics is not None else NO_PREFETCH_OBSERVER
        # As given: the FUSE layer still reads the mount's MountMetrics through it.
        self.metrics: PrefetchObserver = observer
        self.limiter = trio.CapacityLimiter(config.max_gets)
        self._tasks = Tasks(nursery)
        self._downloads: dict[ObjectVersion, Download] = {}
        self._services = Services(
            config=config,
            source=source,
            store=store,
            tasks=self._tasks,
            limiter=self.limiter,
            scratch=ScratchPool(config.window_size),
            space=SpacePolicy(
                store,
                self.limiter,
                config.part_size,
                lambda: [d.shedder for d in self._downloads.values()],
            ),
            observer=observer,
        )
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
        version = meta.version
        if version in self._warmed:
            del self._warmed[version]
            self._services.observer.object_warmed(opened=True)
        download = self._downloads.get(version)
        if download is None:
            download = self._start(meta, self.store.open_entry(meta, self.config.part_size))
        reader = ObjectReader(download, self.config)
        download.readers.add(reader)
        return reader

    def warm(self, meta: ObjectMeta) -> bool:
        """Start caching `meta` whole with no reader (directory read-ahead). Whether it started.

        Nothing starts for an empty or too big object, one being downloaded already, one with
        some version in the cache (a stale one is the next open's business: it may not be read
        at all), when `warm_limit` warm downloads are still fetching, or at all with a cache cap
        under twice the warm window (see __init__). The download is an ordinary one with no
        readers: its parts are read-ahead (a reader's demand parts go first, the cache disk
        must have room), it is verified like any other, and it closes itself when its workers
        finish; a reader that opens the object meanwhile joins it.
        """
        config = self.config
        version = meta.version
        fetching = sum(1 for d in self._warming if not d.settled and d.failure is None)
        if (
            fetching >= self.warm_limit
            or not 0 < meta.size <= config.warm_max_size
            or version in self._downloads
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
        download = self._start(meta, entry)
        self._warming.add(download)
        self._services.observer.object_warmed(opened=False)
        self._warmed[version] = None
        if len(self._warmed) > WARMED_REMEMBERED:
            self._warmed.popitem(last=False)
        download.want(range(download.layout.count), demand=False)
        if download.idle:  # nothing to fetch after all (or no room for read-ahead)
            self._tasks.start_soon(download.close)
        return True

    def _start(self, meta: ObjectMeta, entry: CacheEntry) -> Download:
        download = Download(self._services, meta, entry, self._forget)
        self._downloads[meta.version] = download
        return download

    def _forget(self, download: Download) -> None:
        self._warming.discard(download)
        version = download.meta.version
        if self._downloads.get(version) is download:
            del self._downloads[version]

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

    async def wait_idle(self) -> None:
        """Return once no part GET, flush, verdict or close is scheduled or running.

        For tests and tools that must observe a quiet state (a flush timer asleep is quiet);
        the mount never needs it.
        """
        await self._tasks.wait_idle()

    def abort_all(self, reason: str) -> None:
        """Unmount is under way: every blocked reader gets EIO now (see Download.abort)."""
        for download in list(self._downloads.values()):
            download.abort(DownloadFailed(self.config.bucket, download.meta.key, reason))

    async def aclose(self) -> None:
        """Persist every checkpoint (called at unmount, after the nursery was cancelled)."""
        for download in list(self._downloads.values()):
            await download.persist()
