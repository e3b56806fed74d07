"""Upload bodies over 1 MiB received by the pump (emulator/pump.py): one worker thread per
body (recv, CRC, write), MD5 in its own stage on a runner thread.

Each test checks what the event-loop path checked (ETag, CRC, stored bytes, faults at their
offsets, Content-MD5, a peer that closes mid-body) on bodies that now take the pump, and that
they do take it (``pump_body`` counted), so a regression to the old path shows.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import httpx
import pytest
import trio

from ossmount.crc64 import crc64
from ossmount.emulator import Emulator, FaultRule, receive
from ossmount.emulator.store import md5_etag
from ossmount.emulator.writer import BodyWriter

MiB = 1 << 20


@pytest.fixture
def pumped(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The lengths ``pump_body`` was asked for, in order."""
    calls: list[int] = []
    real = receive.pump_body

    async def counting(
        sock: trio.socket.SocketType, writer: BodyWriter, want: int, **kw: Any
    ) -> int:
        calls.append(want)
        return await real(sock, writer, want, **kw)

    monkeypatch.setattr(receive, "pump_body", counting)
    return calls


@pytest.fixture(params=["disk", "memory"])
def emu_any(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Emulator]:
    data_dir = str(tmp_path) if request.param == "disk" else None
    with Emulator(buckets=["demo"], verify_signatures=False, data_dir=data_dir) as e:
        yield e


def test_big_put_is_pumped_and_faithful(emu_any: Emulator, pumped: list[int]) -> None:
    data = os.urandom(9 * MiB + 12345)  # several slabs and a short last one
    with httpx.Client(base_url=emu_any.endpoint) as c:
        r = c.put("/demo/big", content=data)
        assert r.status_code == 200
        assert r.headers["etag"] == md5_etag(hashlib.md5(data).digest())
        assert r.headers["x-oss-hash-crc64ecma"] == str(crc64(data))
        assert r.headers["content-md5"] == base64.b64encode(hashlib.md5(data).digest()).decode()
        r2 = c.put("/demo/small", content=b"x" * 1000)  # same connection, after a pumped body
        assert r2.status_code == 200
    assert emu_any.get_bytes("demo", "big") == data
    assert emu_any.get_bytes("demo", "small") == b"x" * 1000
    assert len(pumped) == 1
    assert 0 < pumped[0] <= len(data)


def test_small_put_is_not_pumped(open_emu: Emulator, pumped: list[int]) -> None:
    with httpx.Client(base_url=open_emu.endpoint) as c:
        assert c.put("/demo/s", content=os.urandom(MiB)).status_code == 200
    assert pumped == []


def test_stalls_inside_a_pumped_body_split_it(open_emu: Emulator, pumped: list[int]) -> None:
    """Two stalls in the pumped region: three pieces, ending at the fault offsets."""
    data = os.urandom(6 * MiB)
    for at in (2 * MiB, 4 * MiB + 7):
        open_emu.faults.add(FaultRule("stall", op="PutObject", after=at, seconds=0.05))
    with httpx.Client(base_url=open_emu.endpoint) as c:
        r = c.put("/demo/st", content=data)
    assert r.headers["etag"] == md5_etag(hashlib.md5(data).digest())
    assert open_emu.get_bytes("demo", "st") == data
    assert len(pumped) == 3
    assert pumped[1] == 2 * MiB + 7
    assert pumped[2] == 2 * MiB - 7


def test_reset_inside_a_pumped_body_commits_nothing(open_emu: Emulator, pumped: list[int]) -> None:
    open_emu.put_object("demo", "k", b"old")
    rule = open_emu.faults.add(FaultRule("reset", op="PutObject", after=3 * MiB))
    with httpx.Client(base_url=open_emu.endpoint) as c, pytest.raises(httpx.TransportError):
        c.put("/demo/k", content=os.urandom(5 * MiB))
    assert rule.fired == 1
    assert len(pumped) == 1
    assert open_emu.get_bytes("demo", "k") == b"old"
    rec = open_emu.requests.ops("PutObject")[-1]
    assert rec.code == "ConnectionCut"
    assert not rec.completed


def test_content_md5_checked_on_a_pumped_body(open_emu: Emulator, pumped: list[int]) -> None:
    data = os.urandom(3 * MiB)
    good = base64.b64encode(hashlib.md5(data).digest()).decode()
    bad = base64.b64encode(hashlib.md5(data[:-1]).digest()).decode()
    with httpx.Client(base_url=open_emu.endpoint) as c:
        r = c.put("/demo/m", content=data, headers={"Content-MD5": bad})
        assert r.status_code == 400
        assert ElementTree.fromstring(r.content).findtext("Code") == "InvalidDigest"
        assert open_emu.head("demo", "m") is None
        assert c.put("/demo/m", content=data, headers={"Content-MD5": good}).status_code == 200
    assert open_emu.get_bytes("demo", "m") == data
    assert len(pumped) == 2


def _raw_put(endpoint: str, key: str, length: int, expect: bool) -> socket.socket:
    host, port = endpoint.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)))
    head = f"PUT /demo/{key} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: {length}\r\n"
    s.sendall((head + ("Expect: 100-continue\r\n" if expect else "") + "\r\n").encode())
    return s


def _read_reply(s: socket.socket) -> bytes:
    out = b""
    while b"\r\n\r\n" not in out:
        got = s.recv(65536)
        if not got:
            break
        out += got
    return out


def test_expect_100_continue_before_a_pumped_body(open_emu: Emulator) -> None:
    data = os.urandom(3 * MiB)
    with _raw_put(open_emu.endpoint, "e", len(data), expect=True) as s:
        assert _read_reply(s).startswith(b"HTTP/1.1 100 Continue")
        s.sendall(data)
        assert _read_reply(s).startswith(b"HTTP/1.1 200")
    assert open_emu.get_bytes("demo", "e") == data


def test_peer_closing_mid_pumped_body_commits_nothing(open_emu: Emulator) -> None:
    with _raw_put(open_emu.endpoint, "half", 4 * MiB, expect=False) as s:
        s.sendall(os.urandom(2 * MiB + 5))
        s.shutdown(socket.SHUT_WR)
        assert _read_reply(s) == b""  # closed without an answer
    assert open_emu.head("demo", "half") is None
    with httpx.Client(base_url=open_emu.endpoint) as c:  # the server goes on
        assert c.put("/demo/after", content=b"ok").status_code == 200


def test_stop_while_a_pump_waits_for_the_body(tmp_path: Path, pumped: list[int]) -> None:
    """Stopping the emulator cancels a pump blocked in recv: its thread is stopped (socket
    shut down) and stop() returns; nothing is committed."""
    emu = Emulator(buckets=["demo"], verify_signatures=False, data_dir=str(tmp_path)).start()
    started = threading.Event()
    real = receive.pump_body

    async def flagging(
        sock: trio.socket.SocketType, writer: BodyWriter, want: int, **kw: Any
    ) -> int:
        started.set()
        return await real(sock, writer, want, **kw)

    mp = pytest.MonkeyPatch()
    mp.setattr(receive, "pump_body", flagging)
    try:
        with _raw_put(emu.endpoint, "w", 4 * MiB, expect=False) as s:
            s.sendall(os.urandom(MiB + MiB // 2))
            assert started.wait(10)
            serving = emu._thread
            assert serving is not None
            emu.stop()
            assert not serving.is_alive()  # stop() gives up after 10 s; it did not have to
        assert not any(p.is_file() for p in (tmp_path / "demo").iterdir())
    finally:
        mp.undo()
        emu.stop()


def test_multipart_parts_pumped_into_place(tmp_path: Path, pumped: list[int]) -> None:
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB), os.urandom(MiB + 3)]
    with (
        Emulator(buckets=["demo"], verify_signatures=False, data_dir=str(tmp_path)) as emu,
        httpx.Client(base_url=emu.endpoint) as c,
    ):
        uid = ElementTree.fromstring(c.post("/demo/mp?uploads").content).findtext("UploadId")
        etags = []
        for n, d in enumerate(parts, 1):
            r = c.put(f"/demo/mp?partNumber={n}&uploadId={uid}", content=d)
            assert r.headers["etag"] == md5_etag(hashlib.md5(d).digest())
            assert r.headers["x-oss-hash-crc64ecma"] == str(crc64(d))
            etags.append(r.headers["etag"])
        xml = "<CompleteMultipartUpload>" + "".join(
            f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>"
            for n, e in enumerate(etags, 1)
        )
        r = c.post(f"/demo/mp?uploadId={uid}", content=xml + "</CompleteMultipartUpload>")
        whole = b"".join(parts)
        assert r.headers["x-oss-hash-crc64ecma"] == str(crc64(whole))
        digests = b"".join(hashlib.md5(d).digest() for d in parts)
        want = f'"{hashlib.md5(digests).hexdigest().upper()}-3"'
        assert ElementTree.fromstring(r.content).findtext("ETag") == want
        assert c.get("/demo/mp").content == whole
    assert len(pumped) == 3


def test_writer_commit_from_a_thread_keeps_order(tmp_path: Path) -> None:
    """Pieces committed from a pump thread, more than the MD5 stage's depth: MD5, CRC and
    the file see the bytes in order."""
    chunks = [os.urandom(n) for n in (MiB, 5, MiB - 1, 3 * MiB // 2)] * 4
    w = BodyWriter(tmp_path, md5=True)
    w.start_pump()
    t = threading.Thread(target=lambda: [w.commit(ch) for ch in chunks])
    t.start()
    t.join()
    trio.run(w.drain)
    whole = b"".join(chunks)
    body = w.finish()
    assert w.md5.digest() == hashlib.md5(whole).digest()
    assert w.crc == crc64(whole)
    assert w.size == len(whole)
    assert Path(body.path).read_bytes() == whole  # type: ignore[attr-defined]


def test_upload_stages_reuse_runner_threads(open_emu: Emulator) -> None:
    """Sequential uploads hash on the same runner thread: no thread is started (which
    would block the event loop until it runs) once one is idle."""

    def runners() -> set[int]:
        return {t.ident or 0 for t in threading.enumerate() if t.name == "emulator-stage"}

    with httpx.Client(base_url=open_emu.endpoint) as c:
        assert c.put("/demo/a", content=os.urandom(3 * MiB)).status_code == 200
        first = runners()
        for key in ("b", "c", "d"):
            assert c.put(f"/demo/{key}", content=os.urandom(3 * MiB)).status_code == 200
    assert first
    assert runners() == first
