"""The client against the package emulator (independent server code: it shares only the
signing canonicalization with us), with its declarative fault rules."""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ossmount.crc64 import crc64
from ossmount.emulator import Emulator, FaultRule
from ossmount.oss import (
    Credentials,
    InvalidAccessKeyId,
    InvalidRange,
    NoSuchBucket,
    NoSuchKey,
    ObjectChanged,
    OssClient,
    OssConfig,
    OssError,
    PreconditionFailed,
    RetryPolicy,
    ServiceUnavailable,
    SignatureDoesNotMatch,
    StaticCredentialsProvider,
)
from tests.client.conftest import all_pages
from tests.client.sinks import get_into, get_to_fd

DATA = random.Random(5).randbytes(5 * 1024 * 1024 + 17)


def client_for(
    emu: Emulator, *, bucket: str = "bkt", secret: str = "sk", ak: str = "ak", version: str = "v4"
) -> OssClient:
    return OssClient(
        OssConfig(
            emu.endpoint,
            bucket,
            region="cn-hangzhou",
            signature_version=version,  # type: ignore[arg-type]
            stall_timeout_s=0.5,
            read_timeout_s=5,
            connect_timeout_s=5,
        ),
        StaticCredentialsProvider(Credentials(ak, secret)),
        retry=RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.05),
    )


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[OssClient]:
    async with client_for(emu) as c:
        yield c


def gets(emu: Emulator) -> list[object]:
    return [r for r in emu.requests if r.op == "GetObject"]


async def test_head_and_ranged_get(emu: Emulator, client: OssClient) -> None:
    etag = emu.put_object("bkt", "dir/a b+é.bin", DATA)
    meta = await client.head("dir/a b+é.bin")
    assert (meta.size, meta.etag, meta.crc64) == (len(DATA), etag, crc64(DATA))
    buf = bytearray(2_000_000)
    res = await get_into(client, "dir/a b+é.bin", 1000, buf, if_match=etag)
    assert bytes(buf) == DATA[1000:2_001_000]
    assert res.crc64 == crc64(DATA[1000:2_001_000])
    assert res.meta.crc64 == crc64(DATA)
    assert client.statistics() == {"recv_into_thread": 1}


@pytest.mark.parametrize("version", ["v4", "v1"])
async def test_both_signature_versions_accepted(emu: Emulator, version: str) -> None:
    emu.put_object("bkt", "k", b"hello")
    async with client_for(emu, version=version) as c:
        assert (await c.head("k")).size == 5


async def test_get_to_fd_with_truncate_and_reset(
    emu: Emulator, client: OssClient, tmp_path: Path
) -> None:
    emu.put_object("bkt", "k", DATA)
    emu.faults.add(FaultRule("truncate", op="GetObject", after=1_500_000))
    emu.faults.add(FaultRule("reset", op="GetObject", after=700_000, skip=1))
    path = tmp_path / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        res = await get_to_fd(client, "k", 0, len(DATA), fd, 0)
    finally:
        os.close(fd)
    assert path.read_bytes() == DATA
    assert res.crc64 == crc64(DATA)
    records = gets(emu)
    assert len(records) == 3
    assert records[1].range_header == f"bytes=1500000-{len(DATA) - 1}"  # type: ignore[attr-defined]


async def test_stall_then_resume(emu: Emulator, client: OssClient) -> None:
    emu.put_object("bkt", "k", DATA)
    emu.faults.add(FaultRule("stall", op="GetObject", after=300_000, seconds=3.0))
    buf = bytearray(len(DATA))
    res = await get_into(client, "k", 0, buf)
    assert bytes(buf) == DATA
    assert res.crc64 == crc64(DATA)
    assert len(gets(emu)) == 2


async def test_503_retried(emu: Emulator, client: OssClient) -> None:
    emu.put_object("bkt", "k", DATA)
    emu.faults.add(
        FaultRule("error", op="GetObject", status=503, code="ServiceUnavailable", times=2)
    )
    buf = bytearray(10)
    await get_into(client, "k", 0, buf)
    assert bytes(buf) == DATA[:10]
    assert [r.status for r in gets(emu)] == [503, 503, 206]  # type: ignore[attr-defined]


async def test_503_gives_up(emu: Emulator, client: OssClient) -> None:
    emu.put_object("bkt", "k", DATA)
    emu.faults.add(
        FaultRule("error", op="GetObject", status=503, code="ServiceUnavailable", times=None)
    )
    with pytest.raises(ServiceUnavailable):
        await get_into(client, "k", 0, bytearray(10))
    assert len(gets(emu)) == 4


async def test_errors(emu: Emulator, client: OssClient) -> None:
    etag = emu.put_object("bkt", "k", DATA)
    with pytest.raises(NoSuchKey):
        await client.head("missing")
    with pytest.raises(NoSuchKey):
        await get_into(client, "missing", 0, bytearray(1))
    with pytest.raises(InvalidRange):
        await get_into(client, "k", len(DATA), bytearray(1))
    with pytest.raises(PreconditionFailed):
        await get_into(client, "k", 0, bytearray(1), if_match='"00"')
    assert (await get_into(client, "k", 0, bytearray(1), if_match=etag)).length == 1
    async with client_for(emu, bucket="nope") as c:
        with pytest.raises(NoSuchBucket):
            await get_into(c, "k", 0, bytearray(1))
    async with client_for(emu, secret="bad-secret") as c:
        with pytest.raises(SignatureDoesNotMatch) as info:
            await c.head("k")
        assert "bad-secret" not in str(info.value)
    async with client_for(emu, ak="other") as c:
        with pytest.raises(InvalidAccessKeyId):
            await c.list_page("")


async def test_object_replaced_mid_download(emu: Emulator, client: OssClient) -> None:
    emu.put_object("bkt", "k", DATA)
    emu.faults.add(FaultRule("truncate", op="GetObject", after=1_000_000))
    emu.faults.add(FaultRule("replace", op="GetObject", skip=1))
    with pytest.raises(ObjectChanged):
        await get_into(client, "k", 0, bytearray(len(DATA)))


async def test_pagination(emu: Emulator, client: OssClient) -> None:
    keys = [f"p/{i:02d} +é" for i in range(23)] + ["p/sub/a", "p/sub/b", "q"]
    for k in keys:
        emu.put_object("bkt", k, b"z")
    pages = await all_pages(client, "p/", max_keys=7)
    assert [o.key for p in pages for o in p.objects] == sorted(keys[:23])
    assert [x for p in pages for x in p.prefixes] == ["p/sub/"]
    assert pages[-1].next_token is None
    assert sum(1 for r in emu.requests if r.op == "ListObjectsV2") == len(pages) >= 4


async def test_empty_object_not_fetched(emu: Emulator, client: OssClient) -> None:
    emu.put_object("bkt", "empty", b"")
    res = await get_into(client, "empty", 0, bytearray(0))
    assert res.length == 0
    assert gets(emu) == []


async def test_connection_reused_for_small_bodies(emu: Emulator, client: OssClient) -> None:
    # The emulator sends head and a small body in one write, so the body sits in h11's buffer:
    # the connection must still go back to the pool rather than be closed per request.
    emu.put_object("bkt", "small", b"0123456789" * 10)
    for i in range(5):
        buf = bytearray(50)
        await get_into(client, "small", i, buf)
        assert bytes(buf) == (b"0123456789" * 10)[i : i + 50]
    pool = client._wire  # ranged GETs go on the client's own connections (oss/_wire.py)
    assert len(pool.connections) == 1


async def test_get_symlink_returns_the_decoded_target(emu: Emulator, client: OssClient) -> None:
    emu.put_object("bkt", "dir/t a+b.txt", b"x")
    emu.put_symlink("bkt", "link", "dir/t a+b.txt")
    assert await client.get_symlink("link") == "dir/t a+b.txt"
    with pytest.raises(OssError) as info:
        await client.get_symlink("dir/t a+b.txt")
    assert info.value.status == 400


async def test_proxy_environment_is_ignored(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """The endpoint is exactly what was configured: a proxy in the environment (here one that
    does not exist) must not capture the requests, or the mount would talk to a stranger."""
    emu.put_object("bkt", "k", b"hello")
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with client_for(emu) as c:
        assert (await c.head("k")).size == 5
        buf = bytearray(5)
        await get_into(c, "k", 0, buf)
    assert bytes(buf) == b"hello"
