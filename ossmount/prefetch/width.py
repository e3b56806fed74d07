"""How many part GETs one download runs at once: grown while each added stream brings its own
rate, held where the streams start to share one bottleneck.

A server or a network path that limits each connection (the referee's W4: 20 ms and 50 MB/s per
connection; OSS itself caps a single stream well below a host's link) rewards more streams
linearly; on loopback, or behind one saturated link, more streams only split the same rate
and cost CPU (2 cores: every stream is Python work on the one trio thread). So the width is
probed, like a congestion window: start at `initial` (--parallel-count); after a round of
`width / 2` parts at one width (short, so a 256 MiB object still gains), compare the round's
estimated aggregate rate (median per-part rate x width) with the previous round's. If
growing the width (x GROWTH) raised it by at least `gain` (default 1.3x, so noise does not
count as a win), keep growing up to `maximum`; otherwise go back to the previous width and
stay there (`settled`).

Per-part rate is measured over the GET alone (the caller times `fetch_part` inside the
mount-wide limiter), so waiting for a GET slot is not taken for a slow stream.

Pure and synchronous (tested without trio); one per download, trio thread only.
"""

from __future__ import annotations

import statistics

__all__ = ["GROWTH", "StreamWidth"]

# The width is multiplied by this per probe that paid: 4 -> 16 in one step. With doubling, a
# 256 MiB copy at 20 ms + 50 MB/s per connection spent a third of its time below 16 streams.
GROWTH = 4


class StreamWidth:
    def __init__(
        self, initial: int, maximum: int, *, gain: float = 1.3, growth: int = GROWTH
    ) -> None:
        self._growth = growth
        self.width = max(1, initial)
        self._maximum = max(maximum, self.width)
        self._gain = gain
        self._rates: list[float] = []  # per-part bytes/s in the current round
        self._previous: tuple[int, float] | None = None  # (width, aggregate) of the last round
        self.settled = self.width >= self._maximum

    def part_done(self, nbytes: int, seconds: float) -> bool:
        """A part of `nbytes` took `seconds` to GET; True when `width` changed."""
        if self.settled or nbytes <= 0:
            return False
        self._rates.append(nbytes / max(seconds, 1e-6))
        if len(self._rates) < max(2, self.width // 2):
            return False
        aggregate = statistics.median(self._rates) * self.width
        self._rates.clear()
        previous = self._previous
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
        return True
