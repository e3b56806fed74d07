"""A one-part object's checkpoint kept in its own data file, after the object's bytes.

Why (cache layout 2, cache.layout): a cold small file used to cost two new files in the cache,
its data file and its checkpoint, and ext4 inode creation was ~26 % of the daemon's CPU in a
cold `rsync -a` of 2,000 x 8 KiB. An object of one part (at most the 256 KiB head part,
cache.ranges) is written once and judged once, so its checkpoint is saved once, or very few
times: it can live in the data file itself, and a cold small file creates one file.

File `<sha256(key)>.one`:

    [the object's bytes: size][sealed checkpoint frame (cache.checkpoint)][u32 frame length]
    [TAIL_MAGIC, 8 bytes]

The checkpoint frame is the one `.ckpt` files hold, with its own SHA-256, so a torn or stale
tail is caught exactly as a torn `.ckpt` is. Crash cases (nothing is fsynced, as for `.ckpt`:
every part a checkpoint lists is re-hashed before a later process serves it, cache.checks):
* no trailer magic at the end (a crash before the first save, or a file cut short): no
  checkpoint; the entry starts over;
* a torn frame or trailer (a save cut by a power loss), or a frame whose end is not where the
  object's bytes end: CorruptCheckpoint, the entry starts over;
* a frame naming bytes that never reached the disk: the part fails its re-check (or lies in a
  hole, cache.opening) and is fetched again.
A save rewrites the tail in place with one pwrite (then trims the file if the new tail is
shorter): unlike `save_atomic` there is no old copy kept during the write, which costs at most
the one part of a one-part object, never a wrong byte. Bigger objects keep `.data` + `.ckpt`:
their checkpoint grows with every part and a torn save must keep the previous one.
"""

from __future__ import annotations

import os
import struct

from ossmount.cache.checkpoint import Checkpoint, decode, encode
from ossmount.cache.errors import CorruptCheckpoint

__all__ = ["TAIL_MAGIC", "read_tail", "write_tail"]

TAIL_MAGIC = b"OSSMTAIL"
_TRAILER = struct.Struct(">I8s")
# One pread of this much from the end finds a checkpoint whose key is up to ~3.8 KB long
# (OSS keys are at most 1023 bytes): one syscall per resume in practice.
_READ = 4096


def write_tail(fd: int, cp: Checkpoint, *, again: bool) -> None:
    """Write `cp` after the object's `cp.size` bytes of `fd`. `again`: a tail may be there
    already (trimmed if the new one is shorter). Raises OSError."""
    frame = encode(cp)
    blob = frame + _TRAILER.pack(len(frame), TAIL_MAGIC)
    done = 0
    while done < len(blob):  # a short write to a regular file only comes with an error next
        done += os.pwrite(fd, blob[done:], cp.size + done)
    if again:
        os.ftruncate(fd, cp.size + len(blob))


def read_tail(fd: int) -> Checkpoint | None:
    """The checkpoint at the end of `fd`, or None when it has none (no trailer magic).

    Raises CorruptCheckpoint for a damaged tail, or one that does not start where the object
    it describes ends; OSError if the file cannot be read.
    """
    end = os.fstat(fd).st_size
    if end < _TRAILER.size:
        return None
    start = max(0, end - _READ)
    buf = os.pread(fd, end - start, start)
    if len(buf) != end - start:
        raise CorruptCheckpoint(f"checkpoint tail: read {len(buf)} of {end - start} bytes")
    length, magic = _TRAILER.unpack_from(buf, len(buf) - _TRAILER.size)
    if magic != TAIL_MAGIC:
        return None
    frame_start = end - _TRAILER.size - length
    if frame_start < 0:
        raise CorruptCheckpoint(f"checkpoint tail of {length} bytes in a {end}-byte file")
    if frame_start < start:
        buf = os.pread(fd, end - frame_start, frame_start)
        start = frame_start
    cp = decode(buf[frame_start - start : len(buf) - _TRAILER.size])
    if cp.size != frame_start:
        raise CorruptCheckpoint(f"checkpoint of a {cp.size}-byte object at byte {frame_start}")
    return cp
