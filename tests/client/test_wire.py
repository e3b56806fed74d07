"""Ranged GETs on the client's own connections (ossmount/oss/_wire.py): reuse, a connection the
server closed meanwhile, replies we must not reuse or cannot read, header injection.

The server here is scripted per connection (a list of what to do with each request), so each
test states exactly what the peer does on the wire.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio

from ossmount.oss import BadResponse, NoSuchKey, OssClient, OssTransportError
from ossmount.oss._wire import _LINES, _LINES_KEPT, WireError, parse_head
from tests.client.conftest import make_client
from tests.client.sinks import get_into

BODY = b"0123456789abcdef"


def reply_206(body: bytes = BODY, extra: str = "") -> bytes:
    head = (
        "HTTP/1.1 206 Partial Content\r\n"
        f"Content-Range: bytes 0-{len(body) - 1}/{len(body)}\r\n"
        f"Content-Length: {len(body)}\r\n"
        'ETag: "e1"\r\n'
        f"{extra}\r\n"
    )
    return head.encode() + body


# What the server does with one request: send these bytes, or None to close without a reply.
Script = Callable[[int, int], bytes | None]  # (connection number, request number on it)


class ScriptedServer:
    def __init__(self, script: Script, close_after: bool) -> None:
        self.script = script
        self.close_after = close_after  # close each connection after its first answer
        self.closed: dict[int, trio.Event] = collections.defaultdict(trio.Event)
        self.connections = 0
        self.requests: list[bytes] = []
        self.port = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        number = self.connections
        self.connections += 1
        try:
            await self._serve(stream, number)
        finally:
            self.closed[number].set()

    async def _serve(self, stream: trio.SocketStream, number: int) -> None:
        buf = b""
        served = 0
        async with stream:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                self.requests.append(head)
                answer = self.script(number, served)
                served += 1
                if answer is None:
                    return
                await stream.send_all(answer)
                if self.close_after:
                    return


@asynccontextmanager
async def scripted(
    script: Script, *, close_after: bool = False
) -> AsyncIterator[tuple[ScriptedServer, OssClient]]:
    server = ScriptedServer(script, close_after)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, server.handle, 0)
        server.port = listeners[0].socket.getsockname()[1]

        class Endpoint:
            endpoint = f"http://127.0.0.1:{server.port}"

        # One try: whatever the wire layer resends is its own doing, not the retry policy's.
        async with make_client(Endpoint(), max_attempts=1, addressing="path") as client:  # type: ignore[arg-type]
            yield server, client
        nursery.cancel_scope.cancel()


async def test_connection_is_reused_across_gets() -> None:
    async with scripted(lambda conn, n: reply_206()) as (server, client):
        for _ in range(3):
            buf = bytearray(len(BODY))
            await get_into(client, "k", 0, buf)
            assert bytes(buf) == BODY
    assert server.connections == 1
    assert len(server.requests) == 3


async def test_a_reused_connection_the_server_closed_is_resent_on_a_new_one() -> None:
    # Connection 0 answers its first request, then takes the second and closes without a
    # word (a server's keep-alive timeout racing our request); connection 1 answers.
    def script(conn: int, n: int) -> bytes | None:
        return None if conn == 0 and n == 1 else reply_206()

    async with scripted(script) as (server, client):
        for _ in range(2):
            buf = bytearray(len(BODY))
            await get_into(client, "k", 0, buf)
            assert bytes(buf) == BODY
    assert server.connections == 2
    assert len(server.requests) == 3  # the second GET was sent twice


async def test_an_idle_connection_the_server_closed_is_not_used() -> None:
    # The server closes each connection after one answer (a keep-alive timeout): the next GET
    # sees the closed idle connection before sending and opens a new one, sending once.
    async with scripted(lambda conn, n: reply_206(), close_after=True) as (server, client):
        for i in range(3):
            await get_into(client, "k", 0, bytearray(len(BODY)))
            await server.closed[i].wait()  # the server has closed it (on loopback: FIN is in)
    assert server.connections == 3
    assert len(server.requests) == 3


async def test_a_new_connection_closed_without_a_reply_is_a_transport_error() -> None:
    async with scripted(lambda conn, n: None) as (server, client):
        with pytest.raises(OssTransportError, match="closed the connection without a reply"):
            await get_into(client, "k", 0, bytearray(len(BODY)))
    assert server.connections == 1  # not resent: it was no stale reuse


async def test_connection_close_reply_is_not_reused() -> None:
    async with scripted(lambda conn, n: reply_206(extra="Connection: close\r\n")) as (
        server,
        client,
    ):
        for _ in range(2):
            await get_into(client, "k", 0, bytearray(len(BODY)))
    assert server.connections == 2


async def test_a_body_left_unread_closes_the_connection() -> None:
    # A 200 that ignored our Range: we read past what we need, then drop the rest.
    whole = BODY * 4
    head = f'HTTP/1.1 200 OK\r\nContent-Length: {len(whole)}\r\nETag: "e1"\r\n\r\n'.encode()
    async with scripted(lambda conn, n: head + whole) as (server, client):
        for _ in range(2):
            buf = bytearray(4)
            await get_into(client, "k", 2, buf)
            assert bytes(buf) == whole[2:6]
    assert server.connections == 2


async def test_a_malformed_reply_head_is_a_transport_error_naming_it() -> None:
    async with scripted(lambda conn, n: b"HTTP/1.1 2x6 Odd\r\n\r\n") as (_, client):
        with pytest.raises(OssTransportError, match="status line"):
            await get_into(client, "k", 0, bytearray(len(BODY)))


async def test_a_chunked_success_reply_is_a_bad_response() -> None:
    chunked = b"HTTP/1.1 206 Partial Content\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    async with scripted(lambda conn, n: chunked) as (_, client):
        with pytest.raises(BadResponse, match="Content-Length"):
            await get_into(client, "k", 0, bytearray(len(BODY)))


async def test_an_error_reply_is_typed_and_its_connection_reused() -> None:
    xml = (
        b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>NoSuchKey</Code>"
        b"<Message>gone</Message><RequestId>r1</RequestId></Error>"
    )
    error = b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n%s" % (len(xml), xml)
    async with scripted(lambda conn, n: error if n == 0 else reply_206()) as (server, client):
        with pytest.raises(NoSuchKey, match="oss://b/k"):
            await get_into(client, "k", 0, bytearray(len(BODY)))
        await get_into(client, "k", 0, bytearray(len(BODY)))
    assert server.connections == 1


async def test_a_header_value_with_a_line_break_is_refused_before_sending() -> None:
    async with scripted(lambda conn, n: reply_206()) as (server, client):
        with pytest.raises(ValueError, match="oss://b/k"):
            await get_into(client, "k", 0, bytearray(4), if_match='"e1"\r\nX-Injected: 1')
    assert server.requests == []


def test_parse_head() -> None:
    status, version, headers = parse_head(
        b'HTTP/1.1 206 Partial Content\r\nETag:  "a" \r\nX-Twice: 1\r\nx-twice: 2'
    )
    assert (status, version) == (206, "HTTP/1.1")
    assert headers == {"etag": '"a"', "x-twice": "2"}
    assert parse_head(b"HTTP/1.0 200")[:2] == (200, "HTTP/1.0")
    for bad in (b"HTTP/2 200 OK", b"HTTP/1.1 20 OK", b"HTTP/1.1 200 OK\r\nNoColon", b"x"):
        with pytest.raises(WireError):
            parse_head(bad)
    with pytest.raises(WireError):
        parse_head(b"HTTP/1.1 200 OK\r\nBad Name : v")


def test_parse_head_remembers_lines_but_never_a_malformed_one() -> None:
    """Lines seen before are looked up, not split again (oss/_wire.py `_LINES`): the same
    head parses the same twice, a malformed line is refused however often it comes, and the
    memory of lines stays bounded."""
    head = b'HTTP/1.1 206 Partial Content\r\nETag:  "a" \r\nServer: OSS\r\nX-Id: 1'
    assert (
        parse_head(head)
        == parse_head(head)
        == (
            206,
            "HTTP/1.1",
            {"etag": '"a"', "server": "OSS", "x-id": "1"},
        )
    )
    for _ in range(2):
        with pytest.raises(WireError, match="Bad Name"):
            parse_head(b"HTTP/1.1 200 OK\r\nServer: OSS\r\nBad Name : v")
    for i in range(2 * _LINES_KEPT):
        assert parse_head(b"HTTP/1.1 200 OK\r\nX-Id: %d" % i)[2] == {"x-id": str(i)}
    assert len(_LINES) <= _LINES_KEPT
    long_line = "X-Long: " + "a" * 300
    assert parse_head(f"HTTP/1.1 200 OK\r\n{long_line}".encode())[2] == {"x-long": "a" * 300}
    assert long_line not in _LINES


async def test_an_oversized_reply_head_is_a_transport_error() -> None:
    huge = b"HTTP/1.1 206 Partial Content\r\nX-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n"
    async with scripted(lambda conn, n: huge) as (_, client):
        with pytest.raises(OssTransportError, match="reply head over"):
            await get_into(client, "k", 0, bytearray(len(BODY)))
