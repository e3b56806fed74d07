"""Pure part arithmetic: how an object of `size` bytes is cut into parts.

Part 0 is the *head*: `head_size = min(part_size, HEAD_PART_SIZE)` bytes (256 KiB). Every later
part `i` covers [head_size + (i - 1) * part_size, ...) and is `part_size` long, except the last,
which is 1..part_size bytes. The small head is for the time to first byte: the first read of a
cold object (the kernel asks for 16..128 KiB) waits for one 256 KiB GET, not one 8 MiB GET, and
read-ahead takes over from there. 256 KiB rather than 1 MiB: it is received on the event loop
(bodies under 1 MiB skip the worker thread) and fills 4x fewer new cache pages; measured
open+read(1) 3.0 vs 3.9 ms (median of 5, `bench/bench_mount.py --only ttfb` style, 2-core VM).
With part_size <= 256 KiB every part is part_size long. An empty object has no parts at all (so
it is "complete" as soon as it is opened, and its CRC is CRC("") = 0).

The layout is a pure function of (size, part_size), which is all a checkpoint records, so
HEAD_PART_SIZE is part of the checkpoint format: changing it needs a new
`checkpoint.FORMAT_VERSION` (older checkpoints are then discarded, never misread; a unit test
pins the pair).

This module knows nothing of files, checkpoints or the network (it only combines part CRCs
into the object's, `combined_crc`), so the prefetcher, the cache
entry and the checkpoint all agree on one definition of a part, and Hypothesis can check it
exhaustively.
"""

from __future__ import annotations

from collections.abc import Collection, Container, Mapping
from dataclasses import dataclass, field

from ossmount.crc64 import combine, shift

__all__ = ["HEAD_PART_SIZE", "PartLayout"]

HEAD_PART_SIZE = 256 * 1024


@dataclass(frozen=True, slots=True)
class PartLayout:
    """The parts of one object version. `size` >= 0 and `part_size` > 0, checked at creation."""

    size: int
    part_size: int
    # Derived once here, not per access: a cold small file asked for `count` ~48 times and
    # `head_size` ~66 times (cProfile of a cold rsync), as properties ~30 us of its CPU.
    head_size: int = field(init=False, repr=False, compare=False)  # part 0's length, at most
    count: int = field(init=False, repr=False, compare=False)  # parts; 0 for an empty object

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError(f"object size must be >= 0, got {self.size}")
        if self.part_size <= 0:
            raise ValueError(f"part size must be > 0, got {self.part_size}")
        head = min(self.part_size, HEAD_PART_SIZE)
        count = 0 if self.size == 0 else 1 + -(-max(0, self.size - head) // self.part_size)
        object.__setattr__(self, "head_size", head)
        object.__setattr__(self, "count", count)

    def start(self, index: int) -> int:
        """First byte of part `index` (index may be `count`: then it is `size`)."""
        if index == 0:
            return 0
        return min(self.head_size + (index - 1) * self.part_size, self.size)

    def span(self, index: int) -> tuple[int, int]:
        """(start, length) of part `index`; IndexError outside 0..count-1."""
        if not 0 <= index < self.count:
            raise IndexError(f"part {index} out of range 0..{self.count - 1}")
        start = self.start(index)
        return start, self.start(index + 1) - start

    def index_of(self, offset: int) -> int:
        """The part holding byte `offset` (0 <= offset < size)."""
        if offset < self.head_size:
            return 0
        return 1 + (offset - self.head_size) // self.part_size

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
        return range(self.index_of(offset), self.index_of(end - 1) + 1)

    def bytes_in(self, parts: Collection[int]) -> int:
        """Total length of `parts` (distinct valid indices), in O(1).

        Every part is `part_size` long but the head part and the last one, so only those two
        are looked up: the cache store asks this of every open entry at each open and flush
        (summing the spans of a 100 GiB object's 12,800 parts took ~5 ms of the event loop
        each time).
        """
        total = len(parts) * self.part_size
        for index in {0, self.count - 1}:
            if index in parts:
                total += self.span(index)[1] - self.part_size
        return total

    def contiguous_parts(self, done: Container[int]) -> int:
        """How many parts from part 0 on are all in `done` (the resume point, in parts)."""
        n = 0
        count = self.count
        while n < count and n in done:
            n += 1
        return n

    def contiguous_offset(self, done: Container[int]) -> int:
        """Bytes [0, result) are all in done parts; equals `size` once every part is done."""
        return self.start(self.contiguous_parts(done))

    def combined_crc(self, crcs: Mapping[int, int]) -> int:
        """CRC-64 of the whole object from every part's CRC (KeyError if one is missing),
        without reading a byte: what the server's x-oss-hash-crc64ecma is compared with."""
        count = self.count
        if count == 0:
            return 0
        if count == 1:
            return crcs[0]
        # Every part between the head (part 0) and the last has the same length, so one
        # cached "advance over part_size zero bytes" operator serves them all.
        crc = crcs[0]
        for index in range(1, count - 1):
            crc = shift(crc, self.part_size) ^ crcs[index]
        return combine(crc, crcs[count - 1], self.span(count - 1)[1])
