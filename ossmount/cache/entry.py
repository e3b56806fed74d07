"""One cached object version: a sparse data file plus its checkpoint (a file beside it, or,
for a one-part object, the data file's own tail: cache.tail).

Life cycle (`state`):

    PARTIAL ──(all parts recorded, verify())──> VERIFIED       (server CRC matched)
                                           ├──> UNVERIFIABLE   (server sent no CRC)
                                           └──> CORRUPT        (mismatch: caller discards)

`complete` (every part recorded) is separate from `state`: a complete entry stays PARTIAL until
someone calls `verify()`. `verify()` does no I/O (it combines the per-part CRCs, a few ms even
for thousands of parts) so it can run on the trio thread; VERIFIED and UNVERIFIABLE are
persisted by the next `flush()`, so a later open serves the file without re-hashing it. CORRUPT
is never persisted (a crash before `discard()` leaves a complete PARTIAL checkpoint, which
fails `verify()` again).

The server CRC-64 may be learnt after open (listings carry none; the first part GET's headers
do): `set_server_crc64` fills it in and the next flush persists it.

The sets of parts:

    recorded  record_part() was called (by the `part_sink` that pwrote the bytes): bytes
              in the file, CRC known (in memory, `_done`); or listed by the checkpoint
    durable   recorded AND in the saved checkpoint (`_durable`; the name is older than the
              decision not to fdatasync, cache.checkpoint "Durability")
    unchecked recorded from the checkpoint at open, not yet re-hashed by this process
              (`_checks`, cache.checks: counts as missing until `recheck` finds its CRC)

A part damaged at rest is forgotten and marked non-durable, so neither the in-memory state nor
the next checkpoint says verified while it is missing.

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
(the caller picks parts its readers have consumed) and keeps their CRCs in `_shed`, so the
whole-object verdict still needs no second pass: `complete` means every part has a CRC,
recorded or shed; `all_present` that every part's bytes are in the file. A shed part fetched
again must bring the same CRC as the first time (else `PartMismatch`: one of the two fetches
was wrong and nothing tells which). The checkpoint only ever lists present parts and says
PARTIAL while any part is missing, but the one on disk may still list a shed part until the
next flush, so opening it (cache.opening) asks the filesystem for holes (cache.holes) and
re-fetches any listed part that lies in one. The store only sheds where a probe showed both work.

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
from dataclasses import dataclass, replace
from pathlib import Path

from ossmount.cache.checkpoint import (
    Checkpoint,
    EntryState,
    fsync_dir,
    save_atomic,
    save_first,
)
from ossmount.cache.checks import PartChecks, warn_damaged
from ossmount.cache.errors import CacheIOError, EntryStateError, PartMismatch, io_error
from ossmount.cache.holes import punch_hole
from ossmount.cache.ranges import PartLayout
from ossmount.cache.recheck import hash_span
from ossmount.cache.sink import PartSink
from ossmount.cache.tail import write_tail
from ossmount.oss.models import ObjectMeta

__all__ = ["CacheEntry", "EntryState", "VerifyResult"]

log = logging.getLogger(__name__)

_U64 = 1 << 64
_DROPPED = -1  # in `_durable`: a part the checkpoint lists but whose bytes failed a re-check


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of `CacheEntry.verify()`. `expected` is the server's CRC-64 (None if absent)."""

    state: EntryState
    expected: int | None
    actual: int


class CacheEntry:
    """Data file + checkpoint of one object version. Built by `open_entry` (cache.opening).

    Constant after open: `bucket`, `layout`, `path` (data file), `checkpoint_path` (None: the
    checkpoint is the data file's tail, cache.tail), and `meta` except its `crc64`, which the
    checkpoint or `set_server_crc64` may fill in when the caller's meta lacked it. Mutable:
    the part maps, `state`, and `fd` (-1 once closed).
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
        self.bucket = bucket
        self.meta = meta
        self.layout = layout
        self.path = path
        self.checkpoint_path = checkpoint_path
        self.fd = fd
        self._state = state
        self._done = dict(durable)
        self._durable = dict(durable)
        self._shed: dict[int, int] = {}  # parts punched out of the file: their CRCs
        self._checks = PartChecks(durable)  # trusted from the checkpoint, not re-hashed
        self._persisted_state = state
        self._persisted_crc = meta.crc64
        self._has_checkpoint = has_checkpoint
        self.saved_at = -math.inf  # time.monotonic() of the last checkpoint save (sets mtime)
        self._closed = False
        self._discarded = False
        self._detached = False
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()

    # ----------------------------------------------------------------- queries

    @property
    def where(self) -> str:
        """oss://bucket/key: how errors and logs name this object."""
        return f"oss://{self.bucket}/{self.meta.key}"

    @property
    def state(self) -> EntryState:
        return self._state

    @property
    def usable(self) -> bool:
        """False once closed, discarded or detached: the store must not hand it out again."""
        return not (self._closed or self._detached or self._discarded)

    @property
    def discarded(self) -> bool:
        return self._discarded

    @property
    def has_checkpoint(self) -> bool:
        """A checkpoint of this entry is on disk (resumed from one, or saved one since)."""
        return self._has_checkpoint

    @property
    def complete(self) -> bool:
        """Every part has a CRC (recorded, or shed after it was recorded): verify() can run."""
        with self._lock:
            return len(self._done) - len(self._checks) + len(self._shed) == self.layout.count

    @property
    def all_present(self) -> bool:
        """Every part's bytes are in the data file and checked (complete, nothing shed)."""
        with self._lock:
            return len(self._done) == self.layout.count and not self._checks

    @property
    def cached_bytes(self) -> int:
        """Bytes of the recorded parts: what this entry holds on disk (its file is sparse).
        O(1) (PartLayout.bytes_in): the store asks it of every open entry often."""
        with self._lock:
            return self.layout.bytes_in(self._done)

    def is_done(self, index: int) -> bool:
        """Recorded and checked in this process: a reader may have its bytes."""
        with self._lock:
            return self._checks.ready(index, self._done)

    def is_unchecked(self, index: int) -> bool:
        """Listed by the checkpoint, bytes in the file, not re-hashed yet: `recheck` it."""
        with self._lock:
            return index in self._checks

    def distrust(self) -> int:
        """Every recorded part is re-hashed before it is served again (cache.writeback: the
        disk reported a write error, so bytes in the file may differ from those hashed on
        receipt). How many parts that is."""
        with self._lock:
            self._checks.distrust(self._done)
            return len(self._done)

    def present_parts(self) -> list[int]:
        """The recorded parts whose bytes are in the file (checked or not), ascending."""
        with self._lock:
            return sorted(self._done)

    def missing_parts(self, indices: Iterable[int]) -> list[int]:
        """Those of `indices` not done (recorded and checked) yet, in the given order."""
        with self._lock:
            return self._checks.missing(indices, self._done)

    def checkpoint(self) -> Checkpoint:
        """A snapshot of the recorded (not only durable) parts, as the next flush would save."""
        with self._lock:
            return self._snapshot(dict(self._done), self._state)

    def _snapshot(self, parts: dict[int, int], state: EntryState) -> Checkpoint:
        if state is EntryState.CORRUPT or len(parts) != self.layout.count:
            state = EntryState.PARTIAL  # a verdict is persisted only with every byte present
        return Checkpoint(
            bucket=self.bucket,
            key=self.meta.key,
            etag=self.meta.etag,
            size=self.meta.size,
            mtime_ns=self.meta.mtime_ns,
            server_crc64=self.meta.crc64,
            part_size=self.layout.part_size,
            part_crcs=parts,
            state=state,
        )

    # ----------------------------------------------------------------- writing

    def _check_open(self, action: str) -> None:
        if self._closed or self._discarded:
            what = "closed" if self._closed else "discarded"
            raise EntryStateError(f"{action} on {what} cache entry {self.where} ({self.path})")

    def set_server_crc64(self, crc: int) -> None:
        """Record the server's whole-object CRC-64 when the opening meta had none.

        A different CRC than one already known means another object version: ValueError
        (the caller's version fence should have caught it first).
        """
        if not 0 <= crc < _U64:
            raise ValueError(f"CRC-64 out of range: {crc}")
        with self._lock:
            known = self.meta.crc64
            if known == crc:
                return
            if known is not None:
                raise ValueError(
                    f"server CRC-64 of {self.where} changed from "
                    f"{known} to {crc}: another object version"
                )
            self.meta = replace(self.meta, crc64=crc)
            if self._state is EntryState.UNVERIFIABLE:
                self._state = EntryState.PARTIAL

    def correct_server_crc64(self, crc: int) -> None:
        """Replace a server CRC-64 learnt from one bad reply with the one a HEAD and later
        replies agree on (prefetch.fence). Part CRCs come from the bytes, so they stand."""
        if not 0 <= crc < _U64:
            raise ValueError(f"CRC-64 out of range: {crc}")
        with self._lock:
            self.meta = replace(self.meta, crc64=crc)

    def record_part(self, index: int, crc: int) -> None:
        """Mark part `index` done with CRC-64 `crc`; its bytes must already be pwritten to `fd`
        (`part_sink` does both).

        In memory only: the part becomes durable (and survives a crash) at the next `flush()`.
        Readers may use it at once. Recording a part again replaces its CRC, but the caller
        must not rewrite the bytes of a durable part: a torn rewrite would only be caught by
        `verify()`. A shed part may be recorded again in any state but CORRUPT, with the CRC
        it had: another CRC raises PartMismatch and leaves it shed.
        """
        self._check_open("record_part")
        self.layout.span(index)  # IndexError for a part that does not exist
        if not 0 <= crc < _U64:
            raise ValueError(f"CRC-64 out of range: {crc}")
        with self._lock:
            first = self._shed.get(index)
            if first is not None and self._state is not EntryState.CORRUPT:
                if crc != first:
                    raise PartMismatch(
                        f"part {index} of {self.where} was fetched "
                        f"again with CRC-64 {crc:016x}, first fetched with {first:016x}"
                    )
                del self._shed[index]
                self._done[index] = crc
                self._checks.settle(index)
                return
            if self._state is not EntryState.PARTIAL:
                raise EntryStateError(
                    f"record_part({index}) on {self._state.name} cache entry "
                    f"{self.where} ({self.path})"
                )
            self._done[index] = crc
            self._checks.settle(index)
            if self._durable.get(index) != crc:
                self._durable.pop(index, None)

    def part_sink(self, index: int, scratch: memoryview) -> PartSink:
        """A body sink that writes part `index` into the data file through `scratch` and
        records it when the GET is done (ossmount.cache.sink). The part stays missing until
        then; a failed write raises CacheFull/CacheIOError from the sink."""
        self._check_open("part_sink")
        return PartSink(self, index, scratch)

    @property
    def needs_flush(self) -> bool:
        """Whether `flush` would write: lets a caller skip the hop to a worker thread (a close
        of a file read from a verified entry changed nothing)."""
        with self._lock:
            usable = not (self._closed or self._detached or self._discarded)
            return usable and self._changed_since_flush()

    def _changed_since_flush(self) -> bool:
        """Under `_lock`: parts, state or server CRC differ from what the checkpoint holds."""
        if self._state is EntryState.CORRUPT:
            return False  # never persisted: the entry is discarded
        state = self._state
        if len(self._done) != self.layout.count:
            state = EntryState.PARTIAL  # as _snapshot persists it
        return (
            self._done != self._durable
            or state is not self._persisted_state
            or self.meta.crc64 != self._persisted_crc
        )

    def flush(self) -> None:
        """Save every part recorded so far in the checkpoint (no fdatasync: module docstring).

        Cheap when nothing changed (no syscall). May run in a worker thread. On failure raises
        CacheFull/CacheIOError; the state is unchanged and the next flush retries.
        """
        with self._flush_lock:
            if self._closed or self._detached or self._discarded:
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
            self._durable[index] = _DROPPED
            self._state = EntryState.PARTIAL
        warn_damaged(self.where, index, start, length, stored, actual, self.path)
        return False

    # ----------------------------------------------------------------- verification

    def combined_crc(self) -> int:
        """CRC-64 of the whole object from the per-part CRCs, without reading the file."""
        with self._lock:
            parts = {**self._shed, **self._done}
            unchecked = len(self._checks)
        if len(parts) != self.layout.count or unchecked:
            raise EntryStateError(
                f"cache entry {self.where} is not complete "
                f"({len(parts)}/{self.layout.count} parts, {unchecked} not re-checked)"
            )
        return self.layout.combined_crc(parts)

    def verify(self) -> VerifyResult:
        """Compare the combined part CRCs with the server's CRC-64; no I/O, no second pass.

        VERIFIED / UNVERIFIABLE reach the checkpoint at the next `flush()` (call it right after,
        from a worker thread). CORRUPT is logged at ERROR with bucket, key, both CRCs and the
        path, and never persisted; the caller should `discard()`.
        """
        self._check_open("verify")
        actual = self.combined_crc()
        with self._lock:
            expected = self.meta.crc64
        if expected is None:
            state = EntryState.UNVERIFIABLE
        elif expected == actual:
            state = EntryState.VERIFIED
        else:
            state = EntryState.CORRUPT
            log.error(
                "CRC-64 mismatch for %s: server %d, cached parts combine to %d "
                "(cache file %s); the entry must be discarded",
                self.where,
                expected,
                actual,
                self.path,
            )
        with self._lock:
            self._state = state
        return VerifyResult(state=state, expected=expected, actual=actual)

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
