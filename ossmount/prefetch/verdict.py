"""The whole-object verdict of one download: combine the part CRCs, compare with the server's.

`judge` runs once every part has a CRC. It returns an outcome; it never fails the download
itself. A resumed entry judged in an earlier life is not judged again (combining the CRCs of a
100 GiB object takes ~50 ms of the event loop). An entry resumed complete without any CRC
header seen in this life asks for one with a HEAD first (which may also show that the object
changed). CORRUPT is reported as `ObjectCorrupt` (the entry logged the ERROR with both CRCs
and its path); the caller discards the entry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from ossmount.cache.entry import CacheEntry, EntryState
from ossmount.crc64 import format_crc
from ossmount.oss.models import ObjectMeta
from ossmount.prefetch.config import RangeSource
from ossmount.prefetch.errors import ObjectChanged, ObjectCorrupt, ReadError
from ossmount.prefetch.fence import VersionFence

__all__ = ["Judgement", "judge"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Judgement:
    """`error` None: the entry is VERIFIED or UNVERIFIABLE. `counted`: the state reached now
    (for metrics; None when resumed already judged). `abandoned`: nobody waits any more (the
    download closed during the HEAD), so no verdict is published."""

    error: ReadError | None = None
    counted: str | None = None
    abandoned: bool = False
    fresh: bool = False  # judged now: the new state must be flushed


async def judge(
    bucket: str,
    meta: ObjectMeta,
    entry: CacheEntry,
    fence: VersionFence,
    source: RangeSource,
    closed: Callable[[], bool],
) -> Judgement:
    resumed = entry.state
    if resumed in (EntryState.VERIFIED, EntryState.UNVERIFIABLE):
        return Judgement()
    key = meta.key
    if resumed is EntryState.PARTIAL and fence.server_crc is None and meta.size > 0:
        head: ObjectMeta | None
        try:
            head = await source.head(key)
        except Exception as exc:
            log.warning("oss://%s/%s: HEAD for the CRC-64 failed: %s", bucket, key, exc)
            head = None
        if closed():
            # Every handle closed meanwhile and the entry with them: nobody awaits this
            # verdict, and the next open (a new Download) reaches its own.
            return Judgement(abandoned=True)
        if head is not None:
            if head.version != meta.version:
                return Judgement(ObjectChanged(bucket, key, "changed while reading"))
            fence.check(head)
    verdict = entry.verify()
    state = verdict.state
    counted = state.name.lower()
    if state is EntryState.CORRUPT:
        error = ObjectCorrupt(
            bucket,
            key,
            f"CRC-64 mismatch: server {format_crc(verdict.expected)}, "
            f"downloaded {format_crc(verdict.actual)}",
        )
        return Judgement(error, counted)
    if state is EntryState.UNVERIFIABLE:
        log.info(
            "oss://%s/%s: cached (%d bytes); server sent no CRC-64, so unverifiable",
            bucket,
            key,
            meta.size,
        )
    elif entry.all_present:
        # DEBUG for objects smaller than a part: a cp -r of 2,000 small files wrote 2,000 INFO
        # lines (each through the redacting filter), ~2 % of the daemon's time per file.
        log.log(
            logging.DEBUG if meta.size < entry.layout.part_size else logging.INFO,
            "oss://%s/%s: cached and verified (%d bytes, CRC-64 %s)",
            bucket,
            key,
            meta.size,
            format_crc(verdict.actual),
        )
    else:
        log.info(
            "oss://%s/%s: verified (%d bytes, CRC-64 %s); read through a full cache, "
            "so only %d bytes of it stay cached",
            bucket,
            key,
            meta.size,
            format_crc(verdict.actual),
            entry.cached_bytes,
        )
    return Judgement(counted=counted, fresh=True)
