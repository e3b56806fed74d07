"""The version fence: every part of one download comes from the one object version it is for.

Each part GET carries `If-Match: <ETag>`; the fence also checks what the reply says it is
(ETag and size: `ObjectVersion`). A different version is `ObjectChanged` (ESTALE): two
versions are never mixed in one cache file.

The whole-object CRC-64 header must not change within a version either, but one reply with a
wrong header while the ETag and size match (and If-Match held) is a bad reply, not a new
version (issue 14 finding 5): the fence says `CrcDisputed`, the part is not recorded and is
fetched again; only when replies keep disagreeing does the download settle it with a HEAD
(`settle`), which fails the part with EIO naming both CRCs, or shows a real version change.
The first CRC header seen is learnt into the cache entry, so the verdict can use it
(listings carry none).
"""

from __future__ import annotations

from dataclasses import dataclass

from ossmount.cache.entry import CacheEntry
from ossmount.crc64 import format_crc
from ossmount.oss.models import ObjectMeta
from ossmount.prefetch.errors import DownloadFailed, ObjectChanged, ReadError

__all__ = ["CRC_DISPUTES", "CrcDisputed", "VersionFence"]

# Replies for one part whose CRC header disagrees (same ETag) before a HEAD settles it.
CRC_DISPUTES = 3


@dataclass(frozen=True, slots=True)
class CrcDisputed:
    """Same version, but the reply's CRC-64 header differs from the one known: not recorded."""

    known: int
    got: int


class VersionFence:
    def __init__(self, bucket: str, meta: ObjectMeta, entry: CacheEntry) -> None:
        self._bucket = bucket
        self._meta = meta
        self._entry = entry
        self.server_crc: int | None = entry.meta.crc64
        self._learnt = False  # server_crc came from a part reply, not the opening meta

    def check(self, got: ObjectMeta) -> ObjectChanged | CrcDisputed | None:
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
                self._learnt = True
                self._entry.set_server_crc64(got.crc64)
            elif got.crc64 != self.server_crc:
                return CrcDisputed(self.server_crc, got.crc64)
        return None

    def settle(self, head: ObjectMeta, dispute: CrcDisputed, part: int) -> ReadError | None:
        """What a part whose replies kept disputing the CRC fails with, given a fresh HEAD:
        ObjectChanged if the HEAD shows another version; None if the HEAD sides with the
        later replies against a CRC learnt from one earlier reply (that one was the bad reply:
        the CRC is corrected; part CRCs come from the bytes, so nothing recorded is wrong);
        else EIO naming both CRCs."""
        changed = self.check(head)
        if isinstance(changed, ObjectChanged):
            return changed
        if self._learnt and head.crc64 is not None and head.crc64 == dispute.got:
            self.server_crc = head.crc64
            self._entry.correct_server_crc64(head.crc64)
            return None
        return DownloadFailed(
            self._bucket,
            self._meta.key,
            f"part {part}: {CRC_DISPUTES} replies for ETag {self._meta.etag} carried CRC-64 "
            f"{format_crc(dispute.got)}, not {format_crc(dispute.known)} as known for this "
            f"version (HEAD says {format_crc(head.crc64)}); the server's CRC headers disagree",
        )
