"""BodyWriter's upload pipeline (MD5 and file write on threads): bytes, hashes, errors."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import trio

from ossmount.crc64 import crc64
from ossmount.emulator.store import FileBody, MemoryBody
from ossmount.emulator.writer import BodyWriter

MiB = 1 << 20


def _chunks(data: bytes, n: int) -> list[bytes]:
    return [data[i : i + n] for i in range(0, len(data), n)]


@pytest.mark.parametrize("on_disk", [True, False])
def test_pipeline_keeps_order_and_hashes(tmp_path: Path, on_disk: bool) -> None:
    data = os.urandom(20 * MiB + 123)
    writer = BodyWriter(tmp_path if on_disk else None)

    async def main() -> None:
        for chunk in _chunks(data, 300_001):
            await writer.feed(chunk)
        await writer.drain()

    trio.run(main)
    body = writer.finish()
    assert isinstance(body, FileBody if on_disk else MemoryBody)
    assert body.read(0, body.size) == data
    assert writer.md5.digest() == hashlib.md5(data).digest()
    assert writer.crc == crc64(data)
    assert writer.size == len(data)


def test_stage_error_reaches_drain(tmp_path: Path) -> None:
    writer = BodyWriter(tmp_path)

    def broken(_: object) -> None:
        raise OSError(28, "No space left on device")

    writer._sink = broken  # type: ignore[method-assign]

    async def main() -> None:
        for chunk in _chunks(os.urandom(40 * MiB), 2 * MiB):  # all piped, > _PIPE_DEPTH
            await writer.feed(chunk)  # never blocks for good on a dead stage
        with pytest.raises(OSError, match="No space"):
            await writer.drain()

    trio.run(main)
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_append_combines_crc_and_copies_files(tmp_path: Path) -> None:
    a, b = os.urandom(3 * MiB), os.urandom(MiB + 7)
    parts = []
    for d in (a, b):
        w = BodyWriter(tmp_path)
        w.write(d)
        parts.append((w.finish(), w.crc))
    out = BodyWriter(tmp_path, md5=False)
    for body, crc in parts:
        out.append(body, crc)
    body = out.finish()
    assert body.read(0, body.size) == a + b
    assert out.crc == crc64(a + b)
