"""Issue 14 finding 4: `max_attempts` means tries per request (a resume is a try), a GET waits
`stall_timeout_s` at most for any byte of its reply, and every ranged GET has a total deadline.

Each test bounds its own run time with `trio.fail_after`, so the code before the fix (20
hidden progress retries, a 30 s head wait, no deadline) fails them quickly instead of hanging.
"""

from __future__ import annotations

import random

import pytest
import trio

from ossmount.emulator import Emulator, FaultRule
from ossmount.oss import (
    OssTransportError,
)
from ossmount.oss._retry import DeadlineExceeded
from tests.client._mini_server import Fault, MiniServer
from tests.client.conftest import make_client
from tests.client.sinks import get_into

DATA = random.Random(14).randbytes(4 * 1024 * 1024)


def drip_forever(server: MiniServer) -> None:
    """Object `k` whose GETs send 1000 bytes every 0.05 s, however long it takes: a body that
    always makes progress, so only a deadline ends it."""
    server.put_object("k", DATA)
    server.faults.append(Fault(op="GET", key="k", drip=1000, drip_s=0.05, times=99))


async def test_a_resume_is_one_of_max_attempts(server: MiniServer) -> None:
    """Each request trickles 100 kB, then idles: progress every time, yet 3 tries in all."""
    server.put_object("k", DATA)
    server.faults.append(Fault(op="GET", key="k", stall_after=100_000, stall_s=2.0, times=99))
    with trio.fail_after(15):
        async with make_client(server, stall_timeout_s=0.3, max_attempts=3) as c:
            with pytest.raises(OssTransportError) as info:
                await get_into(c, "k", 0, bytearray(len(DATA)))
    assert len(server.requests) == 3
    ranges = [r.headers["Range"] for r in server.requests]
    assert ranges[1].startswith("bytes=100000-")  # still resumed from the byte reached
    assert ranges[2].startswith("bytes=200000-")
    assert "oss://b/k" in str(info.value)
    assert "stalled" in str(info.value)


@pytest.mark.parametrize("size", [len(DATA), 200_000], ids=["large", "small"])
async def test_total_deadline_stops_a_dripping_body(server: MiniServer, size: int) -> None:
    """A byte well inside every stall timeout, forever: only the total deadline ends it. A
    small GET (under _body.THREAD_MIN_BYTES) runs without a scope per try: its waits take the
    deadline themselves."""
    drip_forever(server)
    with trio.fail_after(15):
        async with make_client(
            server, stall_timeout_s=0.5, max_attempts=3, fetch_timeout_s=1.0
        ) as c:
            assert c.fetch_deadline_s == 1.0
            start = trio.current_time()
            with pytest.raises(DeadlineExceeded) as info:
                await get_into(c, "k", 0, bytearray(size))
            elapsed = trio.current_time() - start
    assert 1.0 <= elapsed < 3.0
    assert len(server.requests) == 1  # one attempt was still going: it was cut
    text = str(info.value)
    assert "oss://b/k" in text
    assert "1 s fetch timeout" in text


async def test_derived_deadline_is_attempts_times_connect_plus_stall(server: MiniServer) -> None:
    drip_forever(server)
    with trio.fail_after(15):
        async with make_client(
            server, connect_timeout_s=0.2, stall_timeout_s=0.4, max_attempts=2
        ) as c:
            # 2 x (0.2 + 0.4) + the one backoff cap in between (conftest: base 0.01 s)
            assert c.fetch_deadline_s == pytest.approx(1.21)
            with pytest.raises(DeadlineExceeded) as info:
                await get_into(c, "k", 0, bytearray(len(DATA)))
    assert "2 attempts x (0.2 s connect + 0.4 s stall) + backoff" in str(info.value)


async def test_a_get_waits_stall_timeout_for_its_reply_head(emu: Emulator) -> None:
    """No reply head for stall_timeout_s is a failed try too (read_timeout_s is for HEAD/LIST)."""
    emu.put_object("bkt", "k", b"x" * 1000)
    emu.faults.add(FaultRule("latency", op="GetObject", seconds=3.0, times=None))
    client = make_client(
        emu, bucket="bkt", read_timeout_s=10.0, stall_timeout_s=0.3, max_attempts=2
    )
    with trio.fail_after(15):
        async with client as c:
            start = trio.current_time()
            with pytest.raises(OssTransportError):
                await get_into(c, "k", 0, bytearray(1000))
            elapsed = trio.current_time() - start
    assert elapsed < 2.0  # two tries of 0.3 s, not of the 10 s read timeout


async def test_list_has_a_deadline_too(server: MiniServer) -> None:
    """A Retry-After that would outlast the LIST's deadline is not slept: it fails at once."""
    server.faults.append(
        Fault(op="LIST", status=503, code="ServiceUnavailable", retry_after="20", times=9)
    )
    client = make_client(
        server, max_delay_s=30.0, connect_timeout_s=0.2, read_timeout_s=0.3, max_attempts=2
    )
    with trio.fail_after(10):
        async with client as c:
            assert c.request_deadline_s == pytest.approx(2 * 0.5 + 0.01)
            with pytest.raises(DeadlineExceeded) as info:
                await c.list_page("d/")
    assert len(server.requests) == 1
    assert "ServiceUnavailable" in str(info.value)
    assert "0.3 s read" in str(info.value)
