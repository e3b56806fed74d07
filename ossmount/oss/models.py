"""Values the OSS client returns (frozen, so they can be shared between tasks without copies),
and `Sink`, where a GET delivers its body."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ObjectVersion:
    """Which bytes an object holds: the one identity tree, cache and prefetch compare.

    A change in any field means different bytes. Last-Modified is not part of it (a copy onto
    itself changes it, not the bytes), nor is the CRC-64 (listings never carry one).
    """

    key: str
    etag: str
    size: int


@dataclass(frozen=True, slots=True)
class ObjectMeta:
    """What we know of one object version, from HEAD, a GET's headers or a listing entry.

    `etag` is kept exactly as the server sent it, quotes included, so it can go back verbatim in
    `If-Match`. `crc64` is None when the server sent none (listings never do, but an empty
    object's is 0 there too: ossmount.oss._xml; copied and old objects may not send one).
    `mtime_ns` is Last-Modified in nanoseconds since the epoch, in whole seconds whichever
    reply it came from (a listing's ISO time is cut to them where it is parsed,
    ossmount.oss._xml), so one version compares equal however it was learnt.
    """

    key: str
    size: int
    etag: str
    mtime_ns: int
    crc64: int | None = None
    object_type: str | None = None
    storage_class: str | None = None

    @property
    def version(self) -> ObjectVersion:
        return ObjectVersion(self.key, self.etag, self.size)


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


class Sink(Protocol):
    """Where body bytes go. `window` lends a writable view for the next bytes at `pos`
    (relative to the start of the delivery); `commit` is told which of them arrived.
    Both may be called from the body's worker thread (one call at a time, never after the
    GET that delivers them has returned). What `commit` raises ends the GET unretried."""

    def window(self, pos: int, limit: int) -> memoryview: ...

    def commit(self, view: memoryview, pos: int) -> None: ...


class BufferSink:
    """The plainest `Sink`: body bytes straight into one caller-owned bytearray (no copy on
    plain HTTP), for bodies read whole into memory."""

    def __init__(self, buf: bytearray) -> None:
        self._view = memoryview(buf)

    def window(self, pos: int, limit: int) -> memoryview:
        return self._view[pos : pos + limit]

    def commit(self, view: memoryview, pos: int) -> None:
        pass
