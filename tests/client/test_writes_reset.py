"""A connection reset while the request body is still going up (the emulator's fault rules act
on reply bodies, which PUTs do not have): a raw socket server takes part of an UploadPart body,
resets the connection (RST), then answers the retry properly. The retry must send the whole
body again from the file, with a fresh CRC, and be verified."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from ossmount.crc64 import crc64
from ossmount.oss import Credentials, OssClient, OssConfig, RetryPolicy, StaticCredentialsProvider
from ossmount.oss._writes import FileRange, OssWrites
from tests.client._raw_server import RawServer, read_request

BODY = bytes(range(256)) * 4096  # 1 MiB


class ResettingServer(RawServer):
    """Connection 1: read `cut` body bytes, then RST. Later connections: read it all, 200."""

    def __init__(self, cut: int) -> None:
        super().__init__()
        self.cut = cut
        self.received: list[int] = []  # body bytes read per connection

    def _one(self, conn: socket.socket) -> None:
        first = not self.received
        head, body, length = read_request(conn, self.cut if first else None)
        if not head:
            return
        self.received.append(len(body))
        if first:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return  # closing with linger 0 sends RST
        reply = (
            'HTTP/1.1 200 OK\r\nContent-Length: 0\r\nETag: "E"\r\n'
            f"x-oss-hash-crc64ecma: {crc64(body[:length])}\r\nConnection: close\r\n\r\n"
        )
        conn.sendall(reply.encode())


@pytest.fixture
def server() -> Iterator[ResettingServer]:
    with ResettingServer(cut=300_000) as s:
        yield s


async def test_reset_mid_body_resends_the_whole_part(
    server: ResettingServer, tmp_path: Path
) -> None:
    path = tmp_path / "staged"
    path.write_bytes(b"xx" + BODY)
    config = OssConfig(server.endpoint, "b", region="cn-hangzhou", read_timeout_s=5)
    retry = RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.02)
    with open(path, "rb") as f:
        async with OssClient(
            config, StaticCredentialsProvider(Credentials("a", "s")), retry=retry
        ) as c:
            part = await OssWrites(c, chunk_size=64 * 1024).upload_part(
                "k", "U", 1, FileRange(f.fileno(), 2, len(BODY))
            )
    assert part.crc64 == crc64(BODY)
    assert server.received[0] >= 300_000
    assert server.received[0] < len(BODY)
    assert server.received[1:] == [len(BODY)]
