"""The one error boundary: every exception leaving a FUSE handler becomes an errno here.

Nothing below the adapter knows errno values; it raises typed exceptions and this table decides
what the kernel (and so `cp`, `ls`) sees and how loudly we log it:

| raised                                        | errno        | log                      |
|-----------------------------------------------|--------------|--------------------------|
| tree.NotFound, tree.NameInvalid               | ENOENT       | DEBUG (an expected miss) |
| tree.NameTooLong (also a new key > 1023 bytes)| ENAMETOOLONG | DEBUG                    |
| fs.Unstorable (a new name that is not UTF-8)  | EINVAL       | WARNING                  |
| tree.NotADirectory                            | ENOTDIR      | DEBUG                    |
| fs.ReadOnly (any write on a read-only mount)  | EROFS        | DEBUG                    |
| fs.NotEmpty (rmdir)                           | ENOTEMPTY    | DEBUG                    |
| fs.Exists (mkdir, O_EXCL, RENAME_NOREPLACE)   | EEXIST       | DEBUG                    |
| oss FileAlreadyExists (x-oss-forbid-overwrite)| EEXIST       | DEBUG                    |
| fs.NotSupported (dir rename, files in writing)| EXDEV        | DEBUG (`mv` copies then) |
| fs.Refused (a symlink leaving the mount)      | EPERM        | DEBUG                    |
| OSError ENOSPC/EDQUOT (staging dir full)      | ENOSPC ...   | WARNING                  |
| fs.IsADirectory (open of a directory)         | EISDIR       | DEBUG                    |
| fs.NotASymlink (readlink of another entry)    | EINVAL       | DEBUG                    |
| fs.NoSuchAttribute                            | ENODATA      | DEBUG                    |
| fs.AttributeNotSupported (security.* etc.)    | EOPNOTSUPP   | DEBUG (see fs/xattrs.py) |
| fs.UnknownHandle                              | EBADF        | WARNING                  |
| fs.LinkOutsideMount                           | EIO          | DEBUG (WARNING at source)|
| oss NoSuchKey (object gone since listing)     | ENOENT       | DEBUG                    |
| prefetch.ObjectChanged (replaced mid-read)    | ESTALE       | WARNING                  |
| fs.Stale (open of an entry that is gone)      | ESTALE       | DEBUG (the kernel retries)|
| prefetch.ObjectCorrupt (CRC-64 mismatch)      | EIO          | ERROR (logged at source) |
| prefetch.ObjectArchived (not restored)        | EACCES       | WARNING (at source)      |
| prefetch.DownloadFailed, transport errors     | EIO          | WARNING (at source)      |
| oss AccessDenied / key id / signature         | EACCES       | ERROR                    |
| cache errors (disk full, I/O)                 | EIO          | ERROR                    |
| anything else                                 | EIO          | ERROR with traceback     |

ESTALE for a changed object follows gcsfuse: the handle refers to a version that no longer
exists; reopening the file reads the new version. trio.Cancelled is a BaseException and passes
through untouched (pyfuse3 handles interrupted requests).
"""

from __future__ import annotations

import errno
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import pyfuse3

from ossmount.cache.errors import CacheError
from ossmount.fs.errors import (
    AttributeNotSupported,
    Exists,
    IsADirectory,
    LinkOutsideMount,
    NoSuchAttribute,
    NotASymlink,
    NotEmpty,
    NotSupported,
    ReadOnly,
    Refused,
    Stale,
    UnknownHandle,
    Unstorable,
)
from ossmount.oss import (
    AccessDenied,
    InvalidAccessKeyId,
    NoSuchKey,
    OssError,
    SignatureDoesNotMatch,
)
from ossmount.oss._write_types import FileAlreadyExists
from ossmount.prefetch import ObjectArchived, ObjectChanged, ObjectCorrupt, ReadError
from ossmount.tree.errors import NameInvalid, NameTooLong, NotADirectory, NotFound

__all__ = ["errno_for", "fuse_boundary"]

log = logging.getLogger("ossmount.fs")

P = ParamSpec("P")
T = TypeVar("T")

_DEBUG = logging.DEBUG
_WARNING = logging.WARNING
_ERROR = logging.ERROR


# (exception types, errno, log level), first match wins: subclasses before their bases.
_TABLE: tuple[tuple[type[Exception] | tuple[type[Exception], ...], int, int], ...] = (
    (NameTooLong, errno.ENAMETOOLONG, _DEBUG),
    (Unstorable, errno.EINVAL, _WARNING),  # a copy fails on it: say which name and why
    ((NotFound, NameInvalid), errno.ENOENT, _DEBUG),
    (NotADirectory, errno.ENOTDIR, _DEBUG),
    (AttributeNotSupported, errno.EOPNOTSUPP, _DEBUG),
    (NoSuchAttribute, errno.ENODATA, _DEBUG),
    (ReadOnly, errno.EROFS, _DEBUG),
    (NotEmpty, errno.ENOTEMPTY, _DEBUG),
    ((Exists, FileAlreadyExists), errno.EEXIST, _DEBUG),
    (NotSupported, errno.EXDEV, _DEBUG),
    (Refused, errno.EPERM, _DEBUG),
    (IsADirectory, errno.EISDIR, _DEBUG),
    (NotASymlink, errno.EINVAL, _DEBUG),
    (LinkOutsideMount, errno.EIO, _DEBUG),  # the WARNING was written at source
    (UnknownHandle, errno.EBADF, _WARNING),
    (ObjectChanged, errno.ESTALE, _WARNING),
    (Stale, errno.ESTALE, _DEBUG),
    (ObjectArchived, errno.EACCES, _DEBUG),  # the WARNING saying "restore it" was at source
    (ObjectCorrupt, errno.EIO, _DEBUG),  # the ERROR line with both CRCs was written at source
    (ReadError, errno.EIO, _DEBUG),  # the WARNING with the cause was written at source
    (NoSuchKey, errno.ENOENT, _DEBUG),
    ((AccessDenied, InvalidAccessKeyId, SignatureDoesNotMatch), errno.EACCES, _ERROR),
    ((OssError, CacheError), errno.EIO, _ERROR),
)


_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def errno_for(exc: BaseException) -> tuple[int, int]:
    """(errno, log level) for an exception raised below the adapter."""
    if isinstance(exc, OSError) and not isinstance(exc, CacheError) and exc.errno in _SPACE:
        return exc.errno, _WARNING  # the staging dir is full: say so, never drop silently
    for types, code, level in _TABLE:
        if isinstance(exc, types):
            return code, level
    return errno.EIO, -1  # unexpected: log with traceback


def fuse_boundary(
    handler: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Wrap a pyfuse3 handler so only FUSEError leaves it."""

    @functools.wraps(handler)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await handler(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except Exception as exc:
            code, level = errno_for(exc)
            if level < 0:
                log.exception("%s failed unexpectedly; answering EIO", handler.__name__)
            elif log.isEnabledFor(level):
                log.log(level, "%s: %s (%s)", handler.__name__, exc, errno.errorcode[code])
            raise pyfuse3.FUSEError(code) from exc

    return wrapper
