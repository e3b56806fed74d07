"""The one error boundary: every exception leaving a FUSE handler becomes an errno here.

Nothing below the adapter knows errno values; it raises typed exceptions and this table decides
what the kernel (and so `cp`, `ls`) sees and how loudly we log it:

| raised                                        | errno        | log                      |
|-----------------------------------------------|--------------|--------------------------|
| tree.NotFound, tree.NameInvalid               | ENOENT       | DEBUG (an expected miss) |
| tree.NameTooLong                              | ENAMETOOLONG | DEBUG                    |
| tree.NotADirectory                            | ENOTDIR      | DEBUG                    |
| fs.ReadOnly (a write open)                    | EROFS        | DEBUG                    |
| fs.IsADirectory (open of a directory)         | EISDIR       | DEBUG                    |
| fs.NotASymlink (readlink of another entry)    | EINVAL       | DEBUG                    |
| fs.NoSuchAttribute                            | ENODATA      | DEBUG                    |
| fs.AttributeNotSupported (security.* etc.)    | EOPNOTSUPP   | DEBUG (see fs/xattrs.py) |
| fs.UnknownHandle                              | EBADF        | WARNING                  |
| fs.LinkOutsideMount                           | EIO          | DEBUG (WARNING at source)|
| oss NoSuchKey (object gone since listing)     | ENOENT       | DEBUG                    |
| prefetch.ObjectChanged (replaced mid-read)    | ESTALE       | WARNING                  |
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
    IsADirectory,
    LinkOutsideMount,
    NoSuchAttribute,
    NotASymlink,
    ReadOnly,
    UnknownHandle,
)
from ossmount.oss import (
    AccessDenied,
    InvalidAccessKeyId,
    NoSuchKey,
    OssError,
    SignatureDoesNotMatch,
)
from ossmount.prefetch.scheduler import ObjectArchived, ObjectChanged, ObjectCorrupt, ReadError
from ossmount.tree.errors import NameInvalid, NameTooLong, NotADirectory, NotFound

__all__ = ["errno_for", "fuse_boundary"]

log = logging.getLogger("ossmount.fs")

P = ParamSpec("P")
T = TypeVar("T")

_DEBUG = logging.DEBUG
_WARNING = logging.WARNING
_ERROR = logging.ERROR


def errno_for(exc: BaseException) -> tuple[int, int]:
    """(errno, log level) for an exception raised below the adapter."""
    if isinstance(exc, NameTooLong):
        return errno.ENAMETOOLONG, _DEBUG
    if isinstance(exc, NotFound | NameInvalid):
        return errno.ENOENT, _DEBUG
    if isinstance(exc, NotADirectory):
        return errno.ENOTDIR, _DEBUG
    if isinstance(exc, AttributeNotSupported):
        return errno.EOPNOTSUPP, _DEBUG
    if isinstance(exc, NoSuchAttribute):
        return errno.ENODATA, _DEBUG
    if isinstance(exc, ReadOnly):
        return errno.EROFS, _DEBUG
    if isinstance(exc, IsADirectory):
        return errno.EISDIR, _DEBUG
    if isinstance(exc, NotASymlink):
        return errno.EINVAL, _DEBUG
    if isinstance(exc, LinkOutsideMount):
        return errno.EIO, _DEBUG
    if isinstance(exc, UnknownHandle):
        return errno.EBADF, _WARNING
    if isinstance(exc, ObjectChanged):
        return errno.ESTALE, _WARNING
    if isinstance(exc, ObjectArchived):
        return errno.EACCES, _DEBUG  # the WARNING saying "restore it" was written at source
    if isinstance(exc, ObjectCorrupt):
        return errno.EIO, _DEBUG  # the ERROR line with both CRCs was written where it happened
    if isinstance(exc, ReadError):
        return errno.EIO, _DEBUG  # the WARNING with the cause was written where it happened
    if isinstance(exc, NoSuchKey):
        return errno.ENOENT, _DEBUG
    if isinstance(exc, AccessDenied | InvalidAccessKeyId | SignatureDoesNotMatch):
        return errno.EACCES, _ERROR
    if isinstance(exc, OssError | CacheError):
        return errno.EIO, _ERROR
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
