"""`-o writeback`: close returns once the staged bytes and a sealed journal are durable on
local disk, and the upload runs in the background (SEMANTICS.md, "-o writeback").

One per `Staging` (fs/staging.py), whose staged files, locks and commit it uses. What it
adds: at most `writeback_parallel` uploads at once
(`_background`), the count of those scheduled (`staged.pending` per file, `_pending_total`
for unmount's `drain`), and what happens to a file once its upload is done: handed to the
read cache, dropped, or, when the upload failed, kept staged and shown (`staged.unsent`) and
tried again in the background (`keep_trying`: after RETRY_FIRST_S, then twice as long each
time up to RETRY_MAX_S), so an outage of the endpoint does not leave acknowledged files
unsent until someone opens them or the next mount.

A sealed file's upload starts `delay_s` (--writeback-delay) after its close, not at once:
what a tool does next to the file it just closed then goes in that one upload instead of
costing requests of its own. rsync renames its temporary file into place (`rekey`: the
journal is sealed again under the new key, and the file is uploaded once, under its final
name, where it cost a PutObject, a CopyObject and a DeleteObject, each a round trip the
rename waited for); utimens and chmod after the close ride in it too (Staging.carries_attrs).
Whoever needs the upload sooner says so (`hurry`): a write or truncate of the file
(Staging.quiesce), a rename of a directory above it, unmount's `drain`. fsync and a rename
that cannot re-key commit the file themselves.

Concurrency: on the trio thread only. `staged.pending` goes up in `seal_and_schedule`, before
the seal is written (so a write meanwhile waits instead of changing the bytes being sealed),
and when a retry starts; it goes down when that upload ends, whatever its outcome, or when
the seal failed; `staged.landed`
is set exactly while it is 0 (writes and truncates wait for it: Staging.quiesce). An unsent
file's bytes are the ones its close sealed (a write or truncate commits them first), so a
retry may run whoever has the file open. One retry loop per file (`staged.retrying`).
`rekey` holds `staged.lock` (no upload of the file runs or starts: every commit holds it)
and `staged.journal_lock` (no other seal) while it re-seals, and changes the key only once
the new journal has replaced the old one.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from ossmount.fs.staged import Staged
from ossmount.write.journal import JournalRecord, fsync_dir, save_atomic

if TYPE_CHECKING:
    from ossmount.fs.staging import Staging

__all__ = ["WriteBack"]

log = logging.getLogger("ossmount.fs.staging")

RETRY_FIRST_S = 2.0
RETRY_MAX_S = 300.0


class WriteBack:
    """The write-back half of one `Staging` (see the module docstring)."""

    def __init__(
        self, staging: Staging, nursery: trio.Nursery, parallel: int, delay_s: float = 0.0
    ) -> None:
        self._staging = staging
        self._nursery = nursery
        self._background = trio.CapacityLimiter(parallel)
        self._delay_s = delay_s
        self._waiting: dict[Staged, list[trio.Event]] = {}  # uploads held back, by file
        self._hurried = False  # unmount: no upload is held back any more
        self._pending_total = 0
        self._idle = trio.Event()
        self._idle.set()

    async def seal_and_schedule(self, staged: Staged) -> bool:
        """Write-back close: make the staged bytes and a sealed journal durable, schedule the
        upload, return. False when the file must be committed now instead: a commit of it is
        running (fsync, a rename), it was unlinked (an orphan's commit uploads nothing:
        sealing it would, after a crash), or bytes it sent left the disk (Staging._shed). A
        file whose start was never read (an append to a big object: Staging.fill) is sealed
        with that start named in its record (the object and version to copy it from). A
        file whose parts went early is sealed in its session's journal (upload id and parts
        sent), and its upload sends the rest."""
        if staged.broken is not None:
            raise staged.broken
        # One seal of a file at a time: two closes at once (two appenders ending) wrote the
        # same temporary journal in two threads, and one of them failed (EIO). The session's
        # saves of confirmed parts take this lock too (Staging._session).
        async with staged.journal_lock:
            if staged.pending:
                # Sealed and scheduled, and unchanged since: a write or truncate waits for that
                # upload (Staging.quiesce). So this close (of a reader, or of a handle opened
                # before) adds nothing; sealing again stamped a new mtime, and vim, which had
                # read the file closed moments before, refused to save it ("changed since
                # reading it").
                return True
            if staged.lock.locked() or staged.orphan or staged.shed:
                return False  # (a shed file keeps no journal: Staging._shed)
            if staged.mtime_ns is None or staged.mtime_stamped:
                # The close's time goes up as its x-oss-meta-mtime, so the mtime stat shows
                # from now on stays when the upload lands (else it became the Last-Modified
                # then, and vim, reading a file closed moments before, refused to save:
                # "changed since reading it"). A later close stamps its own; a time set by
                # utimens is kept. (A multipart upload was initiated without it: the time
                # is stored by a copy after it completes, Staging._late_attrs.)
                staged.mtime_ns, staged.mtime_stamped = time.time_ns(), True
            record = self._staging.sealed_record(staged)
            # Pending from before the seal: a write that comes while it is being made waits
            # (Staging.quiesce) instead of changing the bytes being sealed, and its hurry
            # is not lost.
            self._scheduled(staged)
            go = self._hold(staged)
            try:
                await trio.to_thread.run_sync(_seal, staged.fd, staged.files.journal, record)
            except BaseException:
                if staged.session is not None:
                    staged.session.unseal()
                self._unhold(staged, go)
                self._count_out(staged)
                raise
        self._nursery.start_soon(self._commit_later, staged, go)
        return True

    def _scheduled(self, staged: Staged) -> None:
        """Count one upload of `staged` as pending (`_count_out` counts it out)."""
        staged.pending += 1
        if staged.landed.is_set():
            staged.landed = trio.Event()
        self._pending_total += 1
        self._idle = trio.Event() if self._idle.is_set() else self._idle

    def _count_out(self, staged: Staged) -> None:
        """One pending upload of `staged` ended (or never started: its seal failed)."""
        staged.pending -= 1
        if staged.pending == 0:
            staged.landed.set()
        self._pending_total -= 1
        if self._pending_total == 0:
            self._idle.set()
        self._staging.room_back()  # its file's room, if it gave it back (uploaded_later)

    @property
    def pending(self) -> int:
        """Uploads scheduled and not ended (held back, waiting for a slot, or running)."""
        return self._pending_total

    def start_held(self) -> None:
        """Start every upload held back (`delay_s`) now, without hurrying later ones."""
        for go in [go for gos in self._waiting.values() for go in gos]:
            go.set()

    def keep_trying(self, staged: Staged) -> None:
        """`staged` is unsent: try its upload again in the background until it is sent, or
        gone (see the module docstring)."""
        if not staged.retrying:
            staged.retrying = True
            self._nursery.start_soon(self._retry, staged)

    async def _retry(self, staged: Staged) -> None:
        delay = RETRY_FIRST_S
        try:
            while True:
                await trio.sleep(delay)
                delay = min(2 * delay, RETRY_MAX_S)
                unsent = staged.unsent and staged.broken is None and not staged.orphan
                if not (unsent and self._staging.holds(staged)):
                    return  # sent meanwhile (a close, a write), or gone
                if staged.pending or staged.lock.locked():
                    continue  # another try is running: look again later
                log.info("%s: trying its upload again", self._staging.where(staged.key))
                self._scheduled(staged)
                await self._commit_later(staged)
        finally:
            staged.retrying = False

    def _hold(self, staged: Staged) -> trio.Event | None:
        """What a new upload of `staged` waits for, up to `delay_s`, before it starts (None:
        nothing). Registered now, not when its task first runs: a hurry may come before."""
        if self._delay_s <= 0 or self._hurried:
            return None
        go = trio.Event()
        self._waiting.setdefault(staged, []).append(go)
        return go

    async def _held_back(self, staged: Staged, go: trio.Event) -> None:
        try:
            with trio.move_on_after(self._delay_s):
                await go.wait()
        finally:
            self._unhold(staged, go)

    def _unhold(self, staged: Staged, go: trio.Event | None) -> None:
        if go is None:
            return
        waiting = self._waiting[staged]
        waiting.remove(go)
        if not waiting:
            del self._waiting[staged]

    def held(self, staged: Staged) -> bool:
        """Whether an upload of `staged` waits out the delay (`user.ossmount.state`)."""
        return staged in self._waiting

    def hurry(self, staged: Staged | None = None) -> None:
        """Start the held-back upload of `staged` now (of every file: None, for unmount)."""
        if staged is None:
            self._hurried = True
            self.start_held()
            return
        for go in self._waiting.get(staged, []):
            go.set()

    async def rekey(self, staged: Staged, path: str, key: str) -> bool:
        """A rename of `staged` to `path` (object `key`), replacing what is there, without a
        request: True once its sealed journal names `key` (see below), and the staging's maps
        and the file say `path` and `key`; the held-back upload then sends it under `key`.
        False, having changed nothing, unless the file is sealed, its upload has not started,
        and it has no older version on OSS: an object under the old key must be deleted, by
        the usual rename (FileSystem.rename). Whatever OSS holds under `key` (an object the
        rename replaces, or the upload of a file staged there that landed while the rename
        waited for it) stays until this upload lands: the file `replaces` it, and an unlink
        before then deletes the key."""
        if staged.lock.locked() or not self._rekeyable(staged):
            return False  # its upload has started, or the file is not such a file
        async with staged.lock, staged.journal_lock:
            if not self._rekeyable(staged):
                return False
            record = replace(self._staging.sealed_record(staged), key=key, forbid_overwrite=False)
            # Whole either way; the staging directory is not fsynced, so a power loss (not a
            # kill) may leave the old name, as a local disk may keep a rename made without
            # an fsync of its directory (`sync_names`, FileSystem.fsyncdir, makes it durable).
            # That fsync was 15 % of a local rsync -a under write-back.
            await trio.to_thread.run_sync(
                lambda: save_atomic(staged.files.journal, record, sync_dir=False)
            )
            self._staging.attrs_sealed(staged)  # the record holds them now
            staged.key, staged.forbid_overwrite = key, False  # a rename replaces the target
            staged.replaces = True  # OSS may hold an object there (a victim's upload landed)
            self._staging.repath(staged, path)
        return True

    async def sync_names(self) -> None:
        """Make the renames `rekey` made so far durable (an fsync of the staging directory)."""
        await trio.to_thread.run_sync(fsync_dir, self._staging.directory)

    @staticmethod
    def _rekeyable(staged: Staged) -> bool:
        return (
            staged.pending > 0
            and staged.dirty  # sealed, and not committed since (by fsync or a rename)
            and staged.session is None
            and staged.committed is None
            and staged.source is None
            and not (staged.base_etag or staged.may_exist or staged.replaces)
            and not (staged.unsent or staged.orphan or staged.shed)
            and staged.broken is None
        )

    async def _commit_later(self, staged: Staged, go: trio.Event | None = None) -> None:
        kept = True  # until the upload is done: sealed and durable, the next mount uploads it
        try:
            if go is not None:
                await self._held_back(staged, go)
            async with self._background:
                await self._staging.commit(staged)
            kept = False
        except Exception as exc:
            staged.unsent = True
            log.error("%s: write-back upload failed (%s); the file stays staged in %s and is "
                      "tried again in the background, before it changes, at its last close "
                      "and by the next mount", self._staging.where(staged.key), exc,
                      staged.files.data)  # fmt: skip
            self.keep_trying(staged)
        finally:
            self._count_out(staged)
            if staged.pending == 0 and staged.handles == 0:
                self._staging.uploaded_later(staged, kept=kept)

    async def drain(self) -> None:
        """Start every held-back upload and wait until all scheduled so far have finished
        (unmount)."""
        self.hurry()
        await self._idle.wait()


def _seal(fd: int, journal: Path, record: JournalRecord) -> None:
    """Durable before recorded: the staged bytes, then the record naming their size."""
    os.fsync(fd)
    save_atomic(journal, record)
