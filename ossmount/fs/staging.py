"""Files open for writing (`-o rw`): the staging file, its upload session, and the commit.

One `Staged` per inode being written, shared by every handle open on it. Its bytes live in a
staging file under `<cache dir>/staging/` (a sibling of the read cache's bucket directory, so
the read cache's scan never sees it), and the write engine (`ossmount.write`) commits them:
one PutObject when small, else a multipart upload whose full parts a sequential writer has
already sent while it kept writing (`UploadSession.part_ready`), so closing a big file does
not start a big upload. `commit` (FUSE flush on close, and fsync) returns only once the
object is on OSS with its CRC-64 verified, or raises: `cp` then exits non-zero.

Durability: the engine fsyncs the staging file and journals the upload beside it (the
journal is only written once a multipart upload starts or a commit seals the file, see
`UploadSettings.journal_small_puts`: a small file whose close waits for its PutObject needs
no journal, because nobody was told it was stored until it was). At mount start, before the
mount is ready, fs/recovery.py finishes what a previous process left. A file bigger than the
room the cache has gives back the room of the parts OSS confirmed (`_shed`); it then keeps
no journal, since those bytes could not be sent again. A big existing object written into is
staged from its last part only (`fill`): its start stays unread, is copied server-side and
checked through the whole object's CRC-64, and is fetched before anything changes it
(`fetch_unread`); its journal names the object version to copy that start from, so a
crash resumes it as any other.

Concurrency: trio, one thread. `by_inode` / `by_path` and every `Staged` field change only in
synchronous code. `Staged.lock` serializes commits of one file; unlink, rename and a
handle-less truncate take it too (`settle`, a commit), so an upload already running lands
before they act and none lands after they orphaned the file. Writes during a commit go on
(the file is then dirty again and the next flush sends it again; a commit whose read came up
short or whose CRC-64 no longer matched is made again at once) but start no early part.
Every session of one file journals under `Staged.journal_lock`, and a closed one not at all,
so the journal never goes back to an older session's record. Idle work (`_when_idle`: the
adoption of one-part files, spare staging files) runs on the trio thread too, one
synchronous step each time every other task waits (`trio.testing.wait_all_tasks_blocked`:
the run loop's own idle signal, public though it lives in trio.testing); a file queued for
adoption is out of the maps already, so no request touches it, and an open of its key
adopts it first (`adopt_now`).
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import math
import os
import time
import weakref
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import trio
import trio.testing

from ossmount.cache.adopt import Adopter
from ossmount.cache.holes import punch_hole, reserve
from ossmount.crc64 import prefix_crc
from ossmount.fs import unread
from ossmount.fs.attrstore import KnownMeta, store_attrs
from ossmount.fs.owedattrs import OWED_DELAY_S, OwedAttrs
from ossmount.fs.shown import Posix, ShownAttrs, adopt_sent
from ossmount.fs.staged import Staged, Unread, disown
from ossmount.fs.stagedspace import StagedSpace
from ossmount.fs.stamps import now_s, only_ctime_differs
from ossmount.fs.unread import ObjectReaderLike, ReaderWithClose
from ossmount.fs.writeback import WriteBack
from ossmount.oss._errors import is_retryable
from ossmount.oss._write_types import CrcMismatch, StagingError, posix_meta
from ossmount.oss.models import ObjectMeta
from ossmount.tree.inodes import InodeTable
from ossmount.write import (
    CopySource,
    StagedFile,
    UnreadStart,
    Uploader,
    UploadSession,
)
from ossmount.write.commit_types import Piece
from ossmount.write.journal import JournalRecord
from ossmount.write.owedlog import STAGED

__all__ = ["NoRoomYet", "Staging"]

log = logging.getLogger(__name__)

# What a write-back close seals into the record of an upload under way: what the file has
# now (a chmod or utimens since its first part went), for an upload started afresh.
_SEALED_ATTRS = ("mtime_ns", "atime_ns", "ctime_ns", "mode", "keep_mode", "uid", "gid")
# Blocks are reserved ahead of a sequential writer once it passes RESERVE_FROM, in stretches
# as long as what it wrote so far, up to RESERVE_AHEAD (`Staging._reserve`).
RESERVE_FROM = 1 << 20
RESERVE_AHEAD = 64 << 20
# How long after a commit a writer waiting for room waits for that file's release
# (`Staging._room_coming`); the kernel's release follows a close's flush within
# milliseconds, so this only bounds the wait for a descriptor never closed.
RELEASE_GRACE_S = 5.0
# An empty staging file made ahead (`Staging.keep_spares`); fs/recovery.py removes those a
# killed process left.
SPARE = ".spare"
# Files of one part waiting for an idle loop to be adopted (`_when_idle`): past this,
# the oldest is adopted in the release, as before. Their bytes (up to 256 KiB each) are on
# disk and not counted in the cache's size meanwhile.
ONE_PART_QUEUE = 64


def _create(path: Path) -> int:
    """A new, empty file at `path`, open for reading and writing, ours alone."""
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)


class NoRoomYet(Exception):
    """A write found no room in the cache for now: parts of its file are being sent, and
    each one OSS confirms can be punched out to make some (`Staging._shed`), or other files
    are being committed or released, each giving its room back as it lands
    (`Staging._room_coming`). The writer `wait`s, then writes again."""

    def __init__(self, sending: trio.Event, until: float = math.inf) -> None:
        super().__init__("waiting for parts being sent to make room")
        self.sending = sending
        self.until = until  # trio time after which the room is no longer expected

    async def wait(self) -> None:
        """Until `sending` is set or `until` has passed."""
        with trio.move_on_at(self.until):
            await self.sending.wait()


class _ChangedMeanwhile(Exception):
    """A commit failed because the file changed under it (a truncate shrank it while its
    bytes were read, or the final CRC-64 did not match bytes rewritten while they were
    sent): the commit is made again, of what the file holds now."""

    def __init__(self, error: StagingError | CrcMismatch) -> None:
        super().__init__(str(error))
        self.error = error


class Staging:
    """The staged files of one mount (see the module docstring)."""

    def __init__(
        self,
        uploader: Uploader,
        directory: Path,
        nursery: trio.Nursery,
        *,
        bucket: str,
        writeback: bool = False,
        writeback_parallel: int = 16,
        writeback_delay_s: float = 0.0,
        shown: ShownAttrs | None = None,
        attr_delay_s: float = OWED_DELAY_S,
    ) -> None:
        self.uploader = uploader
        self.writeback = writeback
        self._writeback = WriteBack(self, nursery, writeback_parallel, writeback_delay_s)
        self.seal_and_schedule = self._writeback.seal_and_schedule  # fs/writeback.py
        self.drain = self._writeback.drain
        self.rekey = self._writeback.rekey
        self.sync_names = self._writeback.sync_names
        self.held = self._writeback.held
        # Called with every object a commit put on OSS (the FileSystem records it in the
        # namespace); write-back commits finish after their close returned, so they need it.
        self.on_commit: Callable[[Staged, ObjectMeta], None] = lambda staged, meta: None
        self.on_outcome: Callable[[str], None] = lambda outcome: None  # metrics
        self.on_shed: Callable[[int], None] = lambda nbytes: None  # metrics (`_shed`)
        # The read cache shares the disk: when a staging write finds it full, idle cache
        # entries are evicted for it (CacheStore.make_room) before ENOSPC is the answer.
        # Staged files are not cache entries, so they are never evicted.
        self.make_room: Callable[[int], int] = lambda need: 0
        # The namespace's inode table (tree/inodes.py), wired by the FileSystem: a staged
        # file pins its entry from `start`/`restore` to `_drop`, so its number is never
        # reused while it is staged, not even once unlinked (an orphan whose upload still
        # runs) and forgotten by the kernel. One number, at most one Staged: a new file at
        # an orphan's path gets another number, as it would while the kernel held the old.
        self.pins: InodeTable | None = None
        # A write the cache has no room for waits while commits run or write-back uploads
        # are pending (`_room_coming`): each that ends may have given its file's room back.
        self._committing = 0
        self._room_event = trio.Event()  # set, and replaced, by `room_back`
        self.release_grace_s = RELEASE_GRACE_S
        # A committed file's last close hands its staged bytes to the read cache as the
        # verified entry of the new version (cache/adopt.py): reading it back costs no GET.
        self.adopter: Adopter | None = None
        # A file of one cache part is adopted once the loop is idle (`_hand_over`); larger ones
        # are hashed in the background (a close never waits for one), a few at a time in
        # worker threads; one cut short by unmount leaves files fs/recovery.py removes.
        self._adopting = trio.CapacityLimiter(4)
        # Work done once every other task waits (`_when_idle`: the next file's PutObject, in a
        # `tar x` of small files), not in the request a writer waits on: a one-part file's
        # adoption, not in its release, and the staging files `start` takes, made ahead
        # (`keep_spares`: on these VMs' ext4, which has no journal, a create after many
        # deletes costs up to 0.4 ms of system time, the allocator passing over every inode
        # freed in the last minutes; a cold mount follows the `rm -rf` of its cache dir).
        self._one_part: collections.deque[tuple[StagedFile, ObjectMeta]] = collections.deque()
        self._spares: list[tuple[Path, int]] = []  # empty `<hex>.spare` files, open
        self._spares_ahead = 0
        self._idle_work = trio.Event()
        self._one_part_done = trio.Event()  # set while the queue is empty (`adoptions_done`)
        self._one_part_done.set()
        nursery.start_soon(self._when_idle)
        # The key and the CRC-64s its last commit's upload took in the cache's parts (write/
        # pieces.py), which spare that hashing when the file has not changed since.
        self._pieces: weakref.WeakKeyDictionary[Staged, tuple[str, tuple[Piece, ...]]] = (
            weakref.WeakKeyDictionary()
        )
        # What the objects this mount just committed carry: chmod/utimens after the close
        # then skip the HEAD (fs/attrstore.py); what it learns is `shown` (fs/shown.py).
        self.known = KnownMeta(shown=shown)
        # chmod/chown/utimens of a file just written are owed and sent a moment later, in one
        # copy or in a rename's (fs/owedattrs.py).
        self.owed = OwedAttrs(uploader.writes, self.known, delay_s=attr_delay_s)
        nursery.start_soon(self.owed.run)
        # Staged bytes count against the cache cap and free-space floor (fs/stagedspace.py).
        self.space: StagedSpace | None = None
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._nursery = nursery
        self._bucket = bucket
        self.by_inode: dict[int, Staged] = {}
        self.by_path: dict[str, int] = {}

    def where(self, key: str) -> str:
        return f"oss://{self._bucket}/{key}"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(
        self, inode: int, path: str, key: str, *, base_etag: str = "", forbid: bool = False
    ) -> Staged:
        """A new, empty staging file for `key` (its first handle counted)."""
        data, fd = self._new_file()
        staged = Staged(inode, path, key, StagedFile.beside(data), fd, base_etag, forbid, handles=1)
        self._hold(staged)
        return staged

    def restore(self, inode: int, path: str, files: StagedFile, record: JournalRecord) -> Staged:
        """A file a previous process sealed, whose upload failed at this mount's start
        (fs/recovery.py): staged again as it was closed, with no handle, and unsent, as a
        write-back file whose upload failed (fs/writeback.py): shown, tried again in the
        background, committed before it changes or at its next last close, else left to
        the next mount. Its bytes are on disk already: counted, not made room for."""
        fd = os.open(files.data, os.O_RDWR | os.O_CLOEXEC)
        staged = Staged(
            inode, path, record.key, files, fd, record.base_etag, record.forbid_overwrite,
            size=record.size, seq_end=record.size, dirty=True, failed=True, unsent=True,
            mtime_ns=record.mtime_ns or None, atime_ns=record.atime_ns,
            ctime_ns=record.ctime_ns, mode=record.mode, keep_mode=record.keep_mode,
            uid=record.uid, gid=record.gid, may_exist=record.forbid_overwrite,
            resumable=record if record.upload_id else None,
            part_size=record.part_size,
            replaces=True,  # a rename may have re-keyed it onto an object (fs/writeback.py)
        )  # fmt: skip
        if (kept := record.unread) is not None:  # still in the object it names
            source = ObjectMeta(kept.key, kept.size, kept.etag, 0)
            staged.unread = Unread(kept.below, source, kept.crc)
        if self.space is not None:
            self.space.already(record.size - staged.unread_end)  # the unread start takes none
            staged.counted = record.size
        self._hold(staged)
        self._writeback.keep_trying(staged)
        return staged

    def _hold(self, staged: Staged) -> None:
        assert staged.inode not in self.by_inode, "one Staged per number (`pins`)"
        self.by_inode[staged.inode] = staged
        self.by_path[staged.path] = staged.inode
        if self.pins is not None:
            self.pins.pin(staged.inode)

    async def fill(
        self,
        staged: Staged,
        source: ObjectReaderLike,
        meta: ObjectMeta,
        *,
        append: bool,
        whole_crc: int | None = None,
    ) -> None:
        """Copy the current object (read through the verified read path) into the staging
        file: writing into an existing file works on the whole object. For an appender
        (O_APPEND) of an object of a whole part or more whose CRC-64 OSS states, only the
        last part is read: the start stays unread (`Staged.unread`, its CRC-64 solved from
        the whole object's and the tail's) until a write or truncate changes it, so
        appending a line to a big object costs a part, not the object. Not for other
        writers: they patch in place, and one whose object changed on the server meanwhile
        must still have its start (last writer wins), where an appender's commit fails.
        `whole_crc`: the object's CRC-64 if the caller knows it (a HEAD learns it else)."""
        size = staged.size = meta.size  # what stat shows meanwhile (an appender's offset)
        start, whole, headers = (
            await unread.start_of(self.uploader, meta, whole_crc) if append else unread.Start(0, 0)
        )
        if headers is not None:
            staged.carried = (meta.etag, headers)
        # The unread start takes no room: it is the file's hole (`_drop`, `fetch_unread`).
        staged.counted = start
        staged.unread = unread_start = Unread(start, meta) if start else None
        if start:  # copied in pieces of several parts, as few as make sense
            staged.part_size = unread.upload_part_size(start, self.uploader.settings)
        while True:
            try:
                self._count(staged, size)
                break
            except NoRoomYet as no_room:  # commits of other files give their room back
                await no_room.wait()
        tail = await unread.copy_in(staged, source, self.where(meta.key), start, size)
        if unread_start is not None:
            os.ftruncate(staged.fd, size)  # an object of whole parts: none of it was read
            unread_start.crc = prefix_crc(whole, tail, size - start)
            log.debug("%s: opened to append; its first %d bytes stay unread (CRC-64 %016x)",
                      self.where(staged.key), start, unread_start.crc)  # fmt: skip
        staged.seq_end = size
        staged.source = (staged.key, staged.base_etag, size)
        staged.dirty_parts = set()

    async def fetch_unread(
        self, staged: Staged, open_source: Callable[[ObjectMeta], ReaderWithClose]
    ) -> None:
        """fs/unread.py `fetch`, counted against this staging's room: it waits for room to
        come as a write does (a stress run: a patch of the start of a file appended to,
        whose own and other files' write-back uploads were pending, got ENOSPC at once)."""
        room = None if self.space is None else unread.Room(self._grow_waiting, self.space.shrink)
        await unread.fetch(staged, open_source, room, where=self.where,
                           durable=self.uploader.settings.fsync_staged)  # fmt: skip

    def moved(self, staged: Staged, path: str, meta: ObjectMeta) -> None:
        """The file was renamed (after a commit, so its bytes are the copy `meta`): later
        commits go to the new key, and what it has committed is the copy. A file dropped
        meanwhile (its last upload ended while the rename copied it) stays out of the maps."""
        staged.key, staged.base_etag = meta.key, meta.etag
        if staged.unread is not None:  # the copy holds the unread start now
            staged.unread.source = meta
        if not staged.dirty:
            staged.committed = meta
            staged.source = (meta.key, meta.etag, staged.size)
            staged.dirty_parts = set()
        else:
            staged.source = None  # the old key is gone: nothing left to copy from
        self.repath(staged, path)

    def repath(self, staged: Staged, path: str) -> None:
        """`staged` is shown at `path` from now on (renamed); a file dropped meanwhile stays
        out of the maps."""
        live = self._unmap_path(staged)
        staged.path = path
        if live:
            self.by_path[path] = staged.inode

    def _unmap_path(self, staged: Staged) -> bool:
        """`staged`'s path leaves `by_path` if the path still leads to it, and whether it
        was still staged (not dropped already). A file unlinked while its upload was pending
        lingers until that upload ends (held back under write-back, fs/writeback.py), and a
        file created meanwhile at its path is the one staged there, under another number
        (`pins`): the lingering file's drop must leave that name alone, else the new file's
        commits went to the old key after a rename (the random walk, seed 64)."""
        mine = self.holds(staged)
        if mine and self.by_path.get(staged.path) == staged.inode:
            del self.by_path[staged.path]
        return mine

    def attrs_set(self, staged: Staged) -> None:
        """A chmod, chown or utimens set the fields of `staged`, which ride in its commit
        (`carries_attrs`). A write-back close sealed the file already (or a failed upload
        kept its sealed journal), and a crash before its upload would upload the record
        sealed then: so they also go to the owed attributes' log (write/owedlog.py, under
        `STAGED` and this journal's name, apart from any debt of a version of the key), and
        the next mount lays them over that record before it uploads it (fs/recovery.py).
        A write to the page cache, as the log's other lines: saving the journal again (an
        fsync) cost `rsync -a` under write-back a quarter of its files/s (185 -> 135,
        session 20). Paid (`attrs_sealed`) when its commit lands, a rename saves the record
        with them, or the file goes with its journal (unlinked, replaced, dropped); kept
        when its journal is kept for the next mount (an unmount cut its upload short)."""
        owed_log = self.known.owed_log
        sealed = staged.pending or staged.unsent  # its journal is what a crash leaves
        if owed_log is None or not sealed or staged.orphan or staged.shed:
            return
        headers = posix_meta(mtime_ns=staged.mtime_ns, mode=None if staged.keep_mode else
                             staged.mode, uid=staged.uid, gid=staged.gid,
                             atime_ns=staged.atime_ns, ctime_ns=staged.ctime_ns)  # fmt: skip
        owed_log.owe(STAGED + staged.files.journal.name, staged.key, headers)

    def attrs_sealed(self, staged: Staged) -> None:
        """`staged`'s journal was saved with its fields, or left with it: what `attrs_set`
        logged is paid (a no-op if nothing was)."""
        if self.known.owed_log is not None:
            self.known.owed_log.paid(STAGED + staged.files.journal.name)

    @staticmethod
    def carries_attrs(staged: Staged) -> bool:
        """Whether mode and mtime set now go out with a commit still to come (or nowhere)."""
        return staged.dirty or staged.orphan

    def restored(self, staged: Staged, meta: ObjectMeta) -> None:
        """The object of a clean staged file was copied onto itself with new metadata
        (fs/attrstore.py): same bytes, maybe a new ETag, which later commits and the
        adoption must know."""
        staged.base_etag = meta.etag
        if staged.unread is not None:
            staged.unread.source = meta
        if staged.source is not None:
            staged.source = (meta.key, meta.etag, staged.size)
        if staged.committed is not None:
            staged.committed = meta

    @staticmethod
    async def settle(staged: Staged) -> None:
        """Wait until no commit of `staged` is running (a write-back upload, another handle's
        close): what it uploads has landed, and `staged.committed` says so, before the caller
        decides from it. Commits hold `staged.lock` throughout."""
        async with staged.lock:
            pass

    async def delete_object(self, key: str) -> None:
        """DeleteObject of `key` (an unlink's, an rmdir's marker), once a copy sending what
        it owed (fs/owedattrs.py) has landed, and with none starting meanwhile: a copy in
        flight otherwise lands after the delete and brings the object back (a stress run:
        an unlink 12 ms after the owed copy of the file began left it on OSS). The delete
        pays what it owed; a failed one gives the debt back (OwedAttrs.taken)."""
        async with self.owed.taken(key):
            await self.uploader.writes.delete_object(key)
        self.known.forget(key)

    async def disown(self, staged: Staged) -> None:
        """fs/staged.py `disown`: the journal of a file that lost its name goes, and with it
        what `attrs_set` logged for it."""
        await disown(staged)
        self.attrs_sealed(staged)

    async def quiesce(self, staged: Staged) -> None:
        """Before a write or truncate changes the staged bytes, what a write-back close
        acknowledged goes up as it was sealed: the upload pending for it lands first, and
        bytes whose upload failed (`unsent`) are committed now; if that fails again, so does
        the caller. Else the upload would send the changed bytes, and a crash would resume a
        sealed journal over bytes that are no longer the ones it sealed (torn, or of another
        size and never uploaded): the close's version would be lost. So a write to a file
        closed moments ago under write-back waits for its upload, as unlink, rename and
        truncate do. An upload held back (fs/writeback.py) starts at once."""
        if staged.pending:
            self._writeback.hurry(staged)
        while staged.pending:
            await staged.landed.wait()
        if staged.unsent:
            await self.commit(staged)

    async def quiesce_held(self, staged: Staged) -> None:
        """`quiesce` for a handle just counted: given back if the wait is cancelled."""
        try:
            await self.quiesce(staged)
        except BaseException:
            await self.release(staged)
            raise

    def unlinked(self, staged: Staged) -> None:
        staged.orphan = True
        self._unmap_path(staged)

    async def release(self, staged: Staged) -> None:
        """One handle closed; the last one commits what is still dirty and removes the file."""
        staged.handles -= 1
        if staged.handles > 0 or staged.pending:
            return  # a write-back commit still running drops it when done
        try:
            await self._last_release(staged)
        finally:
            self.room_back()  # its room may be free now (`_room_coming`)

    async def _last_release(self, staged: Staged) -> None:
        retry = staged.unsent or not staged.failed  # acknowledged bytes are tried again
        if staged.dirty and retry and not (staged.orphan or staged.broken):
            try:  # written but never flushed (no close reached us), or unsent: commit now
                await self.commit(staged)
            except Exception as exc:
                fate = ("kept staged for its next close or the next mount" if staged.unsent
                        else "dropped, the object is as it was")  # fmt: skip
                log.error("%s: the last close could not commit the file (%s); its staged bytes "
                          "are %s", self.where(staged.key), exc, fate)  # fmt: skip
        if staged.handles > 0 or (staged.unsent and not staged.orphan):
            return  # opened again while the commit ran, or kept until its upload succeeds
        if staged.dirty and not staged.orphan:
            log.warning("%s: dropping staged bytes whose commit failed (the writer got EIO)",
                        self.where(staged.key))  # fmt: skip
        elif self._adoptable(staged):
            self._hand_over(staged)
            return
        session, staged.session = staged.session, None
        self.attrs_sealed(staged)  # its files go: attributes logged for them are moot
        # Out of the maps before any await: a new open now starts afresh (in a new file).
        self._drop(staged, keep_files=session is not None)
        if session is not None:  # parts sent while it was written: never to be committed
            await _abandon(session, staged.files)

    def _adoptable(self, staged: Staged) -> bool:
        meta = staged.committed
        return (
            self.adopter is not None
            and meta is not None
            and meta.key == staged.key  # `moved` updates both
            and meta.etag == staged.base_etag
            and meta.size == staged.size
            and not (staged.dirty or staged.orphan or staged.failed or staged.broken)
            and staged.session is None
            and not staged.hole  # holes where the object has bytes
        )

    def _hand_over(self, staged: Staged) -> None:
        """An adoptable file's last user is gone: out of the maps before any await (a new
        open starts afresh), then its bytes go to the read cache. A file of one cache part
        is adopted from the CRC-64 its commit confirmed, as soon as the loop is idle:
        `_adoptable` guarantees no write, truncate or rename since that commit began, and
        out of the maps nothing writes to it, so the staged bytes are the confirmed ones
        (cache/adopt.py). Larger files are sealed in the background, from the CRC-64s their
        upload took if that commit was to this key (no rename since: the same guarantee),
        else hashed. Until its adoption an open of the key reads it from OSS, as one after
        an eviction does."""
        assert self.adopter is not None
        assert staged.committed is not None
        meta = staged.committed
        key, pieces = self._pieces.pop(staged, ("", ()))
        self._drop(staged, keep_files=True)
        if self.adopter.fits_one_part(meta):
            if len(self._one_part) >= ONE_PART_QUEUE:  # a loop busy for long: no pile-up
                self._adopt_one_part()
            self._one_part.append((staged.files, meta))
            self._idle_work.set()
            if self._one_part_done.is_set():
                self._one_part_done = trio.Event()
            return
        pieces = pieces if key == meta.key else ()
        self._nursery.start_soon(self._adopt, staged.files, meta, pieces)

    async def _when_idle(self) -> None:
        """Adopt the one-part files `_hand_over` queued, in order, then make the spares
        `keep_spares` asks for, one step each time every other task waits (on the kernel, on
        OSS). When the mount ends (cancelled): the files still queued adopted at once, so
        an unmount leaves none staged, and the spares removed."""
        try:
            while True:
                await self._idle_work.wait()
                self._idle_work = trio.Event()
                while self._one_part or len(self._spares) < self._spares_ahead:
                    await trio.testing.wait_all_tasks_blocked()
                    if self._one_part:  # (an open may have adopted them meanwhile: adopt_now)
                        self._adopt_one_part()
                    elif len(self._spares) < self._spares_ahead and not self._make_spare():
                        break  # tried again once `start` takes a file
        finally:
            while self._one_part:
                self._adopt_one_part()
            while self._spares:
                spare, fd = self._spares.pop()
                os.close(fd)
                spare.unlink(missing_ok=True)

    def keep_spares(self, count: int) -> None:
        """Keep `count` empty staging files made ahead, in idle moments (mount.py, once the
        recovery, which removes a dead process's spares, is done)."""
        self._spares_ahead = count
        self._idle_work.set()

    def _make_spare(self) -> bool:
        spare = self.directory / f"{os.urandom(16).hex()}{SPARE}"
        try:
            fd = _create(spare)
        except OSError as exc:  # `start` makes its own, and its writer gets the error
            log.debug("making a spare staging file in %s: %s", self.directory, exc)
            return False
        self._spares.append((spare, fd))
        return True

    def _new_file(self) -> tuple[Path, int]:
        """A new, empty `<hex>.data`, open: a spare renamed (no inode to allocate), else
        made now."""
        data = self.directory / f"{os.urandom(16).hex()}.data"
        if self._spares_ahead:
            self._idle_work.set()
        while self._spares:
            spare, fd = self._spares.pop()
            try:
                os.rename(spare, data)
            except OSError as exc:  # gone (not ours to find out why): one made now instead
                log.debug("spare staging file %s: %s", spare, exc)
                os.close(fd)
                continue
            return data, fd
        return data, _create(data)

    def _adopt_one_part(self) -> None:
        assert self.adopter is not None
        files, meta = self._one_part.popleft()
        self.adopter.adopt_known(files.data, meta)
        files.journal.unlink(missing_ok=True)  # write-back's, or none
        if not self._one_part:
            self._one_part_done.set()

    def adopt_now(self, key: str) -> None:
        """`key` is being opened: if its file waits for its adoption, that one and those
        queued before it are adopted now, so the open reads the cache, not OSS."""
        if any(meta.key == key for _, meta in self._one_part):
            while self._one_part:
                last = self._one_part[0][1].key == key
                self._adopt_one_part()
                if last:
                    return

    async def adoptions_done(self) -> None:
        """Until the one-part files handed over so far are in the read cache."""
        await self._one_part_done.wait()

    async def _adopt(
        self, files: StagedFile, meta: ObjectMeta, pieces: tuple[Piece, ...] = ()
    ) -> None:
        """The last user of a committed, unchanged file is gone (and it is out of the maps):
        its bytes become the read cache's verified entry of `meta` (cache/adopt.py), or are
        deleted."""
        assert self.adopter is not None
        checkpoint = None
        try:
            async with self._adopting:
                checkpoint = await self.adopter.prepare(files.data, meta, pieces)
        finally:
            files.journal.unlink(missing_ok=True)
            if checkpoint is None:
                files.data.unlink(missing_ok=True)
        if checkpoint is not None:
            self.adopter.install(meta, files.data, checkpoint)

    def _drop(self, staged: Staged, *, keep_files: bool = False) -> None:
        if self._unmap_path(staged):
            del self.by_inode[staged.inode]
            if self.pins is not None:
                self.pins.unpin(staged.inode)
        resumable, staged.resumable = staged.resumable, None
        if resumable is not None and resumable.upload_id and (staged.orphan or not keep_files):
            # The upload a failed commit kept for its retry, which will never come.
            self._nursery.start_soon(self.uploader.abort, resumable.key, resumable.upload_id)
        if staged.session is not None:
            staged.session.close()
            staged.session = None
        if self.space is not None:
            self.space.shrink(staged.counted - min(staged.hole, staged.counted))
            staged.counted = 0
        with contextlib.suppress(OSError):
            os.close(staged.fd)
        if not keep_files:
            _remove(staged.files)

    # -- bytes -------------------------------------------------------------------------------

    def read(self, staged: Staged, offset: int, size: int) -> bytes:
        """The staged bytes [offset, offset + size); the caller reads an unread start from
        its version (`Staged.unread`)."""
        if offset < staged.unread_end and size > 0:
            raise OSError(errno.EIO, f"{self.where(staged.key)}: bytes {offset}.. are unread")
        if offset < staged.shed and size > 0:
            raise OSError(errno.EIO, f"{self.where(staged.key)}: bytes {offset}.. were sent and "
                          "left the staging disk to make room; they can be read once the file "
                          "is committed")  # fmt: skip
        return os.pread(staged.fd, max(0, min(size, staged.size - offset)), offset)

    def write(self, staged: Staged, offset: int, data: bytes) -> int:
        """Stage `data` at `offset`; OSError (and the file is never committed) if it cannot
        be; `NoRoomYet` when the cache has no room for it until parts of this file being
        sent are confirmed (the caller waits, then writes again: FileSystem.write_waiting)."""
        if staged.broken is not None:
            raise staged.broken
        if offset < staged.shed:
            self._shed_broken(staged, f"a write at {offset}")
        if offset < staged.unread_end:  # the caller fetches it first (fetch_unread)
            raise OSError(errno.EIO, f"{self.where(staged.key)}: a write at {offset} of an "
                          "unread start")  # fmt: skip
        try:
            self._count(staged, offset + len(data))
            if offset == staged.seq_end and offset + len(data) > staged.reserved:
                self._reserve(staged, offset + len(data))
            written = self._pwrite(staged, data, offset)
        except OSError as exc:
            # ENOSPC and friends: the writer hears it now, and the file is never committed
            # (its close fails too), so a half-written file never replaces the object.
            where, detail = self.where(staged.key), exc.strerror or str(exc)
            if not detail.startswith(where):  # `_count`'s already names the file
                detail = f"{where}: staging: {detail}"
            staged.broken = OSError(exc.errno, detail)
            raise staged.broken from exc
        end = offset + written
        self._modified(staged)
        self._changed_parts(staged, offset, end)
        self._touched(staged, offset, end)
        if offset <= staged.seq_end < end:
            staged.seq_end = end
        staged.size = max(staged.size, end)
        self._send_early(staged)
        return written

    def _pwrite(self, staged: Staged, data: bytes, offset: int) -> int:
        try:
            return os.pwrite(staged.fd, data, offset)
        except OSError as exc:
            if exc.errno != errno.ENOSPC or not self.make_room(2 * len(data)):
                raise
            return os.pwrite(staged.fd, data, offset)  # evicted some of the read cache

    def _reserve(self, staged: Staged, end: int) -> None:
        """A sequential writer is about to pass the blocks reserved for it: reserve the next
        stretch, as long as what it has written (at most RESERVE_AHEAD), so a file that stays
        under RESERVE_FROM never costs a syscall (cache/holes.py `reserve` says what it saves).
        A filesystem that cannot reserve is not asked again for this file."""
        if end <= RESERVE_FROM:
            return
        start = max(staged.reserved, staged.seq_end)
        length = min(RESERVE_AHEAD, max(staged.seq_end, end - start))
        staged.reserved = start + length if reserve(staged.fd, start, length) else 1 << 62

    def _unreserve(self, staged: Staged) -> None:
        """Give back the blocks reserved past the staged size (before it is committed or
        sealed: the file then becomes a cache entry, or waits for its upload)."""
        if staged.reserved > staged.size:
            os.ftruncate(staged.fd, staged.size)
            staged.reserved = staged.size

    def _count(self, staged: Staged, end: int) -> None:
        """The staged file is about to reach `end` bytes: count its growth, making room
        first: evicting idle read-cache entries (StagedSpace.grow), then punching out parts
        that OSS confirmed (`_shed`) of this file, else of other files being written in
        order; when that is not enough and parts of those are being sent, or other files
        are being committed (`_room_coming`), `NoRoomYet` (the writer waits for them);
        else ENOSPC."""
        if self.space is None or end <= staged.counted:
            return
        self._grow(staged, end - staged.counted)
        staged.counted = end

    def _grow(self, staged: Staged, delta: int) -> None:
        """Count `delta` more staged bytes for `staged`, making room as `_count` says."""
        assert self.space is not None
        try:
            self.space.grow(delta, self.where(staged.key))
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            if self._shed(staged) or any(self._shed(other) for other in self._shed_ones(staged)):
                self._grow(staged, delta)
                return
            sending = self._parts_coming(staged)
            if sending is not None:
                raise NoRoomYet(sending) from exc
            until = self._room_coming()  # other files' commits give theirs back as they end
            if until is None:
                raise
            raise NoRoomYet(self._room_event, until) from exc

    async def _grow_waiting(self, staged: Staged, delta: int) -> None:
        """`_grow`, waiting while room is coming (as a write does: FileSystem.write_waiting)."""
        while True:
            try:
                return self._grow(staged, delta)
            except NoRoomYet as no_room:
                await no_room.wait()

    def _shed_ones(self, staged: Staged) -> list[Staged]:
        """Files other than `staged` whose confirmed parts may leave the disk for its write:
        being written (a handle open; a sealed write-back file keeps its journal, and so
        every byte it holds). Concurrent writers of big files under a cap that holds them
        all only with their parts on OSS then take turns, as one such writer does with
        itself, instead of the later ones failing with ENOSPC (a stress run: 6 writers of
        9 MiB, 48 MiB cap). The shed file's writer loses what a shed costs (`_shed`)."""
        return [other for other in self.by_inode.values()
                if other is not staged and other.handles and not other.pending]  # fmt: skip

    def _parts_coming(self, staged: Staged) -> trio.Event | None:
        """What to wait for when parts of `staged`, else of a file it may shed
        (`_shed_ones`), are being sent: the end of the next of them."""
        for one in (staged, *self._shed_ones(staged)):
            sending = one.session.in_flight() if one.session is not None else None
            if sending is not None:
                return sending
        return None

    def _room_coming(self) -> float | None:
        """For a write the cache has no room for: until when (trio time) to wait for room,
        waking at each `room_back`, while commits run or write-back uploads are pending
        (None when none is). A file whose commit ends gives its room back in the same step
        when nobody has it open (it goes to the read cache, whose idle entries are evicted
        for writes, or is dropped: `release`, `uploaded_later`), so a `cp -r` of more than
        the cache holds, under `-o writeback` and faster than the link, is paced by the
        uploads instead of failing with ENOSPC. Uploads held back (--writeback-delay)
        start now: nothing is gained by waiting for them. A commit that fails keeps its
        file's room (unsent, or dropped by its writer's close) and still wakes the writer,
        who then gets ENOSPC if nothing else runs.

        A file committed by a close keeps its room until the kernel's release comes, a
        moment later: a writer finding no room in between (woken by that very commit's
        end) waits for that release too, though not for longer than `release_grace_s`
        after the commit: a descriptor kept open (dup'd, or an fsync'd file still being
        written or read) may never be closed, and the writer then gets ENOSPC."""
        if self._committing or self._writeback.pending:
            self._writeback.start_held()
            return math.inf
        released_by = max(
            (one.committed_at + self.release_grace_s for one in self.by_inode.values()
             if one.handles and not one.dirty and one.committed_at is not None),
            default=None,
        )  # fmt: skip
        if released_by is None or released_by <= trio.current_time():
            return None
        return released_by

    def room_back(self) -> None:
        """A commit or a write-back upload ended: writers waiting for room look again."""
        self._room_event.set()
        self._room_event = trio.Event()

    def _shed(self, staged: Staged) -> bool:
        """Punch the parts of a sequential writer's file that OSS has confirmed out of its
        staging file (bytes [shed, ...)), giving their room back: a file bigger than the
        room the cache has can still be written, as long as the upload keeps up. Only a new
        file's (no source to copy from) whose parts went early, and no commit of it runs.
        Those bytes are gone for good, so the file keeps no journal from now on (its
        session's `forget_journal`: a later process could only send zeros for them) and is
        committed by its close (`seal_and_schedule` declines it under write-back); reading,
        rewriting or sending them again fails (`read`, `write`, `truncate`, and the
        session's `gone_below`). True if any room was given back."""
        session = staged.session
        if session is None or staged.source is not None or staged.lock.locked():
            return False
        session.gone_crcs = staged.shed_crcs
        ps = session.record.part_size
        end, crcs = staged.shed, {}
        while end // ps < staged.next_part and (known := session.confirmed(end // ps + 1)):
            crcs[end // ps + 1] = known
            end += ps
        if end <= staged.shed:
            return False
        session.forget_journal()  # first: a crash after the punch must find no record
        try:
            punch_hole(staged.fd, staged.shed, end - staged.shed)
        except OSError as exc:  # a filesystem that cannot: no room, as before
            log.warning("%s: cannot give back the room of parts already on OSS (%s)",
                        self.where(staged.key), exc)  # fmt: skip
            return False
        assert self.space is not None
        self.space.shrink(end - staged.shed)
        self.on_shed(end - staged.shed)
        log.info("%s: %d MiB already on OSS left the staging disk to make room (no room for "
                 "the whole file: --max-cache-size-mb, --min-free-mb)", self.where(staged.key),
                 (end - staged.shed) >> 20)  # fmt: skip
        staged.shed = session.gone_below = end
        staged.shed_crcs.update(crcs)  # the session's `gone_crcs`
        return True

    def _shed_broken(self, staged: Staged, what: str) -> None:
        staged.broken = OSError(
            errno.EIO,
            f"{self.where(staged.key)}: {what} would change "
            "bytes that were sent and left the staging disk to make room "
            f"(bytes 0..{staged.shed}); the file will not be committed",
        )
        raise staged.broken

    def truncate(self, staged: Staged, size: int) -> None:
        """Truncate the staged file to `size`; NoRoomYet, changing nothing, when the cache
        has no room for a growth yet (the caller waits for it, as a write does)."""
        if size < staged.shed:
            self._shed_broken(staged, f"a truncate to {size}")
        if size == 0 and staged.unread is not None:  # nothing of it is needed any more
            staged.counted -= staged.unread.below  # it took no room
            unread.forget(staged)
        if size < staged.unread_end:  # the caller fetches it first (fetch_unread)
            raise OSError(errno.EIO, f"{self.where(staged.key)}: a truncate to {size} into an "
                          "unread start")  # fmt: skip
        self._count(staged, size)  # NoRoomYet: the caller waits, then truncates again
        os.ftruncate(staged.fd, size)
        staged.reserved = min(staged.reserved, size)  # a shrink freed the blocks past it
        if self.space is not None and size < staged.counted:
            self.space.shrink(staged.counted - size)
            staged.counted = size
        self._modified(staged)
        self._changed_parts(staged, min(size, staged.size), max(size, staged.size) + 1)
        if size < staged.size:
            self._touched(staged, size, staged.size)
            staged.seq_end = min(staged.seq_end, size)
        staged.size = size

    @staticmethod
    def _modified(staged: Staged) -> None:
        """A write or truncate changed `staged`: dirty, and a mtime a utimens set before is
        now (as on ext4, where a truncate to the same size does it too; so does a change of
        a restored file, whose journal's mtime may be a close's or a utimens's): a
        write-back close then stamps its own, a commit sends this one."""
        staged.dirty, staged.failed = True, False
        if staged.mtime_ns is not None and not staged.mtime_stamped:
            staged.mtime_ns, staged.mtime_stamped = time.time_ns(), True

    def _changed_parts(self, staged: Staged, start: int, end: int) -> None:
        """Upload parts holding [start, end) are no longer the source's: never copied. Also
        while a commit runs: the version it stores becomes the source, without these bytes."""
        if (staged.source is not None or staged.lock.locked()) and end > start:
            ps = self._part_size(staged)
            staged.dirty_parts.update(range(start // ps, (end - 1) // ps + 1))

    def _touched(self, staged: Staged, start: int, end: int) -> None:
        """Parts already handed over that [start, end) changes must be sent again."""
        if not staged.ready or staged.session is None:
            return
        ps = staged.session.record.part_size
        for index in [i for i in staged.ready if i * ps < end and (i + 1) * ps > start]:
            staged.session.invalidate(index)
            staged.ready.discard(index)

    def _send_early(self, staged: Staged) -> None:
        settings = self.uploader.settings
        if staged.seq_end <= settings.single_put_max or staged.lock.locked() or staged.orphan:
            return  # one PutObject at close, or a commit is running (see module docstring)
        ps = self._part_size(staged)
        while (staged.next_part + 1) * ps <= staged.seq_end:
            session = self._session(staged)
            session.part_ready(staged.next_part)
            staged.ready.add(staged.next_part)
            staged.next_part += 1

    def _part_size(self, staged: Staged) -> int:
        """The upload part size of `staged` (`Staged.part_size`)."""
        return staged.part_size or self.uploader.settings.part_size

    def _record(self, staged: Staged, *, mtime_ns: int, ctime_ns: int | None) -> JournalRecord:
        """The upload record of `staged` as it stands: its key, fence, attributes and the
        start it left unread."""
        record = self.uploader.new_record(
            staged.key,
            base_etag=staged.base_etag,
            forbid_overwrite=staged.forbid_overwrite,
            mtime_ns=mtime_ns,
            mode=staged.mode,
            keep_mode=staged.keep_mode,
            uid=staged.uid,
            gid=staged.gid,
            atime_ns=staged.atime_ns,
            ctime_ns=ctime_ns,
            part_size=staged.part_size,
        )
        kept = staged.unread
        if kept is None:
            return record
        start = UnreadStart(kept.below, kept.crc, kept.source.key, kept.source.etag,
                            kept.source.size)  # fmt: skip
        return replace(record, unread=start)

    def _session(self, staged: Staged, resumed: JournalRecord | None = None) -> UploadSession:
        """The file's session; a new one continues the upload of `resumed` when given."""
        if staged.session is None:
            # ctime: what an Initiate sent now carries (fs/stamps.py)
            record = resumed or self._record(staged, mtime_ns=0, ctime_ns=now_s())
            staged.session = self.uploader.session(
                staged.files, record, self._nursery, staged.journal_lock
            )
            staged.session.copy_from = _copy_source(staged, staged.dirty_parts)
            if staged.shed:  # the bytes an earlier session sent and punched out
                staged.session.gone_below = staged.shed
                staged.session.gone_crcs = staged.shed_crcs
                staged.session.forget_journal()
            staged.session.may_exist = staged.may_exist
            if staged.carried is not None and staged.carried[0] == record.base_etag:
                staged.session.carried = staged.carried[1]  # no HEAD before its Initiate
            if self.adopter is not None:  # its parts' CRCs are also taken in the cache's parts
                staged.session.pieces.cache_part_size = self.adopter.part_size
        return staged.session

    # -- commit ------------------------------------------------------------------------------

    def sealed_record(self, staged: Staged) -> JournalRecord:
        """The record a write-back close seals (fs/writeback.py): the staged size, and the
        close's ctime (if a crash leaves the upload to the next mount). Of a file whose
        parts went early, its session's record (UploadSession.sealing); of one whose failed
        upload was kept for its retry (`resumable`), that upload's record, so a crash does
        not make the next mount send its parts again."""
        self._unreserve(staged)
        staged.ctime_ns = now_s()
        record = self._record(staged, mtime_ns=staged.mtime_ns or 0, ctime_ns=staged.ctime_ns)
        attrs = {name: getattr(record, name) for name in _SEALED_ATTRS}
        if staged.session is not None:  # which stamps the seal's time (`_seal_changes`)
            return staged.session.sealing(staged.size, **attrs)
        if staged.resumable is not None:  # its bytes are the sealed ones (Staging.quiesce)
            staged.resumable = replace(staged.resumable, **attrs)
            record = staged.resumable
        # The seal's time: UploadSession.overtaken judges a newer server version by it.
        return replace(record, size=staged.size, sealed=True, boot_id="",
                       sealed_ns=time.time_ns())  # fmt: skip

    def unused(self, staged: Staged) -> None:
        """A call just settled `staged` (unlinked or replaced it, or committed it for a
        rename) and may have been its last user: with no handle and no upload pending it
        leaves as a write-back upload's end leaves it (`uploaded_later`)."""
        if not (staged.handles or staged.pending) and self.holds(staged):
            self.uploaded_later(staged, kept=False)

    def holds(self, staged: Staged) -> bool:
        """Whether `staged` is still the file staged for its inode (not dropped)."""
        return self.by_inode.get(staged.inode) is staged

    def uploaded_later(self, staged: Staged, *, kept: bool) -> None:
        """A write-back upload ended and nobody uses the file: it goes to the read cache, is
        dropped (its files kept for the next mount if `kept`), or, unsent, stays shown."""
        if not kept and self._adoptable(staged):
            self._hand_over(staged)
        elif not (staged.unsent and not staged.orphan):
            # A file whose parts went early and that was unlinked before its upload: that
            # multipart upload is aborted (the next mount's sweep would, much later).
            session, staged.session = staged.session, None
            if not kept:  # its files go: attributes logged for them are moot
                self.attrs_sealed(staged)
            self._drop(staged, keep_files=kept or session is not None)
            if session is not None:
                self._nursery.start_soon(_abandon, session, None if kept else staged.files)
            if kept and staged.orphan:  # unlinked or replaced while its upload ran, and failed
                # Nothing of it is wanted now. Its journal is the unlink's (or the rename's) to
                # remove, durably (`disown`, which follows once the upload has ended).
                staged.files.data.unlink(missing_ok=True)

    async def commit(self, staged: Staged) -> ObjectMeta | None:
        """Upload the staged bytes if they changed since the last commit; the object's
        metadata once it is on OSS and verified (None for an unlinked file), which
        `on_commit` hears of first."""
        self._committing += 1
        try:
            meta = await self._commit_locked(staged)
        finally:
            self._committing -= 1
            self.room_back()
        if meta is not None:
            staged.committed_at = trio.current_time()
            self.on_commit(staged, meta)
        return meta

    async def _commit_locked(self, staged: Staged) -> ObjectMeta | None:
        async with staged.lock:
            for tries_left in (2, 1, 0):
                if staged.orphan:
                    return None
                if staged.broken is not None:
                    raise staged.broken
                if not staged.dirty:
                    return staged.committed
                try:
                    return await self._commit_dirty(staged)
                except _ChangedMeanwhile as exc:
                    if not tries_left:
                        raise exc.error from None
                    log.info("%s: changed while it was being committed (%s); committing it "
                             "again", self.where(staged.key), exc.error)  # fmt: skip
            raise AssertionError("unreachable")

    async def _commit_dirty(self, staged: Staged) -> ObjectMeta:
        """One commit of a dirty file, `staged.lock` held."""
        # Attributes the version this replaces owes (fs/owedattrs.py) are stored by a copy of
        # it onto itself, fenced on its ETag when the copy starts: one still running when
        # this version lands would land over it, its old bytes and all (a stress run: a
        # 9 MiB file rewritten under write-back came back as its previous version). So a
        # copy sending them lands first, and none starts meanwhile: the debt is taken, and
        # given back if this commit fails (that version then stays, and still owes them).
        async with self.owed.taken(staged.key):
            return await self._commit_owing(staged)

    async def _commit_owing(self, staged: Staged) -> ObjectMeta:
        """`_commit_dirty` once the replaced version's owed attributes are out of the way."""
        self._unreserve(staged)
        # A restored file's first commit continues the upload its recovery left (its bytes
        # are the sealed ones: anything that changes them commits first); once only, as a
        # failed commit abandons its upload.
        resumed, staged.resumable = staged.resumable, None
        session = self._session(staged, resumed)
        staged.session, staged.ready, staged.next_part = None, set(), 0
        staged.dirty = False  # a write from here on makes it dirty again
        changed, staged.dirty_parts = staged.dirty_parts, set()
        session.copy_from = _copy_source(staged, changed)
        size = staged.size
        staged.ctime_ns = now_s()  # as ossfs's flush (fs/stamps.py)
        if staged.mtime_ns is None and not session.record.upload_id:
            # The commit's time goes up as its x-oss-meta-mtime, as a write-back close's
            # does (fs/writeback.py) and as ossfs stores one on every file: else the mtime
            # was the Last-Modified, which a rename (a copy) moves to the rename's time. Not
            # on an upload initiated before (a sequential writer's parts went early): only
            # a copy of the whole object could add it, so its Last-Modified stands.
            staged.mtime_ns, staged.mtime_stamped = time.time_ns(), True
        try:
            if resumed is not None:
                await session.reconcile()  # only the parts the server still has count
            result = await session.finish(
                size,
                mtime_ns=staged.mtime_ns,
                atime_ns=staged.atime_ns,
                ctime_ns=staged.ctime_ns,
                # A write-back close sealed these bytes under this key (a rename re-sealed
                # them: fs/writeback.py), and nothing changes them while its upload is
                # pending (`quiesce`); a failed upload's retry seals them again.
                sealed=staged.pending > 0 and resumed is None and not staged.unsent,
            )
        except BaseException as exc:
            self._pieces.pop(staged, None)
            meanwhile = staged.dirty  # written or truncated while the commit read it
            staged.dirty_parts |= changed
            staged.dirty = True
            staged.may_exist = staged.forbid_overwrite
            if isinstance(exc, Exception):  # not a cancel: a crash's journal resumes it
                if _resumes_later(staged, session, exc, meanwhile):
                    staged.resumable = session.progress()
                else:
                    self._nursery.start_soon(session.abandon)
                if meanwhile and isinstance(exc, (StagingError, CrcMismatch)):
                    raise _ChangedMeanwhile(exc) from exc
                self.on_outcome("failed")
            staged.failed = True
            raise
        finally:
            session.close()
        self.on_outcome("committed")
        self.attrs_sealed(staged)  # the object has what was logged for its sealed record
        staged.unsent = staged.failed = False
        staged.forbid_overwrite = False  # O_EXCL held for the creation only
        now = now_s()  # as listings show it
        staged.committed = ObjectMeta(staged.key, size, result.etag, now, result.crc64)
        self._pieces[staged] = (staged.key, result.pieces)
        sent = session.sent_meta
        if sent is not None:  # else (resumed) a HEAD learns them, if a copy must follow
            self.known.wrote(staged.key, result.etag, sent)
            adopt_sent(staged, sent)
        await self._late_attrs(staged, sent)
        staged.base_etag = staged.committed.etag
        staged.source = (staged.key, staged.committed.etag, size)
        if staged.unread is not None:  # the new version holds the unread start now
            staged.unread.source = staged.committed
        log.debug("%s committed: %d bytes, %d parts, CRC-64 %016x",
                  self.where(staged.key), size, result.parts, result.crc64)  # fmt: skip
        return staged.committed

    async def _late_attrs(self, staged: Staged, sent: dict[str, str] | None) -> None:
        """A multipart upload is initiated with the mode, owner and mtime of the moment its
        first part went, and a write-back upload with those of its close; ones set later
        (cp -a's futimens before close; rsync's utimensat after a write-back close) are owed
        (fs/owedattrs.py), or stored at once by a copy onto itself from the metadata it was
        created with (`sent`, no HEAD; None: a resumed upload's, learnt by a HEAD). Their
        failure is logged, not raised: the bytes are committed."""
        mode = None if staged.keep_mode else staged.mode  # kept as it was (an unparsed one)
        want = Posix(mode, staged.uid, staged.gid, staged.mtime_ns or None, staged.atime_ns,
                     staged.ctime_ns)  # fmt: skip
        if sent is not None and only_ctime_differs(want.meta(), sent):
            return  # the ctime of the Initiate stays: no copy for it alone
        assert staged.committed is not None
        try:
            stored = await store_attrs(
                self.uploader.writes,
                staged.committed,
                want._replace(mtime_ns=staged.mtime_ns),
                known=self.known,
                defer=self.owed.defers,  # owed: a rename or more attributes may follow
            )
        except Exception as exc:
            log.warning("%s: committed, but storing its mode/mtime failed: %s",
                        self.where(staged.key), exc)  # fmt: skip
            return
        if stored is not None:
            staged.committed = stored

    # -- write-back (-o writeback) -----------------------------------------------------------


async def _abandon(session: UploadSession, files: StagedFile | None) -> None:
    """Abort the multipart upload of a file never to be committed, then remove its `files`.
    They go once the session is closed: a part still in flight would journal its upload
    again (`UploadSession._save`), leaving a journal with no data behind."""
    try:
        await session.abandon()
    finally:
        session.close()
        if files is not None:
            _remove(files)


def _remove(files: StagedFile) -> None:
    for path in (files.data, files.journal):
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def _resumes_later(staged: Staged, session: UploadSession, exc: Exception, meanwhile: bool) -> bool:
    """Whether a failed commit keeps its multipart upload for the next one to resume (as
    recovery resumes a crashed one: `UploadSession.reconcile` keeps the parts the server
    still has) instead of aborting it: a write-back upload (acknowledged, so tried again in
    the background, fs/writeback.py) that failed as another attempt may not (an outage,
    throttling: `is_retryable`), of bytes that did not change meanwhile. Else each retry of
    a big file sent every part again."""
    return (
        staged.pending > 0 and not meanwhile and bool(session.record.upload_id)
        and is_retryable(exc)
    )  # fmt: skip


def _copy_source(staged: Staged, changed: set[int]) -> CopySource | None:
    """What a session may copy from: parts in neither `changed` (written before the commit)
    nor the file's current `dirty_parts` (written since), asked when each part goes."""
    if staged.source is None:
        return None
    key, etag, size = staged.source
    return CopySource(key, etag, size, lambda i: i not in changed and i not in staged.dirty_parts)
