"""One staged file's way to OSS: its parts sent early and at commit, its journal, its resume.

`Uploader.session(staged, record, nursery)` (write/uploader.py) opens an `UploadSession` for
one staged file. A sequential writer's FUSE layer calls `part_ready(i)` when part i (0-based,
`part_size` bytes) is fully written: the part is uploaded in the background on the caller's
nursery, so by `close` most of a large file is already on the server. `invalidate(i)` (a
write into a part already sent) drops that part so it is sent again. `finish(size)`
(close/fsync) waits for the background parts, makes the staged bytes durable, records the
size, uploads what is missing with at most `parallel` parts in flight across the whole
uploader, completes the upload and verifies the object's CRC-64, and records COMMITTED.

`Uploader.session(staged, record, nursery)` opens an `UploadSession` for one staged file. A
sequential writer's FUSE layer calls `part_ready(i)` when part i (0-based, `part_size` bytes)
is fully written: the part is uploaded in the background on the caller's nursery, so by
`close` most of a large file is already on the server. `invalidate(i)` (a write into a part
already sent) drops that part so it is sent again. `finish(size)` (close/fsync) waits for the
background parts, makes the staged bytes durable, records the size, uploads what is missing
with at most `parallel` parts in flight across the whole uploader, completes the upload and
verifies the object's CRC-64, and records COMMITTED.

Journal discipline (write/journal.py): the staging file is fsynced before a record naming its
size is saved (or, with `fsync_staged` off, the record names the boot it is good for, and no
record of the session is fsynced: an unsealed record is never resumed from, a sealed one not
after a reboot, and a kill -9 keeps the page cache; resumed sessions fsync again); an
upload id is in the ledger before any journal records it; a part is recorded only after OSS
confirmed its CRC-64. So after kill -9, `Uploader.resume` finds a
record whose every listed part is on the server; it re-checks each against the staged bytes
(local CRC) and ListParts (ETag and CRC) anyway, keeps those that match, sends the rest and
completes. An upload that vanished (NoSuchUpload: aborted, expired) is started afresh.

Unchanged parts (`copy_from`, a `CopySource`): a file staged from an existing object and
patched has the parts its writer did not touch copied server-side with UploadPartCopy, fenced
on the source's ETag, instead of sent; their CRC-64s are hashed from the staged bytes, so
Complete verifies the whole object as for sent parts. A source that changed (the conflict
check, or a 412) turns copying off for the session: the parts are sent.

An unread start (`unread`, an `UnreadStart`, journaled in the record): a file appended to
that never fetched the start of the object (fs/staging.py `fill`) has those parts copied
with no CRC-64 of their own; Complete checks the whole object against their CRC taken
together. They cannot be sent (`gone_below` covers them), so a source changed meanwhile
fails the commit instead. A resumed upload keeps the copies ListParts still shows.

Conflicts (last writer wins, said in SEMANTICS.md): a file opened from an existing version
(`base_etag`) is checked with one HEAD before it is committed; if the object changed or went
away meanwhile, a WARNING names the key and both ETags, and our version replaces it. With
`forbid_overwrite` (O_EXCL) OSS refuses instead and FileAlreadyExists is raised.

Concurrency: all session state is touched only on the trio thread between awaits. Journal
saves are serialized by `_save_lock` and each saves a snapshot built inside the lock, so the
file on disk never goes backwards. A file that is committed again (a failed commit, or one
written to while it ran) gets a new session while the old one's saver may still be running:
the caller passes every session of one file the same lock, and a closed session saves
nothing, so a stale record never replaces the new one (nor do two saves share the temp file).
A confirmed part does not wait for its own save: it is recorded in memory and one saver
task (`_save_parts`, at most one per session, on the nursery the part was sent from) saves
until no recorded part is left unsaved, so one save (two fsyncs and a rename) covers every
part confirmed meanwhile and the next part goes out at once (per-part saves under I/O load
serialized the upload: 128 saves of ~20 ms for a 1 GiB file).
`drain` waits for the saver too, so `finish` seals after every recorded part is saved.
`_init_lock` makes sure one upload id is started per file.
A part upload whose part was invalidated while in flight is discarded (generation check).

Pieces (`UploadSession.pieces`, write/pieces.py): when a read cache adopts the commit, each
part's send also takes the CRC-64s of the part cut at that cache's part boundaries, kept with
the `PartRecord` that send produced (in memory only: a resumed part has none, and its file is
hashed at adoption as before), and `finish` returns them in `CommitResult.pieces`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import trio

from ..cache.pages import let_go
from ..crc64 import combine
from ..oss._errors import NoSuchKey, PreconditionFailed
from ..oss._writes import (
    ExistsAfterRetry,
    FileAlreadyExists,
    FileRange,
    Headed,
    NoSuchUpload,
    PartResult,
    StagingError,
)
from .boot import current_boot_id
from .commit_types import CommitResult, CopySource, StagedFile, UnreadStart
from .journal import JournalRecord, PartRecord, WriteState, object_meta, save_atomic
from .pieces import PieceBook, hash_part

if TYPE_CHECKING:
    from .uploader import Uploader

__all__ = ["UploadSession"]

log = logging.getLogger(__name__)


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first failure of a part nursery, so callers see a typed error (naming the key)
    rather than a group; a group of only cancellations stays a group."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            inner = _first_error(exc)
            if inner is not exc:
                return inner
        elif not isinstance(exc, trio.Cancelled):
            return exc
    return group


class UploadSession:
    """One staged file's way to the server (see the module docstring)."""

    def __init__(
        self,
        uploader: Uploader,
        staged: StagedFile,
        record: JournalRecord,
        nursery: trio.Nursery | None,
        save_lock: trio.Lock | None = None,
    ) -> None:
        self._up = uploader
        self._writes = uploader.writes
        self.staged = staged
        self.record = record
        self._nursery = nursery
        self._ps = record.part_size
        self._parts: dict[int, PartRecord] = {p.number: p for p in record.parts}
        self._inflight: dict[int, int] = {}  # part number -> generation it was started at
        self._generation: dict[int, int] = {}
        self._changed = trio.Event()
        self._save_lock = save_lock or trio.Lock()
        self._unsaved = False  # a part was recorded since the saver's last snapshot
        self._journaled: set[int] = set()  # part numbers the saver has saved (for the log)
        self._saver_idle = trio.Event()
        self._saver_idle.set()
        self._init_lock = trio.Lock()
        self._completed: CommitResult | None = None  # found completed by `reconcile`
        self._resumed = False  # a previous process may have sent (some of) this file
        # An earlier commit of this file (a forbid-overwrite one that failed) may have stored
        # it: an existing object with our CRC-64 and size is then ours.
        self.may_exist = False
        self._ephemeral = False  # a small commit without journal (see UploadSettings)
        # Bytes [0, gone_below) of the staged file were sent and then punched out of it to
        # make room (fs/staging.py `_shed`): no part of them can be read, nor sent again.
        # Such a session keeps no journal (`forget_journal`): a resume would send zeros.
        self.gone_below = 0
        # (size, CRC-64) of the parts in that range, as OSS confirmed them when they were
        # sent: a later upload copies them server-side from the object they went into
        # (`_copy_part`) with the CRC-64 known instead of hashed from the staged bytes.
        self.gone_crcs: dict[int, tuple[int, int]] = {}
        self._fd = os.open(staged.data, os.O_RDONLY | os.O_CLOEXEC)
        # Set by the FUSE layer for a file staged from an existing object (see CopySource).
        self.copy_from: CopySource | None = None
        # The record's (set by the FUSE layer for a file whose start was never fetched, see
        # UnreadStart, and journaled with it); `gone_below` then covers it too.
        self.unread: UnreadStart | None = record.unread
        if record.unread is not None:
            self.gone_below = record.unread.below
        # Its `cache_part_size` is set by the FUSE layer when a read cache adopts the commit:
        # each part's CRC is then also taken in that cache's parts (write/pieces.py).
        self.pieces = PieceBook()
        # The x-oss-meta-* the object was created with (by the Initiate or the PutObject):
        # all the metadata it carries, for a later copy that must send them again. None
        # while this session has sent none: a resumed upload's Initiate was another
        # session's (an earlier try's, a previous process's), whose headers are unknown.
        self.sent_meta: dict[str, str] | None = None
        # Headers of the version this file replaces, kept by the new one (`_meta`); None
        # until the first conflict check learns them, unless the FUSE layer knew them.
        self.carried: dict[str, str] | None = None

    @property
    def key(self) -> str:
        return self.record.key

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # -- background parts -------------------------------------------------------------------

    def part_ready(self, index: int) -> None:
        """Part `index` (bytes [index*part_size, (index+1)*part_size)) is written for good:
        upload it in the background, read from the staging file (above 10000 parts: nothing,
        finish refuses the size). Failures here are only logged; `finish` sends again."""
        number = index + 1
        if number in self._parts or number in self._inflight or number > 10000:
            return
        if self._nursery is None:
            raise RuntimeError("part_ready needs a session opened with a nursery")
        self._inflight[number] = self._generation.get(number, 0)
        self._nursery.start_soon(self._background_part, number)

    def invalidate(self, index: int) -> None:
        """Bytes of part `index` changed after it was handed over: it must be sent again."""
        number = index + 1
        self._generation[number] = self._generation.get(number, 0) + 1
        self._parts.pop(number, None)

    async def _background_part(self, number: int) -> None:
        assert self._nursery is not None
        try:
            await self._send_part(number, self._ps, self._inflight[number], self._nursery)
            self._release_pages(number)
        except Exception as exc:  # never take the caller's (FUSE) nursery down
            log.warning("oss://%s/%s: early upload of part %d failed (%s); it will be sent "
                        "again at commit", self._writes.bucket, self.key, number, exc)  # fmt: skip
        finally:
            del self._inflight[number]
            self._changed.set()
            self._changed = trio.Event()

    def _release_pages(self, number: int) -> None:
        """Part `number` of a sequential writer is on OSS: start writing its pages to disk,
        and let the page cache drop those of the parts sent two or more before it (clean by
        now, so nothing is lost: POSIX_FADV_DONTNEED drops clean pages only and only starts
        writeback of dirty ones). A big copy then keeps a few parts in memory instead of the
        whole file, and its next writes reuse the pages just freed. On a VM where a page the
        guest has not touched lately costs a host fault (this 2-vCPU one, 2026-12-06), a 1 GiB
        cp into a mount went from 374 [330..393] to 496 [488..498] MB/s and daemon CPU from
        1.78 to 1.09 s/GiB (`bench/bench_write_mount.py --src <before> --src . --size-mib
        1024 --repeat 3 --only big`). Reads of the file while it is written, and its adoption
        into the read cache after close, read those parts from disk instead."""
        ps = self._ps
        if self._fd < 0:
            return  # closed meanwhile: its number may be another file's now
        let_go(self._fd, (number - 1) * ps, ps)
        if number > 2:
            let_go(self._fd, 0, (number - 2) * ps)

    def confirmed(self, number: int) -> tuple[int, int] | None:
        """(size, CRC-64) of part `number` (1-based) if OSS confirmed it in this upload."""
        part = self._parts.get(number)
        return None if part is None else (part.size, part.crc64)

    def in_flight(self) -> trio.Event | None:
        """Set when the next background part ends; None if none is being sent."""
        return self._changed if self._inflight else None

    def forget_journal(self) -> None:
        """Keep no journal from now on, and remove the one kept so far: bytes this session
        sent left the disk (`gone_below`), so no later process can resume it (its commit
        is then the close's own: nothing was acknowledged before it). A save already being
        written may still land: its record is not sealed (a sealed session is not shed)."""
        self.stop_journal()
        self.staged.journal.unlink(missing_ok=True)

    def stop_journal(self) -> None:
        """Save no record from now on (the caller, holding `save_lock`, removes the journal:
        fs/staged.py `disown`). A part confirmed later would otherwise write the journal
        again, and a sealed one would bring the file back after a crash."""
        self._ephemeral = True

    def fetched_unread(self) -> None:
        """The unread start is in the staged file now (fetched, its CRC-64 checked): parts
        copied from it with no CRC of their own are copied again, hashed from those bytes,
        and the parts there the writer changes next are sent."""
        copied = self._unread_parts()
        if self.unread is None:
            return
        self.unread = None
        self.record = replace(self.record, unread=None)
        self.gone_below = 0
        for index in range(copied):  # in flight too: they land as stale
            self.invalidate(index)

    def _readable(self, start: int, length: int) -> None:
        """Bytes [start, start + length) are to be read from the staged file and sent:
        StagingError if some of them left it (`gone_below`), rather than send the zeros
        a punched range reads as."""
        if length > 0 and start < self.gone_below:
            raise StagingError(
                f"oss://{self._writes.bucket}/{self.key}: bytes from {start} were sent and "
                f"then removed from the staging disk to make room; the upload that held "
                f"them is gone, so the file cannot be committed"
            )

    async def drain(self) -> None:
        """Wait until no part is being sent in the background and every recorded part is
        journaled (fsync and finish need it)."""
        while self._inflight:
            await self._changed.wait()
        await self._saver_idle.wait()

    def _unread_parts(self) -> int:
        """How many parts, from the first, lie in the unread start: copies only."""
        return 0 if self.unread is None else self.unread.below // self._ps

    async def _send_part(
        self, number: int, length: int, generation: int, nursery: trio.Nursery
    ) -> None:
        limiter = self._up.copy_limiter if number <= self._unread_parts() else self._up.limiter
        async with limiter:
            upload_id = await self._ensure_upload()
            start = (number - 1) * self._ps
            cuts = self.pieces.cuts(start, length)
            result = await self._copy_part(upload_id, number, length, cuts)
            if result is None:
                self._readable(start, length)
                src = FileRange(self._fd, start, length)
                result = await self._writes.upload_part(self.key, upload_id, number, src, cuts=cuts)
        if self._generation.get(number, 0) != generation or upload_id != self.record.upload_id:
            return  # the part changed (or the upload was replaced) while it was in flight
        self._parts[number] = PartRecord(number, result.size, result.crc64, result.etag)
        self.pieces.keep(self._parts[number], start, result.pieces)
        self._unsaved = True
        if self._saver_idle.is_set():
            self._saver_idle = trio.Event()
            nursery.start_soon(self._save_parts)

    async def _save_parts(self) -> None:
        """Journal recorded parts until none is left unsaved (see the module docstring). A
        failed save is only logged: those parts are re-sent after a crash, and the commit's
        own saves (which raise) come next."""
        try:
            while self._unsaved:
                self._unsaved = False
                numbers = set(self._parts)
                await self._save()
                for number in sorted(numbers - self._journaled):  # once journaled, not before
                    log.debug("oss://%s/%s: part %d recorded", self._writes.bucket, self.key,
                              number)  # fmt: skip
                self._journaled = numbers
        except Exception as exc:  # never take the caller's (FUSE) nursery down
            log.warning("oss://%s/%s: journaling uploaded parts failed (%s)",
                        self._writes.bucket, self.key, exc)  # fmt: skip
        finally:
            self._saver_idle.set()

    async def _copy_part(
        self, upload_id: str, number: int, length: int, cuts: tuple[int, ...]
    ) -> PartResult | None:
        """An unchanged part of the object the file was staged from, copied server-side
        (UploadPartCopy fenced on its ETag) instead of sent; None: send it. Its CRC-64 is
        that of the staged bytes, so Complete's check still covers it (its pieces, cut at
        `cuts`, come from the same pass); of a part that left the disk (`gone_below`), the
        one OSS confirmed when it was sent (`gone_crcs`)."""
        start = (number - 1) * self._ps
        if self.unread is not None and start + length <= self.unread.below:
            return await self._copy_unread(upload_id, number, start, length)
        source = self.copy_from
        if source is None or start + length > source.size or not source.clean(number - 1):
            return None
        known = self.gone_crcs.get(number) if start < self.gone_below else None
        found: tuple[int, ...] = ()
        if known is not None and known[0] == length:
            crc = known[1]
        else:
            self._readable(start, length)  # its CRC-64 is taken from the staged bytes
            crc, found = await trio.to_thread.run_sync(hash_part, self._fd, start, length, cuts)
        if not source.clean(number - 1):
            return None  # written while it was hashed
        try:
            copied = await self._writes.upload_part_copy(
                self.key, upload_id, number, source.key, (start, start + length),
                expected_crc=crc, if_match=source.etag,
            )  # fmt: skip
            return replace(copied, pieces=found if copied.crc64 == crc else ())
        except (PreconditionFailed, NoSuchKey) as exc:
            log.info("oss://%s/%s changed on the server (%s); sending parts, not copying them",
                     self._writes.bucket, source.key, exc.code)  # fmt: skip
            self.copy_from = None
            return None

    async def _copy_unread(
        self, upload_id: str, number: int, start: int, length: int
    ) -> PartResult:
        """A part of the unread start, copied from the version that holds it; its CRC-64 is
        not known alone (the whole object's check at Complete covers it). It cannot be sent
        from here, so a version gone or changed on the server fails the commit."""
        unread = self.unread
        assert unread is not None
        try:
            return await self._writes.upload_part_copy(
                self.key, upload_id, number, unread.key, (start, start + length),
                expected_crc=None, if_match=unread.etag,
            )  # fmt: skip
        except (PreconditionFailed, NoSuchKey) as exc:
            raise self._unread_gone(exc.code) from exc

    def _unread_gone(self, why: str) -> StagingError:
        assert self.unread is not None
        return StagingError(
            f"oss://{self._writes.bucket}/{self.unread.key} changed on the server ({why}) "
            f"since it was opened to append, and its first {self.unread.below} bytes were "
            "never fetched: the file cannot be committed; the object on the server stays as "
            "it is"
        )

    async def _ensure_upload(self) -> str:
        async with self._init_lock:
            if self.record.upload_id:
                return self.record.upload_id
            rec = self.record
            if self.carried is None and rec.base_etag and not rec.forbid_overwrite:
                await self._head_base()  # the headers the new version keeps go with Initiate
            meta = self._meta()
            await trio.to_thread.run_sync(self._up.ledger.intend, rec.key)
            upload_id = await self._writes.initiate_multipart(
                rec.key, meta=meta, forbid_overwrite=rec.forbid_overwrite
            )
            await trio.to_thread.run_sync(self._up.ledger.add, upload_id, rec.key)
            self.record = replace(self.record, state=WriteState.UPLOADING, upload_id=upload_id)
            await self._save()
            return upload_id

    async def _save(self, **changes: object) -> None:
        async with self._save_lock:
            if self._fd < 0:
                return  # closed: the file's next session owns the journal now
            # One copy (each validates the whole record: ~25 us, twice per small file)
            rec = self.record.with_parts(self._parts, **changes)
            self.record = rec
            if not self._ephemeral:
                # Unsynced when no record of this session can outlive a power loss as good:
                # before the seal a record is never resumed from, after it names the boot.
                durable = self._up.settings.fsync_staged or self._resumed
                await trio.to_thread.run_sync(
                    lambda: save_atomic(self.staged.journal, rec, fsync=durable)
                )

    # -- resume -----------------------------------------------------------------------------

    async def reconcile(self) -> None:
        """Keep only journaled parts that both the staged bytes and the server still match."""
        self._resumed = True
        if not self.record.upload_id:
            return
        try:
            listed = await self._writes.list_parts(self.key, self.record.upload_id)
        except NoSuchUpload:
            self._completed = await self._completed_already()
            if self._completed is not None:
                return  # we died between Complete and recording it
            log.warning("oss://%s/%s: upload %s is gone; starting the upload again",
                        self._writes.bucket, self.key, self.record.upload_id)  # fmt: skip
            self._parts.clear()
            await self._save(state=WriteState.DIRTY, upload_id="")
            return
        server = {p.number: p for p in listed}
        for number, part in list(self._parts.items()):
            theirs = server.get(number)
            if number <= self._unread_parts():
                # Copied from the unread start: no bytes here to check, no CRC of its own
                # (Complete checks the whole object); kept while the server has it.
                if theirs is None or theirs.etag.strip('"') != part.etag.strip('"'):
                    del self._parts[number]
                continue
            try:
                start = (number - 1) * self._ps
                local, _ = await trio.to_thread.run_sync(hash_part, self._fd, start, part.size)
            except (OSError, EOFError):
                local = None
            if (
                theirs is None
                or theirs.etag.strip('"') != part.etag.strip('"')
                or theirs.crc64 not in (None, part.crc64)
                or local != part.crc64
            ):
                log.info("oss://%s/%s: part %d will be sent again", self._writes.bucket,
                         self.key, number)  # fmt: skip
                del self._parts[number]
        await self._save()

    async def overtaken(self) -> bool:
        """Resumed: whether the object was replaced after this file was sealed, so the newer
        version stays (last writer wins, in time) and this copy is not uploaded over it. A
        version is newer when its Last-Modified is after the seal (`sealed_ns`, the close's
        or the re-keying rename's time; in older records `ctime_ns`, which a utimens sets
        back) and it is not the version this file replaced (`base_etag`): another client's,
        or this name written anew by a mount that could not upload this file (its recovery
        failed). Our own PutObject that landed unacknowledged before the crash counts too:
        the object is this file's bytes then, and nothing is lost."""
        rec = self.record
        sealed = rec.sealed_ns if rec.sealed_ns is not None else rec.ctime_ns
        if self._completed is not None or not sealed:
            return False
        try:
            meta = await self._writes.client.head(self.key)
        except NoSuchKey:
            return False
        if meta.etag.strip('"') == rec.base_etag.strip('"') or meta.mtime_ns <= sealed:
            return False
        log.warning("oss://%s/%s changed on the server (ETag %s) after this file was closed; "
                    "the newer version stays and the staged copy %s is not uploaded",
                    self._writes.bucket, self.key, meta.etag, self.staged.data)  # fmt: skip
        return True

    async def _completed_already(self) -> CommitResult | None:
        """The object, if it is exactly what completing our recorded parts made: every part
        of `size` recorded and the object's CRC-64 equal to their combination."""
        size, ps = self.record.size, self._ps
        count = max(1, -(-size // ps))
        if sorted(self._parts) != list(range(1, count + 1)):
            return None
        expected = self._whole_crc([self._parts[n] for n in range(1, count + 1)])
        try:
            meta = await self._writes.client.head(self.key)
        except NoSuchKey:
            return None
        if meta.crc64 != expected or meta.size != size:
            return None
        log.info("oss://%s/%s: upload %s had been completed", self._writes.bucket, self.key,
                 self.record.upload_id)  # fmt: skip
        return CommitResult(self.key, meta.etag, expected, size, count)

    # -- commit -----------------------------------------------------------------------------

    async def finish(
        self,
        size: int,
        *,
        mtime_ns: int | None = None,
        atime_ns: int | None = None,
        ctime_ns: int | None = None,
        sealed: bool = False,
    ) -> CommitResult:
        """Commit `size` staged bytes; returns once the object is on OSS and verified. The
        times given replace the record's (those of a multipart upload initiated already
        are fixed: fs/staging.py stores them after). `sealed`: the bytes, and a sealed record
        of this key and size, are durable already (a write-back close sealed them, and
        nothing changed them since): neither is written again before the upload (two fsyncs
        and a save_atomic per file; a crash meanwhile resumes from that seal)."""
        await self.drain()
        # Bytes that left the disk (a shed file) can never be resumed; an unread start can.
        self._ephemeral = (self.gone_below > 0 and self.unread is None) or (
            not self._up.settings.journal_small_puts
            and size <= self._up.settings.single_put_max
            and not self.record.upload_id
            and not self.staged.journal.exists()
        )
        self._check_size(size)
        # Durable before recorded, or (see UploadSettings.fsync_staged) recorded as this
        # boot's. A resumed file is fsynced: its first seal may have been acknowledged.
        boot = "" if self._up.settings.fsync_staged or self._resumed else current_boot_id()
        if not (self._ephemeral or boot or sealed):
            await trio.to_thread.run_sync(os.fsync, self._fd)
        changes = _seal_changes(size, boot, mtime_ns=mtime_ns, atime_ns=atime_ns,
                                ctime_ns=ctime_ns)  # fmt: skip
        if sealed:
            self.record = replace(self.record, **changes)  # type: ignore[arg-type]
        else:
            await self._save(**changes)
        if self._completed is not None and self._completed.size == size:
            result = self._completed
        else:
            result = await self._upload_all(size)
        if not self._ephemeral:  # else nobody reads the record again: the session ends
            await self._save(
                state=WriteState.COMMITTED,
                upload_id="",
                parts=(),
                result_etag=result.etag or "-",
                result_crc64=result.crc64,
            )
        self._parts.clear()
        self.pieces.clear()
        return result

    def _check_size(self, size: int) -> None:
        held = os.fstat(self._fd).st_size
        if held < size:
            raise StagingError(
                f"oss://{self._writes.bucket}/{self.key}: staged file {self.staged.data} holds "
                f"{held} bytes, {size} expected"
            )

    def sealing(self, size: int, **attrs: object) -> JournalRecord:
        """A write-back close of a file whose parts went early (fs/writeback.py): the sealed
        record of `size` bytes with `attrs` (mode, owner, times: what the close knows), for
        the caller to write, once it fsynced the staged bytes, holding the journal's lock
        (`save_lock`: no save of this session runs meanwhile). From now on every save of
        the session keeps the seal; `finish(sealed=True)` later uploads the rest. A failed
        write is undone by `unseal`."""
        self._check_size(size)
        changes = _seal_changes(size, "", **attrs)  # acknowledged: never a boot's seal
        self.record = self.record.with_parts(self._parts, **changes)
        return self.record

    def unseal(self) -> None:
        """The seal `sealing` returned was not written: no later save may claim it."""
        self.record = replace(self.record, sealed=False)

    async def _upload_all(self, size: int) -> CommitResult:
        landed = await self._check_conflict(size)
        if landed is not None:
            rec = self.record
            if rec.upload_id:  # one this commit began (early parts): nobody completes it
                await self._writes.abort_multipart(rec.key, rec.upload_id)
                self._up.ledger.active.discard(rec.upload_id)
            return landed
        try:
            if size <= self._up.settings.single_put_max and self.unread is None:
                result = await self._put_whole(size)
            else:
                result = await self._multipart_or_ours(size)
        except NoSuchUpload:
            log.warning("oss://%s/%s: upload vanished mid-way; sending everything again",
                        self._writes.bucket, self.key)  # fmt: skip
            self._parts.clear()
            await self._save(state=WriteState.DIRTY, upload_id="")
            result = await self._multipart_or_ours(size)
        return result

    async def _multipart_or_ours(self, size: int) -> CommitResult:
        """`_multipart`, where a forbid-overwrite file that an earlier life of it may have
        stored (an earlier commit whose completion landed unseen, a crash) takes an existing
        object with its CRC-64 and size for its own: OSS refuses the Initiate (or the
        Complete) with FileAlreadyExists then. The upload this commit began is aborted."""
        try:
            return await self._multipart(size)
        except FileAlreadyExists as exc:
            if not (isinstance(exc, ExistsAfterRetry) or self._resumed or self.may_exist):
                raise
            rec = self.record
            if rec.upload_id:
                await self._writes.abort_multipart(rec.key, rec.upload_id)
                self._up.ledger.active.discard(rec.upload_id)
            put = await self._writes.confirm_existing(rec.key, FileRange(self._fd, 0, size), size)
            log.info("oss://%s/%s: an earlier commit of this file stored it (CRC-64 %d)",
                     self._writes.bucket, rec.key, put.crc64)  # fmt: skip
            return CommitResult(rec.key, put.etag, put.crc64, size, 0)

    async def abandon(self) -> None:
        """This session will never commit (its commit failed and the next one starts a new
        session, or the file was dropped): abort its multipart upload now, so its parts are
        not kept until the next mount's sweep. Only logs: an upload that completed after all
        is already gone (NoSuchUpload counts as aborted)."""
        await self.drain()
        if self.record.upload_id:
            await self._up.abort(self.key, self.record.upload_id)

    def progress(self) -> JournalRecord:
        """The record with every part confirmed so far (some maybe not journaled yet): what
        a later session resumes from (`reconcile` checks each part with the server)."""
        return self.record.with_parts(self._parts)

    def _meta(self) -> dict[str, str]:
        """The headers the object is created with: those of the version it replaces that
        ossfs keeps too (user metadata, content headers, its x-oss-meta-atime unless ours
        has one; not the old x-oss-meta-mtime, the bytes are new, nor -ctime, each commit
        sends its own), then ours (write/journal.py `object_meta`, which win). Our mode
        does not when it is only a default (`keep_mode`: nobody chmod'ed or created the
        file with one) and the replaced version has one: ossfs's open(O_TRUNC) and `cp`
        over a file keep the old mode too (src/s3fs.cpp s3fs_open keeps the HEAD's meta)."""
        carried = {k: v for k, v in (self.carried or {}).items() if k != "x-oss-meta-mtime"}
        ours = object_meta(self.record)
        if self.record.keep_mode and "x-oss-meta-mode" in carried:
            del ours["x-oss-meta-mode"]
        sent = self.sent_meta = {**carried, **ours}
        return sent

    async def _head_base(self) -> Headed | None:
        """HEAD the object this file replaces: what it is now (None if gone), and the headers
        the new version keeps, learnt the first time."""
        try:
            now = await self._writes.object_headers(self.key)
        except NoSuchKey:
            now = None
        if self.carried is None:
            self.carried = {} if now is None else now.kept
        return now

    async def _check_conflict(self, size: int) -> CommitResult | None:
        """A file opened from an existing version: warn if the object changed since (last
        writer wins), with one HEAD that also learns the headers the new version keeps. A
        file with an unread start cannot be committed over another version: unless that
        version is this very file (an earlier life of this commit completed it, and a crash
        kept the journal from saying so), which is returned as done."""
        base = self.record.base_etag
        if not base or self.record.forbid_overwrite:
            return None
        now = await self._head_base()
        etag = "(deleted)" if now is None else now.etag
        if etag != base and self.unread is not None:
            ours = None if now is None else await self._landed_as_ours(size, now)
            if ours is not None:
                return ours
            raise self._unread_gone(f"ETag {etag}, opened at {base}")
        if etag != base:
            self.copy_from = None  # its parts are not ours to copy any more
            log.warning(
                "oss://%s/%s changed on the server since it was opened for writing (ETag %s, "
                "opened at %s); our version replaces it (last writer wins)",
                self._writes.bucket, self.key, etag, base,
            )  # fmt: skip
        return None

    async def _landed_as_ours(self, size: int, now: Headed) -> CommitResult | None:
        """The object `now` (the conflict check's HEAD), if it holds exactly this file: its
        size, and the CRC-64 of the unread start combined with that of the staged bytes
        after it."""
        unread = self.unread
        assert unread is not None
        if now.size != size or now.crc64 is None:
            return None
        tail, _ = await trio.to_thread.run_sync(
            hash_part, self._fd, unread.below, size - unread.below
        )
        if now.crc64 != combine(unread.crc, tail, size - unread.below):
            return None
        log.info("oss://%s/%s: this file had been committed already (CRC-64 %016x)",
                 self._writes.bucket, self.key, now.crc64)  # fmt: skip
        return CommitResult(self.key, now.etag, now.crc64, size, -(-size // self._ps))

    async def _put_whole(self, size: int) -> CommitResult:
        rec = self.record
        self._readable(0, size)
        if rec.upload_id:  # parts went early but the file shrank: one PUT is simpler
            await self._writes.abort_multipart(rec.key, rec.upload_id)
            self._up.ledger.active.discard(rec.upload_id)
            self._parts.clear()
            await self._save(state=WriteState.DIRTY, upload_id="")
        rec = self.record
        meta = self._meta()
        put = await self._writes.put_object(
            rec.key,
            FileRange(self._fd, 0, size),
            meta=meta,
            forbid_overwrite=rec.forbid_overwrite,
            may_exist_from_before=self._resumed or self.may_exist,
            cuts=self.pieces.cuts(0, size),
        )
        whole = PartRecord(1, size, put.crc64, put.etag)
        self.pieces.keep(whole, 0, put.pieces)
        found = self.pieces.collect({1: whole}, max(size, 1), size)
        return CommitResult(rec.key, put.etag, put.crc64, size, 0, found)

    async def _multipart(self, size: int) -> CommitResult:
        ps = self._ps
        count = -(-size // ps)
        if count > 10000:
            raise StagingError(
                f"oss://{self._writes.bucket}/{self.key}: {size} bytes need {count} parts of "
                f"{ps}, over OSS's 10000"
            )
        for number, part in list(self._parts.items()):
            want = min(ps, size - (number - 1) * ps)
            if number > count or part.size != want:
                del self._parts[number]  # truncated away, or the old short last part
        await self._ensure_upload()
        missing = [n for n in range(1, count + 1) if n not in self._parts]
        copied = self._unread_parts()  # parts 1..copied are copies of the unread start
        copies = iter([n for n in missing if n <= copied])
        sends = iter([n for n in missing if n > copied])

        async def worker(numbers: Iterator[int], nursery: trio.Nursery) -> None:
            # Workers share one iterator, so parts start in ascending order (the journal then
            # fills from the front, and a resumed upload has few holes).
            for number in numbers:
                length = min(ps, size - (number - 1) * ps)
                await self._send_part(number, length, self._generation.get(number, 0), nursery)

        settings = self._up.settings
        try:
            async with trio.open_nursery() as nursery:
                for _ in range(settings.parallel):
                    nursery.start_soon(worker, sends, nursery)
                for _ in range(min(settings.copy_parallel, copied)):  # see UploadSettings
                    nursery.start_soon(worker, copies, nursery)
        except BaseExceptionGroup as group:
            raise _first_error(group) from None
        lost = [n for n in range(1, count + 1) if n not in self._parts]
        if lost:  # invalidated while being sent: send those again
            return await self._multipart(size)
        parts = [PartResult(p.number, p.etag, p.size, p.crc64) for p in self._parts.values()]
        rec = self.record
        done = await self._writes.complete_multipart(
            rec.key, rec.upload_id, parts, forbid_overwrite=rec.forbid_overwrite,
            expected_crc=self._expected_crc(parts),
        )  # fmt: skip
        self._up.ledger.active.discard(rec.upload_id)
        found = self.pieces.collect(self._parts, ps, size)
        return CommitResult(rec.key, done.etag, done.crc64, size, count, found)

    def _expected_crc(self, parts: Sequence[PartResult | PartRecord]) -> int | None:
        """What Complete must be checked against when part of the object is an unread start
        (`_whole_crc`); None: the parts' own CRCs, which complete_multipart combines."""
        return None if self.unread is None else self._whole_crc(parts)

    def _whole_crc(self, parts: Sequence[PartResult | PartRecord]) -> int:
        """The CRC-64 of the object `parts` (all of them, in any order) make: an unread
        start's, taken whole, then the parts after it; else every part's, combined."""
        expected = 0 if self.unread is None else self.unread.crc
        for part in sorted(parts, key=lambda p: p.number)[self._unread_parts() :]:
            expected = combine(expected, part.crc64, part.size)
        return expected


def _seal_changes(size: int, boot: str, **attrs: object) -> dict[str, object]:
    """What sealing a record changes: the size, the seal and the boot it holds for
    (write/boot.py), and the attributes given (None: the record's stay)."""
    changes: dict[str, object] = {"size": size, "sealed": True, "boot_id": boot,
                                  "sealed_ns": time.time_ns()}  # fmt: skip
    changes.update((name, value) for name, value in attrs.items() if value is not None)
    return changes
