"""The prefetcher's settings and what it needs from the OSS client (a fake in tests)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ossmount.oss.models import GetResult, ObjectMeta, Sink

__all__ = ["PrefetchConfig", "RangeSource"]


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
    # GETs one download may grow to (prefetch.width) from `parallel_count` while each added
    # stream brings its own rate; 0 (or <= parallel_count): a fixed `parallel_count`.
    max_width: int = 0
    # Random reads (prefetch.spot): a read that jumped away from offset 0, in a run shorter
    # than `spot_run`, GETs the aligned `spot_block` around it into memory (at most
    # `spot_kept` blocks per download) instead of whole parts. `spot_block` 0 (the
    # default here; the mount sets --random-read-kb) turns it off.
    spot_block: int = 0
    spot_run: int = 1024 * 1024
    spot_kept: int = 16
