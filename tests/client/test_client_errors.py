"""Every error class, retries, resume from the byte reached, fences — over real HTTP."""

from __future__ import annotations

import random

import pytest

from ossmount.crc64 import crc64
from ossmount.oss import (
    AccessDenied,
    Credentials,
    InternalError,
    InvalidAccessKeyId,
    InvalidObjectState,
    InvalidRange,
    NoSuchBucket,
    NoSuchKey,
    ObjectChanged,
    OssClient,
    OssError,
    OssTransportError,
    PreconditionFailed,
    QpsLimitExceeded,
    RequestTimeTooSkewed,
    ServiceUnavailable,
    SignatureDoesNotMatch,
    Throttled,
)
from tests.client._mini_server import Fault, MiniServer
from tests.client.conftest import make_client
from tests.client.sinks import get_into, get_to_fd

DATA = random.Random(11).randbytes(4 * 1024 * 1024)


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (403, "InvalidObjectState", InvalidObjectState),
        (403, "AccessDenied", AccessDenied),
        (416, "InvalidRange", InvalidRange),
        (412, "PreconditionFailed", PreconditionFailed),
        (409, "SomethingNew", OssError),
    ],
)
async def test_non_retryable_codes(
    server: MiniServer, client: OssClient, status: int, code: str, cls: type[OssError]
) -> None:
    server.put_object("k", DATA)
    server.faults.append(Fault(op="GET", key="k", status=status, code=code))
    with pytest.raises(cls) as info:
        await get_into(client, "k", 0, bytearray(10))
    assert type(info.value) is cls
    assert info.value.code == code
    assert info.value.status == status
    assert info.value.bucket == "b"
    assert info.value.key == "k"
    assert len(server.requests) == 1  # never retried


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (503, "ServiceUnavailable", ServiceUnavailable),
        (429, "QpsLimitExceeded", QpsLimitExceeded),
        (503, "DownloadTrafficRateLimitExceeded", Throttled),
        (500, "InternalError", InternalError),
        (403, "RequestTimeTooSkewed", RequestTimeTooSkewed),
    ],
)
async def test_retryable_codes_then_success(
    server: MiniServer, client: OssClient, status: int, code: str, cls: type[OssError]
) -> None:
    server.put_object("k", DATA)
    server.faults.append(Fault(op="GET", key="k", status=status, code=code, times=2))
    buf = bytearray(100)
    res = await get_into(client, "k", 5, buf)
    assert bytes(buf) == DATA[5:105]
    assert res.crc64 == crc64(DATA[5:105])
    assert [r.status for r in server.requests] == [status, status, 206]
    # re-signed on every attempt: each carries its own Authorization computed afresh
    assert all("Authorization" in r.headers for r in server.requests)


async def test_retries_are_bounded(server: MiniServer, client: OssClient) -> None:
    server.put_object("k", DATA)
    server.faults.append(Fault(op="GET", key="k", status=503, code="ServiceUnavailable", times=99))
    with pytest.raises(ServiceUnavailable) as info:
        await get_into(client, "k", 0, bytearray(10))
    assert len(server.requests) == 4  # max_attempts
    assert "oss://b/k" in str(info.value)
    assert "ServiceUnavailable" in str(info.value)


async def test_no_such_bucket(server: MiniServer) -> None:
    async with make_client(server, bucket="zz") as c:
        with pytest.raises(NoSuchBucket):
            await c.head("k")


async def test_head_error_from_x_oss_err_header(server: MiniServer, client: OssClient) -> None:
    with pytest.raises(NoSuchKey) as info:
        await client.head("missing")
    # request id comes from the XML inside the base64 header, not the response header
    assert info.value.request_id == "5F0000000000000000000002"
    assert info.value.ec == "0000-00000000"


async def test_bad_key_id(server: MiniServer) -> None:
    async with make_client(server, credentials=Credentials("nobody", "sk")) as c:
        with pytest.raises(InvalidAccessKeyId):
            await c.head("k")


async def test_bad_secret(server: MiniServer) -> None:
    server.put_object("k", b"x")
    async with make_client(server, credentials=Credentials("ak", "wrong-secret")) as c:
        with pytest.raises(SignatureDoesNotMatch) as info:
            await c.head("k")
    assert "wrong-secret" not in str(info.value)
    assert "wrong-secret" not in repr(info.value)


async def test_anonymous_is_unsigned(server: MiniServer) -> None:
    server.put_object("k", b"x")
    async with make_client(server, signature_version="anonymous") as c:
        with pytest.raises(AccessDenied):
            await c.head("k")
    assert "Authorization" not in server.requests[-1].headers


async def test_if_match(server: MiniServer, client: OssClient) -> None:
    obj = server.put_object("k", DATA)
    res = await get_into(client, "k", 0, bytearray(10), if_match=obj.etag)
    assert res.meta.etag == obj.etag
    assert server.requests[-1].headers["If-Match"] == obj.etag
    with pytest.raises(PreconditionFailed) as info:
        await get_into(client, "k", 0, bytearray(10), if_match='"0000"')
    assert info.value.status == 412
    assert len(server.requests) == 2  # 412 not retried


async def test_mid_body_reset_resumes_from_byte_reached(
    server: MiniServer, client: OssClient
) -> None:
    obj = server.put_object("k", DATA)
    server.faults.append(Fault(op="GET", key="k", reset_after=1_000_000))
    buf = bytearray(3_000_000)
    res = await get_into(client, "k", 500, buf)
    assert bytes(buf) == DATA[500:3_000_500]
    assert res.length == 3_000_000
    assert res.crc64 == crc64(DATA[500:3_000_500])
    first, second = server.requests
    assert first.headers["Range"] == "bytes=500-3000499"
    assert "If-Match" not in first.headers
    assert second.headers["Range"] == "bytes=1000500-3000499"  # from the byte reached
    assert second.headers["If-Match"] == obj.etag  # pinned to the first reply's version


async def test_connection_reset_resumes(server: MiniServer, client: OssClient) -> None:
    server.put_object("k", DATA)
    server.faults.append(Fault(op="GET", key="k", reset_after=1_000_000, rst=True))
    buf = bytearray(3_000_000)
    res = await get_into(client, "k", 500, buf)
    assert bytes(buf) == DATA[500:3_000_500]
    assert res.crc64 == crc64(DATA[500:3_000_500])
    # An RST may discard bytes still in our socket buffer: resume is from what we really got.
    assert len(server.requests) == 2
    resumed_at = int(server.requests[1].headers["Range"].removeprefix("bytes=").split("-")[0])
    assert 500 <= resumed_at <= 1_000_500


async def test_mid_body_reset_to_file(server: MiniServer, client: OssClient, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os

    server.put_object("k", DATA)
    server.faults.append(Fault(op="GET", key="k", reset_after=2_500_000))
    path = tmp_path / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        res = await get_to_fd(client, "k", 0, len(DATA), fd, 0)
    finally:
        os.close(fd)
    assert path.read_bytes() == DATA
    assert res.crc64 == crc64(DATA) == res.meta.crc64


async def test_stall_is_a_timeout_then_resumed(server: MiniServer) -> None:
    server.put_object("k", DATA)
    server.faults.append(Fault(op="GET", key="k", stall_after=100_000, stall_s=1.5))
    async with make_client(server, stall_timeout_s=0.3) as c:
        buf = bytearray(len(DATA))
        res = await get_into(c, "k", 0, buf)
    assert bytes(buf) == DATA
    assert res.crc64 == crc64(DATA)
    assert server.requests[1].headers["Range"].startswith("bytes=100000-")


async def test_transport_error_after_retries(server: MiniServer) -> None:
    server.put_object("k", DATA)
    server.faults.append(Fault(op="GET", key="k", reset_after=0, times=99))
    async with make_client(server, max_attempts=3) as c:
        with pytest.raises(OssTransportError) as info:
            await get_into(c, "k", 0, bytearray(1000))
    assert len(server.requests) == 3
    assert "oss://b/k" in str(info.value)


async def test_object_changed_during_resume(server: MiniServer, client: OssClient) -> None:
    server.put_object("k", DATA)
    server.faults.append(
        Fault(op="GET", key="k", reset_after=1_000_000, replace_with=b"y" * len(DATA))
    )
    with pytest.raises(ObjectChanged) as info:
        await get_into(client, "k", 0, bytearray(len(DATA)))
    assert isinstance(info.value, PreconditionFailed)
    assert len(server.requests) == 2


async def test_200_ignoring_range_is_handled(server: MiniServer, client: OssClient) -> None:
    server.put_object("k", DATA)
    server.faults.append(Fault(op="GET", key="k", ignore_range=True))
    buf = bytearray(1000)
    res = await get_into(client, "k", 777_777, buf)
    assert server.requests[0].status == 200
    assert bytes(buf) == DATA[777_777:778_777]
    assert res.crc64 == crc64(DATA[777_777:778_777])
    assert res.meta.size == len(DATA)
    # the connection carrying the rest of the 200 body was dropped, not reused mid-body
    await get_into(client, "k", 0, bytearray(10))
    assert server.requests[1].peer != server.requests[0].peer


async def test_fast_body_path_engaged(server: MiniServer, client: OssClient) -> None:
    server.put_object("k", DATA)
    await get_into(client, "k", 0, bytearray(len(DATA)))
    assert client.statistics() == {"recv_into_thread": 1}


async def test_clock_skew_corrected_from_server_date(server: MiniServer, client: OssClient) -> None:
    import calendar
    import time

    server.put_object("k", DATA)
    server.faults.append(
        Fault(op="HEAD", key="k", status=403, code="RequestTimeTooSkewed", date_offset_s=3600)
    )
    await client.head("k")
    first, second = server.requests
    stamps = [
        calendar.timegm(time.strptime(r.headers["x-oss-date"], "%Y%m%dT%H%M%SZ"))
        for r in (first, second)
    ]
    assert abs(stamps[0] - time.time()) < 60
    assert abs(stamps[1] - (time.time() + 3600)) < 60  # re-signed with the server's clock


async def test_short_206_continues_from_where_it_ended(
    server: MiniServer, client: OssClient
) -> None:
    server.put_object("k", DATA)
    server.faults.append(Fault(op="GET", key="k", cap_range=300_000, times=2))
    buf = bytearray(1_000_000)
    res = await get_into(client, "k", 10, buf)
    assert res.length == 1_000_000
    assert bytes(buf) == DATA[10:1_000_010]
    assert res.crc64 == crc64(DATA[10:1_000_010])
    assert [r.headers["Range"] for r in server.requests] == [
        "bytes=10-1000009",
        "bytes=300010-1000009",
        "bytes=600010-1000009",
    ]


async def test_connection_refused_is_a_transport_error_naming_the_cause() -> None:
    import socket

    from ossmount.oss import Credentials, OssConfig, RetryPolicy, StaticCredentialsProvider

    with socket.socket() as s:  # a port nothing listens on (bound, never listening)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        config = OssConfig(f"http://127.0.0.1:{port}", "b", region="cn-hangzhou")
        creds = StaticCredentialsProvider(Credentials("ak", "sk"))
        async with OssClient(config, creds, retry=RetryPolicy(max_attempts=1)) as c:
            with pytest.raises(OssTransportError, match="ConnectError") as info:
                await get_into(c, "k", 0, bytearray(10))
    assert "oss://b/k" in str(info.value)
    assert "refused" in str(info.value).lower()
