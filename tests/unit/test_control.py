"""The control socket's protocol handler (ossmount.service.control), without a mount."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from ossmount.service import control
from ossmount.service.control import (
    MAX_REQUEST,
    SOCKET_NAME,
    handle_stream,
    serve_control,
)


class FakeTarget:
    def __init__(self, *, fail: bool = False) -> None:
        self.clears = 0
        self.fail = fail
        self.settled = trio.Event()

    async def clear(self) -> dict[str, Any]:
        if self.fail:
            raise RuntimeError("boom")
        self.clears += 1
        return {"dropped_entries": 3, "dropped_bytes": 300, "kept_entries": 1, "kept_bytes": 9}

    def status(self) -> dict[str, Any]:
        return {"entries": 4, "bytes": 309, "in_use": 1, "downloads": 0}

    async def idle(self) -> None:
        await self.settled.wait()


async def _exchange(data: bytes, target: FakeTarget, close: bool = False) -> dict[str, Any]:
    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(handle_stream, server, target)
        await client.send_all(data)
        if close:
            await client.send_eof()
        reply = b""
        while chunk := await client.receive_some():
            reply += chunk
        await client.aclose()
    assert reply.endswith(b"\n")
    assert reply.count(b"\n") == 1
    result: dict[str, Any] = json.loads(reply)
    return result


async def test_clear_and_status_are_answered_with_the_targets_figures() -> None:
    target = FakeTarget()
    assert await _exchange(b"clear\n", target) == {
        "ok": True,
        "dropped_entries": 3,
        "dropped_bytes": 300,
        "kept_entries": 1,
        "kept_bytes": 9,
    }
    assert target.clears == 1
    assert (await _exchange(b" status \r\n", target))["entries"] == 4


async def test_idle_answers_the_status_only_once_the_mount_is_idle() -> None:
    target = FakeTarget()
    answered: list[dict[str, Any]] = []

    async def ask() -> None:
        answered.append(await _exchange(b"idle\n", target))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask)
        await trio.testing.wait_all_tasks_blocked()
        assert answered == []  # still busy: no answer yet
        target.settled.set()
    assert answered == [{"ok": True, **target.status()}]


async def test_idle_gives_up_with_an_error_when_the_mount_stays_busy(
    autojump_clock: trio.testing.MockClock,
) -> None:
    reply = await _exchange(b"idle\n", FakeTarget())
    assert reply == {"ok": False, "error": f"still busy after {control.IDLE_TIMEOUT_S:.0f} s"}


@pytest.mark.parametrize(
    ("data", "close", "says"),
    [
        (b"drop-everything\n", False, "unknown request"),
        (b"\xff\xfe clear\n", False, "not ASCII"),
        (b"x" * (4 * MAX_REQUEST), False, "longer than"),
        (b"clea", True, "closed before a whole request line"),
    ],
)
async def test_bad_requests_get_an_error_answer_and_touch_nothing(
    data: bytes, close: bool, says: str
) -> None:
    target = FakeTarget()
    reply = await _exchange(data, target, close=close)
    assert reply["ok"] is False
    assert says in reply["error"]
    assert target.clears == 0


async def test_a_failing_target_is_answered_not_raised() -> None:
    reply = await _exchange(b"clear\n", FakeTarget(fail=True))
    assert reply == {"ok": False, "error": "internal error: RuntimeError: boom"}


async def test_a_silent_client_is_answered_and_closed_after_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = trio.testing.memory_stream_pair()
    with trio.fail_after(control.TIMEOUT_S * 2):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(handle_stream, server, FakeTarget())
            reply = b""
            while chunk := await client.receive_some():
                reply += chunk
    assert "no whole request line" in json.loads(reply)["error"]


def _ask(path: Path, data: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(data)
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    return reply


async def test_the_socket_is_0600_replaces_a_stale_one_and_is_removed_when_cancelled(
    tmp_path: Path,
) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / SOCKET_NAME))  # bound, never listening: what a kill -9 leaves
    stale.close()
    target = FakeTarget()
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_control, tmp_path, target)
        path = tmp_path / SOCKET_NAME
        mode = path.stat().st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o600
        reply = await trio.to_thread.run_sync(_ask, path, b"clear\n")
        assert json.loads(reply)["dropped_entries"] == 3
        garbage = await trio.to_thread.run_sync(_ask, path, b"\x00\x01\n")
        assert json.loads(garbage)["ok"] is False
        reply = await trio.to_thread.run_sync(_ask, path, b"status\n")  # still serving
        assert json.loads(reply)["in_use"] == 1
        nursery.cancel_scope.cancel()
    assert not path.exists()
    assert sorted(os.listdir(tmp_path)) == []  # no temp name left behind either
    assert target.clears == 1


async def test_a_long_cache_dir_path_still_gets_its_socket(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)  # longer than a sockaddr_un (108 bytes)
    deep.mkdir(parents=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_control, deep, FakeTarget())
        assert (deep / SOCKET_NAME).exists()
        nursery.cancel_scope.cancel()
    assert not (deep / SOCKET_NAME).exists()


async def test_connections_past_the_bound_are_refused_and_the_bound_frees_up(
    tmp_path: Path,
) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_control, tmp_path, FakeTarget())
        path = tmp_path / SOCKET_NAME
        silent = []
        for _ in range(control.MAX_CLIENTS):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(path))
            silent.append(sock)
        # The server has accepted them once it answers a status on the next free slot... which
        # there is none of: this one is refused at once, not after the silent ones time out.
        reply = await trio.to_thread.run_sync(_ask, path, b"status\n")
        assert json.loads(reply) == {"ok": False, "error": "too many connections"}
        for sock in silent:
            sock.close()
        with trio.fail_after(10):
            while True:  # the closed ones end their tasks; then a slot is free again
                reply = await trio.to_thread.run_sync(_ask, path, b"status\n")
                if json.loads(reply)["ok"]:
                    break
        nursery.cancel_scope.cancel()
