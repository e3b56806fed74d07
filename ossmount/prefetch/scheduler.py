"""The read path's former single module, kept importable for callers not yet moved to
`ossmount.prefetch` (the FUSE layer is being rewritten against these names); the code lives
in the modules ossmount/prefetch/prefetcher.py lists. To be removed by the lead."""

from __future__ import annotations

from ossmount.prefetch import *  # noqa: F403 - exactly the package's public names
from ossmount.prefetch import __all__ as _public
from ossmount.prefetch.flush import FLUSH_EVERY_PARTS, FLUSH_EVERY_S

__all__ = [*_public, "FLUSH_EVERY_PARTS", "FLUSH_EVERY_S"]
