"""PartQueue: a shed part is not fetched again by a stale read-ahead entry (prefetch/parts.py)."""

from __future__ import annotations

from ossmount.prefetch.parts import PartQueue


def test_a_part_shed_behind_the_readers_is_not_fetched_again_by_read_ahead() -> None:
    done: set[int] = set()
    queue = PartQueue(done.__contains__)
    queue.want([0, 1, 2], demand=False)
    queue.want([0], demand=True)  # a reader blocked on part 0 before read-ahead took it
    assert queue.take() == (0, True)
    queue.finished(0)
    done.add(0)
    done.discard(0)  # read past by every reader, then shed to make room
    queue.forget([0])
    taken = [queue.take(), queue.take(), queue.take()]
    assert taken == [(1, False), (2, False), None]


def test_a_forgotten_part_can_be_wanted_again() -> None:
    queue = PartQueue(lambda index: False)
    queue.want([3, 4], demand=False)
    queue.forget([3, 4])
    assert not queue.pending
    queue.want([4], demand=False)  # a reader going back that way: read-ahead wants it again
    assert queue.pending
    assert queue.take() == (4, False)
    assert queue.take() is None
