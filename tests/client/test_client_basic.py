"""OssClient against a real HTTP server on 127.0.0.1: HEAD, ranged GET, listing."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from ossmount.crc64 import crc64
from ossmount.oss import InvalidRange, NoSuchKey, OssClient
from tests.client._mini_server import MiniServer
from tests.client.conftest import all_pages
from tests.client.sinks import get_into, get_to_fd

DATA = random.Random(7).randbytes(3 * 1024 * 1024 + 123)


async def test_head(server: MiniServer, client: OssClient) -> None:
    obj = server.put_object("dir/a b+c.bin", DATA)
    meta = await client.head("dir/a b+c.bin")
    assert meta.size == len(DATA)
    assert meta.etag == obj.etag
    assert meta.crc64 == crc64(DATA)
    assert meta.mtime_ns == 1_700_000_000 * 10**9
    assert meta.object_type == "Normal"
    assert meta.storage_class == "Standard"
    assert server.requests[-1].key == "dir/a b+c.bin"


async def test_get_into_range(server: MiniServer, client: OssClient) -> None:
    server.put_object("k", DATA)
    buf = bytearray(1_000_000)
    res = await get_into(client, "k", 12345, buf)
    assert bytes(buf) == DATA[12345 : 12345 + 1_000_000]
    assert res.length == 1_000_000
    assert res.offset == 12345
    assert res.crc64 == crc64(DATA[12345 : 12345 + 1_000_000])
    assert res.meta.size == len(DATA)
    assert res.meta.crc64 == crc64(DATA)  # whole-object header, not the range's
    req = server.requests[-1]
    assert req.headers["Range"] == "bytes=12345-1012344"
    assert req.headers["x-oss-range-behavior"] == "standard"
    assert req.headers["Accept-Encoding"] == "identity"


async def test_get_clamped_at_end(server: MiniServer, client: OssClient) -> None:
    server.put_object("k", DATA)
    buf = bytearray(1000)
    res = await get_into(client, "k", len(DATA) - 10, buf)
    assert res.length == 10
    assert bytes(buf[:10]) == DATA[-10:]
    assert res.crc64 == crc64(DATA[-10:])


async def test_get_past_end_is_invalid_range(server: MiniServer, client: OssClient) -> None:
    server.put_object("k", DATA)
    with pytest.raises(InvalidRange) as info:
        await get_into(client, "k", len(DATA), bytearray(10))
    assert info.value.status == 416
    assert "oss://b/k" in str(info.value)


async def test_get_to_fd(server: MiniServer, client: OssClient, tmp_path: Path) -> None:
    server.put_object("k", DATA)
    path = tmp_path / "cache"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        a = await get_to_fd(client, "k", 0, 2_000_000, fd, 100)
        b = await get_to_fd(client, "k", 2_000_000, len(DATA), fd, 100 + 2_000_000)
    finally:
        os.close(fd)
    assert a.length == 2_000_000
    assert b.length == len(DATA) - 2_000_000
    content = path.read_bytes()
    assert content[:100] == b"\0" * 100
    assert content[100:] == DATA
    from ossmount.crc64 import combine

    assert combine(a.crc64, b.crc64, b.length) == crc64(DATA)


async def test_zero_length_never_gets(server: MiniServer, client: OssClient) -> None:
    server.put_object("empty", b"")
    res = await get_into(client, "empty", 0, bytearray(0))
    assert res.length == 0
    assert res.meta.size == 0
    assert [r.method for r in server.requests] == ["HEAD"]


async def test_missing_key(server: MiniServer, client: OssClient) -> None:
    with pytest.raises(NoSuchKey) as info:
        await get_into(client, "nope", 0, bytearray(10))
    assert info.value.code == "NoSuchKey"
    assert info.value.request_id
    assert len(server.requests) == 1  # 404 is not retried


async def test_connection_reused(server: MiniServer, client: OssClient) -> None:
    server.put_object("k", DATA)
    for i in range(4):
        await get_into(client, "k", i * 1000, bytearray(500_000))
    peers = {r.peer for r in server.requests}
    assert len(peers) == 1, peers


async def test_list_pagination(server: MiniServer, client: OssClient) -> None:
    keys = [f"d/f{i:03d} +é" for i in range(25)] + ["d/sub/x", "d/sub/y", "d/t/z", "other"]
    for k in keys:
        server.put_object(k, b"x" * 3)
    pages = await all_pages(client, "d/", "/", max_keys=10)
    objects = [o.key for p in pages for o in p.objects]
    prefixes = [x for p in pages for x in p.prefixes]
    assert objects == sorted(k for k in keys if k.startswith("d/f"))
    assert prefixes == ["d/sub/", "d/t/"]
    assert len(pages) == 3
    assert pages[-1].next_token is None
    assert all(p.next_token for p in pages[:-1])
    assert all(o.size == 3 and o.etag for p in pages for o in p.objects)
    lists = [r for r in server.requests if r.key is None]
    assert lists[0].query["list-type"] == "2"
    assert lists[0].query["encoding-type"] == "url"
    assert "continuation-token" not in lists[0].query
    assert lists[1].query["continuation-token"] == pages[0].next_token


async def test_list_no_delimiter(server: MiniServer, client: OssClient) -> None:
    for k in ["a/1", "a/b/2"]:
        server.put_object(k, b"")
    page = await client.list_page("a/", delimiter="")
    assert [o.key for o in page.objects] == ["a/1", "a/b/2"]
    assert page.prefixes == ()
