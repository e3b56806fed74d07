"""The read path's former single module, kept importable for callers not yet moved to
`ossmount.prefetch` (the FUSE layer is being rewritten against these names); the code lives
in the modules ossmount/prefetch/prefetcher.py lists. To be removed by the lead."""

from __future__ import annotations

from ossmount.prefetch.config import PrefetchConfig, RangeSource
from ossmount.prefetch.errors import (
    DownloadFailed,
    ObjectArchived,
    ObjectChanged,
    ObjectCorrupt,
    ReadError,
)
from ossmount.prefetch.flush import FLUSH_EVERY_PARTS, FLUSH_EVERY_S
from ossmount.prefetch.prefetcher import Prefetcher
from ossmount.prefetch.reader import ObjectReader

__all__ = [
    "FLUSH_EVERY_PARTS",
    "FLUSH_EVERY_S",
    "DownloadFailed",
    "ObjectArchived",
    "ObjectChanged",
    "ObjectCorrupt",
    "ObjectReader",
    "PrefetchConfig",
    "Prefetcher",
    "RangeSource",
    "ReadError",
]
