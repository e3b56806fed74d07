"""A small body is read on the event loop (oss/_write_bodies.py `_INLINE_READ`): a commit of a small
file pays no worker-thread hop; a big one still reads its pieces in worker threads."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ossmount.crc64 import crc64
from ossmount.emulator import Emulator
from ossmount.oss import (
    Credentials,
    OssClient,
    OssConfig,
    StaticCredentialsProvider,
    _upload_wire,
    _write_bodies,
)
from ossmount.oss._writes import FileRange, OssWrites
from tests.sdk import sdk_get

SMALL = random.Random(3).randbytes(64 * 1024)
BIG = random.Random(4).randbytes(3 * 1024 * 1024)


async def test_small_bodies_skip_the_thread_hop(
    emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hops: list[int] = []
    real = _write_bodies.trio.to_thread.run_sync

    async def counting(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        if fn is _write_bodies._read_crc:
            hops.append(args[2])
        return await real(fn, *args, **kw)

    monkeypatch.setattr(_write_bodies.trio.to_thread, "run_sync", counting)
    monkeypatch.setattr(_upload_wire, "ENABLED", False)  # the httpcore path (TLS) reads so
    config = OssConfig(emu.endpoint, "bkt", region="cn-hangzhou")
    async with OssClient(config, StaticCredentialsProvider(Credentials("ak", "sk"))) as client:
        writes = OssWrites(client, chunk_size=1024 * 1024)
        for name, data in (("small", SMALL), ("big", BIG)):
            path = tmp_path / name
            path.write_bytes(data)
            fd = os.open(path, os.O_RDONLY)
            try:
                put = await writes.put_object(name, FileRange(fd, 0, len(data)))
            finally:
                os.close(fd)
            assert put.crc64 == crc64(data)
            assert sdk_get(emu, name) == data
    assert hops == [1024 * 1024] * 3  # only the big body's pieces went through threads
