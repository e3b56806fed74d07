"""Retry policy: bounds, full jitter, Retry-After, progress accounting — on trio's mock clock."""

from __future__ import annotations

import itertools
import random

import pytest
import trio
import trio.testing

from ossmount.oss import (
    AccessDenied,
    NoSuchKey,
    OssError,
    OssTransportError,
    PreconditionFailed,
    QpsLimitExceeded,
    RequestTimeTooSkewed,
    ServiceUnavailable,
)
from ossmount.oss._errors import InvalidRange, is_retryable
from ossmount.oss._retry import (
    DeadlineExceeded,
    RetryPolicy,
    call_with_retries,
    parse_retry_after,
)


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def err(cls: type[OssError], status: int, code: str) -> OssError:
    return cls(status, code, "m", bucket="b", key="k")


@pytest.mark.parametrize(
    ("exc", "retry"),
    [
        (err(ServiceUnavailable, 503, "ServiceUnavailable"), True),
        (err(QpsLimitExceeded, 429, "QpsLimitExceeded"), True),
        (err(OssError, 502, "BadGateway"), True),
        (err(RequestTimeTooSkewed, 403, "RequestTimeTooSkewed"), True),
        (OssTransportError("reset", bucket="b", key="k"), True),
        (err(AccessDenied, 403, "AccessDenied"), False),
        (err(NoSuchKey, 404, "NoSuchKey"), False),
        (err(PreconditionFailed, 412, "PreconditionFailed"), False),
        (err(InvalidRange, 416, "InvalidRange"), False),
        (ValueError("not ours"), False),
    ],
)
def test_is_retryable(exc: BaseException, retry: bool) -> None:
    assert is_retryable(exc) is retry


def test_backoff_full_jitter_bounds() -> None:
    policy = RetryPolicy(base_delay_s=0.5, max_delay_s=4.0, rng=random.Random(1))
    for failures, cap in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (10, 4.0)]:
        delays = [policy.backoff_s(failures) for _ in range(500)]
        assert all(0.0 <= d <= cap for d in delays)
        assert max(delays) > cap * 0.9  # spread over the whole interval, not a fixed step
        assert min(delays) < cap * 0.1


def test_retry_after_is_a_floor_but_capped() -> None:
    policy = RetryPolicy(base_delay_s=0.1, max_delay_s=10.0, rng=random.Random(2))
    assert policy.backoff_s(1, retry_after_s=3.0) == 3.0
    assert policy.backoff_s(1, retry_after_s=3600.0) == 10.0


def test_parse_retry_after() -> None:
    assert parse_retry_after("7", now=0) == 7.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:30 GMT", now=10.0) == 20.0
    assert parse_retry_after("garbage", now=0) is None
    assert parse_retry_after(None, now=0) is None


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


async def test_gives_up_after_max_attempts(autojump_clock: trio.testing.MockClock) -> None:
    policy = RetryPolicy(max_attempts=4, base_delay_s=1.0, max_delay_s=8.0, rng=random.Random(3))
    calls: list[float] = []

    async def op(attempt: int) -> None:
        calls.append(trio.current_time())
        raise err(ServiceUnavailable, 503, "ServiceUnavailable")

    start = trio.current_time()
    with pytest.raises(ServiceUnavailable):
        await call_with_retries(policy, op, describe="GET oss://b/k")
    assert len(calls) == 4
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert all(0 <= g <= cap for g, cap in zip(gaps, [1.0, 2.0, 4.0], strict=True))
    assert trio.current_time() - start == pytest.approx(sum(gaps))


async def test_non_retryable_raises_at_once(autojump_clock: trio.testing.MockClock) -> None:
    calls = 0

    async def op(attempt: int) -> None:
        nonlocal calls
        calls += 1
        raise err(NoSuchKey, 404, "NoSuchKey")

    with pytest.raises(NoSuchKey):
        await call_with_retries(RetryPolicy(max_attempts=5), op, describe="x")
    assert calls == 1
    assert trio.current_time() == 0


async def test_honours_retry_after(autojump_clock: trio.testing.MockClock) -> None:
    times: list[float] = []

    async def op(attempt: int) -> str:
        times.append(trio.current_time())
        if attempt == 1:
            e = err(QpsLimitExceeded, 429, "QpsLimitExceeded")
            e.retry_after_s = 5.0
            raise e
        return "ok"

    policy = RetryPolicy(base_delay_s=0.01, max_delay_s=30.0)
    assert await call_with_retries(policy, op, describe="x") == "ok"
    assert times[1] - times[0] == pytest.approx(5.0)


async def test_progress_counts_as_an_attempt(autojump_clock: trio.testing.MockClock) -> None:
    """Issue 14 finding 4: a try that made progress (a resumed body) is still a try."""
    pos = 0

    async def op(attempt: int) -> int:
        nonlocal pos
        pos += 1  # each attempt gets one byte further, then the connection drops
        raise OssTransportError("reset", bucket="b", key="k")

    policy = RetryPolicy(max_attempts=3, base_delay_s=0.01)
    with pytest.raises(OssTransportError):
        await call_with_retries(policy, op, describe="x")
    assert pos == 3


async def test_deadline_cuts_a_slow_attempt(autojump_clock: trio.testing.MockClock) -> None:
    async def op(attempt: int) -> None:
        await trio.sleep(1000)  # a server that trickles forever

    policy = RetryPolicy(max_attempts=5)
    with pytest.raises(DeadlineExceeded) as info:
        await call_with_retries(
            policy, op, describe="GET oss://b/k", deadline=7.0, bucket="b", key="k"
        )
    assert trio.current_time() == pytest.approx(7.0)
    assert "oss://b/k" in str(info.value)
    assert isinstance(info.value, OssTransportError)


async def test_deadline_skips_a_backoff_past_it(autojump_clock: trio.testing.MockClock) -> None:
    calls = 0

    async def op(attempt: int) -> None:
        nonlocal calls
        calls += 1
        await trio.sleep(2.0)
        e = err(QpsLimitExceeded, 429, "QpsLimitExceeded")
        e.retry_after_s = 10.0
        raise e

    policy = RetryPolicy(max_attempts=5, base_delay_s=0.01, max_delay_s=30.0)
    with pytest.raises(DeadlineExceeded) as info:
        await call_with_retries(policy, op, describe="GET oss://b/k", deadline=5.0)
    assert calls == 1
    assert trio.current_time() == pytest.approx(2.0)  # failed at once, did not sleep 10 s
    assert "QpsLimitExceeded" in str(info.value)


def test_budget_is_attempts_times_try_plus_backoff_caps() -> None:
    policy = RetryPolicy(max_attempts=5, base_delay_s=0.2, max_delay_s=1.0)
    assert policy.budget_s(40.0) == pytest.approx(5 * 40.0 + 0.2 + 0.4 + 0.8 + 1.0)
    assert RetryPolicy(max_attempts=1).budget_s(3.0) == 3.0
