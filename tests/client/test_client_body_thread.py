"""GET bodies of >= 1 MiB are received in a worker thread (ossmount.oss._pump):
that they really are, that a cancelled GET leaves no thread writing behind it, that a stall
in the thread is still a timeout, and that the connection goes back to the pool intact."""

from __future__ import annotations

import os
import random
import socket
import struct
import threading
import time
from pathlib import Path

import pytest
import trio

from ossmount.crc64 import crc64
from ossmount.oss import OssClient, _body
from tests.client._mini_server import Fault, MiniServer
from tests.client.conftest import make_client
from tests.client.sinks import FileSink, MemorySink, get_into, get_to_fd

DATA = random.Random(13).randbytes(4 * 1024 * 1024 + 3)
FILL = 0xAA


def _cache_file(tmp_path: Path, size: int) -> tuple[Path, int]:
    path = tmp_path / "cache"
    path.write_bytes(bytes([FILL]) * size)
    return path, os.open(path, os.O_RDWR)


def _commit_threads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Thread idents of every FileSink/MemorySink commit from now on."""
    seen: list[int] = []
    for cls in (FileSink, MemorySink):
        original = cls.commit

        def commit(self: object, view: memoryview, pos: int, _orig: object = original) -> None:
            seen.append(threading.get_ident())
            _orig(self, view, pos)  # type: ignore[operator]

        monkeypatch.setattr(cls, "commit", commit)
    return seen


async def test_large_body_is_received_in_a_worker_thread(
    server: MiniServer, client: OssClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.put_object("k", DATA)
    threads = _commit_threads(monkeypatch)
    path, fd = _cache_file(tmp_path, 0)
    try:
        res = await get_to_fd(client, "k", 0, len(DATA), fd, 0)
    finally:
        os.close(fd)
    assert path.read_bytes() == DATA
    assert res.crc64 == crc64(DATA)
    assert client.statistics() == {"recv_into_thread": 1}
    assert threads  # one pwrite per 1 MiB window, none of them on the trio thread
    assert threading.get_ident() not in threads


async def test_small_body_stays_on_the_trio_thread(
    server: MiniServer, client: OssClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.put_object("k", DATA)
    threads = _commit_threads(monkeypatch)
    size = _body.THREAD_MIN_BYTES - 1
    buf = bytearray(size)
    res = await get_into(client, "k", 7, buf)
    assert bytes(buf) == DATA[7 : 7 + size]
    assert res.crc64 == crc64(DATA[7 : 7 + size])
    assert client.statistics() == {"recv_into": 1}
    assert set(threads) == {threading.get_ident()}


def _pooled_socket(client: OssClient) -> socket.socket:
    pool = client._wire  # ranged GETs go on the client's own connections (oss/_wire.py)
    assert len(pool.connections) == 1
    sock = pool.connections[0].sock
    return socket.socket(sock.family, sock.type, sock.proto, fileno=sock.fileno())


async def test_threaded_bodies_reuse_the_connection(server: MiniServer, client: OssClient) -> None:
    server.put_object("k", DATA)
    for i in range(3):
        buf = bytearray(2 * 1024 * 1024)
        res = await get_into(client, "k", i * 1000, buf)
        assert bytes(buf) == DATA[i * 1000 : i * 1000 + len(buf)]
        assert res.crc64 == crc64(bytes(buf))
    small = bytearray(100)
    await get_into(client, "k", 5, small)  # the loop path on the same socket afterwards
    assert bytes(small) == DATA[5:105]
    assert client.statistics() == {"recv_into_thread": 3, "recv_into": 1}
    assert len({r.peer for r in server.requests}) == 1
    # The socket is handed back as trio wants it: non-blocking, no receive timeout.
    view = _pooled_socket(client)
    try:
        assert not os.get_blocking(view.fileno())
        timeout = view.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16)
        assert struct.unpack("@ll", timeout) == (0, 0)
    finally:
        view.detach()


@pytest.mark.parametrize("target", ["file", "memory"])
async def test_cancel_mid_body_leaves_no_write_behind(
    server: MiniServer, client: OssClient, tmp_path: Path, target: str
) -> None:
    server.put_object("k", DATA)
    # ~3 MB/s: a 1 MiB window fills in ~0.3 s, so a thread left running would write again.
    server.faults.append(Fault(op="GET", key="k", drip=65536, drip_s=0.02))
    path, fd = _cache_file(tmp_path, len(DATA) + 100)
    buf = bytearray([FILL]) * len(DATA)
    try:
        t0 = time.monotonic()
        with trio.move_on_after(0.8) as scope:
            if target == "file":
                await get_to_fd(client, "k", 0, len(DATA), fd, 100)
            else:
                await get_into(client, "k", 0, buf)
        assert scope.cancelled_caught
        assert time.monotonic() - t0 < 0.8 + 0.5  # the thread was stopped, not waited out
        after_cancel = path.read_bytes() if target == "file" else bytes(buf)
        await trio.sleep(0.8)
        later = path.read_bytes() if target == "file" else bytes(buf)
    finally:
        os.close(fd)
    assert later == after_cancel  # nothing was written after the GET was cancelled
    if target == "file":
        assert later[:100] == bytes([FILL]) * 100
        later = later[100:]
    # What landed is a prefix of the object; everything beyond it is untouched.
    landed = len(later.rstrip(bytes([FILL])))
    assert 0 < landed < len(DATA)
    assert later[:landed] == DATA[:landed]
    # The cancelled connection was dropped, not reused mid-body; the client still works.
    buf2 = bytearray(len(DATA))
    res = await get_into(client, "k", 0, buf2)
    assert bytes(buf2) == DATA
    assert res.crc64 == crc64(DATA)
    assert server.requests[-1].peer != server.requests[0].peer


async def test_cancel_while_the_thread_waits_returns_at_once(
    server: MiniServer, tmp_path: Path
) -> None:
    server.put_object("k", DATA)
    server.faults.append(Fault(op="GET", key="k", stall_after=100_000, stall_s=3.0))
    path, fd = _cache_file(tmp_path, len(DATA))
    try:
        async with make_client(server, stall_timeout_s=20.0) as c:
            t0 = time.monotonic()
            with trio.move_on_after(0.3):
                await get_to_fd(c, "k", 0, len(DATA), fd, 0)
            elapsed = time.monotonic() - t0
            assert c.statistics() == {"recv_into_thread": 1}
    finally:
        os.close(fd)
    # Not the 3 s stall nor the 20 s stall timeout: the socket shutdown woke the recv.
    assert elapsed < 1.5
    content = path.read_bytes()
    # The window in progress when cancelled is not committed: nothing was written at all.
    assert content == bytes([FILL]) * len(DATA)


async def test_stall_in_the_thread_is_a_timeout_then_resumed(
    server: MiniServer, tmp_path: Path
) -> None:
    server.put_object("k", DATA)
    server.faults.append(Fault(op="GET", key="k", stall_after=1_500_000, stall_s=4.0))
    path, fd = _cache_file(tmp_path, 0)
    try:
        async with make_client(server, stall_timeout_s=0.3) as c:
            t0 = time.monotonic()
            res = await get_to_fd(c, "k", 0, len(DATA), fd, 0)
            elapsed = time.monotonic() - t0
            assert c.statistics() == {"recv_into_thread": 2}
    finally:
        os.close(fd)
    assert path.read_bytes() == DATA
    assert res.crc64 == crc64(DATA)
    # Resumed from exactly the byte reached (the partial window was committed), well before
    # the server's 4 s stall ended: the receive timeout fired in the thread.
    assert server.requests[1].headers["Range"] == f"bytes=1500000-{len(DATA) - 1}"
    assert elapsed < 2.5


async def test_reset_in_the_thread_resumes_from_the_byte_reached(
    server: MiniServer, client: OssClient
) -> None:
    server.put_object("k", DATA)
    server.faults.append(Fault(op="GET", key="k", reset_after=1_234_567))
    buf = bytearray(len(DATA))
    res = await get_into(client, "k", 0, buf)
    assert bytes(buf) == DATA
    assert res.crc64 == crc64(DATA)
    assert server.requests[1].headers["Range"] == f"bytes=1234567-{len(DATA) - 1}"
    assert client.statistics() == {"recv_into_thread": 2}


async def test_cancel_waits_for_a_pwrite_in_progress(
    server: MiniServer, client: OssClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A slow disk: the thread is inside a (slow) pwrite when the GET is cancelled. The GET
    # must not return before that write is over, or it could land after the cache entry's
    # descriptor was closed and its number reused by another file.
    server.put_object("k", DATA)
    original = FileSink.commit

    def slow_commit(self: FileSink, view: memoryview, pos: int) -> None:
        time.sleep(0.5)
        original(self, view, pos)

    monkeypatch.setattr(FileSink, "commit", slow_commit)
    path, fd = _cache_file(tmp_path, len(DATA))
    try:
        t0 = time.monotonic()
        with trio.move_on_after(0.2):
            await get_to_fd(client, "k", 0, len(DATA), fd, 0)
        elapsed = time.monotonic() - t0
        after_cancel = path.read_bytes()
        await trio.sleep(0.6)
        later = path.read_bytes()
    finally:
        os.close(fd)
    assert elapsed >= 0.5  # waited for the write in progress...
    assert later == after_cancel  # ...so nothing landed after the GET was cancelled
    window = 1024 * 1024
    assert later[:window] == DATA[:window]  # that write was the first window
    assert later[window:] == bytes([FILL]) * (len(DATA) - window)
