"""Faults on writes (issue 15): reset mid-upload, 503 on a part, a wrong part CRC, a stall.

Upload faults act on the request body at ``after`` bytes received (receive.py); the SDK
runs unmodified and must either recover (retry) or fail loudly, never commit a torn object.
"""

from __future__ import annotations

import os
import socket

import alibabacloud_oss_v2 as oss
import httpx
import pytest

from ossmount.crc64 import crc64
from ossmount.emulator import Emulator, FaultRule

from .test_sdk import client

MiB = 1 << 20


def test_reset_mid_upload_commits_nothing(open_emu: Emulator) -> None:
    rule = open_emu.faults.add(FaultRule("reset", op="PutObject", after=100_000))
    data = os.urandom(2 * MiB)
    with httpx.Client(base_url=open_emu.endpoint) as c, pytest.raises(httpx.TransportError):
        c.put("/demo/up.bin", content=data)
    assert rule.fired == 1
    assert open_emu.head("demo", "up.bin") is None
    rec = open_emu.requests.ops("PutObject")[0]
    assert rec.code == "ConnectionCut"
    assert not rec.completed
    with httpx.Client(base_url=open_emu.endpoint) as c:
        assert c.put("/demo/up.bin", content=data).status_code == 200
    assert open_emu.get_bytes("demo", "up.bin") == data


def test_reset_after_whole_body_before_answer(open_emu: Emulator) -> None:
    """The client sent every byte and hears nothing: the object must not exist."""
    open_emu.put_object("demo", "up.bin", b"old")
    open_emu.faults.add(FaultRule("reset", op="PutObject", after=1 << 40))
    with httpx.Client(base_url=open_emu.endpoint) as c, pytest.raises(httpx.TransportError):
        c.put("/demo/up.bin", content=os.urandom(300_000))
    assert open_emu.get_bytes("demo", "up.bin") == b"old"


def test_sdk_retries_a_reset_put(emu: Emulator) -> None:
    emu.faults.add(FaultRule("reset", op="PutObject", after=50_000))
    data = os.urandom(MiB)
    r = client(emu).put_object(oss.PutObjectRequest(bucket="demo", key="k", body=data))
    assert r.hash_crc64 == str(crc64(data))
    assert [x.code for x in emu.requests.ops("PutObject")] == ["ConnectionCut", None]
    assert emu.get_bytes("demo", "k") == data


def _upload(c: oss.Client, uid: str, n: int, data: bytes) -> oss.UploadPartResult:
    return c.upload_part(
        oss.UploadPartRequest(bucket="demo", key="mp", upload_id=uid, part_number=n, body=data)
    )


def _init(c: oss.Client) -> str:
    r = c.initiate_multipart_upload(oss.InitiateMultipartUploadRequest(bucket="demo", key="mp"))
    return str(r.upload_id)


def test_503_on_a_part_is_retried(emu: Emulator) -> None:
    c = client(emu)
    uid = _init(c)
    emu.faults.add(FaultRule("error", op="UploadPart", status=503, code="ServiceUnavailable"))
    data = os.urandom(200_000)
    r = _upload(c, uid, 1, data)
    assert r.hash_crc64 == str(crc64(data))
    assert [x.status for x in emu.requests.ops("UploadPart")] == [503, 200]


def test_wrong_crc_on_a_part_response(emu: Emulator, open_emu: Emulator) -> None:
    data = os.urandom(150_000)
    # raw: the header is wrong, the stored part is right
    with httpx.Client(base_url=open_emu.endpoint) as h:
        uid = h.post("/demo/mp?uploads").text.split("<UploadId>")[1].split("<")[0]
        open_emu.faults.add(FaultRule("wrong-crc", op="UploadPart"))
        r = h.put(f"/demo/mp?partNumber=1&uploadId={uid}", content=data)
        assert r.status_code == 200
        assert r.headers["x-oss-hash-crc64ecma"] != str(crc64(data))
        listed = h.get(f"/demo/mp?uploadId={uid}").text
        assert f"<HashCrc64ecma>{crc64(data)}</HashCrc64ecma>" in listed
    # the SDK checks a part's CRC: it re-sends, and fails naming both CRCs when all are wrong
    c = client(emu)
    uid = _init(c)
    emu.faults.add(FaultRule("wrong-crc", op="UploadPart", times=None))
    with pytest.raises(oss.exceptions.OperationError) as ei:
        _upload(c, uid, 1, data)
    assert isinstance(ei.value.unwrap(), oss.exceptions.InconsistentError)
    assert len(emu.requests.ops("UploadPart")) > 1


def test_stall_mid_upload(open_emu: Emulator) -> None:
    """A stalled upload times a patient-less client out; a short stall only delays it."""
    rule = open_emu.faults.add(FaultRule("stall", op="UploadPart", after=64 * 1024, seconds=30))
    with httpx.Client(base_url=open_emu.endpoint, timeout=httpx.Timeout(0.5)) as c:
        uid = c.post("/demo/mp?uploads").text.split("<UploadId>")[1].split("<")[0]
        with pytest.raises(httpx.TimeoutException):
            c.put(f"/demo/mp?partNumber=1&uploadId={uid}", content=os.urandom(8 * MiB))
    assert rule.fired == 1
    open_emu.faults.clear()
    short = open_emu.faults.add(FaultRule("stall", op="PutObject", after=1000, seconds=0.05))
    data = os.urandom(3 * MiB)
    with httpx.Client(base_url=open_emu.endpoint) as c:
        assert c.put("/demo/s", content=data).status_code == 200
    assert short.fired == 1
    assert open_emu.get_bytes("demo", "s") == data


def test_a_client_leaving_mid_body_after_a_refused_upload_costs_one_connection(
    open_emu: Emulator,
) -> None:
    """A refused upload is answered once its unread body is drained; a client that closed
    the connection meanwhile (its upload given up) raised out of the drain and took the
    whole emulator down: every later request was refused (found by the fault walk,
    tests/mount/test_write_faultwalk.py)."""
    open_emu.faults.add(FaultRule("error", op="PutObject", times=None, status=503,
                                  code="ServiceUnavailable"))  # fmt: skip
    host, port = open_emu.endpoint.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as s:
        s.sendall(b"PUT /demo/up.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n")
        s.sendall(b"x" * 1000)  # and no more
    open_emu.faults.clear()
    with httpx.Client(base_url=open_emu.endpoint) as c:
        assert c.put("/demo/up.bin", content=b"still served").status_code == 200
    assert open_emu.get_bytes("demo", "up.bin") == b"still served"
