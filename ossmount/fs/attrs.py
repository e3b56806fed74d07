"""What the filesystem answers, as plain values: `Attr` for an entry, `Opened` for an open.

These are ours, not pyfuse3's, so `FileSystem` and its tests never touch pyfuse3 and the
read-write operations can return the same types. The adapter (`fs/ops.py`) copies them into
pyfuse3's structures.

`Attr` is a NamedTuple rather than a frozen dataclass: one is built for every directory entry
a readdir returns, and a tuple is built in one C call where a frozen dataclass's `__init__`
runs one `object.__setattr__` per field (~0.3 against ~1.3 µs for these eleven fields,
measured with timeit).
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from typing import NamedTuple

from ossmount.oss.models import ObjectMeta
from ossmount.tree.node import Node

__all__ = ["Attr", "FsStats", "Opened", "Presentation", "is_symlink"]


@dataclass(frozen=True, slots=True)
class Presentation:
    """Ownership, modes and kernel TTLs shared by every entry."""

    uid: int
    gid: int
    umask: int
    attr_timeout_s: float
    block_size: int = 1024 * 1024
    writable: bool = False  # -o rw: write bits in the modes, so permission checks allow writes

    @property
    def dir_mode(self) -> int:
        return stat.S_IFDIR | ((0o777 if self.writable else 0o555) & ~self.umask)

    @property
    def file_mode(self) -> int:
        return stat.S_IFREG | ((0o666 if self.writable else 0o444) & ~self.umask)


class Attr(NamedTuple):
    """The attributes of one entry and how long the kernel may keep them (`timeout_s`, for
    both the name and the attributes)."""

    inode: int
    mode: int
    nlink: int
    uid: int
    gid: int
    size: int
    block_size: int
    mtime_ns: int
    ctime_ns: int
    atime_ns: int
    timeout_s: float

    @property
    def blocks(self) -> int:
        """st_blocks: 512-byte units, what `du` adds up."""
        return (self.size + 511) // 512


@dataclass(frozen=True, slots=True)
class Opened:
    """An open file: its handle, and whether the kernel may keep pages cached from before."""

    fh: int
    keep_cache: bool


@dataclass(frozen=True, slots=True)
class FsStats:
    block_size: int
    name_max: int = 255


SYMLINK_MODE = stat.S_IFLNK | 0o777


def is_symlink(meta: ObjectMeta | None) -> bool:
    return meta is not None and meta.object_type == "Symlink"


def attr_of(node: Node, look: Presentation, dir_mode: int, file_mode: int) -> Attr:
    """`node` as the kernel sees it. Modes are passed in, computed once per mount."""
    if node.is_dir:
        mode, nlink = dir_mode, 2
    elif node.meta is not None and node.meta.object_type == "Symlink":
        mode, nlink = SYMLINK_MODE, 1
    else:
        mode, nlink = file_mode, 1
    t = node.mtime_ns
    return Attr(
        node.inode,
        mode,
        nlink,
        look.uid,
        look.gid,
        node.size,
        look.block_size,
        t,
        t,
        t,
        look.attr_timeout_s,
    )
