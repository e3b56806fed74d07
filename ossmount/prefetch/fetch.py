"""One part's ranged GET into its cache file, as an outcome value (mountpoint-s3's RequestTask).

`fetch_part` never touches the download it works for: it GETs the part through the entry's
part sink (pinned to the version's ETag with If-Match), makes room and tries again when the
cache disk is full, and returns what happened. The download decides what that means (fence,
record, fail) on the trio thread.

A full disk is tried DISK_FULL_TRIES times in all, with `make_room()` between (parallel GETs
race for the space freed); when there is no room to be had, an urgent part fails with the
cache dir named and what to do, and a read-ahead part is `Dropped` (nobody asked for it yet,
so no error is kept; a reader that needs it fetches it again).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import trio

from ossmount.cache.entry import CacheEntry
from ossmount.cache.errors import CacheFull
from ossmount.cache.sink import PartSink, ScratchPool
from ossmount.oss import InvalidObjectState, NoSuchKey, OssError, PreconditionFailed
from ossmount.oss.models import GetResult
from ossmount.prefetch.config import RangeSource
from ossmount.prefetch.errors import DownloadFailed, ObjectArchived, ObjectChanged, ReadError

__all__ = ["DISK_FULL_TRIES", "Dropped", "Failed", "Fetched", "PartJob", "fetch_part"]

log = logging.getLogger(__name__)

# A part write that finds the cache disk full is tried this often in all, making room between.
DISK_FULL_TRIES = 3


class PartJob(NamedTuple):
    """One part to fetch, and what its errors must name."""

    bucket: str
    entry: CacheEntry
    part: int
    urgent: bool  # a reader is blocked on it
    cache_root: object  # named in the error when the disk is full


@dataclass(frozen=True, slots=True)
class Fetched:
    """The body is in the cache file; `sink.record(result)` records it once the version fence
    accepted `result.meta`."""

    result: GetResult
    sink: PartSink


@dataclass(frozen=True, slots=True)
class Failed:
    """The part could not be fetched. `fatal`: the whole download fails (the object changed or
    is archived); otherwise only readers waiting for this part get `error`. `outcome` is the
    metrics label ("failed" or "changed")."""

    error: ReadError
    fatal: bool
    outcome: str


@dataclass(frozen=True, slots=True)
class Dropped:
    """A read-ahead part found no room on the cache disk: not an error for anyone."""


PartOutcome = Fetched | Failed | Dropped


async def fetch_part(
    source: RangeSource, scratch: ScratchPool, job: PartJob, make_room: Callable[[], bool]
) -> PartOutcome:
    key = job.entry.meta.key
    start, length = job.entry.layout.span(job.part)
    try:
        return await _get(source, scratch, job, make_room)
    except (PreconditionFailed, NoSuchKey) as exc:
        error: ReadError = ObjectChanged(
            job.bucket, key, f"changed or deleted while reading ({exc.code})"
        )
        return Failed(error, fatal=True, outcome="changed")
    except InvalidObjectState:
        log.warning(
            "oss://%s/%s: %s object is not restored (InvalidObjectState): restore it "
            "(e.g. ossutil restore) before reading",
            job.bucket,
            key,
            job.entry.meta.storage_class or "archived",
        )
        error = ObjectArchived(job.bucket, key, "archived, not restored")
        return Failed(error, fatal=True, outcome="failed")
    except (OssError, OSError) as exc:
        if isinstance(exc, CacheFull) and not job.urgent:
            log.debug("oss://%s/%s: read-ahead part %d: %s", job.bucket, key, job.part, exc)
            return Dropped()
        cause = disk_full_advice(job.cache_root, exc) if isinstance(exc, CacheFull) else exc
        log.warning(
            "oss://%s/%s: part %d (bytes %d-%d) failed: %s",
            job.bucket,
            key,
            job.part,
            start,
            start + length - 1,
            cause,
        )
        error = DownloadFailed(job.bucket, key, f"part {job.part} failed: {cause}")
        return Failed(error, fatal=False, outcome="failed")
    except trio.Cancelled:
        raise


def disk_full_advice(root: object, exc: CacheFull) -> str:
    """What an operator reads when a part found the cache disk full with nothing idle left to
    evict: where, and what to do."""
    return (
        f"the cache dir {root} is full ({exc.strerror}) and holds no closed file to evict: "
        "free space there, or lower --max-cache-size-mb below its free space"
    )


async def _get(
    source: RangeSource, scratch: ScratchPool, job: PartJob, make_room: Callable[[], bool]
) -> Fetched:
    entry = job.entry
    start, length = entry.layout.span(job.part)
    buf = scratch.take()
    try:
        tries = 1
        while True:
            sink = entry.part_sink(job.part, memoryview(buf))
            try:
                result = await source.get(
                    entry.meta.key, start, length, sink, if_match=entry.meta.etag
                )
            except CacheFull:
                room = make_room()
                if not room or tries == DISK_FULL_TRIES:
                    raise
                tries += 1
            else:
                return Fetched(result, sink)
    finally:
        scratch.give(buf)  # the GET has returned: its body thread no longer writes to it
