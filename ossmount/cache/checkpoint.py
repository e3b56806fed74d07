"""The checkpoint: which parts of one cached object version are on disk, and their CRC-64s.

Why not the SDKs' scheme (shared/oss-protocol.md §6): they record a single contiguous offset
and a running CRC, so parts must complete in order, and they trust a JSON file guarded by an MD5
of re-serialized JSON. We fetch parts in parallel and out of order (a Parquet footer first), so
we record the set of done parts, each with its own CRC-64, and combine the CRCs at the end.

Record (`Checkpoint`): the version fingerprint (bucket, key, ETag, size, Last-Modified in ns,
server CRC-64 or None), the part size, done part -> CRC-64, and the verification state.
`contiguous_offset` is derived, not stored, so it cannot disagree with the part set.

Encoding (all integers big-endian), written in one piece and never patched in place:

    a sealed frame (ossmount.sealed): magic b"OSSMCKPT", format version 2 (1 had a 1 MiB
    head part, see cache.ranges), payload length, payload, SHA-256 of all before it;

    payload: bucket, key, etag (each u32 length + UTF-8, surrogates passed through),
             size u64, mtime_ns i64, part_size u64, has_crc u8, server_crc64 u64 (0 if none),
             state u8, done count u32, then per done part: index u64, crc u64,
             indices strictly increasing.

Invariants enforced by `decode` (any failure -> CorruptCheckpoint, never a partial result):
the length is exact (catches truncation at every byte and trailing junk), the digest matches
(catches any flipped bit), every field is in range, part indices are < the part count, state is
never CORRUPT, VERIFIED and UNVERIFIABLE only with every part done, VERIFIED only with a server
CRC and UNVERIFIABLE only without one.

Durability, or why nothing here is fsynced (and the data file is never fdatasynced either):
a checkpoint vouches for nothing by itself. Every part it lists is re-hashed against its stored
CRC-64 before its first read in a later process (cache.checks), and the frame is
sealed, so every way a crash can leave the two files is caught and costs only a fetch:
* the checkpoint names a part whose bytes never reached the disk (zeros, a hole, an older
  version's bytes): its re-check fails, it is fetched again (a hole is found even before,
  cache.opening);
* the checkpoint is torn or empty: `load` discards it, the object is fetched again;
* the checkpoint is missing (or an older one survived): fewer parts are trusted, the rest
  are fetched again; the startup scan removes a data file with no checkpoint.
What the syncs bought was only a bound on that re-fetching after a power loss; they cost an
fsync and an fdatasync per small file plus the thread hop they needed: a cold `rsync -a` /
`cp -r` of 2,000 x 8 KiB through a mount went from 4.73 / 4.78 to 3.84 / 4.03 ms of daemon CPU
per file without them (medians of 3 interleaved runs, bench_mount's mount and emulator). Now
a power loss may lose what the kernel had not written back yet (vm.dirty_expire_centisecs, 30 s
by default), and a kill -9 (which keeps the page cache) loses only the parts not yet in a saved
checkpoint, as before.

`save_first` is for an entry's first checkpoint, when there is no old one to keep: it writes the
target itself (O_EXCL), one file and no rename (a crash during it leaves no checkpoint, or a
torn one that `load` discards). `save_atomic` writes a temp file beside the target and renames
it over the target, so a kill -9 leaves the old or the new checkpoint, whole, never neither
(which would lose a big object's progress).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import struct
from dataclasses import dataclass
from pathlib import Path

from ossmount.cache.errors import CorruptCheckpoint, io_error
from ossmount.cache.ranges import PartLayout
from ossmount.oss.models import ObjectVersion
from ossmount.sealed import (
    Format,
    create_durably,
    fsync_dir,
    pack_str,
    replace_durably,
)

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "Checkpoint",
    "EntryState",
    "decode",
    "encode",
    "fsync_dir",
    "load",
    "save_atomic",
    "save_first",
]

log = logging.getLogger(__name__)

MAGIC = b"OSSMCKPT"
FORMAT_VERSION = 2  # tied to ranges.HEAD_PART_SIZE: the layout is not stored
_FIXED = struct.Struct(">QqQBQBI")
_PART = struct.Struct(">QQ")
_U64 = 1 << 64
# A checkpoint for a 48 TB object in 1 MiB parts is ~800 MB; anything bigger is damage.
_MAX_PAYLOAD = 1 << 30
_FORMAT = Format(MAGIC, FORMAT_VERSION, _MAX_PAYLOAD, CorruptCheckpoint, "checkpoint")


class EntryState(enum.Enum):
    """Verification state of a cache entry. CORRUPT lives only in memory, never on disk."""

    PARTIAL = 0  # not verified yet (possibly already complete)
    VERIFIED = 1  # complete and the combined CRC-64 equals the server's
    UNVERIFIABLE = 2  # complete, but the server sent no CRC-64 to compare with
    CORRUPT = 3  # complete and the CRCs differ; the entry must be discarded


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One persisted snapshot of an entry. Frozen: the entry builds a new one per flush.

    `part_crcs` is a plain dict for cheap construction; the instance owns it and nobody may
    mutate it after construction (CacheEntry always hands over a fresh copy). Construction
    validates the same invariants as `decode`, raising ValueError.
    """

    bucket: str
    key: str
    etag: str
    size: int
    mtime_ns: int
    server_crc64: int | None
    part_size: int
    part_crcs: dict[int, int]
    state: EntryState = EntryState.PARTIAL

    def __post_init__(self) -> None:
        layout = PartLayout(self.size, self.part_size)  # validates size and part_size
        if not -(1 << 63) <= self.mtime_ns < 1 << 63:
            raise ValueError(f"mtime_ns out of range: {self.mtime_ns}")
        if self.server_crc64 is not None and not 0 <= self.server_crc64 < _U64:
            raise ValueError(f"server CRC-64 out of range: {self.server_crc64}")
        count = layout.count
        for index, crc in self.part_crcs.items():
            if not 0 <= index < count:
                raise ValueError(f"part {index} out of range 0..{count - 1}")
            if not 0 <= crc < _U64:
                raise ValueError(f"CRC-64 of part {index} out of range: {crc}")
        complete = len(self.part_crcs) == count
        if self.state is EntryState.CORRUPT:
            raise ValueError("a CORRUPT entry is never checkpointed")
        if self.state is EntryState.VERIFIED and (not complete or self.server_crc64 is None):
            raise ValueError("VERIFIED needs every part and a server CRC-64")
        if self.state is EntryState.UNVERIFIABLE and (
            not complete or self.server_crc64 is not None
        ):
            raise ValueError("UNVERIFIABLE needs every part and no server CRC-64")

    @property
    def version(self) -> ObjectVersion:
        """The object version this checkpoint is for; `mtime_ns` is kept for the record only
        (checkpoints of older releases may hold a listing's sub-second time)."""
        return ObjectVersion(self.key, self.etag, self.size)

    @property
    def layout(self) -> PartLayout:
        return PartLayout(self.size, self.part_size)

    @property
    def contiguous_offset(self) -> int:
        """Bytes [0, offset) are all in done parts: where a sequential reader can go unblocked."""
        return self.layout.contiguous_offset(self.part_crcs)

    @property
    def complete(self) -> bool:
        return len(self.part_crcs) == self.layout.count


def encode(cp: Checkpoint) -> bytes:
    """Serialize `cp` with its header and SHA-256 trailer (see the module docstring)."""
    has_crc = cp.server_crc64 is not None
    parts = sorted(cp.part_crcs.items())
    payload = b"".join(
        [
            pack_str(cp.bucket),
            pack_str(cp.key),
            pack_str(cp.etag),
            _FIXED.pack(
                cp.size,
                cp.mtime_ns,
                cp.part_size,
                1 if has_crc else 0,
                cp.server_crc64 or 0,
                cp.state.value,
                len(parts),
            ),
            b"".join(_PART.pack(index, crc) for index, crc in parts),
        ]
    )
    return _FORMAT.seal(payload)


def decode(data: bytes) -> Checkpoint:
    """Parse and validate a checkpoint; raises CorruptCheckpoint on any damage at all."""
    reader = _FORMAT.open(data)
    bucket = reader.string()
    key = reader.string()
    etag = reader.string()
    size, mtime_ns, part_size, has_crc, crc, state_value, n_parts = reader.unpack(_FIXED)
    if has_crc not in (0, 1) or (has_crc == 0 and crc != 0):
        raise CorruptCheckpoint(f"bad server CRC flag {has_crc} / value {crc}")
    try:
        state = EntryState(state_value)
    except ValueError:
        raise CorruptCheckpoint(f"unknown entry state {state_value}") from None
    part_crcs: dict[int, int] = {}
    previous = -1
    for _ in range(n_parts):
        index, part_crc = reader.unpack(_PART)
        if index <= previous:
            raise CorruptCheckpoint(f"part indices not increasing at {index}")
        previous = index
        part_crcs[index] = part_crc
    if not reader.at_end():
        raise CorruptCheckpoint("checkpoint has trailing bytes after its parts")
    try:
        return Checkpoint(
            bucket=bucket,
            key=key,
            etag=etag,
            size=size,
            mtime_ns=mtime_ns,
            server_crc64=crc if has_crc else None,
            part_size=part_size,
            part_crcs=part_crcs,
            state=state,
        )
    except ValueError as exc:
        raise CorruptCheckpoint(f"inconsistent checkpoint: {exc}") from None


def save_atomic(path: Path, cp: Checkpoint) -> None:
    """Replace the checkpoint at `path` with `cp` so a kill -9 leaves the old or the new one
    whole (no fsync: see the module docstring).

    Raises CacheFull (ENOSPC/EDQUOT) or CacheIOError naming bucket, key and path; on failure
    the previous checkpoint is untouched and the temp file is removed.
    """
    try:
        replace_durably(Path(path), encode(cp), fsync=False)
    except OSError as exc:
        raise io_error(
            "checkpoint save", bucket=cp.bucket, key=cp.key, path=path, cause=exc
        ) from exc


def save_first(path: Path, cp: Checkpoint) -> None:
    """Write an entry's first checkpoint straight to `path` (see module docstring); if a file is
    there after all, fall back to save_atomic. Errors as save_atomic."""
    path = Path(path)
    try:
        create_durably(path, encode(cp), fsync=False)
    except FileExistsError:
        save_atomic(path, cp)
    except OSError as exc:
        raise io_error(
            "checkpoint save", bucket=cp.bucket, key=cp.key, path=path, cause=exc
        ) from exc


def load(path: Path, *, bucket: str = "?", key: str = "?") -> Checkpoint | None:
    """The checkpoint at `path`, or None if there is none or it was damaged.

    A damaged checkpoint is logged (WARNING, naming bucket, key and path: the caller passes the
    bucket and key it expected, since the file's own are not to be believed) and deleted, so
    the download restarts from nothing rather than trusting a single byte of it. Raises
    CacheIOError if the file exists but cannot be read.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise io_error("checkpoint read", bucket=bucket, key=key, path=path, cause=exc) from exc
    try:
        return decode(data)
    except CorruptCheckpoint as exc:
        log.warning(
            "discarding unusable checkpoint for oss://%s/%s at %s: %s", bucket, key, path, exc
        )
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return None
