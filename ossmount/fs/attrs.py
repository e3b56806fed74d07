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

import os
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
    file_bits: int | None = None  # --file-mode: a listed file's bits, before the umask

    @property
    def dir_mode(self) -> int:
        return stat.S_IFDIR | ((0o777 if self.writable else 0o555) & ~self.umask)

    @property
    def file_mode(self) -> int:
        bits = self.file_bits
        if bits is None:
            bits = 0o666
        if not self.writable:
            bits &= ~0o222  # a read-only mount shows no write bit
        return stat.S_IFREG | (bits & ~self.umask)


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
    """An open file: its handle, whether the kernel may keep pages cached from before, and
    whether its bytes bypass the kernel's page cache (`direct_io`, see `direct_writes`)."""

    fh: int
    keep_cache: bool
    direct_io: bool = False


def direct_writes(flags: int) -> bool:
    """Whether a handle opened for writing with `flags` should be FOPEN_DIRECT_IO.

    Why: without it the kernel copies every write(2) into the FUSE inode's page cache before
    sending it to us, and we stage the same bytes again (a second page-cache copy, the one
    that becomes the cache entry). With it the kernel hands the writer's own pages to our read
    of /dev/fuse: `cp` of 1 GiB into the mount spends 0.15-0.35 instead of 0.45-0.65 CPU s in
    the kernel (W13, /usr/bin/time around the cp, 2-core VM), and the written bytes are held in
    memory once instead of twice.

    Only for write-only handles (O_WRONLY, as cp and tar open; a handle that may also read
    keeps the page cache): a direct_io handle cannot be mapped MAP_SHARED (the
    kernel answers ENODEV without FUSE_DIRECT_IO_ALLOW_MMAP, which pyfuse3 does not ask for),
    and an O_WRONLY descriptor cannot be mapped at all, so nothing that worked stops working.
    Other descriptors of the same file keep the page cache; the kernel drops their cached
    pages over the range of each direct write (tests/mount/test_direct_writes.py)."""
    return flags & os.O_ACCMODE == os.O_WRONLY


@dataclass(frozen=True, slots=True)
class FsStats:
    """What statfs answers. A bucket has no size to report, and counting its bytes would
    take a listing of every key, so `used` is never known and `free_bytes`/`free_files` say
    whether writing is possible at all: 0 on a read-only mount; on a `--rw` mount a large
    round figure (`WRITABLE_BYTES`), as every peer reports (s3fs and ossfs 1.x ~16 EiB,
    ossfs2 its kMaxFsSize, rclone 1 PiB). Zero free space on a writable mount made
    file managers, Samba shares and installers that check df refuse to copy anything."""

    block_size: int
    free_bytes: int = 0
    free_files: int = 0
    name_max: int = 255

    @classmethod
    def of(cls, block_size: int, *, writable: bool) -> FsStats:
        if not writable:
            return cls(block_size)
        return cls(block_size, WRITABLE_BYTES, WRITABLE_FILES)


WRITABLE_BYTES = 1 << 50  # 1 PiB, rclone's figure: far from any 64-bit product's overflow
WRITABLE_FILES = 1 << 30


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
