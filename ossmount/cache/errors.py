"""Exceptions of the cache package; every one names what it concerns so a log line alone helps.

    CacheError
    ├── CacheIOError        an OSError on the cache disk (bucket, key, path, cause, errno);
    │                       itself an OSError subclass
    │   └── CacheFull       ENOSPC / EDQUOT
    ├── CacheLocked         another process holds the cache directory (root, holder pid)
    ├── CacheLayoutError    the cache directory has a layout VERSION this code does not know
    ├── CorruptCheckpoint   a checkpoint failed its own checksum or consistency checks
    ├── PartMismatch        a shed part fetched again came back with another CRC-64
    └── EntryStateError     a caller broke the entry's contract (read of a part not done,
                            use after close/discard, verify before complete): a bug, not I/O

The errno table for FUSE lives above this package; these classes only carry enough to map
them (`CacheIOError.errno`) without matching message text.
"""

from __future__ import annotations

import errno as _errno
from pathlib import Path

__all__ = [
    "CacheError",
    "CacheFull",
    "CacheIOError",
    "CacheLayoutError",
    "CacheLocked",
    "CorruptCheckpoint",
    "EntryStateError",
    "io_error",
]

_FULL_ERRNOS = frozenset({_errno.ENOSPC, _errno.EDQUOT})


class CacheError(Exception):
    """Base of everything the cache raises on purpose."""


class CacheIOError(CacheError, OSError):
    """The cache disk failed an operation on one object's files.

    Also an OSError (with the cause's `errno`), so code that already handles disk errors
    generically keeps working; `cause` is the original exception.
    """

    def __init__(
        self, action: str, *, bucket: str, key: str, path: Path | str, cause: OSError
    ) -> None:
        self.action = action
        self.bucket = bucket
        self.key = key
        self.path = Path(path)
        self.cause = cause
        self.message = (
            f"cache {action} failed for oss://{bucket}/{key} at {self.path}: "
            f"{cause.strerror or cause} (errno {cause.errno})"
        )
        super().__init__(self.message)
        self.errno = cause.errno
        self.strerror = cause.strerror

    def __str__(self) -> str:
        return self.message


class CacheFull(CacheIOError):
    """No space (or quota) left on the cache disk; in-memory state was left consistent."""


class CacheLocked(CacheError):
    """Another mount (or process) holds the cache directory's lock."""

    def __init__(self, root: Path, pid: int | None) -> None:
        self.root = root
        self.pid = pid
        holder = f"process {pid}" if pid is not None else "another process"
        super().__init__(
            f"cache directory {root} is in use by {holder}; "
            "each mount needs its own cache directory (use_cache=DIR)"
        )


class CacheLayoutError(CacheError):
    """The cache directory was written by an incompatible ossmount version."""


class CorruptCheckpoint(CacheError):
    """A checkpoint's bytes are damaged or inconsistent; it must never be trusted."""


class EntryStateError(CacheError):
    """The entry was used against its contract; this is a bug in the caller."""


class PartMismatch(CacheError):
    """A shed part fetched again brought another CRC-64 than its first fetch."""


def io_error(
    action: str, *, bucket: str, key: str, path: Path | str, cause: OSError
) -> CacheIOError:
    """Wrap an OSError as CacheFull when the disk is full, else as CacheIOError."""
    cls = CacheFull if cause.errno in _FULL_ERRNOS else CacheIOError
    return cls(action, bucket=bucket, key=key, path=path, cause=cause)
