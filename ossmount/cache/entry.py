"""One cached object version: a sparse data file plus its checkpoint (a file beside it, or,
for a one-part object, the data file's own tail: cache.tail).

`CacheEntry` is a `PartBook` (cache.partbook: the part maps, the state and the verdict, in
memory, no I/O) plus the files: it pwrites parts (through `part_sink`), preads them, re-hashes
them, punches them out, saves the checkpoint and removes the files. Its I/O methods update the
book's maps under the book's `_lock`.

Invariant: the checkpoint on disk lists exactly the durable parts. `flush()` snapshots the
recorded parts and saves the snapshot: a part enters the checkpoint only after its bytes were
pwritten (kill -9 keeps them: they are in the page cache). No fdatasync: after a power loss the
checkpoint may list a part whose bytes never reached the disk, and its re-check (cache.checks)
drops it before any reader could see it, so a sync would only bound the re-fetching (see
cache.checkpoint, "Durability").

Threads: the owner (the trio thread) calls everything; `flush()` (and `verify()`, which
flushes) may run in a worker thread concurrently with `record_part`, `is_done`,
`missing_parts` and `read` on the owner thread. `_lock` guards the in-memory part maps and
`_checks` (which changes with them) and is held only for dict work, never across I/O (a
recheck hashes between two such sections); `_flush_lock` serializes flushes with each other
and with close/discard/detach. Parts recorded while a flush is saving are not in
its snapshot and wait for the next flush.

Shedding (objects bigger than the cache): `shed()` punches recorded parts out of the data file
(the caller picks parts its readers have consumed) and keeps their CRCs (cache.partbook). The
checkpoint only ever lists present parts and says PARTIAL while any part is missing, but the
one on disk may still list a shed part until the next flush, so opening it (cache.opening) asks
the filesystem for holes (cache.holes) and re-fetches any listed part that lies in one. The
store only sheds where a probe showed both work.

A *detached* entry has been superseded by a newer version of the same key (the store did this
because its files were about to be replaced): readers holding it can still read its unlinked
file through `fd`, but it never writes a checkpoint or removes a file again.

A *discarded* entry has had its files unlinked (CORRUPT, or the object changed). Its `fd` stays
open until `close()` (the store's last `release`), so a part download still unwinding writes
into the unlinked inode and never into whatever file reuses the descriptor number; every other
method refuses with EntryStateError.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from ossmount.cache.checkpoint import EntryState, fsync_dir, save_atomic, save_first
from ossmount.cache.checks import warn_damaged
from ossmount.cache.errors import CacheIOError, EntryStateError, io_error
from ossmount.cache.holes import punch_hole
from ossmount.cache.pages import let_go
from ossmount.cache.partbook import DROPPED, PartBook
from ossmount.cache.ranges import PartLayout
from ossmount.cache.recheck import hash_span
from ossmount.cache.sink import PartSink
from ossmount.cache.tail import write_tail
from ossmount.oss.models import ObjectMeta

__all__ = ["CacheEntry", "EntryState"]

log = logging.getLogger(__name__)


class CacheEntry(PartBook):
    """Data file + checkpoint of one object version. Built by `open_entry` (cache.opening).

    Constant after open (besides the book's): `checkpoint_path` (None: the checkpoint is the
    data file's tail, cache.tail). Mutable: `fd` (-1 once closed), `saved_at`, whether a
    checkpoint is on disk, and the book's maps and state.
    """

    def __init__(
        self,
        *,
        bucket: str,
        meta: ObjectMeta,
        layout: PartLayout,
        path: Path,
        checkpoint_path: Path | None,
        fd: int,
        durable: dict[int, int],
        state: EntryState,
        has_checkpoint: bool = True,
    ) -> None:
        """`has_checkpoint` False: a fresh entry with no checkpoint file yet (its first save
        takes checkpoint.save_first)."""
        super().__init__(
            bucket=bucket, meta=meta, layout=layout, path=path, durable=durable, state=state
        )
        self.checkpoint_path = checkpoint_path
        self.fd = fd
        self._has_checkpoint = has_checkpoint
        self.saved_at = -math.inf  # time.monotonic() of the last checkpoint save (sets mtime)
        self._flush_lock = threading.Lock()

    @property
    def has_checkpoint(self) -> bool:
        """A checkpoint of this entry is on disk (resumed from one, or saved one since)."""
        return self._has_checkpoint

    # ----------------------------------------------------------------- writing

    def part_sink(self, index: int, scratch: memoryview) -> PartSink:
        """A body sink that writes part `index` into the data file through `scratch` and
        records it when the GET is done (ossmount.cache.sink). The part stays missing until
        then; a failed write raises CacheFull/CacheIOError from the sink."""
        self._check_open("part_sink")
        return PartSink(self, index, scratch)

    def flush(self) -> None:
        """Save every part recorded so far in the checkpoint (no fdatasync: module docstring).

        Cheap when nothing changed (no syscall). May run in a worker thread. On failure raises
        CacheFull/CacheIOError; the state is unchanged and the next flush retries.
        """
        with self._flush_lock:
            if not self.usable:
                return
            with self._lock:
                if not self._changed_since_flush():
                    return
                crc = self.meta.crc64
                snapshot = dict(self._done)
                cp = self._snapshot(snapshot, self._state)
            if self.checkpoint_path is None:
                try:
                    write_tail(self.fd, cp, again=self._has_checkpoint)
                except OSError as exc:
                    raise self._io_error("checkpoint save", exc) from exc
            elif self._has_checkpoint:
                save_atomic(self.checkpoint_path, cp)
            else:
                save_first(self.checkpoint_path, cp)
            self._has_checkpoint = True
            self.saved_at = time.monotonic()
            with self._lock:
                # Parts shed since the snapshot are not durable whatever the file now says.
                self._durable = {i: c for i, c in snapshot.items() if i in self._done}
                self._persisted_state = cp.state
                self._persisted_crc = crc

    # ----------------------------------------------------------------- reading

    def let_go(self, start: int, length: int) -> None:
        """Let the kernel drop the cache file's pages in [start, start + length)
        (cache/pages.py; prefetch/dropbehind.py says when)."""
        let_go(self.fd, start, length)

    def read(self, offset: int, length: int) -> bytes:
        """Bytes [offset, offset + length) clipped to the object; the parts must be done.

        Raises EntryStateError if any covering part is not recorded: serving bytes of a part
        that is missing or torn would be silent corruption, so this is checked, not trusted.

        A plain pread into new bytes, because the alternatives measured no better on a cold
        cp (ballasted, 4 runs each, daemon CPU ~1.1 s/GiB all three): a view of an mmap of the
        cache file (one copy fewer, but page faults inside fuse_reply_buf, 25 % slower first
        read after a remount, and every served page stays in the daemon's RSS unless unmapped
        again), and a reused reply buffer (no 1 MiB allocation per read).
        """
        self._check_open("read")
        parts = self.layout.parts_for(offset, length)
        with self._lock:
            missing = self._checks.missing(parts, self._done)
        if missing:
            raise EntryStateError(
                f"read of [{offset}, +{length}) needs parts {missing} not yet cached "
                f"(or not re-checked) for {self.where} ({self.path})"
            )
        length = max(0, min(length, self.meta.size - offset))
        chunks: list[bytes] = []
        got = 0
        try:
            while got < length:
                chunk = os.pread(self.fd, length - got, offset + got)
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
        except OSError as exc:
            raise self._io_error("read", exc) from exc
        if got != length:
            raise EntryStateError(
                f"cache file {self.path} of {self.where} is short: "
                f"got {got} of {length} bytes at {offset}"
            )
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    # ----------------------------------------------------------------- re-checking

    def recheck(self, index: int) -> bool:
        """Re-hash unchecked part `index` against its stored CRC; True if it is good now.

        Worker thread (cache.checks); the caller runs at most one recheck of a part at a
        time and keeps the entry open meanwhile. False: the part was damaged at rest
        (forgotten, logged at WARNING; fetch it again) or is no longer unchecked-and-recorded
        (shed or fetched meanwhile: ask `is_done`).
        """
        self._check_open("recheck")
        with self._lock:
            if index not in self._checks:
                return index in self._done
            stored = self._done[index]
        start, length = self.layout.span(index)
        try:
            actual = hash_span(self.fd, start, length)
        except OSError as exc:
            raise self._io_error(f"re-checking part {index}", exc) from exc
        with self._lock:
            if not self._checks.damaged(index, stored, actual, self._done):
                return self._checks.ready(index, self._done)
            del self._done[index]
            # Not durable any more either: the next flush must rewrite the checkpoint without
            # it, even if a fetch records the same CRC again (saved again after its new bytes).
            self._durable[index] = DROPPED
            self._state = EntryState.PARTIAL
        warn_damaged(self.where, index, start, length, stored, actual, self.path)
        return False

    # ----------------------------------------------------------------- shedding

    def shed(self, indices: Iterable[int]) -> int:
        """Punch recorded parts out of the data file, keeping their CRCs; returns bytes freed.

        Owner thread only, like `read`, so no read of these parts is under way. Parts not
        recorded are skipped, and so are parts holding no whole filesystem block: a punch only
        zeroes those, leaving no hole for opening to find after a crash, which would then trust
        zeros. If the filesystem refuses the punch, the part stays recorded (its bytes are
        intact) and the error is raised as CacheIOError.
        """
        self._check_open("shed")
        try:
            block = max(os.fstat(self.fd).st_blksize, os.fstatvfs(self.fd).f_frsize)
        except OSError as exc:
            raise self._io_error("shedding", exc) from exc
        freed = 0
        for index in indices:
            start, length = self.layout.span(index)
            if -(-start // block) * block + block > start + length:
                continue  # no whole block inside
            with self._lock:
                crc = self._done.pop(index, None)
                if crc is None:
                    continue
                self._durable.pop(index, None)
                if self._checks.settle(index):
                    crc = None  # never matched to bytes here: not kept for the verdict
            try:
                punch_hole(self.fd, start, length)
            except OSError as exc:
                if crc is not None:
                    with self._lock:
                        self._done[index] = crc  # nothing was deallocated: still good
                raise self._io_error(f"shedding part {index}", exc) from exc
            if crc is not None:
                with self._lock:
                    self._shed[index] = crc
            freed += length
        return freed

    def _io_error(self, action: str, cause: OSError) -> CacheIOError:
        return io_error(action, bucket=self.bucket, key=self.meta.key, path=self.path, cause=cause)

    # ----------------------------------------------------------------- teardown

    def close(self) -> None:
        """Flush, then close the file. Idempotent. The files stay on disk for a later open.

        An entry that never made a part durable leaves no checkpoint, so its data file would
        be an orphan: it is removed here rather than left for the next startup scan.
        """
        if self._closed:
            return
        try:
            self.flush()
        finally:
            with self._flush_lock:
                self._close_fd()
                ckpt = self.checkpoint_path
                saved = self._has_checkpoint if ckpt is None else ckpt.exists()
                if not self._detached and not self._discarded and not saved:
                    with contextlib.suppress(FileNotFoundError):
                        self.path.unlink()

    def discard(self) -> None:
        """Delete checkpoint then data file; the entry is dead after, `fd` open until close().

        Idempotent. The store still expects its `release`, which closes the descriptor.
        """
        with self._flush_lock:
            if self._discarded:
                return
            self._discarded = True
            if self._detached:
                return
            try:
                for path in (self.checkpoint_path, self.path):
                    if path is not None:
                        path.unlink(missing_ok=True)
                fsync_dir(self.path.parent)
            except OSError as exc:
                raise self._io_error("discard", exc) from exc
            log.info("discarded cached %s", self.where)

    def detach(self) -> None:
        """Stop touching the files on disk (a newer version takes them over); reads go on."""
        with self._flush_lock:
            self._detached = True

    def _close_fd(self) -> None:
        if not self._closed:
            self._closed = True
            fd, self.fd = self.fd, -1
            os.close(fd)

    def __repr__(self) -> str:
        return (
            f"<CacheEntry {self.where} {self._state.name} "
            f"{len(self._done)}/{self.layout.count} parts {self.path}>"
        )
