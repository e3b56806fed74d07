"""Exit codes for start-up failures, and the quiet error that carries one.

A start-up failure is something the operator must fix (credentials, endpoint, bucket,
mountpoint, cache dir): it is printed as one line naming the cause, never a traceback, and the
process exits with the code from this table. `--help` and the README list the same table.

The errno table for requests on a running mount lives with the FUSE adapter
(`ossmount.fs.boundary`), the one place exceptions become errno values.
"""

from __future__ import annotations

import enum

__all__ = ["EXIT_CODE_HELP", "ExitCode", "StartupError"]


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


EXIT_CODE_HELP = """exit codes:
  0  mounted (daemon: the filesystem answers) / unmounted cleanly
  1  internal error (a bug; the log has the traceback)
  2  bad usage: unknown option, bad value, bad bucket name or endpoint
  3  credentials: none found, or the passwd file is unreadable or readable by others
  4  endpoint unreachable
  5  bucket does not exist
  6  access denied: wrong key id, wrong secret, or no permission to list the bucket
  7  mountpoint missing, not a directory, not empty, or already mounted
  8  cache dir unusable or locked by another ossmount
  9  FUSE unavailable (/dev/fuse, fusermount3) or the kernel refused the mount"""


class StartupError(Exception):
    """A failure the operator must fix; printed as one line, exits with `code`."""

    def __init__(self, message: str, code: ExitCode) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return self.message
