"""sd_notify over $NOTIFY_SOCKET: each message as systemd would receive it on its datagram socket.

Also the pieces SIGHUP and the STATUS line are built from (ReloadableCredentials, describe_mount).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from ossmount.cache.store import CacheStats
from ossmount.fs.staged import StagedCounts
from ossmount.oss import Credentials, CredentialsError, StaticCredentialsProvider
from ossmount.service.notify import Notifier, notify_address, watchdog_interval
from ossmount.service.reload import ReloadableCredentials, describe_mount, format_bytes


class Listener:
    """systemd's end: a bound AF_UNIX datagram socket."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env = {"NOTIFY_SOCKET": env_value}

    def messages(self) -> list[str]:
        out = []
        while True:
            try:
                out.append(self.sock.recv(65536).decode())
            except BlockingIOError:
                return out

    def fields(self) -> list[dict[str, str]]:
        return [dict(line.split("=", 1) for line in m.split("\n")) for m in self.messages()]


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    path = tmp_path / "notify"
    assert len(os.fsencode(path)) < 108, "tmp_path too long for an AF_UNIX address"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    try:
        yield Listener(sock, str(path))
    finally:
        sock.close()


@pytest.fixture
def make() -> Iterator[type[Notifier]]:
    """Notifier, closing every one made at teardown (an open socket warns)."""
    made: list[Notifier] = []

    class Tracked(Notifier):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    yield Tracked
    for notifier in made:
        notifier.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# ----------------------------------------------------------------- addresses and the watchdog


def test_address_forms() -> None:
    assert notify_address(None) is None
    assert notify_address("") is None
    assert notify_address("/run/systemd/notify") == b"/run/systemd/notify"
    assert notify_address("@abstract/name") == b"\0abstract/name"
    assert notify_address("relative/path") is None
    assert notify_address("vsock:2:1234") is None


@pytest.mark.parametrize(
    ("env", "seconds"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "200000"}, 0.1),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4243"}, None),  # another process's
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "x"}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], seconds: float | None) -> None:
    assert watchdog_interval(env, 4242) == seconds


# ----------------------------------------------------------------- off without NOTIFY_SOCKET


async def test_everything_is_a_noop_without_notify_socket(make: type[Notifier]) -> None:
    notifier = make({"WATCHDOG_USEC": "1000"})
    assert not notifier.enabled
    assert notifier.watchdog_seconds is None
    assert notifier.send("READY=1") is False
    notifier.ready("x")
    notifier.status("x")
    notifier.stopping()
    notifier.reloading()
    notifier.extend_timeout(1)
    with notifier.extending(1):
        pass
    with trio.fail_after(1):
        await notifier.watchdog_loop()  # returns at once
        await notifier.run()
        await notifier.status_loop(lambda: "x")
    notifier.close()


# ----------------------------------------------------------------- each message


def test_ready(make: type[Notifier], listener: Listener) -> None:
    notifier = make(listener.env)
    assert notifier.enabled
    notifier.ready()
    notifier.ready("mounted bkt at /mnt")
    assert listener.messages() == ["READY=1", "READY=1\nSTATUS=mounted bkt at /mnt"]
    notifier.close()


def test_stopping_is_sent_once_after_the_held_back_status(
    make: type[Notifier], listener: Listener
) -> None:
    clock = FakeClock()
    notifier = make(listener.env, clock=clock)
    notifier.status("a")
    notifier.status("b")  # within the second: held back
    notifier.stopping()
    notifier.stopping("unmounting")
    assert listener.messages() == ["STATUS=a", "STATUS=b", "STOPPING=1", "STATUS=unmounting"]


def test_extend_timeout(make: type[Notifier], listener: Listener) -> None:
    make(listener.env).extend_timeout(30_000_000)
    assert listener.messages() == ["EXTEND_TIMEOUT_USEC=30000000"]


def test_reloading_carries_the_monotonic_clock(make: type[Notifier], listener: Listener) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    make(listener.env).reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    [message] = listener.fields()
    assert message["RELOADING"] == "1"
    assert before <= int(message["MONOTONIC_USEC"]) <= after


def test_status_newlines_cannot_inject_fields(make: type[Notifier], listener: Listener) -> None:
    make(listener.env).status("two\nlines\nREADY=1")
    assert listener.messages() == ["STATUS=two lines READY=1"]


def test_abstract_namespace_socket(make: type[Notifier]) -> None:
    name = f"ossmount-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5)
        notifier = make({"NOTIFY_SOCKET": "@" + name})
        notifier.ready()
        assert sock.recv(100) == b"READY=1"
        notifier.close()


def test_a_vanished_socket_is_logged_once_and_never_raises(
    make: type[Notifier], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = make({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    with caplog.at_level(logging.DEBUG, logger="ossmount.service.notify"):
        assert notifier.send("READY=1") is False
        assert notifier.send("STATUS=x") is False
    levels = [r.levelno for r in caplog.records]
    assert levels == [logging.WARNING, logging.DEBUG]


# ----------------------------------------------------------------- status rate limit


def test_status_is_rate_limited_and_the_last_value_wins(
    make: type[Notifier], listener: Listener
) -> None:
    clock = FakeClock()
    notifier = make(listener.env, clock=clock, min_interval=1.0)
    notifier.status("one")
    clock.now += 0.3
    notifier.status("two")
    clock.now += 0.3
    notifier.status("three")
    assert listener.messages() == ["STATUS=one"]
    clock.now += 0.5  # 1.1 s after "one": the held-back value goes out with the next call
    notifier.status("three")
    assert listener.messages() == ["STATUS=three"]
    clock.now += 5
    notifier.status("three")  # unchanged: nothing sent
    assert listener.messages() == []
    clock.now += 0.1
    notifier.status("four")  # 5.1 s since the last one: at once
    assert listener.messages() == ["STATUS=four"]
    clock.now += 0.1
    notifier.status("five")
    notifier.flush_status()
    assert listener.messages() == ["STATUS=five"]


async def test_status_loop_sends_changes_at_most_once_a_second(
    make: type[Notifier], listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    notifier = make(listener.env, clock=trio.current_time)
    counter = {"n": 0}

    def describe() -> str:
        counter["n"] += 1
        return f"tick {counter['n']}"

    async with trio.open_nursery() as nursery:
        nursery.start_soon(notifier.status_loop, describe, 0.25)
        await trio.sleep(2.1)
        nursery.cancel_scope.cancel()
    sent = listener.messages()
    # describe ran at 0, .25, ... 2.0 (9 times); one STATUS per second at most: 0, 1.0, 2.0
    assert sent == ["STATUS=tick 1", "STATUS=tick 5", "STATUS=tick 9"]


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


# ----------------------------------------------------------------- watchdog and extension


async def test_watchdog_pings_every_half_period_from_the_loop(
    make: type[Notifier], listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    notifier = make({**listener.env, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "7"}, pid=7)
    assert notifier.watchdog_seconds == 0.5
    async with trio.open_nursery() as nursery:
        nursery.start_soon(notifier.run)
        await trio.sleep(1.25)
        nursery.cancel_scope.cancel()
    assert listener.messages() == ["WATCHDOG=1"] * 3  # at 0, 0.5, 1.0


async def test_no_watchdog_for_another_pid(
    make: type[Notifier], listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    notifier = make({**listener.env, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}, pid=7)
    with trio.fail_after(1):
        await notifier.watchdog_loop()
    assert listener.messages() == []


async def test_a_stuck_loop_sends_no_watchdog(
    make: type[Notifier], listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    notifier = make({**listener.env, "WATCHDOG_USEC": "200000"})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(notifier.watchdog_loop)
        await trio.sleep(0.05)
        assert listener.messages() == ["WATCHDOG=1"]
        time.sleep(0.3)  # the loop is blocked for longer than the whole watchdog period
        assert listener.messages() == []
        nursery.cancel_scope.cancel()


async def test_extending_renews_while_the_work_runs(
    make: type[Notifier], listener: Listener, autojump_clock: trio.testing.MockClock
) -> None:
    notifier = make(listener.env)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(notifier.run)
        await trio.sleep(0.1)
        with notifier.extending(2_000_000):
            await trio.sleep(2.5)  # renewals at 1.0 and 2.0
        await trio.sleep(10)  # and none after the body
        with pytest.raises(KeyError), notifier.extending(4_000_000):
            raise KeyError("the body's exception passes through unchanged")
        nursery.cancel_scope.cancel()
    assert listener.messages() == ["EXTEND_TIMEOUT_USEC=2000000"] * 3 + [
        "EXTEND_TIMEOUT_USEC=4000000"
    ]


# ----------------------------------------------------------------- STATUS text


def test_format_bytes() -> None:
    assert format_bytes(0) == "0 B"
    assert format_bytes(1023) == "1023 B"
    assert format_bytes(12 * 1024) == "12 KiB"
    assert format_bytes(int(1.25 * 1024**3)) == "1.2 GiB"
    assert format_bytes(20 * 1024**3) == "20 GiB"
    assert format_bytes(3 * 1024**5) == "3072 TiB"


def test_describe_mount() -> None:
    cache = CacheStats(
        bytes=int(1.2 * 1024**3), entries=40, in_use=2, evictions=0, max_bytes=20 * 1024**3
    )
    assert (
        describe_mount("bkt:/data", "/mnt", 3, 5, cache)
        == "mounted bkt:/data at /mnt; 3 downloads (5 GETs); cache 1.2 GiB in 40 files "
        "(6% of 20 GiB)"
    )
    empty = CacheStats(bytes=0, entries=1, in_use=0, evictions=0, max_bytes=None)
    assert describe_mount("bkt", "/m", 1, 0, empty) == (
        "mounted bkt at /m; 1 download; cache 0 B in 1 file"
    )
    assert describe_mount("bkt", "/m", 1, 0, empty, StagedCounts(0, 0, 0)) == (
        "mounted bkt at /m; 1 download; cache 0 B in 1 file"
    )
    assert describe_mount("bkt", "/m", 1, 0, empty, StagedCounts(1, 0, 5)) == (
        "mounted bkt at /m; 1 download; cache 0 B in 1 file; 1 file being written"
    )
    assert describe_mount("bkt", "/m", 1, 0, empty, StagedCounts(3, 2, 5)).endswith(
        "; 3 files being written, 2 uploads failed (retrying)"
    )


# ----------------------------------------------------------------- SIGHUP's credentials swap


async def test_reloadable_credentials_swap_and_keep_on_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    keys = iter(["second", "third"])
    fail = {"now": False}

    def resolve() -> StaticCredentialsProvider:
        if fail["now"]:
            raise CredentialsError("passwd file gone")
        logging.getLogger("ossmount.oss.credentials").info("using OSS credentials from ...")
        return StaticCredentialsProvider(Credentials(next(keys), "s"), "passwd file /x")

    wrapper = ReloadableCredentials(StaticCredentialsProvider(Credentials("first", "s")), resolve)
    assert (await wrapper.get_credentials()).access_key_id == "first"
    with caplog.at_level(logging.INFO):
        assert await wrapper.reload() == "passwd file /x (access key id second)"
    assert not caplog.records  # the signal handler logs the one line
    assert (await wrapper.get_credentials()).access_key_id == "second"
    fail["now"] = True
    with pytest.raises(CredentialsError):
        await wrapper.reload()
    assert (await wrapper.get_credentials()).access_key_id == "second"


async def test_a_refreshing_provider_refreshes_itself() -> None:
    class Refreshing:
        source = "instance metadata"

        def __init__(self) -> None:
            self.refreshed = 0

        async def get_credentials(self) -> Credentials:
            return Credentials(f"k{self.refreshed}", "s")

        async def refresh(self) -> None:
            self.refreshed += 1

    provider = Refreshing()

    def resolve() -> Refreshing:
        raise AssertionError("a provider that refreshes is not replaced")

    wrapper = ReloadableCredentials(provider, resolve)
    assert await wrapper.reload() == "instance metadata (refreshed)"
    assert (await wrapper.get_credentials()).access_key_id == "k1"
