"""The values an upload is described by: its settings, the staged file and journal it reads,
the object patched parts are copied from, and what a commit returns (write.session)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "MIN_PART",
    "CommitResult",
    "CopySource",
    "Piece",
    "StagedFile",
    "UnreadStart",
    "UploadSettings",
]

MIN_PART = 100 * 1024  # OSS refuses non-last parts below this at Complete


@dataclass(frozen=True, slots=True)
class UploadSettings:
    part_size: int = 8 * 1024 * 1024
    single_put_max: int = 8 * 1024 * 1024  # at most this, nothing sent early: one PutObject
    parallel: int = 4  # part uploads in flight across all sessions of the uploader
    # Copies of an unread start (UploadPartCopy) in flight across all sessions: they move no
    # byte over our link, so the upload bound does not apply; each still costs a round trip,
    # and an append to a 10 GiB object copies 160 pieces of 64 MiB (fs/unread.py).
    copy_parallel: int = 16
    # False: a file committed by one PutObject gets no journal and no fsync (saves ~5 ms of
    # the ~10 ms a 64 KiB commit costs locally). Only for callers whose close/fsync waits for
    # the commit: a crash then loses only bytes nobody was told were stored. Write-back
    # (close returns before the upload) must keep it True.
    journal_small_puts: bool = True
    # False: sealing a file (close/fsync) does not fsync its staged bytes; the record names
    # this boot instead and recovery trusts it only in this boot (a kill -9 keeps the page
    # cache, a power loss does not). Saves the close a write of the whole file to disk (1 GiB:
    # see bench/bench_write_mount.py). Same condition as above: only when close waits for the
    # commit, so such bytes were never acknowledged before they were on OSS.
    fsync_staged: bool = True

    def __post_init__(self) -> None:
        if not MIN_PART <= self.part_size <= 5 << 30 or min(self.parallel, self.copy_parallel) < 1:
            raise ValueError("part_size must be 100 KiB..5 GiB, parallel and copy_parallel >= 1")
        if self.single_put_max < 0:
            raise ValueError("single_put_max must be >= 0")


@dataclass(frozen=True, slots=True)
class StagedFile:
    """A staging file and its journal beside it."""

    data: Path
    journal: Path

    @classmethod
    def beside(cls, data: Path) -> StagedFile:
        data = Path(data)
        return cls(data, data.with_name(data.name + ".journal"))


@dataclass(frozen=True, slots=True)
class CopySource:
    """The object a staged file was filled from: its parts the writer has not changed
    (`clean(index)`, 0-based, asked when the part goes) are copied server-side, not sent."""

    key: str
    etag: str
    size: int
    clean: Callable[[int], bool]


class UnreadStart(NamedTuple):
    """Bytes [0, below) of the file are those of object `key` at `etag` (`size` bytes in
    all), never fetched: its parts there are copied server-side (their own CRCs unknown),
    and the whole object is checked at Complete with `crc`, theirs taken together."""

    below: int
    crc: int
    key: str
    etag: str
    size: int


class Piece(NamedTuple):
    """CRC-64 of the committed bytes [offset, offset + length), taken as they were sent."""

    offset: int
    length: int
    crc64: int


@dataclass(frozen=True, slots=True)
class CommitResult:
    key: str
    etag: str
    crc64: int
    size: int
    parts: int  # 0 for a single PutObject
    # The object's bytes in order, cut at the read cache's part boundaries, with the CRC-64s
    # their upload took (write/pieces.py); empty when not every part's were taken.
    pieces: tuple[Piece, ...] = ()
