"""The httpx fallback body path (used when the recv_into fast path cannot engage, e.g. HTTP/2
or an httpx whose internals moved) must be just as correct."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from ossmount.crc64 import crc64
from ossmount.oss import OssClient, _body
from tests.client._mini_server import Fault, MiniServer
from tests.client.sinks import get_into, get_to_fd

DATA = random.Random(3).randbytes(3 * 1024 * 1024 + 5)


@pytest.fixture(autouse=True)
def force_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_body, "FAST_PATH_ENABLED", False)


async def test_ranged_get(server: MiniServer, client: OssClient) -> None:
    server.put_object("k", DATA)
    buf = bytearray(1_234_567)
    res = await get_into(client, "k", 4321, buf)
    assert bytes(buf) == DATA[4321 : 4321 + len(buf)]
    assert res.crc64 == crc64(bytes(buf))
    assert client.statistics() == {"httpx": 1}


async def test_resume_and_stall(server: MiniServer, tmp_path: Path) -> None:
    from tests.client.conftest import make_client

    server.put_object("k", DATA)
    server.faults.append(Fault(op="GET", key="k", reset_after=1_000_001))
    server.faults.append(Fault(op="GET", key="k", stall_after=10, stall_s=1.0))
    path = tmp_path / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        async with make_client(server, stall_timeout_s=0.3) as client:
            res = await get_to_fd(client, "k", 0, len(DATA), fd, 0)
    finally:
        os.close(fd)
    assert path.read_bytes() == DATA
    assert res.crc64 == crc64(DATA)
    ranges = [r.headers["Range"] for r in server.requests]
    assert ranges[1] == f"bytes=1000001-{len(DATA) - 1}"
    assert ranges[2] == f"bytes={1_000_001 + 10}-{len(DATA) - 1}"


async def test_200_ignoring_range(server: MiniServer, client: OssClient) -> None:
    server.put_object("k", DATA)
    server.faults.append(Fault(op="GET", key="k", ignore_range=True))
    buf = bytearray(100_000)
    res = await get_into(client, "k", 2_000_000, buf)
    assert bytes(buf) == DATA[2_000_000:2_100_000]
    assert res.crc64 == crc64(bytes(buf))
