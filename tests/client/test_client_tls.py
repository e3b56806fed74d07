"""The client over HTTPS (real OSS endpoints are TLS): ranged GETs, CRC, certificate checks.

A small threaded HTTPS server on 127.0.0.1 with a certificate from a throw-away CA (trustme)
serves one object with Range support and OSS's headers; the emulator speaks plain HTTP only.
"""

from __future__ import annotations

import http.server
import os
import re
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from ossmount.crc64 import crc64
from ossmount.oss import ANONYMOUS, OssClient, OssConfig, OssTransportError
from ossmount.oss.credentials import StaticCredentialsProvider
from tests.client.sinks import get_to_fd

DATA = os.urandom(3 * 1024 * 1024 + 17)
ETAG = '"0123456789ABCDEF0123456789ABCDEF"'


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _headers(self, status: int, start: int, end: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(end - start))
        self.send_header("ETag", ETAG)
        self.send_header("Last-Modified", "Wed, 01 Jan 2025 00:00:00 GMT")
        self.send_header("x-oss-hash-crc64ecma", str(crc64(DATA)))
        self.send_header("x-oss-request-id", "0" * 24)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(DATA)}")
        self.end_headers()

    def do_GET(self) -> None:
        match = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
        if match is None:
            self._headers(200, 0, len(DATA))
            self.wfile.write(DATA)
            return
        start, last = int(match.group(1)), min(int(match.group(2)), len(DATA) - 1)
        self._headers(206, start, last + 1)
        self.wfile.write(DATA[start : last + 1])

    def do_HEAD(self) -> None:
        self._headers(200, 0, len(DATA))


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def https_endpoint(ca: trustme.CA) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _client(endpoint: str, ca_file: str | None) -> OssClient:
    config = OssConfig(
        endpoint=endpoint,
        bucket="bkt",
        region="cn-hangzhou",
        signature_version="anonymous",
        ca_file=ca_file,
        max_attempts=1,
    )
    return OssClient(config, StaticCredentialsProvider(ANONYMOUS))


async def test_ranged_get_to_a_file_over_tls_with_a_private_ca(
    https_endpoint: str, ca: trustme.CA, tmp_path: Path
) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    async with _client(https_endpoint, str(ca_file)) as client:
        meta = await client.head("obj")
        assert meta.size == len(DATA)
        assert meta.crc64 == crc64(DATA)
        fd = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            offset, length = 1024 * 1024 - 5, 2 * 1024 * 1024 + 9
            result = await get_to_fd(client, "obj", offset, length, fd, 0, if_match=ETAG)
            assert result.length == length
            assert result.crc64 == crc64(DATA[offset : offset + length])
            assert os.pread(fd, length, 0) == DATA[offset : offset + length]
        finally:
            os.close(fd)
        assert client.statistics().get("recv_into", 0) == 0  # TLS: not the raw-socket path


async def test_an_untrusted_certificate_is_a_transport_error_naming_the_cause(
    https_endpoint: str,
) -> None:
    async with _client(https_endpoint, None) as client:
        with pytest.raises(OssTransportError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.head("obj")
