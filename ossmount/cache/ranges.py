"""Pure part arithmetic: how an object of `size` bytes is cut into fixed-size parts.

Part `i` covers bytes [i * part_size, min((i + 1) * part_size, size)). Every part but the last
is exactly `part_size` long; the last is 1..part_size bytes. An empty object has no parts at
all (so it is "complete" as soon as it is opened, and its CRC is CRC("") = 0).

This module knows nothing of files, checkpoints or the network, so the prefetcher, the cache
entry and the checkpoint all agree on one definition of a part, and Hypothesis can check it
exhaustively.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass

__all__ = ["PartLayout"]


@dataclass(frozen=True, slots=True)
class PartLayout:
    """The parts of one object version. `size` >= 0 and `part_size` > 0, checked at creation."""

    size: int
    part_size: int

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError(f"object size must be >= 0, got {self.size}")
        if self.part_size <= 0:
            raise ValueError(f"part size must be > 0, got {self.part_size}")

    @property
    def count(self) -> int:
        """Number of parts; 0 for an empty object."""
        return -(-self.size // self.part_size)

    def span(self, index: int) -> tuple[int, int]:
        """(start, length) of part `index`; IndexError outside 0..count-1."""
        if not 0 <= index < self.count:
            raise IndexError(f"part {index} out of range 0..{self.count - 1}")
        start = index * self.part_size
        return start, min(self.part_size, self.size - start)

    def parts_for(self, offset: int, length: int) -> range:
        """Parts that hold any byte of [offset, offset + length), clipped to the object.

        A read past the end, or of length 0, needs no part: the result is empty, never an
        error, because FUSE routinely asks for more than the file holds.
        """
        if offset < 0 or length < 0:
            raise ValueError(f"negative offset or length: offset={offset} length={length}")
        end = min(offset + length, self.size)
        if offset >= end:
            return range(0)
        return range(offset // self.part_size, (end - 1) // self.part_size + 1)

    def contiguous_parts(self, done: Container[int]) -> int:
        """How many parts from part 0 on are all in `done` (the resume point, in parts)."""
        n = 0
        count = self.count
        while n < count and n in done:
            n += 1
        return n

    def contiguous_offset(self, done: Container[int]) -> int:
        """Bytes [0, result) are all in done parts; equals `size` once every part is done."""
        return min(self.contiguous_parts(done) * self.part_size, self.size)
