"""Which parts of one download are wanted, in flight, and which one a worker takes next.

Two queues: parts a reader is blocked on (demand) and parts wanted by read-ahead. A worker
takes demand parts first, lowest first; read-ahead parts, lowest first, only while no reader is
blocked on a part in flight (`urgent`): on a 2-core machine the GETs share one event loop, so
read-ahead started next to a blocked reader's part slows that part down (time to first byte, a
seek). Read-ahead waits until the urgent parts are in, then runs `parallel_count` wide.

Invariants (trio thread only, no awaits inside): a part index is in at most one of in flight
and queued (a queue may hold a stale index of a part that is done or in flight meanwhile;
`take` skips those); `is_done` is the caller's word for parts already cached.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable

__all__ = ["PartQueue"]


class _Heap:
    """A min-heap of part indices that holds each index once (`_members`; an index discarded
    may stay in `_heap` until popped, and is skipped then)."""

    def __init__(self) -> None:
        self._heap: list[int] = []
        self._members: set[int] = set()

    def __bool__(self) -> bool:
        return bool(self._members)

    def __contains__(self, index: int) -> bool:
        return index in self._members

    def push(self, index: int) -> None:
        if index not in self._members:
            self._members.add(index)
            heapq.heappush(self._heap, index)

    def pop(self) -> int:
        while True:
            index = heapq.heappop(self._heap)
            if index in self._members:
                self._members.discard(index)
                return index

    def discard(self, index: int) -> None:
        self._members.discard(index)
        if not self._members:
            self._heap.clear()

    def clear(self) -> None:
        self._heap.clear()
        self._members.clear()


class PartQueue:
    """The part bookkeeping of one download (see module docstring)."""

    def __init__(self, is_done: Callable[[int], bool]) -> None:
        self._is_done = is_done
        self._demand = _Heap()
        self._ahead = _Heap()
        self.in_flight: set[int] = set()
        self.urgent: set[int] = set()  # in-flight parts a reader is blocked on

    @property
    def pending(self) -> bool:
        """Whether a worker would find something to take (or to hold back)."""
        return bool(self._demand or self._ahead)

    def want(self, parts: Iterable[int], *, demand: bool) -> None:
        queue = self._demand if demand else self._ahead
        for index in parts:
            if index in queue or index in self.in_flight or self._is_done(index):
                continue
            queue.push(index)

    def take(self) -> tuple[int, bool] | None:
        """(part, urgent) for a worker to fetch, or None; the part is then in flight."""
        while self._demand:
            index = self._demand.pop()
            if not self._is_done(index) and index not in self.in_flight:
                return self._start(index, True)
        while self._ahead and not self.urgent:
            index = self._ahead.pop()
            if not self._is_done(index) and index not in self.in_flight:
                return self._start(index, False)
        return None

    def _start(self, index: int, urgent: bool) -> tuple[int, bool]:
        self.in_flight.add(index)
        if urgent:
            self.urgent.add(index)
        return index, urgent

    def put_back(self, index: int) -> None:
        """A read-ahead part taken but not started (no room): wanted again, not in flight."""
        self.in_flight.discard(index)
        self._ahead.push(index)

    def finished(self, index: int) -> None:
        self.in_flight.discard(index)
        self.urgent.discard(index)

    def forget(self, parts: Iterable[int]) -> None:
        """`parts` were cached and are shed behind every reader: a read-ahead entry left for
        one (queued before a reader's demand fetched it) must not fetch it again now that it
        is missing; a reader going back for one makes a demand."""
        for index in parts:
            self._ahead.discard(index)

    def drop_readahead(self) -> None:
        """Forget the read-ahead queue (it would only fill a full disk again)."""
        self._ahead.clear()

    def drop_all(self) -> None:
        """No reader is left: nothing more starts; parts in flight finish."""
        self._ahead.clear()
        self._demand.clear()
