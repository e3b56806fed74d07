"""Noticing that the disk under the cache failed to write cached bytes back.

Why: the read cache is not fsynced (cache.checkpoint): a part's bytes are hashed as they arrive
and then served by pread, from the page cache or, once the kernel wrote them back and dropped
them, from the disk. If that write-back fails (a bad sector, a yanked USB disk, a thin pool out of
space), Linux marks the pages clean with an error and may drop them, so a later pread of a part
this process hashed and still trusts would return whatever the disk holds: wrong bytes served as
good. Only a sync call reports such errors, so `watch_writeback` asks the cache filesystem every
`INTERVAL_S` with syncfs(2) (Linux >= 5.8 reports every write-back error on the filesystem
since this descriptor last asked, errseq), in a worker thread. On an error it logs it, naming
the cache dir, and makes the store distrust every part it serves (`CacheStore.distrust_open`):
each is re-hashed against its CRC-64 before it is served again (cache.checks), and fetched
again if the disk lost it. Parts not open are re-hashed at their next open anyway.

What it does not close: a page whose write-back failed and that the kernel dropped within the
same interval, read before the next syncfs, is served unchecked. The interval bounds that window;
an fsync per part (what the cache did before) closed it at ~0.4 ms of kernel time per small file.
The syncfs also writes back the filesystem's dirty pages earlier than the kernel's 30 s default
would, at most every `INTERVAL_S`: extra write-back scheduling, no extra bytes.

Threads: `syncfs` runs in a worker thread; the store is touched only from the trio thread,
after it returns.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
from collections.abc import Callable
from pathlib import Path

import trio

from ossmount.cache.store import CacheStore

__all__ = ["INTERVAL_S", "check_once", "syncfs", "watch_writeback"]

log = logging.getLogger(__name__)

INTERVAL_S = 10.0

_libc = ctypes.CDLL(None, use_errno=True)


def syncfs(fd: int) -> None:
    """syncfs(2) of the filesystem holding `fd` (the stdlib has no wrapper); OSError on failure."""
    if _libc.syncfs(fd) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


async def check_once(
    store: CacheStore, fd: int, root: Path, sync: Callable[[int], None] = syncfs
) -> bool:
    """One syncfs of the cache filesystem; False when it reported a write error (handled)."""
    try:
        await trio.to_thread.run_sync(sync, fd)
    except OSError as exc:
        if exc.errno in (errno.ENOSYS, errno.EBADF):
            raise
        parts = store.distrust_open()
        log.error(
            "cache dir %s: the disk reported an error writing cached data back (%s); "
            "every cached part will be re-hashed against its CRC-64 before it is served "
            "again (%d parts of open files now), and fetched again if damaged. Check the disk.",
            root,
            exc.strerror or exc,
            parts,
        )
        return False
    return True


async def watch_writeback(
    store: CacheStore, interval_s: float = INTERVAL_S, sync: Callable[[int], None] = syncfs
) -> None:
    """Check the cache filesystem for write-back errors every `interval_s`, until cancelled."""
    fd = os.open(store.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        while True:
            await trio.sleep(interval_s)
            try:
                await check_once(store, fd, store.root, sync)
            except OSError as exc:  # no syncfs here: nothing to watch with
                log.warning("cache dir %s: cannot watch for write errors: %s", store.root, exc)
                return
    finally:
        os.close(fd)
