"""Per-handle access-pattern tracking: read-ahead window sizing and whole-object coverage.

Both are pure and synchronous so they can be tested without trio or a mount.

Read-ahead: a handle whose reads keep landing at (or just behind) the end of its previous read
is sequential, and once its run of sequential bytes reaches `trigger` its window doubles per
read from `initial` up to `maximum` bytes; a jump elsewhere (a Parquet footer, a seek) resets
it to zero so random readers fetch only what they ask for. The trigger keeps a peek at the
start of a file (`head -c`, `file`, a thumbnailer: the kernel asks for 16..128 KiB) from
fetching two 8 MiB parts nobody reads, which costs egress on every file of a directory scan;
`cp` and `cat` ask for 1 MiB at once and pass it on their first read. The kernel keeps several
reads in flight and may deliver them slightly out of order, so "sequential" tolerates reads
that start inside the last `slack` bytes before the frontier.

Scattered: a read that jumped away from offset 0 and whose run is still shorter than `spot_run`
bytes is a random read: it is answered with a small ranged GET (prefetch.spot) instead of the
parts it touches. A run that started at offset 0 (`cp`, `cat`, a peek at the head) never is,
so whole-file readers keep their first-read latency; a random reader that turns sequential
gets parts, then read-ahead, once its run reaches `spot_run`.

Coverage: a handle that has asked for every byte of the object is copying it whole (`cp`,
`rsync`, `cat`). The read that completes that coverage is answered only after the object's
CRC-64 verdict, so a whole-object reader can never see a clean EOF on bytes that failed
verification (`cp` exits non-zero instead of writing a corrupt copy).
"""

from __future__ import annotations

import bisect

__all__ = ["Coverage", "ReadaheadWindow"]


class ReadaheadWindow:
    """How many bytes past a read should be prefetched for this handle."""

    def __init__(
        self, *, initial: int, maximum: int, slack: int, trigger: int = 0, spot_run: int = 0
    ) -> None:
        self._initial = min(initial, maximum)
        self._spot_run = spot_run
        self._maximum = maximum
        self._slack = slack
        self._trigger = trigger
        self._frontier = 0  # end of the furthest read so far
        self._run_start = 0  # where the current sequential run began
        self._window = 0

    def observe(self, offset: int, end: int) -> int:
        """Record a read of [offset, end); return the read-ahead window in bytes."""
        sequential = self._frontier - self._slack <= offset <= self._frontier
        if sequential:
            self._frontier = max(self._frontier, end)
        else:
            self._frontier = end
            self._run_start = offset
        if sequential and self._frontier - self._run_start >= self._trigger:
            self._window = min(self._maximum, max(self._initial, self._window * 2))
        else:
            self._window = 0
        return self._window

    @property
    def scattered(self) -> bool:
        """Whether the last observed read is a random one (see module docstring)."""
        return self._run_start > 0 and self._frontier - self._run_start < self._spot_run


class Coverage:
    """Merged set of byte intervals a handle has asked for; `add` says when [0, size) is full."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._starts: list[int] = []
        self._ends: list[int] = []

    def add(self, offset: int, end: int) -> bool:
        """Add [offset, end); True exactly when this call made the coverage complete."""
        if self.complete or end <= offset:
            return False
        i = bisect.bisect_left(self._ends, offset)
        j = bisect.bisect_right(self._starts, end)
        if i < j:
            offset = min(offset, self._starts[i])
            end = max(end, self._ends[j - 1])
        self._starts[i:j] = [offset]
        self._ends[i:j] = [end]
        return self.complete

    @property
    def complete(self) -> bool:
        return bool(self._starts) and self._starts[0] <= 0 and self._ends[0] >= self._size
