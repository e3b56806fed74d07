"""`-o writeback`: close returns once the staged bytes and a sealed journal are durable on
local disk, and the upload runs in the background (SEMANTICS.md, "-o writeback").

One per `Staging` (fs/staging.py), whose staged files, locks and commit it uses. What it
adds: at most `writeback_parallel` uploads at once
(`_background`), the count of those scheduled (`staged.pending` per file, `_pending_total`
for unmount's `drain`), and what happens to a file once its upload is done: handed to the
read cache, dropped, or, when the upload failed, kept staged and shown (`staged.unsent`).

Concurrency: on the trio thread only. `staged.pending` goes up in `seal_and_schedule` and
down when that upload ends, whatever its outcome; `staged.landed` is set exactly while it is
0 (writes and truncates wait for it: Staging.quiesce).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from ossmount.fs.staged import Staged
from ossmount.write.journal import JournalRecord, save_atomic

if TYPE_CHECKING:
    from ossmount.fs.staging import Staging

__all__ = ["WriteBack"]

log = logging.getLogger("ossmount.fs.staging")


class WriteBack:
    """The write-back half of one `Staging` (see the module docstring)."""

    def __init__(self, staging: Staging, nursery: trio.Nursery, parallel: int) -> None:
        self._staging = staging
        self._nursery = nursery
        self._background = trio.CapacityLimiter(parallel)
        self._pending_total = 0
        self._idle = trio.Event()
        self._idle.set()

    async def seal_and_schedule(self, staged: Staged) -> bool:
        """Write-back close: make the staged bytes and a sealed journal durable, schedule the
        upload, return. False when the file must be committed now instead: a multipart upload
        is already under way (its journal belongs to that session; such a file is committed
        by close as without write-back)."""
        if staged.broken is not None:
            raise staged.broken
        if staged.session is not None or staged.lock.locked() or staged.orphan:
            return False  # an orphan's commit uploads nothing: sealing it would, after a crash
        record = self._staging.sealed_record(staged)
        await trio.to_thread.run_sync(_seal, staged.fd, staged.files.journal, record)
        staged.pending += 1
        if staged.landed.is_set():
            staged.landed = trio.Event()
        self._pending_total += 1
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        self._nursery.start_soon(self._commit_later, staged)
        return True

    async def _commit_later(self, staged: Staged) -> None:
        kept = True  # until the upload is done: sealed and durable, the next mount uploads it
        try:
            async with self._background:
                meta = await self._staging.commit(staged)
            kept = False
            if meta is not None:
                self._staging.on_commit(staged, meta)
        except Exception as exc:
            staged.unsent = True
            log.error("%s: write-back upload failed (%s); the file stays staged in %s and is "
                      "uploaded before it changes, at its last close or at the next mount",
                      self._staging.where(staged.key), exc, staged.files.data)  # fmt: skip
        finally:
            staged.pending -= 1
            if staged.pending == 0:
                staged.landed.set()
            self._pending_total -= 1
            if self._pending_total == 0:
                self._idle.set()
            if staged.pending == 0 and staged.handles == 0:
                self._staging.uploaded_later(staged, kept=kept)

    async def drain(self) -> None:
        """Wait until every write-back upload scheduled so far has finished (unmount)."""
        await self._idle.wait()


def _seal(fd: int, journal: Path, record: JournalRecord) -> None:
    """Durable before recorded: the staged bytes, then the record naming their size."""
    os.fsync(fd)
    save_atomic(journal, record)
