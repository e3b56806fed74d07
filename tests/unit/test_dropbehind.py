"""prefetch/dropbehind.py: which cache-file pages are let go as the readers advance."""

from __future__ import annotations

from ossmount.cache.ranges import PartLayout
from ossmount.prefetch.dropbehind import DropBehind

MiB = 1024 * 1024


def _behind(size: int) -> tuple[PartLayout, DropBehind, list[tuple[int, int]]]:
    layout = PartLayout(size, MiB)
    calls: list[tuple[int, int]] = []
    behind = DropBehind(layout, lambda start, length: calls.append((start, length)))
    behind.armed = True
    return layout, behind, calls


def test_nothing_goes_while_the_readers_are_in_the_first_part() -> None:
    layout, behind, calls = _behind(20 * MiB)
    behind.passed(0)
    behind.passed(layout.span(0)[1])  # the whole head part read, not yet past it
    assert calls == []


def test_a_part_passed_is_written_back_and_older_ones_dropped_once() -> None:
    layout, behind, calls = _behind(20 * MiB)
    behind.passed(layout.span(1)[0] + 1)  # into part 1: part 0 goes to disk
    assert calls == [layout.span(0)]
    calls.clear()
    behind.passed(layout.span(1)[0] + 2)  # still part 1: nothing new
    assert calls == []
    behind.passed(layout.span(5)[0] + 1)  # into part 5: part 4, and parts 0..2
    start2, length2 = layout.span(2)
    assert calls == [layout.span(4), (0, start2 + length2)]
    calls.clear()
    behind.passed(layout.span(12)[0] + 1)  # into part 12: part 11, and parts 0..9 again
    start9, length9 = layout.span(9)
    assert calls == [layout.span(11), (0, start9 + length9)]


def test_parts_far_behind_are_not_offered_again() -> None:
    layout, behind, calls = _behind(100 * MiB)
    behind.passed(layout.span(80)[0] + 1)  # into part 80: part 79, and parts 16..77
    start77, length77 = layout.span(77)
    low = layout.span(16)[0]
    assert calls == [layout.span(79), (low, start77 + length77 - low)]


def test_a_one_part_object_never_calls() -> None:
    layout, behind, calls = _behind(100 * 1024)
    assert layout.count == 1
    behind.passed(100 * 1024)
    assert calls == []


def test_a_file_nothing_was_fetched_into_is_left_to_the_kernel() -> None:
    layout, behind, calls = _behind(20 * MiB)
    behind.armed = False  # a remount's cached copy, read from disk
    behind.passed(layout.span(10)[0] + 1)
    assert calls == []
