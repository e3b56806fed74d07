"""Which of atime, mtime and ctime a setattr stores, and with what value: ossfs 1.x's rules.

Read from ossfs 1.x (branch main-v1, src/s3fs.cpp and src/fdcache_entity.cpp), so a bucket
written by either shows the same times in both:
    * create, mkdir, symlink: `x-oss-meta-atime`, `-mtime` and `-ctime` all `time(NULL)`
      (whole seconds).
    * chmod, chown: `-ctime` = `time(NULL)`; atime and mtime untouched.
    * utimens(atime, mtime): `-mtime` = the mtime given, and BOTH `-atime` and `-ctime` = the
      atime given (s3fs_utimens logs it as "ctime/atime"). A time left out (UTIME_OMIT, as
      `touch -m` leaves the atime and `touch -a` the mtime) is the object's current one,
      written again: the mtime's for the mtime, the *ctime's* for atime and ctime (its
      `handle_utimens_special_values(ts[0], now, st_ctim)`). So `touch -m` sets the atime to
      the old ctime, and `touch -a` keeps the mtime even when the object had no
      `x-oss-meta-mtime` (the Last-Modified it showed, which the copy changes, is written).
      A current time the object does not carry is its Last-Modified (get_ctime/get_mtime
      fall back to it); one we cannot know either is left out.
    * the upload of a written file (flush): `-ctime` = the time of the flush (UpdateCtime,
      the staging file's ctime), `-atime` as the file had it (the create's, or the replaced
      version's, which its open keeps), never updated by a read (s3fs_read calls no
      UpdateAtime; nothing does).
    * rename: `-ctime` = now on the renamed object (not done here: fs/filesystem.py renames
      keep every header as it was).

One exception, ours: a chmod, chown or utimens that changes nothing but the ctime (a chmod to
the mode the object has) copies nothing, where ossfs copies the object to bump its ctime. So a
second `rsync -a`, which sets nothing that changed, still sends no request.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from ossmount.fs.shown import Posix

__all__ = ["now_s", "only_ctime_differs", "stamped"]

_CTIME = "x-oss-meta-ctime"


def now_s() -> int:
    """ossfs's `time(NULL)`, in nanoseconds: whole seconds."""
    return time.time_ns() // 1_000_000_000 * 1_000_000_000


def stamped(request: Posix, current: Posix, last_modified_ns: int | None) -> Posix:
    """What a setattr `request` (mode, uid, gid, mtime_ns, atime_ns where set; its ctime is
    ignored) stores on an object that now carries `current` and has `last_modified_ns`:
    `request` with the times ossfs stores beside it (see the module docstring)."""
    mode, uid, gid, mtime, atime, _ = request
    ctime = None
    if (mode, uid, gid) != (None, None, None):
        ctime = now_s()
    if mtime is not None or atime is not None:
        fallback = _usable(last_modified_ns)
        if atime is None:
            atime = _usable(current.ctime_ns) or fallback
        if mtime is None:
            mtime = _usable(current.mtime_ns) or fallback
        ctime = atime
    return Posix(mode, uid, gid, mtime, atime, ctime)


def _usable(ns: int | None) -> int | None:
    """A time ossfs would take (after the epoch: it ignores zero and negative ones)."""
    return ns if ns is not None and ns > 0 else None


def only_ctime_differs(updates: Mapping[str, str], kept: Mapping[str, str]) -> bool:
    """Whether the `x-oss-meta-*` `updates` change nothing of `kept` but the ctime."""
    return all(kept.get(name) == value for name, value in updates.items() if name != _CTIME)
