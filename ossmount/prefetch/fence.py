"""The version fence: every part of one download comes from the one object version it is for.

Each part GET carries `If-Match: <ETag>`; the fence also checks what the reply says it is
(ETag and size: `ObjectVersion`), and the whole-object CRC-64 header, which must never
change within a download. The first CRC header seen is learnt into the cache entry, so the
verdict can use it (listings carry none). A mismatch is `ObjectChanged` (ESTALE): two
versions are never mixed in one cache file.
"""

from __future__ import annotations

from ossmount.cache.entry import CacheEntry
from ossmount.oss.models import ObjectMeta
from ossmount.prefetch.errors import ObjectChanged

__all__ = ["VersionFence"]


class VersionFence:
    def __init__(self, bucket: str, meta: ObjectMeta, entry: CacheEntry) -> None:
        self._bucket = bucket
        self._meta = meta
        self._entry = entry
        self.server_crc: int | None = entry.meta.crc64

    def check(self, got: ObjectMeta) -> ObjectChanged | None:
        """`got` (a reply's view of the object) against the version; learns its CRC-64."""
        want = self._meta
        if got.version != want.version:
            return ObjectChanged(
                self._bucket,
                want.key,
                f"version changed while reading: expected ETag {want.etag} size "
                f"{want.size}, got ETag {got.etag} size {got.size}",
            )
        if got.crc64 is not None:
            if self.server_crc is None:
                self.server_crc = got.crc64
                self._entry.set_server_crc64(got.crc64)
            elif got.crc64 != self.server_crc:
                return ObjectChanged(
                    self._bucket,
                    want.key,
                    f"CRC-64 header changed from {self.server_crc} to {got.crc64} while reading",
                )
        return None
