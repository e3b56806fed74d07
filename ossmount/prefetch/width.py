"""How many part GETs one download runs at once: grown while each added stream brings its own
rate, held where the streams start to share one bottleneck.

A server or a network path that limits each connection (the referee's W4: 20 ms and 50 MB/s per
connection; OSS itself caps a single stream well below a host's link) rewards more streams
linearly; on loopback, or behind one saturated link, more streams only split the same rate
and cost CPU (2 cores: every stream is Python work on the one trio thread). So the width is
probed, like a congestion window: start at `initial` (--parallel-count); after a round of
`width / 2` parts at one width (short, so a 256 MiB object still gains), compare the round's
estimated aggregate rate (median per-part rate x width) with the previous round's. If
growing the width (x GROWTH) raised it by at least `gain` (default: half of what the added
streams would bring at full rate, so noise and CPU share do not count as a win), keep
growing up to `maximum`; otherwise go back to the previous width and stay there (`settled`).
The estimate overrates a wider round whose streams are not all busy (seen on loopback: 2.2x
for 16 streams against 4), which is another reason for the high bar.

Per-part rate is measured over the GET alone (the caller times `fetch_part` inside the
mount-wide limiter), so waiting for a GET slot is not taken for a slow stream.

Pure and synchronous (tested without trio); one per download, trio thread only.
"""

from __future__ import annotations

import statistics

__all__ = ["GROWTH", "StreamWidth"]

# The width is multiplied by this per probe that paid. x4 (4 -> 16 in one step) reached 16
# sooner on the shaped copy, but on a busy 2-core machine a x4 probe was judged worse both
# ways (kept 16 on loopback at a 1.3x bar, dropped it on the shaped path at 2.5x); doubling
# with a 1.5x bar was steady in both (bench_mount shaped_cp and cold_cp, debug log).
GROWTH = 2


class StreamWidth:
    def __init__(
        self, initial: int, maximum: int, *, gain: float | None = None, growth: int = GROWTH
    ) -> None:
        self._growth = growth
        # The added streams must bring at least half a stream's rate each on average: twice
        # the streams must give >= 1.5x the rate, so noise and CPU share (more threads win
        # more of a busy machine) are not taken for a per-connection limit.
        gain = gain if gain is not None else (1 + growth) / 2
        self.width = max(1, initial)
        self._maximum = max(maximum, self.width)
        self._gain = gain
        self._rates: list[float] = []  # per-part bytes/s in the current round
        self._previous: tuple[int, float] | None = None  # (width, aggregate) of the last round
        self._since = 0.0  # clock time of the last change
        self.last: tuple[int, float, tuple[int, float] | None] | None = None  # for the log
        self.settled = self.width >= self._maximum

    def part_done(
        self, nbytes: int, seconds: float, *, started: float = 0.0, now: float = 0.0
    ) -> bool:
        """A part of `nbytes` took `seconds` to GET, from `started` (clock time) to `now`;
        True when `width` changed. Parts started before the last change are not counted:
        they ran (partly) at the old width and made a wider probe on loopback look as fast
        as the narrow one per stream, so it was kept (seen: 16 wide on loopback)."""
        if self.settled or nbytes <= 0 or started < self._since:
            return False
        self._rates.append(nbytes / max(seconds, 1e-6))
        if len(self._rates) < max(2, self.width // 2):
            return False
        aggregate = statistics.median(self._rates) * self.width
        self._rates.clear()
        previous = self._previous
        self.last = (self.width, aggregate, previous)
        if previous is not None and aggregate < previous[1] * self._gain:
            # The growth did not pay: the streams share a bottleneck. Back to what it was.
            self.width = previous[0]
            self.settled = True
            return True
        if self.width >= self._maximum:
            self.settled = True  # the maximum paid: stay there
            return False
        self._previous = (self.width, aggregate)
        self.width = min(self.width * self._growth, self._maximum)
        self._since = now
        return True
