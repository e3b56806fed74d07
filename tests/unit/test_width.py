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
    run(w, {4: 0.01, 16: 0.04})
    assert w.width == 4
    assert w.settled


def test_growth_stops_where_the_gain_ends() -> None:
    w = StreamWidth(4, 32, growth=2)
    run(w, {4: 0.2, 8: 0.2, 16: 0.4, 32: 0.8})
    assert w.width == 8
    assert w.settled


def test_the_default_growth_reaches_16_in_one_probe() -> None:
    w = StreamWidth(4, 16)
    changes = []
    for _ in range(2):  # one round at 4 (two parts)
        changes.append(w.part_done(PART, 0.2))
    assert changes == [False, True]
    assert w.width == 16


def test_a_small_gain_is_noise_not_a_reason_to_grow() -> None:
    w = StreamWidth(4, 16, growth=2)
    run(w, {4: 0.2, 8: 0.35})  # 8 streams: 1.14x the aggregate of 4
    assert w.width == 4


def test_no_room_to_grow_is_settled_from_the_start() -> None:
    w = StreamWidth(8, 4)
    assert (w.width, w.settled) == (8, True)
    assert not w.part_done(PART, 0.1)
