"""Read-ahead window and whole-object coverage (prefetch/pattern.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ossmount.prefetch.pattern import Coverage, ReadaheadWindow

MiB = 1024 * 1024


def test_sequential_reads_double_the_window_up_to_the_maximum() -> None:
    window = ReadaheadWindow(initial=2 * MiB, maximum=16 * MiB, slack=MiB)
    sizes = [window.observe(i * MiB, (i + 1) * MiB) for i in range(6)]
    assert sizes == [2 * MiB, 4 * MiB, 8 * MiB, 16 * MiB, 16 * MiB, 16 * MiB]


def test_a_jump_resets_the_window_and_a_new_run_grows_again() -> None:
    window = ReadaheadWindow(initial=2 * MiB, maximum=16 * MiB, slack=MiB)
    window.observe(0, MiB)
    window.observe(MiB, 2 * MiB)
    assert window.observe(500 * MiB, 501 * MiB) == 0  # a footer read: fetch only what's asked
    assert window.observe(501 * MiB, 502 * MiB) == 2 * MiB


def test_slightly_out_of_order_kernel_reads_still_count_as_sequential() -> None:
    window = ReadaheadWindow(initial=2 * MiB, maximum=64 * MiB, slack=4 * MiB)
    window.observe(0, MiB)
    window.observe(2 * MiB, 3 * MiB)  # gap of one read still in flight: not within frontier
    assert window.observe(MiB, 2 * MiB) > 0


def test_a_peek_at_the_start_opens_no_window_until_the_run_reaches_the_trigger() -> None:
    window = ReadaheadWindow(initial=2 * MiB, maximum=16 * MiB, slack=MiB, trigger=256 * 1024)
    assert window.observe(0, 16 * 1024) == 0  # head -c 1: the kernel asks for 16 KiB
    assert window.observe(16 * 1024, 128 * 1024) == 0  # still a peek
    assert window.observe(128 * 1024, 256 * 1024) == 2 * MiB  # 256 KiB read in order: a copy
    assert window.observe(900 * MiB, 900 * MiB + 4096) == 0  # a jump starts a new run...
    assert window.observe(900 * MiB + 4096, 901 * MiB) == 2 * MiB  # ...which opens it again
    # A first read as large as the trigger (cp and cat read 1 MiB) opens it at once.
    fresh = ReadaheadWindow(initial=2 * MiB, maximum=16 * MiB, slack=MiB, trigger=256 * 1024)
    assert fresh.observe(0, MiB) == 2 * MiB


def test_coverage_completes_exactly_once_when_every_byte_was_asked_for() -> None:
    cov = Coverage(10)
    assert not cov.add(0, 4)
    assert not cov.add(6, 10)
    assert cov.add(3, 7)
    assert cov.complete
    assert not cov.add(0, 10)  # already complete: not reported twice


@given(st.lists(st.tuples(st.integers(0, 100), st.integers(0, 100)), max_size=40))
def test_coverage_matches_a_set_of_bytes(reads: list[tuple[int, int]]) -> None:
    size = 100
    cov = Coverage(size)
    seen: set[int] = set()
    completions = 0
    for a, b in reads:
        start, end = min(a, b), max(a, b)
        seen.update(range(start, end))
        completions += cov.add(start, end)
        assert cov.complete == (len(seen) == size)
    assert completions == (1 if len(seen) == size else 0)
