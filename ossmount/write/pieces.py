"""An upload's part CRCs cut where the read cache cuts the file, so the committed file joins
the cache without being read again (cache/adopt.py `Adopter.prepare`).

Why: a part is read and hashed once as it goes (oss/_upload_wire.py; a short part in memory;
a copied part in `hash_part`); that pass also notes the CRC-64 of the part's pieces between
the cache's part boundaries (oss/_cuts.py). `PieceBook` keeps them per part, tied to the very
`PartRecord` the send produced, and `collect` hands the commit the whole file's pieces
(offset, length, CRC-64) only when every part of the Complete has its own: a part sent again
(invalidated by a write, `UploadSession.invalidate`), resumed from a journal, or sent by a
path that took no pieces (a long body over TLS) leaves the adoption to hash the file, as
before.

The cut points depend only on the offset (cache.ranges: a `HEAD_PART_SIZE` head part, then
parts of the cache's `part_size`), not on the file's final size, so a part sent early cuts
where the finished file's layout will.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..cache.ranges import HEAD_PART_SIZE
from ..oss._cuts import fold, pieces
from .commit_types import Piece
from .journal import PartRecord

__all__ = ["PieceBook", "cache_cuts", "hash_part"]


def cache_cuts(start: int, length: int, cache_part_size: int) -> tuple[int, ...]:
    """The cache's part boundaries strictly inside [start, start + length), relative to
    `start` (none when `cache_part_size` is 0: nobody asked)."""
    if cache_part_size <= 0:
        return ()
    cps = cache_part_size
    head = min(cps, HEAD_PART_SIZE)
    bound = head if start < head else head + ((start - head) // cps + 1) * cps
    out = []
    while bound < start + length:
        out.append(bound - start)
        bound += cps
    return tuple(out)


def hash_part(
    fd: int, offset: int, length: int, cuts: tuple[int, ...] = ()
) -> tuple[int, tuple[int, ...]]:
    """Blocking. CRC-64 of the staged bytes [offset, offset + length) and of their pieces
    between `cuts`, in one read; EOFError if the file ends before."""
    crc, pos, marks = 0, 0, list[int]()
    while pos < length:
        data = os.pread(fd, min(8 << 20, length - pos), offset + pos)
        if not data:
            raise EOFError
        crc = fold(data, crc, pos, cuts, marks)
        pos += len(data)
    return crc, pieces(marks, cuts, length, crc)


@dataclass
class PieceBook:
    """The pieces of one session's parts (see the module docstring). Touched on the trio
    thread only, like the session's `_parts`."""

    cache_part_size: int = 0  # 0: no pieces wanted (no read cache adopts the commits)
    _kept: dict[int, tuple[PartRecord, tuple[int, ...]]] = field(default_factory=dict)

    def cuts(self, start: int, length: int) -> tuple[int, ...]:
        return cache_cuts(start, length, self.cache_part_size)

    def keep(self, part: PartRecord, start: int, found: tuple[int, ...]) -> None:
        """`part` (starting at byte `start`) was confirmed with these piece CRCs (empty: none
        taken). A part's earlier pieces go either way."""
        self._kept.pop(part.number, None)
        if self.cache_part_size and len(found) == len(self.cuts(start, part.size)) + 1:
            self._kept[part.number] = (part, found)

    def clear(self) -> None:
        self._kept.clear()

    def collect(self, parts: dict[int, PartRecord], part_size: int, size: int) -> tuple[Piece, ...]:
        """The pieces of the `size`-byte file the parts 1..N of `parts` (of `part_size`) make,
        in order; empty unless every one of those parts is the record its pieces came with."""
        if not self.cache_part_size or not size:
            return ()
        out: list[Piece] = []
        for number in range(1, -(-size // part_size) + 1):
            kept = self._kept.get(number)
            part = parts.get(number)
            if kept is None or part is None or kept[0] is not part:
                return ()
            start = (number - 1) * part_size
            bounds = (0, *self.cuts(start, part.size), part.size)
            out.extend(
                Piece(start + bounds[i], bounds[i + 1] - bounds[i], crc)
                for i, crc in enumerate(kept[1])
            )
        return tuple(out)
