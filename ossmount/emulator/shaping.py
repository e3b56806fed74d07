"""Network shaping: added latency per request and token-bucket bandwidth caps.

Why token buckets: a cap per connection and one in total imitate a region's per-stream and
per-host limits on loopback. A bucket holds at most ``rate * burst_s`` bytes; a sender takes
what it needs and sleeps for the deficit. All buckets live on the emulator's trio thread, so
they need no lock; settings may be changed from another thread (plain attribute writes of
floats, read once per chunk).
"""

from __future__ import annotations

from dataclasses import dataclass

import trio

__all__ = ["Shaping", "TokenBucket"]


class TokenBucket:
    def __init__(self, rate: float, burst_s: float = 0.05) -> None:
        self.rate = rate
        self.burst_s = burst_s
        self.tokens = 0.0
        self.stamp = trio.current_time()

    def chunk(self) -> int:
        """Largest slice worth sending in one go at this rate (≥ 16 KiB, ≤ 1 MiB)."""
        return max(16384, min(1 << 20, int(self.rate * self.burst_s)))

    async def take(self, n: int) -> None:
        now = trio.current_time()
        cap = max(self.rate * self.burst_s, float(n))
        self.tokens = min(cap, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= n
        if self.tokens < 0:
            await trio.sleep(-self.tokens / self.rate)


@dataclass
class Shaping:
    """Settings: ``latency_s`` before each response, byte/s caps (0 = unlimited)."""

    latency_s: float = 0.0
    conn_bps: float = 0.0
    total_bps: float = 0.0

    def __post_init__(self) -> None:
        self._total: TokenBucket | None = None
        self._total_rate = 0.0

    def set(
        self,
        *,
        latency_s: float | None = None,
        conn_bps: float | None = None,
        total_bps: float | None = None,
    ) -> None:
        if latency_s is not None:
            self.latency_s = latency_s
        if conn_bps is not None:
            self.conn_bps = conn_bps
        if total_bps is not None:
            self.total_bps = total_bps

    @property
    def active(self) -> bool:
        return self.conn_bps > 0 or self.total_bps > 0

    def total_bucket(self) -> TokenBucket | None:
        """The shared bucket (trio thread only); recreated when the rate changes."""
        if self.total_bps <= 0:
            return None
        if self._total is None or self._total_rate != self.total_bps:
            self._total = TokenBucket(self.total_bps)
            self._total_rate = self.total_bps
        return self._total
