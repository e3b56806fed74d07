"""The one errno table (fs/boundary.py): what the kernel, and so cp or ls, sees for each failure."""

from __future__ import annotations

import errno
import logging

import pyfuse3
import pytest
import trio

from ossmount.cache.errors import CacheFull, CacheIOError
from ossmount.fs.boundary import errno_for, fuse_boundary
from ossmount.oss import (
    AccessDenied,
    InternalError,
    InvalidAccessKeyId,
    NoSuchKey,
    OssTransportError,
    SignatureDoesNotMatch,
)
from ossmount.prefetch import (
    DownloadFailed,
    ObjectArchived,
    ObjectChanged,
    ObjectCorrupt,
)
from ossmount.tree.errors import NameInvalid, NameTooLong, NotADirectory, NotFound


def _oss(cls: type, status: int, code: str) -> BaseException:
    return cls(status, code, "message", bucket="bkt", key="k")  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (NotFound("a/b"), errno.ENOENT),
        (NameInvalid("a\0b"), errno.ENOENT),
        (NameTooLong("x" * 300), errno.ENAMETOOLONG),
        (NotADirectory("a"), errno.ENOTDIR),
        (ObjectChanged("bkt", "k", "changed"), errno.ESTALE),
        (ObjectCorrupt("bkt", "k", "crc"), errno.EIO),
        (ObjectArchived("bkt", "k", "archived"), errno.EACCES),
        (DownloadFailed("bkt", "k", "503"), errno.EIO),
        (_oss(NoSuchKey, 404, "NoSuchKey"), errno.ENOENT),
        (_oss(AccessDenied, 403, "AccessDenied"), errno.EACCES),
        (_oss(InvalidAccessKeyId, 403, "InvalidAccessKeyId"), errno.EACCES),
        (_oss(SignatureDoesNotMatch, 403, "SignatureDoesNotMatch"), errno.EACCES),
        (_oss(InternalError, 500, "InternalError"), errno.EIO),
        (OssTransportError("connect failed", bucket="bkt", key="k"), errno.EIO),
        (
            CacheFull("write", bucket="bkt", key="k", path="/c", cause=OSError(errno.ENOSPC, "x")),
            errno.EIO,
        ),
        (
            CacheIOError("read", bucket="bkt", key="k", path="/c", cause=OSError(errno.EIO, "x")),
            errno.EIO,
        ),
        (RuntimeError("a bug"), errno.EIO),
    ],
)
def test_every_failure_has_one_errno(exc: BaseException, expected: int) -> None:
    assert errno_for(exc)[0] == expected


async def test_the_boundary_turns_exceptions_into_fuse_errors_and_logs_bugs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    @fuse_boundary
    async def bug() -> None:
        raise RuntimeError("a bug")

    @fuse_boundary
    async def missing() -> None:
        raise NotFound("nope")

    with caplog.at_level(logging.DEBUG, logger="ossmount.fs"):
        with pytest.raises(pyfuse3.FUSEError) as info:
            await bug()
        assert info.value.errno == errno.EIO
        with pytest.raises(pyfuse3.FUSEError) as info:
            await missing()
        assert info.value.errno == errno.ENOENT
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None  # the traceback of the bug
    assert all(r.levelno == logging.DEBUG for r in caplog.records if "nope" in r.getMessage())


async def test_cancellation_passes_through_the_boundary() -> None:
    @fuse_boundary
    async def slow() -> None:
        await trio.sleep_forever()

    with trio.move_on_after(0.01) as scope:
        await slow()
    assert scope.cancelled_caught
