"""Values the OSS client returns. Frozen so they can be shared between tasks without copies."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ObjectMeta:
    """What we know of one object version, from HEAD, a GET's headers or a listing entry.

    `etag` is kept exactly as the server sent it, quotes included, so it can go back verbatim in
    `If-Match`. `crc64` is None when the server sent none (listings never do; copied and old
    objects may not either). `mtime_ns` is Last-Modified in nanoseconds since the epoch.
    """

    key: str
    size: int
    etag: str
    mtime_ns: int
    crc64: int | None = None
    object_type: str | None = None
    storage_class: str | None = None

    @property
    def fingerprint(self) -> tuple[str, int, str]:
        """Identity of the version: a change in any of these means different bytes."""
        return (self.key, self.size, self.etag)


@dataclass(frozen=True, slots=True)
class ListPage:
    """One ListObjectsV2 page. Keys and prefixes are already URL-decoded."""

    objects: tuple[ObjectMeta, ...]
    prefixes: tuple[str, ...]
    next_token: str | None  # None when this was the last page


@dataclass(frozen=True, slots=True)
class GetResult:
    """What a ranged GET delivered: the object version it came from, and the bytes' own CRC.

    `meta.size` is the whole object's size (from Content-Range), `meta.crc64` the whole
    object's CRC header (never the range's). `crc64` is the CRC of exactly the `length` bytes
    written, computed on the fly while receiving.
    """

    meta: ObjectMeta
    offset: int
    length: int
    crc64: int
