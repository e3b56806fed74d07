"""Exit codes for start-up failures, and the quiet error that carries one.

A start-up failure is something the operator must fix (credentials, endpoint, bucket,
mountpoint, cache dir): it is printed as one line naming the cause, never a traceback, and the
process exits with the code from this table. `--help` and the README list the same table.

The errno table for requests on a running mount lives with the FUSE adapter
(`ossmount.fs.boundary`), the one place exceptions become errno values.
"""

from __future__ import annotations

import enum
from typing import Generic, TypeVar

__all__ = ["EXIT_CODE_HELP", "ExitCode", "OperatorError", "StartupError"]


class ExitCode(enum.IntEnum):
    OK = 0
    INTERNAL = 1  # a bug: the log has the traceback
    USAGE = 2  # bad option, bad bucket name, bad endpoint URL
    CREDENTIALS = 3  # no credentials found, unreadable or too-open passwd file
    ENDPOINT = 4  # endpoint unreachable (DNS, refused, TLS, timeout)
    BUCKET = 5  # bucket does not exist
    ACCESS = 6  # access denied, unknown key id, signature mismatch
    MOUNTPOINT = 7  # mountpoint missing, not a directory, not empty, already mounted
    CACHE = 8  # cache dir unusable or locked by another mount
    FUSE = 9  # /dev/fuse or fusermount3 missing, or the kernel refused the mount
    # The endpoint answered with something that is not OSS (unparsable, hostile or oversized
    # XML): often a proxy or captive portal in the way, which may pass, so systemd restarts it.
    BAD_REPLY = 10


_MEANING = {
    ExitCode.OK: "mounted (daemon: the filesystem answers) / unmounted cleanly",
    ExitCode.INTERNAL: "internal error (a bug; the log has the traceback)",
    ExitCode.USAGE: "bad usage: unknown option, bad value, bad bucket name or endpoint",
    ExitCode.CREDENTIALS: (
        "credentials: none found, or the passwd file is unreadable or readable by others"
    ),
    ExitCode.ENDPOINT: "endpoint unreachable",
    ExitCode.BUCKET: "bucket does not exist",
    ExitCode.ACCESS: (
        "access denied: wrong key id, wrong secret, or no permission to list the bucket"
    ),
    ExitCode.MOUNTPOINT: "mountpoint missing, not a directory, not empty, or already mounted",
    ExitCode.CACHE: "cache dir unusable or locked by another ossmount",
    ExitCode.FUSE: "FUSE unavailable (/dev/fuse, fusermount3) or the kernel refused the mount",
    ExitCode.BAD_REPLY: (
        "bad reply from the endpoint: not a valid OSS answer (a proxy in the way?)"
    ),
}

EXIT_CODE_HELP = "exit codes:\n" + "\n".join(
    f"  {int(code):<2} {meaning}" for code, meaning in _MEANING.items()
)


CodeT = TypeVar("CodeT", bound=enum.IntEnum)


class OperatorError(Exception, Generic[CodeT]):
    """A failure the operator must act on: printed as one line (never a traceback), and the
    process exits with `code` from its command's table (the mount's `ExitCode`, the cache
    commands' `cachecmd.codes.Exit`)."""

    def __init__(self, message: str, code: CodeT) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return self.message


class StartupError(OperatorError[ExitCode]):
    """The mount could not start (credentials, endpoint, bucket, mountpoint, cache dir)."""
