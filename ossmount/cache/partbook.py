"""What one cached object version knows about its parts, in memory: the part maps, the state,
the server CRC-64. CacheEntry (cache.entry) is this plus the files.

Why apart: nothing here does I/O (this module does not import `os`), so every method is dict
work under `_lock`, cheap on the trio thread and safe while a flush runs in a worker thread;
the bookkeeping rules (which part may be served, what the checkpoint must say, when the
object is verified) change for other reasons than how bytes reach the disk. CacheEntry's I/O
methods (read, flush, recheck, shed, teardown) take the same `_lock` for their map updates.

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
    shed      punched out of the file (cache.entry, "Shedding"), CRC kept (`_shed`)

A part damaged at rest is forgotten and marked non-durable, so neither the in-memory state nor
the next checkpoint says verified while it is missing.

Shed parts keep their CRCs so the whole-object verdict needs no second pass: `complete` means
every part has a CRC, recorded or shed; `all_present` that every part's bytes are in the file.
A shed part fetched again must bring the same CRC as the first time (else `PartMismatch`: one
of the two fetches was wrong and nothing tells which).

The lifecycle flags (`_closed`, `_discarded`, `_detached`) are set by CacheEntry's teardown;
here they only refuse changes (`_check_open`) and hand-outs (`usable`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from ossmount.cache.checkpoint import Checkpoint, EntryState
from ossmount.cache.checks import PartChecks
from ossmount.cache.errors import EntryStateError, PartMismatch
from ossmount.cache.ranges import PartLayout
from ossmount.oss.models import ObjectMeta

__all__ = ["DROPPED", "PartBook", "VerifyResult"]

log = logging.getLogger(__name__)

_U64 = 1 << 64
DROPPED = -1  # in `_durable`: a part the checkpoint lists but whose bytes failed a re-check


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of `CacheEntry.verify()`. `expected` is the server's CRC-64 (None if absent)."""

    state: EntryState
    expected: int | None
    actual: int


class PartBook:
    """The in-memory state of one entry (see the module docstring); no I/O.

    Constant after open: `bucket`, `layout`, `path` (the data file, named in messages), and
    `meta` except its `crc64`, which the checkpoint or `set_server_crc64` may fill in when the
    caller's meta lacked it. Mutable under `_lock`: the part maps and `state`.
    """

    def __init__(
        self,
        *,
        bucket: str,
        meta: ObjectMeta,
        layout: PartLayout,
        path: Path,
        durable: dict[int, int],
        state: EntryState,
    ) -> None:
        self.bucket = bucket
        self.meta = meta
        self.layout = layout
        self.path = path
        self._state = state
        self._done = dict(durable)
        self._durable = dict(durable)
        self._shed: dict[int, int] = {}  # parts punched out of the file: their CRCs
        self._checks = PartChecks(durable)  # trusted from the checkpoint, not re-hashed
        self._persisted_state = state
        self._persisted_crc = meta.crc64
        self._closed = False
        self._discarded = False
        self._detached = False
        self._lock = threading.Lock()

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
        _check_crc(crc)
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
        _check_crc(crc)
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
        _check_crc(crc)
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

    @property
    def needs_flush(self) -> bool:
        """Whether `flush` would write: lets a caller skip the hop to a worker thread (a close
        of a file read from a verified entry changed nothing)."""
        with self._lock:
            return self.usable and self._changed_since_flush()

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


def _check_crc(crc: int) -> None:
    if not 0 <= crc < _U64:
        raise ValueError(f"CRC-64 out of range: {crc}")
