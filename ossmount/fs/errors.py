"""Typed failures of the filesystem layer (`FileSystem`), each naming the object it is about.

`fs/boundary.py` maps them to errno values with the tree's and the prefetcher's errors; nothing
here knows errno. All are expected outcomes of a request (a write open on a read-only mount, an
attribute a file does not have) and are logged at DEBUG by the boundary, except
`LinkOutsideMount`, which is logged at WARNING where it is raised.
"""

from __future__ import annotations

__all__ = [
    "AttributeNotSupported",
    "Exists",
    "FsError",
    "IsADirectory",
    "LinkOutsideMount",
    "NoSuchAttribute",
    "NotASymlink",
    "NotEmpty",
    "NotSupported",
    "ReadOnly",
    "Refused",
    "Stale",
    "UnknownHandle",
    "Unstorable",
]


class FsError(Exception):
    """Base of the filesystem's errors. `what` names the object (`oss://bucket/key` or a path)."""

    def __init__(self, what: str, detail: str = "") -> None:
        self.what = what
        self.detail = detail
        super().__init__(f"{what}: {detail}" if detail else what)


class Stale(FsError):
    """An open of a file whose entry is gone while the kernel may still hold its name (a new
    file dropped at its last close because its commit failed: that close had returned before
    the drop): the kernel looks the name up again and retries the open once, so an
    `open(O_CREAT)` creates the file anew instead of failing with ENOENT."""


class ReadOnly(FsError):
    """A write was asked of this read-only mount."""


class IsADirectory(FsError):
    """A file operation (open) was asked of a directory."""


class NotASymlink(FsError):
    """readlink of an entry that is not a symlink."""


class LinkOutsideMount(FsError):
    """A symlink object's target has no path under the mount root."""


class NoSuchAttribute(FsError):
    """The entry has no extended attribute of that name (in a namespace we answer for)."""


class AttributeNotSupported(FsError):
    """Extended attributes of that namespace (security.*, system.*, trusted.*) do not exist on
    this filesystem at all: tools such as `ls -l` then stop asking for each file."""


class UnknownHandle(FsError):
    """A file or directory handle that was never opened here, or was already released."""


class NotEmpty(FsError):
    """rmdir of a directory that still has entries."""


class NotSupported(FsError):
    """A rename this mount does not do (RENAME_EXCHANGE; a directory holding a file being
    written): EXDEV, so `mv` copies and deletes, as it does across filesystems."""


class Exists(FsError):
    """The name is taken (mkdir, O_EXCL create, RENAME_NOREPLACE)."""


class Unstorable(FsError):
    """A new name OSS cannot hold in a key (not valid UTF-8): EINVAL, as a filesystem answers
    a name it cannot store, not ENOENT, which `cp` would print as "No such file"."""


class Refused(FsError):
    """A write this mount cannot represent on OSS (a symlink leaving the mount)."""
