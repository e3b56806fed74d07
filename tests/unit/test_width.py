"""prefetch.width: a download's GET width grows while streams bring their own rate."""

from __future__ import annotations

from ossmount.prefetch.width import StreamWidth

PART = 8 * 1024 * 1024


def run(width: StreamWidth, seconds_at: dict[int, float] | None = None, rounds: int = 10) -> None:
    """Feed `rounds` rounds of parts; a part takes seconds_at(width) (default: 0.2 s each)."""
    for _ in range(rounds):
        for _ in range(width.width):
            seconds = (seconds_at or {}).get(width.width, 0.2)
            width.part_done(PART, seconds)


def test_per_connection_limits_grow_the_width_to_the_maximum() -> None:
    """Each stream keeps its rate (a per-connection cap): doubling pays until the maximum."""
    w = StreamWidth(4, 16)
    run(w)
    assert w.width == 16
    assert w.settled


def test_a_shared_bottleneck_returns_to_the_width_before_the_probe() -> None:
    """Each stream's rate halves when the width doubles (loopback, one saturated link)."""
    w = StreamWidth(4, 16)
    run(w, {4: 0.01, 8: 0.02, 16: 0.04})
    assert w.width == 4
    assert w.settled


def test_growth_stops_where_the_gain_ends() -> None:
    w = StreamWidth(4, 32, growth=2)
    run(w, {4: 0.2, 8: 0.2, 16: 0.4, 32: 0.8})
    assert w.width == 8
    assert w.settled


def test_a_small_gain_is_noise_not_a_reason_to_grow() -> None:
    w = StreamWidth(4, 16, growth=2)
    run(w, {4: 0.2, 8: 0.35})  # 8 streams: 1.14x the aggregate of 4
    assert w.width == 4


def test_no_room_to_grow_is_settled_from_the_start() -> None:
    w = StreamWidth(8, 4)
    assert (w.width, w.settled) == (8, True)
    assert not w.part_done(PART, 0.1)


def test_parts_started_before_a_change_do_not_judge_the_new_width() -> None:
    """Parts begun at 4 wide finish fast during the probe at 16; only parts begun at 16 count."""
    w = StreamWidth(4, 16, growth=4)
    w.part_done(PART, 0.01, started=0.0, now=0.01)
    assert w.part_done(PART, 0.01, started=0.0, now=0.01)
    assert w.width == 16
    for _ in range(8):  # stragglers from the 4-wide round: fast, but not evidence
        assert not w.part_done(PART, 0.01, started=0.005, now=0.02)
    assert w.width == 16
    assert not w.settled
    for _ in range(8):  # begun at 16 wide: each 4x slower, the aggregate did not grow
        w.part_done(PART, 0.04, started=0.02, now=0.06)
    assert (w.width, w.settled) == (4, True)
