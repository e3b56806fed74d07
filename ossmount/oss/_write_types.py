"""Values and errors of the write half of the client (`_writes`), and ossfs's POSIX metadata.

Kept apart from `_writes` so that module stays one job (sending and verifying requests).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ._errors import OssError

__all__ = [
    "CopyResult",
    "CrcMismatch",
    "FileAlreadyExists",
    "FileRange",
    "NoSuchUpload",
    "PartResult",
    "PutResult",
    "StagingError",
    "posix_meta",
    "retyped",
]


class CrcMismatch(OssError):
    """The server's CRC-64 of what it stored differs from ours (or it sent none)."""

    def __init__(self, what: str, *, expected: int, got: int | None, bucket: str, key: str) -> None:
        shown = "none" if got is None else str(got)
        super().__init__(
            0,
            "Crc64Mismatch",
            f"{what}: server CRC-64 {shown}, ours {expected}",
            bucket=bucket,
            key=key,
        )
        self.expected = expected
        self.got = got


class FileAlreadyExists(OssError):
    """x-oss-forbid-overwrite (O_EXCL) and the key exists."""


class NoSuchUpload(OssError):
    """The multipart upload id is unknown (completed, aborted or expired)."""


class ExistsAfterRetry(FileAlreadyExists):
    """FileAlreadyExists on a repeated attempt: possibly our own first attempt's object."""


class StagingError(Exception):
    """The local staging file could not supply the bytes to send (a local fault, not OSS's)."""


_RETYPE: dict[str, type[OssError]] = {
    "FileAlreadyExists": FileAlreadyExists,
    "NoSuchUpload": NoSuchUpload,
}


def retyped(exc: OssError) -> OssError:
    cls = _RETYPE.get(exc.code)
    if cls is None or isinstance(exc, cls):
        return exc
    new = cls(
        exc.status, exc.code, exc.message, request_id=exc.request_id, ec=exc.ec,
        bucket=exc.bucket, key=exc.key,
    )  # fmt: skip
    new.retry_after_s = exc.retry_after_s
    return new


@dataclass(frozen=True, slots=True)
class FileRange:
    """`length` bytes of the open file `fd` starting at `offset` (the caller keeps fd open and
    the bytes unchanged until the call returns)."""

    fd: int
    offset: int
    length: int

    def read(self, where: str) -> bytes:
        """The bytes, read at once; StagingError naming `where` if the staged file cannot
        supply them all."""
        try:
            data = os.pread(self.fd, self.length, self.offset) if self.length else b""
        except OSError as exc:
            raise StagingError(
                f"{where}: reading staged bytes at {self.offset} failed: {exc}"
            ) from exc
        if len(data) != self.length:
            raise StagingError(
                f"{where}: staged file ends at {self.offset + len(data)}, expected bytes up to "
                f"{self.offset + self.length}"
            )
        return data


@dataclass(frozen=True, slots=True)
class PutResult:
    key: str
    etag: str
    crc64: int
    size: int
    pieces: tuple[int, ...] = ()  # as PartResult's


@dataclass(frozen=True, slots=True)
class PartResult:
    """A part the server holds: number (1-based), ETag, size and its verified CRC-64."""

    number: int
    etag: str
    size: int
    crc64: int
    # CRC-64s of the part cut where the caller asked (`OssWrites.upload_part(cuts=)`), from
    # the send whose CRC-64 OSS confirmed; empty: not taken.
    pieces: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Headed:
    """One HEAD's answer as a write needs it: the object's ETag, its user metadata and
    content headers (lower-case names: what a new version or a REPLACE copy keeps), its
    CRC-64 (None if it has none) and its size (None if the reply had no Content-Length)."""

    etag: str
    kept: dict[str, str]
    crc64: int | None
    size: int | None


@dataclass(frozen=True, slots=True)
class CopyResult:
    etag: str
    mtime_ns: int
    crc64: int | None  # OSS may omit it for copies


def posix_meta(
    *,
    mtime_ns: int | None = None,
    mode: int | None = None,
    uid: int | None = None,
    gid: int | None = None,
    atime_ns: int | None = None,
    ctime_ns: int | None = None,
) -> dict[str, str]:
    """ossfs-compatible `x-oss-meta-*` headers (ossfs src/metaheader.cpp reads these; its
    src/string_util.cpp `str(timespec)` writes a time as we do)."""
    out: dict[str, str] = {}
    if mtime_ns is not None:
        out["x-oss-meta-mtime"] = _stamp(mtime_ns)
    if mode is not None:
        out["x-oss-meta-mode"] = str(mode)
    if uid is not None:
        out["x-oss-meta-uid"] = str(uid)
    if gid is not None:
        out["x-oss-meta-gid"] = str(gid)
    if atime_ns is not None:
        out["x-oss-meta-atime"] = _stamp(atime_ns)
    if ctime_ns is not None:
        out["x-oss-meta-ctime"] = _stamp(ctime_ns)
    return out


def _stamp(ns: int) -> str:
    """Decimal seconds, then `.` and nine digits of nanoseconds when not whole."""
    sec, frac = divmod(ns, 1_000_000_000)
    return f"{sec}.{frac:09d}" if frac else str(sec)
