"""Copies, deletes, initiates and completes (no body, or a small one in memory) go on the
client's own connections (`_small_body.request_bytes`): against the emulator, and against a raw
server that answers a DELETE with a 204 carrying no Content-Length, as HTTP allows."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from ossmount.crc64 import crc64
from ossmount.emulator import Emulator
from ossmount.oss import Credentials, OssClient, OssConfig, StaticCredentialsProvider
from ossmount.oss._writes import OssWrites
from tests.client._raw_server import RawServer, read_request
from tests.client.test_client_emulator import client_for

DATA = bytes(range(256)) * 1000


async def test_copy_delete_and_a_multipart_upload_share_one_own_connection(
    emu: Emulator,
) -> None:
    emu.put_object("bkt", "src", DATA, meta={"mode": "33188"})
    async with client_for(emu) as client:
        writes = OssWrites(client)
        copied = await writes.copy_object("src", "dst")
        await writes.delete_object("src")
        uid = await writes.initiate_multipart("big")
        part = await writes.upload_part("big", uid, 1, DATA)
        done = await writes.complete_multipart("big", uid, [part])
        assert len(client._wire.connections) == 1, "every request took the one connection"
    assert emu.head("bkt", "src") is None
    assert copied.etag == emu.head("bkt", "dst").etag  # type: ignore[union-attr]
    assert done.crc64 == crc64(DATA)


class NoLength204(RawServer):
    """Answers every request with 204 and no Content-Length, keeping the connection open."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[bytes] = []

    def _one(self, conn: socket.socket) -> None:
        while True:
            head, _, _ = read_request(conn)
            if not head:
                return
            self.requests.append(head.split(b"\r\n", 1)[0])
            conn.sendall(b"HTTP/1.1 204 No Content\r\nx-oss-request-id: 1\r\n\r\n")


@pytest.fixture
def server() -> Iterator[NoLength204]:
    with NoLength204() as s:
        yield s


async def test_a_204_without_content_length_has_no_body_and_keeps_the_connection(
    server: NoLength204,
) -> None:
    """Read as 'body until the server closes', it waited for the read timeout instead."""
    config = OssConfig(server.endpoint, "b", region="cn-hangzhou", read_timeout_s=2)
    async with OssClient(config, StaticCredentialsProvider(Credentials("a", "s"))) as client:
        for key in ("k1", "k2", "k3"):
            await OssWrites(client).delete_object(key)
        assert len(client._wire.connections) == 1
    assert [line.split(b" ")[0] for line in server.requests] == [b"DELETE"] * 3
