"""One file being written (`Staged`: its staged bytes, journal, upload session and the state the
FUSE layer shows), apart from the staging that drives it (fs.staging), so the xattr and the
file system can read it without the staging's machinery."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from ossmount.oss.models import ObjectMeta
from ossmount.write import StagedFile, UploadSession
from ossmount.write.journal import JournalRecord, fsync_dir

__all__ = ["Staged", "StagedCounts", "Unread", "count_staged", "disown", "staged_state"]


def _set_event() -> trio.Event:
    event = trio.Event()
    event.set()
    return event


@dataclass(eq=False)
class Staged:
    """One file being written. `path` is the displayed path, `key` the object's key; both
    follow a rename. `seq_end`: bytes [0, seq_end) have been written with no gap."""

    inode: int
    path: str
    key: str
    files: StagedFile
    fd: int
    base_etag: str = ""
    forbid_overwrite: bool = False
    size: int = 0
    dirty: bool = False
    orphan: bool = False  # unlinked while open: nothing more is uploaded
    failed: bool = False  # the last commit failed (its writer got EIO); a write clears it
    broken: OSError | None = None  # a staging write failed: never committed, every call fails
    pending: int = 0  # write-back commits scheduled and not finished
    # A write-back close acknowledged these bytes and their upload failed: they stay staged
    # and shown (not dropped), and are committed before anything changes them
    # (Staging.quiesce) or at the last close; else the next mount uploads them.
    unsent: bool = False
    retrying: bool = False  # an unsent file's background retries run (fs/writeback.py)
    # A file restored after a failed recovery (Staging.restore): the journal record of the
    # multipart upload that recovery left open, which its next commit resumes.
    resumable: JournalRecord | None = None
    # Set while `pending` is 0: a write or truncate waits for it (Staging.quiesce), so the
    # bytes a write-back close acknowledged are uploaded as they were when it sealed them.
    landed: trio.Event = field(default_factory=_set_event)
    # Unset while the first open stages the existing object's bytes (Staging.fill, from
    # FileSystem._open_staged, which sets it once the fill is done or its file dropped):
    # another open joining the file waits for them, else its appends and reads would go to
    # an empty or half-filled file that the fill then overwrites.
    filled: trio.Event = field(default_factory=_set_event)
    mtime_ns: int | None = None
    mtime_stamped: bool = False  # mtime_ns is a write-back close's time, not set by utimens
    # x-oss-meta-atime / -ctime to store (fs/stamps.py): the create's time, a utimens's; the
    # ctime becomes the commit's time at each commit (ossfs: the flush's). None: not set.
    atime_ns: int | None = None
    ctime_ns: int | None = None
    mode: int = 0o100644  # st_mode as created or chmod'ed while open: x-oss-meta-mode
    keep_mode: bool = False  # `mode` is a default: the replaced version's mode is kept
    # A forbid-overwrite commit failed: OSS may have stored it all the same (every reply
    # lost). The next commit then takes an existing object with our CRC-64 for our own.
    may_exist: bool = False
    # Re-keyed by a rename onto a name where OSS may hold an object (fs/writeback.py `rekey`),
    # or restored by a recovery: its upload replaces that object, so until it lands the name
    # is not ours alone. An unlink deletes the key, and it is not re-keyed again.
    replaces: bool = False
    uid: int | None = None  # owner to store (x-oss-meta-uid/-gid): creator, or a chown
    gid: int | None = None
    handles: int = 0
    seq_end: int = 0
    next_part: int = 0  # parts [0, next_part) were handed to the session in order
    ready: set[int] = field(default_factory=set)
    session: UploadSession | None = None
    lock: trio.Lock = field(default_factory=trio.Lock)
    journal_lock: trio.Lock = field(default_factory=trio.Lock)  # its sessions' journal saves
    committed: ObjectMeta | None = None
    committed_at: float | None = None  # trio time its last commit ended (Staging.commit)
    # The object the staged bytes were filled from or last committed as (key, ETag, size),
    # and the upload parts written since: the others are copied server-side at commit.
    source: tuple[str, str, int] | None = None
    dirty_parts: set[int] = field(default_factory=set)
    counted: int = 0  # its end as counted against the cache's bounds (fs/stagedspace.py)
    # Bytes [0, shed) were sent (parts OSS confirmed) and punched out of the staging file to
    # make room for a writer of a file bigger than the room left (Staging._shed): they
    # cannot be read back, rewritten or sent again before the file is committed.
    shed: int = 0
    shed_crcs: dict[int, tuple[int, int]] = field(default_factory=dict)  # part: (size, CRC)
    reserved: int = 0  # blocks [0, reserved) were allocated ahead of a sequential writer
    # (ETag, headers) of the version opened, when a HEAD at open learnt them (an appender's:
    # fs/unread.py `start_of`): a commit replacing that version keeps them without a HEAD
    # of its own before its Initiate (UploadSession.carried).
    carried: tuple[str, dict[str, str]] | None = None
    # Its upload part size, when not the uploader's (0): an appender's unread start is
    # copied in pieces of several parts (fs/unread.py `upload_part_size`); a restored file
    # keeps its journal's. Every part number of its uploads counts in it.
    part_size: int = 0
    unread: Unread | None = None  # the start of an object appended to, never fetched

    @property
    def unread_end(self) -> int:
        """Bytes [0, unread_end) are the object's, never fetched (0: none)."""
        return 0 if self.unread is None else self.unread.below

    @property
    def hole(self) -> int:
        """Bytes [0, hole) are not in the staging file: shed (sent, then punched) or unread."""
        return max(self.shed, self.unread_end)


@dataclass(eq=False)
class Unread:
    """Bytes [0, below) of a file appended to (below > 0): the object's as it was opened,
    never fetched (Staging.fill: an append to a big object reads only its last part).

    Reads of them go to `source`, the version that holds them: the one opened, later the
    one committed or renamed to. Commits copy them server-side and check the whole object
    against `crc`, their CRC-64 (solved from the one OSS states for the whole object; 0
    until the fill has read the tail). A write or truncate into them fetches them first
    (fs/unread.py `fetch`): `fetching` is set while one runs, and is the event the others
    wait for; once fetched, `Staged.unread` is None."""

    below: int
    source: ObjectMeta
    crc: int = 0
    fetching: trio.Event | None = None


@dataclass(frozen=True, slots=True)
class StagedCounts:
    """The files being written, for metrics and the STATUS line: all of them, those whose
    acknowledged bytes are not on OSS yet because their upload failed (`unsent`: retried in
    the background, fs/writeback.py), and the staged bytes on the cache disk."""

    files: int
    unsent: int
    bytes: int


def count_staged(files: Iterable[Staged], staged_bytes: int) -> StagedCounts:
    files = list(files)
    return StagedCounts(len(files), sum(1 for f in files if f.unsent), staged_bytes)


def staged_state(staged: Staged, held: bool = False) -> str:
    """`user.ossmount.state` of a file being written (fs/xattrs.py); `held`: its pending
    upload waits out --writeback-delay (Staging.held)."""
    if staged.broken is not None:
        return "staging-failed"
    if staged.failed:
        return "upload-failed"
    if staged.lock.locked():
        return "uploading"
    if staged.pending:
        return "queued" if held else "uploading"
    return "written" if staged.dirty else "committed"


async def disown(staged: Staged) -> None:
    """An unlinked or replaced file, no commit of it running (its lock held, or settled after
    it was marked orphan, so none starts): its journal goes, durably, before the caller's
    success is acknowledged. A write-back close may have sealed it, and its handles keep it
    staged long after: a crash would then upload it again under the name it lost. Under the
    journal's lock, and its session saves nothing more: a part of it confirmed after the
    unlink wrote the sealed record again (the crash walk, seed 396 with write-back)."""
    async with staged.journal_lock:
        if staged.session is not None:
            staged.session.stop_journal()
        await trio.to_thread.run_sync(_remove_durably, staged.files.journal)


def _remove_durably(journal: Path) -> None:
    try:
        journal.unlink()
    except FileNotFoundError:
        return
    fsync_dir(journal.parent)
