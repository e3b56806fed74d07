"""The unread start of a file appended to (`Staged.unread`): an O_APPEND open of a big object
stages only its last part (fs/staging.py `Staging.fill`); the whole parts before it stay in
the object. This module reads what is staged from an object, finds where the unread start
ends and its CRC-64 (solved from the one OSS states for the whole object and the tail read:
crc64.prefix_crc), and fetches that start when something is about to change it.

Concurrency: trio, one thread. One fetch of a file's start at a time (`Unread.fetching` is
set while it runs; the others wait on it). The bytes of the hole are written by that fetch
only: reads of the start go to the object until `Staged.unread` is None, and writes,
truncates and unlinks into it fetch first (fs/filesystem.py).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Awaitable, Callable
from typing import NamedTuple, Protocol

import trio

from ossmount.crc64 import crc64
from ossmount.fs.staged import Staged
from ossmount.oss._errors import NoSuchKey, PreconditionFailed
from ossmount.oss.models import ObjectMeta
from ossmount.write import Uploader, UploadSettings

__all__ = [
    "ObjectReaderLike",
    "ReaderWithClose",
    "Start",
    "copy_in",
    "fetch",
    "forget",
    "start_of",
    "upload_part_size",
]

_CHUNK = 4 * 1024 * 1024
_PIECE_MAX = 64 * 1024 * 1024  # the widest upload part an appender's start is copied in


class ObjectReaderLike(Protocol):
    """What a fill reads from (a prefetch `ObjectReader`)."""

    async def read(self, offset: int, size: int) -> bytes: ...


class ReaderWithClose(ObjectReaderLike, Protocol):
    async def aclose(self) -> None: ...


async def copy_in(
    staged: Staged, source: ObjectReaderLike, where: str, start: int, end: int
) -> int:
    """Bytes [start, end) of the object `where` names (`source` reads it) into the staging
    file at the same offsets; their CRC-64."""
    offset, crc = start, 0
    while offset < end:
        data = await source.read(offset, min(_CHUNK, end - offset))
        if not data:
            raise EOFError(f"{where}: object ended at {offset} of {end}")
        os.pwrite(staged.fd, data, offset)
        crc = crc64(data, crc)
        offset += len(data)
    return crc


class Start(NamedTuple):
    """Where an appender's fill starts (`at`: the start of the object's last part; 0, the
    whole object is read, for an object of less than one whole part or one OSS states no
    CRC-64 for, as a copy may have none), the whole object's CRC-64, and the headers of the
    version opened if a HEAD learnt them (its commit keeps them: `Staged.carried`)."""

    at: int
    whole: int
    headers: dict[str, str] | None = None


async def start_of(uploader: Uploader, meta: ObjectMeta, whole: int | None) -> Start:
    """The `Start` of an appender's fill; the whole object's CRC-64 is `whole`, else from
    one HEAD fenced on the version opened."""
    ps = uploader.settings.part_size
    at = meta.size // ps * ps
    if at < ps:
        return Start(0, 0)
    headers = None
    if whole is None:
        try:
            headed = await uploader.writes.object_headers(meta.key, if_match=meta.etag)
        except (NoSuchKey, PreconditionFailed):
            return Start(0, 0)  # the read that follows says it
        headers, whole = headed.kept, headed.crc64
    return Start(at, whole, headers) if whole is not None else Start(0, 0)


def upload_part_size(below: int, settings: UploadSettings) -> int:
    """The upload part size of a file whose first `below` bytes stay unread (whole parts of
    `settings.part_size`): the widest multiple of it that divides `below`, up to 64 MiB.
    Its start is then copied in that many fewer UploadPartCopy: an append to a 1 GiB object
    in 16, not 128, each a round trip (and a request OSS bills). An unread start of a prime
    number of parts above 64 MiB keeps one part each. (The parts after the start are as
    wide: they are sent at the close or once written whole; a file staged from an object
    never sheds parts to make room, Staging._shed, so their width costs no room.)"""
    ps = settings.part_size
    count, best = below // ps, 1
    for parts in range(2, min(count, _PIECE_MAX // ps) + 1):
        if count % parts == 0:
            best = parts
    return best * ps


class Room(NamedTuple):
    """Where the room a fetched start takes is counted: `take` waits for it (or raises
    ENOSPC), `give` returns it."""

    take: Callable[[Staged, int], Awaitable[None]]
    give: Callable[[int], None]


async def fetch(
    staged: Staged,
    open_source: Callable[[ObjectMeta], ReaderWithClose],
    room: Room | None,
    *,
    where: Callable[[str], str],
    durable: bool,
) -> None:
    """Bring the unread start into the staged file before something changes it (a write or
    truncate into it; an unlink or replace while it is open, which takes the version it is
    read from away). Read through the verified read path from the version that holds it,
    and checked against its CRC-64 (`Unread.crc`): bytes that do not match are never used
    (OSError EIO, the file unchanged). `room`: where the room it takes is counted;
    `durable`: fsync them (a record may soon claim them). One fetch at a time; others wait
    for it."""
    while (start := staged.unread) is not None:
        if start.fetching is not None:
            await start.fetching.wait()
            continue
        done = start.fetching = trio.Event()
        below, meta = start.below, start.source
        grown = fetched = False
        try:
            if room is not None:
                await room.take(staged, below)  # ENOSPC: nothing changed
                grown = True
            reader = open_source(meta)
            try:  # the hole's bytes: no one reads or writes them until `unread` is 0
                crc = await copy_in(staged, reader, where(meta.key), 0, below)
            finally:
                await reader.aclose()
            if crc != start.crc:
                raise OSError(errno.EIO, f"{where(meta.key)}: its first {below} bytes came "
                              f"with CRC-64 {crc:016x}, not the {start.crc:016x} the "
                              "whole object's implies; the file is unchanged")  # fmt: skip
            if durable:
                await trio.to_thread.run_sync(os.fdatasync, staged.fd)
            fetched = True
            forget(staged)
        finally:
            if grown and not fetched:
                assert room is not None
                room.give(below)
            start.fetching = None
            done.set()


def forget(staged: Staged) -> None:
    """The start is no longer unread: fetched, or truncated away. A session copying it
    copies again what it did with no CRC of its own (`UploadSession.fetched_unread`)."""
    staged.unread = None
    if staged.session is not None:
        staged.session.fetched_unread()
