"""emulator/sendfast.py: a response written with plain syscalls arrives whole and in order
(head, then the body range), also when the socket buffer fills and it has to wait, and the
body bytes it reports sent are exact."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import trio

from ossmount.emulator.sendfast import send_response
from ossmount.emulator.store import Body, FileBody, MemoryBody

HEAD = b"HTTP/1.1 206 Partial Content\r\nContent-Length: 0\r\n\r\n"
DATA = os.urandom(3 * 1024 * 1024 + 17)


async def _exchange(body: Body, offset: int, length: int) -> tuple[bytes, int]:
    a, b = socket.socketpair()
    a.setblocking(False)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)  # force EAGAIN waits
    reader = trio.socket.from_stdlib_socket(b)
    got = bytearray()
    sent = [0]

    async def read_all() -> None:
        while True:
            await trio.sleep(0)  # a slow reader: the writer's buffer fills
            data = await reader.recv(32 * 1024)
            if not data:
                return
            got.extend(data)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all)
            await send_response(a, HEAD, body, offset, length, sent)
            a.shutdown(socket.SHUT_WR)
    finally:
        a.close()
        reader.close()
    return bytes(got), sent[0]


@pytest.mark.parametrize(("offset", "length"), [(0, len(DATA)), (12345, 2 * 1024 * 1024), (5, 0)])
async def test_memory_body(offset: int, length: int) -> None:
    got, sent = await _exchange(MemoryBody(data=DATA), offset, length)
    assert got == HEAD + DATA[offset : offset + length]
    assert sent == length


@pytest.mark.parametrize(("offset", "length"), [(0, len(DATA)), (777, 65536), (5, 0)])
async def test_file_body(tmp_path: Path, offset: int, length: int) -> None:
    path = tmp_path / "obj"
    path.write_bytes(DATA)
    body = FileBody(size=len(DATA), path=path).opened()
    try:
        got, sent = await _exchange(body, offset, length)
    finally:
        os.close(body.fd)
    assert got == HEAD + DATA[offset : offset + length]
    assert sent == length
