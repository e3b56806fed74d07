"""The read path: shared per-object downloads of parts into the cache, and the readers that wait.

The public surface is these names; the modules are listed in prefetcher.py's docstring.
"""

from __future__ import annotations

from ossmount.prefetch.config import PrefetchConfig, RangeSource
from ossmount.prefetch.errors import (
    DownloadFailed,
    ObjectArchived,
    ObjectChanged,
    ObjectCorrupt,
    ReadError,
)
from ossmount.prefetch.prefetcher import Prefetcher
from ossmount.prefetch.reader import ObjectReader

__all__ = [
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
