"""The staging journal: what one staged file is, and how far its upload got.

One record sits beside each staging file. It says which object the bytes are for, how many
there are, where the upload stands (DIRTY: nothing trustworthy on the server yet; UPLOADING:
a multipart upload is open and the listed parts are on the server with these CRC-64s and
ETags; COMMITTED: the object is on the server and verified), and the object version the file
was opened from (`base_etag`, "" for a new file), so a commit can see that someone else
changed the object meanwhile.

Encoding: a sealed frame (ossmount.sealed: magic b"OSSMWJNL", format version 1, length,
SHA-256; integers big-endian, written whole, never patched in place), as the read cache's
checkpoints are, around this payload:

    bucket, key, base_etag, upload_id, result_etag (each u32 length + UTF-8,
             surrogates passed through), size u64, mtime_ns i64, mode u32, part_size u64,
             state u8, flags u8 (1 = forbid overwrite, 2 = has result CRC, 4 = sealed,
             8 = unsynced seal, 16 = has uid, 32 = has gid, 64 = keep mode, 128 = more
             flags), result_crc u64, part count u32, then per part: number u32, size u64,
             crc u64, etag (u32 + UTF-8), numbers strictly increasing; then, each only when
             its flag is set: boot id (u32 + UTF-8), uid u32, gid u32; then, with flag 128,
             more flags u32 (1 = has atime, 2 = has ctime, 4 = has an unread start, 8 = has
             the seal's time) and, each only when its flag is set: atime_ns i64, ctime_ns
             i64, the unread start (below u64, crc u64, source size u64, source key and ETag,
             u32 + UTF-8), and sealed_ns i64.

The owner (flags 16 and 32, a `chown` of the open file) was added after the first records
were written, as trailing fields behind flags: a record without them reads as before (no
owner), so journals left by an older ossmount still load and resume. Flag 64 (`keep_mode`,
added later still, no bytes of its own) reads as unset from those. So do atime and ctime
(flag 128, the last bit of the flags byte, opens a second flags word behind everything else:
further fields go there): a record without it has neither, and is encoded byte for byte as
before when it has neither. The unread start (flag 4 there, write/commit_types.py
`UnreadStart`: an append that never fetched the object's start) came after those, and the
seal's time (flag 8) after it: a record without it is judged by its ctime, as before.

`decode` refuses anything but an exact, checksummed, self-consistent record (CorruptJournal).
`save_atomic` writes a temp file, fsyncs it, renames it over the record and fsyncs the
directory: a crash leaves the old record or the new one, whole. Callers fdatasync the staging
file before saving a record whose `size` covers new bytes ("durable before recorded"), except
a record sealed by a close that waits for the commit: it names the boot (`boot_id`) instead,
and recovery uploads it only in that boot (the page cache outlives a kill -9, not a power loss,
and such bytes were never acknowledged before they were committed).
A damaged record is moved aside (`.corrupt`), never deleted: it may be the only note of which
key the staged bytes belong to.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import struct
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ossmount.oss._write_types import posix_meta
from ossmount.sealed import Format, fsync_dir, pack_str, replace_durably

from .commit_types import UnreadStart

__all__ = [
    "MAGIC",
    "CorruptJournal",
    "JournalIOError",
    "JournalRecord",
    "PartRecord",
    "WriteState",
    "decode",
    "encode",
    "fsync_dir",
    "load",
    "object_meta",
    "save_atomic",
]

log = logging.getLogger(__name__)

MAGIC = b"OSSMWJNL"
FORMAT_VERSION = 1
_FIXED = struct.Struct(">QqIQBBQI")
_PART = struct.Struct(">IQQ")
_U64 = 1 << 64
_MAX_PAYLOAD = 64 << 20  # 10000 parts at < 200 B each is 2 MB
_U32 = struct.Struct(">I")
_FORBID, _HAS_CRC, _SEALED, _UNSYNCED, _HAS_UID, _HAS_GID = 1, 2, 4, 8, 16, 32
_KEEP_MODE, _MORE = 64, 128
_FLAGS = _FORBID | _HAS_CRC | _SEALED | _UNSYNCED | _HAS_UID | _HAS_GID | _KEEP_MODE | _MORE
# In the second flags word (flag _MORE):
_HAS_ATIME, _HAS_CTIME, _HAS_UNREAD, _HAS_SEALED_AT = 1, 2, 4, 8
_MORE_FLAGS = _HAS_ATIME | _HAS_CTIME | _HAS_UNREAD | _HAS_SEALED_AT
_UNREAD = struct.Struct(">QQQ")
_I64 = struct.Struct(">q")


class CorruptJournal(ValueError):
    """The bytes are not a whole, valid journal record."""


_FORMAT = Format(MAGIC, FORMAT_VERSION, _MAX_PAYLOAD, CorruptJournal, "write journal")


class JournalIOError(OSError):
    """Reading or writing a record failed; names the object and the path."""


class WriteState(enum.Enum):
    DIRTY = 0  # staged bytes not on the server (no upload open)
    UPLOADING = 1  # a multipart upload is open; `parts` are on the server, verified
    COMMITTED = 2  # the object is on the server, its CRC-64 verified


@dataclass(frozen=True, slots=True)
class PartRecord:
    number: int  # 1-based, as OSS numbers parts
    size: int
    crc64: int
    etag: str


@dataclass(frozen=True, slots=True)
class JournalRecord:
    """One snapshot of a staged file's upload. Frozen: progress makes a new record."""

    bucket: str
    key: str
    size: int
    part_size: int
    state: WriteState = WriteState.DIRTY
    mtime_ns: int = 0
    mode: int = 0o100644
    base_etag: str = ""
    forbid_overwrite: bool = False
    # The writer closed (or fsynced) the file: `size` is final and the staged bytes up to it
    # were fsynced before this was recorded. Only a sealed record is uploaded after a crash.
    sealed: bool = False
    upload_id: str = ""
    parts: tuple[PartRecord, ...] = field(default=())
    result_etag: str = ""
    result_crc64: int | None = None
    # Sealed without fsyncing the staged bytes, in this boot (/proc/sys/kernel/random/boot_id):
    # trustworthy only until the machine restarts. "" when the bytes were fsynced.
    boot_id: str = ""
    # x-oss-meta-uid / -gid to store with the object (a chown of the open file); None: none.
    uid: int | None = None
    gid: int | None = None
    # `mode` is only a default (nobody set one): the x-oss-meta-mode of the version this file
    # replaces, if it has one, is kept instead, as ossfs keeps it (write/session.py `_meta`).
    keep_mode: bool = False
    # x-oss-meta-atime / -ctime to store (fs/stamps.py); None: none (older records).
    atime_ns: int | None = None
    ctime_ns: int | None = None
    # Bytes [0, unread.below) are not in the staged file but in the object it names, to be
    # copied server-side (an append to a big object: fs/staging.py `fill`).
    unread: UnreadStart | None = None
    # When the bytes were sealed for this key (time.time_ns() of the close, or of the rename
    # that re-keyed them): a version on the server with a later Last-Modified is another
    # writer's (UploadSession.overtaken). Not the ctime, which a utimens sets to its atime
    # (ossfs's rule), years back maybe. None: an older record, judged by its ctime.
    sealed_ns: int | None = None

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("a journal record needs a key")
        if not 0 <= self.size < _U64 or not 0 < self.part_size < _U64:
            raise ValueError(f"bad size {self.size} / part size {self.part_size}")
        if not -(1 << 63) <= self.mtime_ns < 1 << 63 or not 0 <= self.mode < 1 << 32:
            raise ValueError("mtime or mode out of range")
        if (self.state is WriteState.UPLOADING) != bool(self.upload_id):
            raise ValueError("an upload id is recorded exactly when the state is UPLOADING")
        if self.parts and self.state is not WriteState.UPLOADING:
            raise ValueError("parts are recorded only while UPLOADING")
        previous = 0
        for part in self.parts:
            if part.number <= previous or part.number > 10000:
                raise ValueError(f"part numbers not increasing within 1..10000 at {part.number}")
            previous = part.number
            if not 0 < part.size <= self.part_size or not 0 <= part.crc64 < _U64 or not part.etag:
                raise ValueError(f"part {part.number} has a bad size, CRC or ETag")
        committed = self.state is WriteState.COMMITTED
        if committed != (self.result_crc64 is not None) or committed != bool(self.result_etag):
            raise ValueError("a result ETag and CRC are recorded exactly when COMMITTED")
        if committed and not self.sealed:
            raise ValueError("a COMMITTED record is sealed")
        if self.result_crc64 is not None and not 0 <= self.result_crc64 < _U64:
            raise ValueError("result CRC out of range")
        if self.boot_id and not self.sealed:
            raise ValueError("a boot id is recorded only with the seal")
        for owner in (self.uid, self.gid):
            if owner is not None and not 0 <= owner < 1 << 32:
                raise ValueError(f"owner id {owner} out of range")
        for t in (self.atime_ns, self.ctime_ns, self.sealed_ns):
            if t is not None and not -(1 << 63) <= t < 1 << 63:
                raise ValueError(f"time {t} out of range")
        u = self.unread
        if u is not None and not (
            0 < u.below <= u.size and (u.below <= self.size or not self.sealed)
        ):
            raise ValueError(f"unread start {u.below} beyond the file or its object")
        if u is not None and (u.below % self.part_size or not u.key or not u.etag):
            raise ValueError("an unread start is whole parts of a named object version")
        if u is not None and not (0 <= u.crc < _U64 and u.size < _U64):
            raise ValueError("unread start CRC or size out of range")

    def with_parts(self, parts: dict[int, PartRecord], /, **changes: Any) -> JournalRecord:
        """This record with `parts` (in number order) and `changes` (which win, a `parts`
        among them too), in one copy."""
        return replace(self, **{"parts": tuple(parts[n] for n in sorted(parts)), **changes})


def object_meta(rec: JournalRecord) -> dict[str, str]:
    """The `x-oss-meta-*` the object of `rec` is created with (as ossfs stores them)."""
    return posix_meta(
        mtime_ns=rec.mtime_ns or None, mode=rec.mode, uid=rec.uid, gid=rec.gid,
        atime_ns=rec.atime_ns, ctime_ns=rec.ctime_ns,
    )  # fmt: skip


def encode(rec: JournalRecord) -> bytes:
    flags = (
        (_FORBID if rec.forbid_overwrite else 0)
        | (_HAS_CRC if rec.result_crc64 is not None else 0)
        | (_SEALED if rec.sealed else 0)
        | (_UNSYNCED if rec.boot_id else 0)
        | (_HAS_UID if rec.uid is not None else 0)
        | (_HAS_GID if rec.gid is not None else 0)
        | (_KEEP_MODE if rec.keep_mode else 0)
    )
    more = (
        (_HAS_ATIME if rec.atime_ns is not None else 0)
        | (_HAS_CTIME if rec.ctime_ns is not None else 0)
        | (_HAS_UNREAD if rec.unread is not None else 0)
        | (_HAS_SEALED_AT if rec.sealed_ns is not None else 0)
    )
    if more:
        flags |= _MORE
    chunks = [
        pack_str(rec.bucket),
        pack_str(rec.key),
        pack_str(rec.base_etag),
        pack_str(rec.upload_id),
        pack_str(rec.result_etag),
        _FIXED.pack(
            rec.size,
            rec.mtime_ns,
            rec.mode,
            rec.part_size,
            rec.state.value,
            flags,
            rec.result_crc64 or 0,
            len(rec.parts),
        ),
    ]
    for part in rec.parts:
        chunks.append(_PART.pack(part.number, part.size, part.crc64) + pack_str(part.etag))
    if rec.boot_id:
        chunks.append(pack_str(rec.boot_id))
    for owner in (rec.uid, rec.gid):
        if owner is not None:
            chunks.append(_U32.pack(owner))
    if more:
        chunks.append(_U32.pack(more))
        chunks.extend(_I64.pack(t) for t in (rec.atime_ns, rec.ctime_ns) if t is not None)
    if rec.unread is not None:
        u = rec.unread
        chunks += [_UNREAD.pack(u.below, u.crc, u.size), pack_str(u.key), pack_str(u.etag)]
    if rec.sealed_ns is not None:
        chunks.append(_I64.pack(rec.sealed_ns))
    payload = b"".join(chunks)
    return _FORMAT.seal(payload)


def decode(data: bytes) -> JournalRecord:
    """Parse and validate a record; CorruptJournal on any damage at all."""
    r = _FORMAT.open(data)
    bucket, key, base_etag, upload_id, result_etag = (r.string() for _ in range(5))
    size, mtime_ns, mode, part_size, state_value, flags, crc, count = r.unpack(_FIXED)
    if flags & ~_FLAGS or (not flags & _HAS_CRC and crc):
        raise CorruptJournal(f"bad journal flags {flags} / CRC {crc}")
    try:
        state = WriteState(state_value)
    except ValueError:
        raise CorruptJournal(f"unknown write state {state_value}") from None
    parts = []
    for _ in range(count):
        number, psize, pcrc = r.unpack(_PART)
        parts.append(PartRecord(number, psize, pcrc, r.string()))
    boot_id = r.string() if flags & _UNSYNCED else ""
    if flags & _UNSYNCED and not boot_id:
        raise CorruptJournal("journal flags an unsynced seal but names no boot")
    uid = r.unpack(_U32)[0] if flags & _HAS_UID else None
    gid = r.unpack(_U32)[0] if flags & _HAS_GID else None
    more = r.unpack(_U32)[0] if flags & _MORE else 0
    if more & ~_MORE_FLAGS or (flags & _MORE and not more):
        raise CorruptJournal(f"bad journal flags {more} in the second word")
    atime_ns = r.unpack(_I64)[0] if more & _HAS_ATIME else None
    ctime_ns = r.unpack(_I64)[0] if more & _HAS_CTIME else None
    unread = None
    if more & _HAS_UNREAD:
        below, ucrc, usize = r.unpack(_UNREAD)
        ukey = r.string()
        unread = UnreadStart(below, ucrc, ukey, r.string(), usize)
    sealed_ns = r.unpack(_I64)[0] if more & _HAS_SEALED_AT else None
    if not r.at_end():
        raise CorruptJournal("journal has trailing bytes after its parts")
    try:
        return JournalRecord(
            bucket=bucket,
            key=key,
            size=size,
            part_size=part_size,
            state=state,
            mtime_ns=mtime_ns,
            mode=mode,
            base_etag=base_etag,
            forbid_overwrite=bool(flags & _FORBID),
            sealed=bool(flags & _SEALED),
            upload_id=upload_id,
            parts=tuple(parts),
            result_etag=result_etag,
            result_crc64=crc if flags & _HAS_CRC else None,
            boot_id=boot_id,
            uid=uid,
            gid=gid,
            keep_mode=bool(flags & _KEEP_MODE),
            atime_ns=atime_ns,
            ctime_ns=ctime_ns,
            unread=unread,
            sealed_ns=sealed_ns,
        )
    except ValueError as exc:
        raise CorruptJournal(f"inconsistent journal: {exc}") from None


def save_atomic(
    path: Path, rec: JournalRecord, *, fsync: bool = True, sync_dir: bool = True
) -> None:
    """Replace the record at `path` with `rec`; a crash leaves the old or the new one whole
    (with fsync=False: a crash of the process, not of the machine; with sync_dir=False, a
    power loss may leave the old one).

    Blocking (fsyncs): call it from a worker thread. On failure the old record is untouched.
    """
    path = Path(path)
    try:
        replace_durably(path, encode(rec), fsync=fsync, sync_dir=sync_dir)
    except OSError as exc:
        raise JournalIOError(
            exc.errno, f"oss://{rec.bucket}/{rec.key}: saving write journal {path} failed: {exc}"
        ) from exc


def load(path: Path) -> JournalRecord | None:
    """The record at `path`; None if there is none or it was damaged (then moved aside to
    `<path>.corrupt` and logged at ERROR: the staged bytes beside it are kept)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise JournalIOError(exc.errno, f"reading write journal {path} failed: {exc}") from exc
    try:
        return decode(data)
    except CorruptJournal as exc:
        aside = path.with_name(path.name + ".corrupt")
        log.error(
            "unusable write journal %s (%s); kept as %s with its staged data", path, exc, aside
        )
        with contextlib.suppress(OSError):
            os.replace(path, aside)
        return None
