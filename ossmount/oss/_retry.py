"""When and how long to wait before another attempt: a pure policy plus one small loop.

Why full jitter: many parts of one file fail together when OSS throttles; spreading their
retries uniformly over [0, cap] avoids the synchronized retry waves that a fixed or
"equal jitter" backoff produces. Retry-After (seconds or an HTTP date) is a floor, never
shortened by jitter, and every delay is capped so a hostile header cannot park us for hours.

The loop (`call_with_retries`) calls the operation afresh on every attempt, so the request is
re-signed with the current time each time (a retry after RequestTimeTooSkewed or a long
backoff would otherwise carry a stale signature). An operation that made progress before
failing (a body cut short after some bytes) does not use up an attempt, bounded by
`max_progress_retries` so a server that trickles a byte per connection still ends.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TypeVar

import trio

from ..observe import record_retry
from ._errors import OssError, is_retryable

__all__ = ["RetryPolicy", "call_with_retries", "parse_retry_after"]

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """`max_attempts` counts the first try (1 = never retry)."""

    max_attempts: int = 5
    base_delay_s: float = 0.2
    max_delay_s: float = 20.0
    max_progress_retries: int = 20
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.base_delay_s < 0 or self.max_delay_s < self.base_delay_s:
            raise ValueError("need 0 <= base_delay_s <= max_delay_s")

    def backoff_s(self, failures: int, retry_after_s: float | None = None) -> float:
        """Delay after the `failures`-th consecutive failure (1-based)."""
        cap = min(self.max_delay_s, self.base_delay_s * 2.0 ** max(0, failures - 1))
        delay = self.rng.uniform(0.0, cap)
        if retry_after_s is not None and retry_after_s > delay:
            delay = retry_after_s
        return min(delay, self.max_delay_s)

    def should_retry(self, failures: int, exc: BaseException) -> bool:
        return failures < self.max_attempts and is_retryable(exc)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After as seconds from `now` (unix time); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when - now)


async def call_with_retries(
    policy: RetryPolicy,
    op: Callable[[int], Awaitable[T]],
    *,
    describe: str,
    progress: Callable[[], int] | None = None,
) -> T:
    """Run `op(attempt)` until it returns, retrying retryable failures per `policy`.

    `progress()` (optional) reports how far the operation got; if it moved since the previous
    failure, the failure does not count against `max_attempts`. The last exception is
    re-raised unchanged when the policy gives up.
    """
    failures = 0
    progress_retries = 0
    attempt = 0
    last_progress = progress() if progress is not None else 0
    while True:
        attempt += 1
        try:
            return await op(attempt)
        except OssError as exc:
            now_progress = progress() if progress is not None else 0
            if now_progress > last_progress and progress_retries < policy.max_progress_retries:
                progress_retries += 1
                failures = 0  # a fresh start from the byte reached
            last_progress = now_progress
            failures += 1
            if not policy.should_retry(failures, exc):
                raise
            delay = policy.backoff_s(failures, exc.retry_after_s)
            log.warning(
                "retrying %s after %s (attempt %d failed), waiting %.2f s",
                describe,
                exc.code,
                attempt,
                delay,
            )
            record_retry(describe.split(" ", 1)[0].lower(), exc.code)
            await trio.sleep(delay)
