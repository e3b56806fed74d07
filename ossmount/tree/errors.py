"""Typed failures of the tree layer. Each names the path (relative to the mount root) it is about.

The FUSE adapter maps these to errno values in one table; nothing here knows about errno. The
suggested mapping: `NotFound` → ENOENT, `NameTooLong` → ENAMETOOLONG, `NameInvalid` → ENOENT
(a name we can never expose, such as one containing NUL, simply does not exist),
`NotADirectory` → ENOTDIR. All of them are expected outcomes: log at DEBUG, never WARNING.
"""

from __future__ import annotations

__all__ = ["NameInvalid", "NameTooLong", "NotADirectory", "NotFound", "TreeError"]


class TreeError(Exception):
    """Base of the tree's errors. `path` is relative to the mount root ("" is the root)."""

    def __init__(self, path: str, detail: str = "") -> None:
        self.path = path
        self.detail = detail
        super().__init__(f"{path!r}: {detail}" if detail else repr(path))


class NotFound(TreeError):
    """No such entry, or an inode number the tree no longer (or never) knew."""


class NameInvalid(TreeError):
    """The name can never be a file name here (empty, `.`, `..`, contains `/` or NUL, not UTF-8)."""


class NameTooLong(NameInvalid):
    """The name is longer than 255 bytes in UTF-8."""


class NotADirectory(TreeError):
    """A directory operation (lookup in, opendir) was asked of a file."""
