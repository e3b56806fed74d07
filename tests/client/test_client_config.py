"""Addressing, region derivation, and cancellation hygiene."""

from __future__ import annotations

import pytest
import trio

from ossmount.crc64 import crc64
from ossmount.oss import Credentials, OssClient, OssConfig, StaticCredentialsProvider
from tests.client._mini_server import Fault, MiniServer
from tests.client.conftest import make_client
from tests.client.sinks import get_into

CREDS = StaticCredentialsProvider(Credentials("ak", "sk"))


@pytest.mark.parametrize(
    ("endpoint", "addressing", "url"),
    [
        (
            "oss-cn-hangzhou.aliyuncs.com",
            "auto",
            "https://bkt.oss-cn-hangzhou.aliyuncs.com/a%20b/c%2B.txt?x=1%2F2",
        ),
        ("http://127.0.0.1:9000", "auto", "http://127.0.0.1:9000/bkt/a%20b/c%2B.txt?x=1%2F2"),
        ("https://files.example.com", "cname", "https://files.example.com/a%20b/c%2B.txt?x=1%2F2"),
        ("http://localhost:9000", "path", "http://localhost:9000/bkt/a%20b/c%2B.txt?x=1%2F2"),
    ],
)
async def test_urls(endpoint: str, addressing: str, url: str) -> None:
    config = OssConfig(endpoint, "bkt", region="cn-hangzhou", addressing=addressing)  # type: ignore[arg-type]
    async with OssClient(config, CREDS) as client:
        assert client._url("a b/c+.txt", [("x", "1/2")]) == url


def test_region_derived_from_endpoint() -> None:
    assert OssConfig("oss-cn-beijing.aliyuncs.com", "b").resolved_region() == "cn-beijing"
    assert (
        OssConfig("https://oss-eu-central-1-internal.aliyuncs.com", "b").resolved_region()
        == "eu-central-1"
    )
    with pytest.raises(ValueError, match="region"):
        OssConfig("http://127.0.0.1:9", "b").resolved_region()


async def test_cancelled_get_releases_its_connection(server: MiniServer) -> None:
    data = bytes(range(256)) * 8192
    server.put_object("k", data)
    server.faults.append(Fault(op="GET", key="k", stall_after=1000, stall_s=1.0))
    async with make_client(server, pool_size=1) as client:
        with trio.move_on_after(0.2) as scope:
            await get_into(client, "k", 0, bytearray(len(data)))
        assert scope.cancelled_caught
        # pool of one: this only works if the cancelled GET gave its connection back (closed)
        with trio.fail_after(5):
            buf = bytearray(len(data))
            res = await get_into(client, "k", 0, buf)
    assert bytes(buf) == data
    assert res.crc64 == crc64(data)
