"""Small records that must never be misread: a sealed frame, a checked cursor, durable writes.

The read cache's checkpoints (ossmount.cache.checkpoint) and the write path's journals
(ossmount.write.journal) are both "the truth about a file beside it": after a crash, a torn
write, a full disk or bit rot they must read back exactly as written or not at all. Both use
this module, so the rules are written once:

Frame (all integers big-endian), written in one piece and never patched in place:

    offset  size  field
    0       8     magic (names the record kind)
    8       2     format version
    10      2     reserved, 0
    12      4     payload length P
    16      P     payload (the record's own encoding, read with `Cursor`)
    16+P    32    SHA-256 of bytes [0, 16+P)

`unseal` checks everything but the payload's own fields: exact length (truncation at every
byte, trailing junk), magic, version, reserved, the digest (any flipped bit). Every failure
raises the caller's own error type, so a damaged record is never a partial result.

Durability: `replace_durably` writes a temp file beside the target, fsyncs it, renames it over
the target and fsyncs the directory, so a crash leaves the old or the new record, whole.
`create_durably` writes a first record in place (O_EXCL + fsync: there is no old one to keep,
and a torn one fails its digest). Both raise plain OSError; callers name the object.
With `fsync=False` (the read cache's checkpoints, which vouch for nothing unchecked: see
ossmount.cache.checkpoint) both skip every fsync: the rename still makes a replacement atomic
for a crash of the process (kill -9), and after a power loss the record may be the old one,
the new one, missing or torn, which its digest catches.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Cursor",
    "Format",
    "create_durably",
    "fsync_dir",
    "pack_str",
    "replace_durably",
    "seal",
    "unseal",
]

_HEADER = struct.Struct(">8sHHI")
_LEN = struct.Struct(">I")
_DIGEST = 32


def seal(magic: bytes, version: int, payload: bytes) -> bytes:
    head = _HEADER.pack(magic, version, 0, len(payload)) + payload
    return head + hashlib.sha256(head).digest()


def unseal(
    data: bytes,
    *,
    magic: bytes,
    version: int,
    max_payload: int,
    corrupt: type[Exception],
    what: str,
) -> bytes:
    """The payload of a sealed `data`; `corrupt(message)` on any damage. `what` names the
    record kind in messages ("checkpoint", "journal")."""
    if len(data) < _HEADER.size + _DIGEST:
        raise corrupt(f"{what} too short ({len(data)} bytes)")
    got_magic, got_version, reserved, payload_len = _HEADER.unpack_from(data)
    if got_magic != magic:
        raise corrupt(f"not a {what} (magic {got_magic!r})")
    if got_version != version:
        # An older format may cut objects into other parts: its part map would name wrong bytes.
        raise corrupt(f"{what} format {got_version} is not {version} (another ossmount version)")
    if reserved != 0:
        raise corrupt(f"reserved {what} header field is {reserved}, not 0")
    end = _HEADER.size + payload_len
    if payload_len > max_payload or len(data) != end + _DIGEST:
        raise corrupt(
            f"{what} length {len(data)} does not match its header (payload {payload_len})"
        )
    if hashlib.sha256(data[:end]).digest() != data[end:]:
        raise corrupt(f"{what} checksum mismatch")
    return data[_HEADER.size : end]


@dataclass(frozen=True, slots=True)
class Format:
    """One record kind: its magic, version, size bound, error type and name in messages."""

    magic: bytes
    version: int
    max_payload: int
    corrupt: type[Exception]
    what: str

    def seal(self, payload: bytes) -> bytes:
        return seal(self.magic, self.version, payload)

    def open(self, data: bytes) -> Cursor:
        """A cursor over the payload of a sealed `data`; `corrupt` on any damage."""
        payload = unseal(
            data,
            magic=self.magic,
            version=self.version,
            max_payload=self.max_payload,
            corrupt=self.corrupt,
            what=self.what,
        )
        return Cursor(payload, self.corrupt, self.what)


def pack_str(text: str) -> bytes:
    raw = text.encode("utf-8", "surrogatepass")
    return _LEN.pack(len(raw)) + raw


class Cursor:
    """Reads a payload front to back; any overrun or bad string raises `corrupt`."""

    def __init__(self, data: bytes, corrupt: type[Exception], what: str) -> None:
        self._data = data
        self._pos = 0
        self._corrupt = corrupt
        self._what = what

    def take(self, n: int) -> bytes:
        end = self._pos + n
        if end > len(self._data):
            raise self._corrupt(f"{self._what} payload ends early")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def unpack(self, fmt: struct.Struct) -> tuple[int, ...]:
        values: tuple[int, ...] = fmt.unpack(self.take(fmt.size))
        return values

    def string(self) -> str:
        (length,) = self.unpack(_LEN)
        try:
            return self.take(length).decode("utf-8", "surrogatepass")
        except UnicodeDecodeError as exc:
            raise self._corrupt(f"{self._what} string is not UTF-8: {exc}") from None

    def at_end(self) -> bool:
        return self._pos == len(self._data)


def fsync_dir(path: Path) -> None:
    """Make renames and unlinks in directory `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all_and_fsync(fd: int, data: bytes, *, fsync: bool = True) -> None:
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(path: Path, data: bytes, *, fsync: bool = True, sync_dir: bool = True) -> None:
    """Replace `path` with `data`: the old content or the new one survives a crash, whole
    (with fsync=False: a crash of the process; see the module docstring). With sync_dir
    False the directory is not fsynced: after a power loss either one is there, whole, but
    not necessarily the new one. On failure the old file is untouched and the temp file
    removed."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        _write_all_and_fsync(
            os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600),
            data,
            fsync=fsync,
        )
        os.replace(tmp, path)
        if fsync and sync_dir:
            fsync_dir(path.parent)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def create_durably(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """Write a first record at `path` in place (FileExistsError if one is there). A failed
    write removes the short file: none we know of is left behind."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        _write_all_and_fsync(fd, data, fsync=fsync)
    except OSError:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
        raise
