"""Parts a sequential writer just filled, kept in memory as the FUSE layer received them.

Why: a part sent while the file is still being written was, until now, read back from the
staging file it had just been written to. The FUSE write buffers are immutable `bytes` the
daemon already holds, so keeping references to them costs no copy; the part upload sends them
as they are (`oss._writes.Chunks`) and lets them go. Measured (bench/bench_part_source.py,
8 MiB parts, 4 in flight): client CPU 0.81 -> 0.55 s per GiB of parts; through a mount
(bench/bench_write_mount.py, `cp` of 1 GiB) the daemon's ~1.5-1.9 s/GiB moves by about that
much, within that machine's noise.

What makes the bytes right: only writes at the sequential frontier (`offset == seq_end`, the
whole buffer written) are kept, a part is kept only if it was filled from its first byte with
no gap, and every other change of the file (a write behind the frontier, a truncate) drops
the kept parts it touches (`forget`). So a kept part is exactly the staging file's bytes of
that part, as a read-back would give them; a part not kept is read from the file as before.

Memory: every byte kept counts against one `HotBudget` per mount; a part that would exceed it
is not kept (it goes from the file). A kept part is released when its upload attempt ends,
when it is forgotten, or when its file is dropped, so at most `limit` bytes (plus the unkept
rest of a buffer that straddles a part boundary) are held at once.

Concurrency: trio, one thread; all of this is synchronous code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["HotBudget", "HotFiller", "HotPart"]


class HotBudget:
    """Bytes all kept parts of one mount may hold together."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, n: int) -> bool:
        if self.held + n > self.limit:
            return False
        self.held += n
        return True

    def give(self, n: int) -> None:
        self.held -= n
        assert self.held >= 0, "hot budget given back more than was taken"


@dataclass(eq=False)
class HotPart:
    """The pieces of part `index` (0-based) in file order; `size` bytes counted in `budget`."""

    index: int
    budget: HotBudget
    pieces: list[bytes | memoryview] = field(default_factory=list)
    size: int = 0

    def release(self) -> None:
        """Give the bytes back (idempotent); the pieces are no longer this part's."""
        if self.size:
            self.budget.give(self.size)
        self.pieces, self.size = [], 0


class HotFiller:
    """One staged file's kept parts (see the module docstring)."""

    def __init__(self, part_size: int, budget: HotBudget) -> None:
        self.part_size = part_size
        self.budget = budget
        self.filling: HotPart | None = None
        self.full: dict[int, HotPart] = {}  # filled parts not yet taken by the uploader

    def append(self, offset: int, data: bytes) -> None:
        """`data` was written whole at `offset`, the file's sequential frontier."""
        ps, pos = self.part_size, 0
        while pos < len(data):
            at = offset + pos
            index = at // ps
            n = min(len(data) - pos, (index + 1) * ps - at)
            part = self.filling
            if part is not None and at != part.index * ps + part.size:
                part.release()  # not contiguous with what it holds: read it from the file
                part = self.filling = None
            if part is None and at == index * ps and index not in self.full:
                part = self.filling = HotPart(index, self.budget)
            if part is not None:
                if self.budget.take(n):
                    part.pieces.append(data if n == len(data) else memoryview(data)[pos : pos + n])
                    part.size += n
                else:
                    part.release()
                    part = self.filling = None
            if part is not None and part.size == ps:
                self.full[index] = part
                self.filling = None
            pos += n

    def take(self, index: int) -> HotPart | None:
        """Part `index`, whole, for its upload (which releases it), or None: read the file."""
        return self.full.pop(index, None)

    def forget(self, start: int, end: int | None = None) -> None:
        """Bytes [start, end) (end None: to the end of the file) changed other than by an
        append: kept parts holding any of them no longer match the file."""
        ps = self.part_size

        def touched(part: HotPart) -> bool:
            first = part.index * ps
            return first + ps > start and (end is None or first < end)

        if self.filling is not None and touched(self.filling):
            self.filling.release()
            self.filling = None
        for index in [i for i, part in self.full.items() if touched(part)]:
            self.full.pop(index).release()

    def clear(self) -> None:
        self.forget(0)
