"""Fault rules, shaping, the admin endpoint and the CLI (issue 4: faults and shaping)."""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from defusedxml import ElementTree

from ossmount.crc64 import crc64
from ossmount.emulator import Emulator, FaultRule, parse_rule

DATA = os.urandom(256 * 1024)


def _raw_get(emu: Emulator, path: str, extra: str = "") -> tuple[bytes, bytes, str]:
    """(head, body bytes received, how it ended: 'eof' | 'reset')."""
    host, port = emu.host, emu.port
    with socket.create_connection((host, port)) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode())
        buf = b""
        how = "eof"
        s.settimeout(10)
        try:
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                buf += chunk
                head, sep, body = buf.partition(b"\r\n\r\n")
                if sep:
                    length = int(
                        next(
                            ln.split(b":")[1]
                            for ln in head.split(b"\r\n")
                            if ln.lower().startswith(b"content-length")
                        )
                    )
                    if len(body) >= length:
                        break
        except ConnectionResetError:
            how = "reset"
    head, _, body = buf.partition(b"\r\n\r\n")
    return head, body, how


def test_error_rule_counted(open_emu: Emulator, http: httpx.Client) -> None:
    open_emu.put_object("demo", "k", b"v")
    open_emu.faults.add(
        FaultRule(
            "error", op="GetObject", key="k", status=503, code="ServiceUnavailable", skip=1, times=2
        )
    )
    codes = [http.get("/demo/k").status_code for _ in range(5)]
    assert codes == [200, 503, 503, 200, 200]
    assert http.head("/demo/k").status_code == 200  # other ops unaffected
    r = None
    open_emu.faults.clear()
    open_emu.faults.add(FaultRule("error", status=429, code="QpsLimitExceeded", nth=2, times=None))
    r = [http.get("/demo/k") for _ in range(3)]
    assert [x.status_code for x in r] == [200, 429, 200]
    assert ElementTree.fromstring(r[1].content).findtext("Code") == "QpsLimitExceeded"
    assert open_emu.requests[-2].code == "QpsLimitExceeded"


def test_reset_after_n_bytes(open_emu: Emulator) -> None:
    open_emu.put_object("demo", "big", DATA)
    open_emu.faults.add(FaultRule("reset", op="GetObject", after=100_000))
    head, body, how = _raw_get(open_emu, "/demo/big")
    assert b"200 OK" in head
    assert how == "reset"
    assert body == DATA[:100_000]
    rec = open_emu.requests[-1]
    assert rec.bytes_sent == 100_000
    assert rec.completed is False
    # times=1: the next GET is whole
    head, body, how = _raw_get(open_emu, "/demo/big")
    assert body == DATA


def test_truncate_and_flip(open_emu: Emulator) -> None:
    open_emu.put_object("demo", "big", DATA)
    open_emu.faults.add(FaultRule("truncate", after=5000))
    _, body, how = _raw_get(open_emu, "/demo/big")
    assert (how, body) == ("eof", DATA[:5000])
    open_emu.faults.clear()
    open_emu.faults.add(FaultRule("flip", after=7))
    _, body, _ = _raw_get(open_emu, "/demo/big", "Range: bytes=10-99\r\n")
    expect = bytearray(DATA[10:100])
    expect[7] ^= 0xFF
    assert body == bytes(expect)


def test_flip_in_synthetic_and_file_bodies(open_emu: Emulator, http: httpx.Client) -> None:
    open_emu.put_synthetic("demo", "syn", 3 << 20, seed=2)
    open_emu.faults.add(FaultRule("flip", after=(1 << 20) + 5))
    r = http.get("/demo/syn")
    good = open_emu.synthetic_bytes("demo", "syn", 0, 3 << 20)
    assert r.content != good
    assert r.content[(1 << 20) + 5] == good[(1 << 20) + 5] ^ 0xFF
    assert crc64(r.content) != int(r.headers["x-oss-hash-crc64ecma"])


def test_stall_after_n_bytes(open_emu: Emulator) -> None:
    open_emu.put_object("demo", "big", DATA)
    open_emu.faults.add(FaultRule("stall", after=1000, seconds=3.0))
    got = bytearray()

    def read_all() -> None:
        with (
            httpx.Client(base_url=open_emu.endpoint, timeout=httpx.Timeout(10, read=0.5)) as c,
            c.stream("GET", "/demo/big") as r,
        ):
            for chunk in r.iter_raw():
                got.extend(chunk)

    with pytest.raises(httpx.ReadTimeout):
        read_all()
    assert got == DATA[:1000]


def test_crc_header_faults(open_emu: Emulator, http: httpx.Client) -> None:
    open_emu.put_object("demo", "k", b"data")
    open_emu.faults.add(FaultRule("wrong-crc", op="HeadObject"))
    open_emu.faults.add(FaultRule("missing-crc", op="GetObject"))
    h = http.head("/demo/k")
    assert h.headers["x-oss-hash-crc64ecma"] != str(crc64(b"data"))
    g = http.get("/demo/k")
    assert "x-oss-hash-crc64ecma" not in g.headers
    assert http.get("/demo/k").headers["x-oss-hash-crc64ecma"] == str(crc64(b"data"))


def test_replace_after_n_requests(open_emu: Emulator, http: httpx.Client) -> None:
    open_emu.put_object("demo", "k", b"version one")
    open_emu.put_synthetic("demo", "s", 1 << 20, seed=4)
    open_emu.faults.add(FaultRule("replace", key="k", skip=1))
    open_emu.faults.add(FaultRule("replace", key="s", skip=1))
    h1 = http.head("/demo/k")
    g2 = http.get("/demo/k")
    assert g2.headers["etag"] != h1.headers["etag"]
    assert g2.headers["last-modified"] != h1.headers["last-modified"]
    assert g2.content != b"version one"
    assert len(g2.content) == len(b"version one")
    assert g2.headers["x-oss-hash-crc64ecma"] == str(crc64(g2.content))
    s1 = http.head("/demo/s")
    s2 = http.get("/demo/s")
    assert s2.headers["etag"] != s1.headers["etag"]
    assert s2.headers["x-oss-hash-crc64ecma"] == str(crc64(s2.content))


def test_gzip_mode(open_emu: Emulator, http: httpx.Client) -> None:
    text = b"hello text " * 200
    open_emu.put_object("demo", "t.txt", text)
    open_emu.faults.add(FaultRule("gzip", times=None))
    r = http.get("/demo/t.txt", headers={"Accept-Encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip"
    assert r.headers["transfer-encoding"] == "chunked"
    assert "etag" not in r.headers
    assert "content-length" not in r.headers
    assert r.content == text  # httpx decodes
    raw = http.get("/demo/t.txt", headers={"Accept-Encoding": "identity"})
    assert raw.headers["etag"]
    assert raw.content == text
    with http.stream("GET", "/demo/t.txt", headers={"Accept-Encoding": "gzip"}) as s:
        assert gzip.decompress(b"".join(s.iter_raw())) == text


def test_parse_rule_spec() -> None:
    r = parse_rule("action=reset,op=GetObject,key=big/*,after=1048576,skip=1,times=inf")
    assert (r.action, r.op, r.key, r.after, r.skip, r.times) == (
        "reset",
        "GetObject",
        "big/*",
        1048576,
        1,
        None,
    )
    with pytest.raises(ValueError, match="unknown fault action"):
        parse_rule("action=explode")
    with pytest.raises(ValueError, match="bad fault spec"):
        parse_rule("action=reset,colour=red")


def test_admin_endpoint_with_curl(open_emu: Emulator) -> None:
    open_emu.put_object("demo", "k", b"v")
    base = open_emu.endpoint + "/_emulator"
    out = subprocess.run(
        ["curl", "-sS", "-X", "POST", "--data-binary",
         "action=error,op=GetObject,status=500,code=InternalError", f"{base}/faults"],
        check=True, capture_output=True, text=True, timeout=30,
    ).stdout  # fmt: skip
    assert json.loads(out)[0]["action"] == "error"
    code = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"{open_emu.endpoint}/demo/k"],
        check=True, capture_output=True, text=True, timeout=30,
    ).stdout  # fmt: skip
    assert code == "500"
    listed = json.loads(
        subprocess.run(["curl", "-sS", f"{base}/faults"], check=True, capture_output=True,
                       timeout=30).stdout
    )  # fmt: skip
    assert listed[0]["fired"] == 1
    subprocess.run(["curl", "-sS", "-X", "DELETE", f"{base}/faults"], check=True,
                   capture_output=True, timeout=30)  # fmt: skip
    assert len(open_emu.faults) == 0
    reqs = json.loads(
        subprocess.run(["curl", "-sS", f"{base}/requests"], check=True, capture_output=True,
                       timeout=30).stdout
    )  # fmt: skip
    assert reqs[-1]["op"] == "GetObject"
    assert reqs[-1]["status"] == 500
    subprocess.run(["curl", "-sS", "-X", "POST", f"{base}/shaping?latency_s=0.01"], check=True,
                   capture_output=True, timeout=30)  # fmt: skip
    assert open_emu.shaping.latency_s == 0.01


def test_bandwidth_cap_per_connection(open_emu: Emulator, http: httpx.Client) -> None:
    open_emu.put_object("demo", "big", DATA)  # 256 KiB
    http.get("/demo/big")
    open_emu.shaping.set(conn_bps=512 * 1024)
    t0 = time.monotonic()
    r = http.get("/demo/big")
    took = time.monotonic() - t0
    assert r.content == DATA
    assert took >= 0.4  # 256 KiB at 512 KiB/s is 0.5 s (minus one burst)
    open_emu.shaping.set(conn_bps=0, total_bps=512 * 1024)
    t0 = time.monotonic()
    assert http.get("/demo/big").content == DATA
    assert time.monotonic() - t0 >= 0.4


def test_cli_prints_endpoint_and_stops_on_sigterm(tmp_path: object) -> None:
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    with subprocess.Popen(
        [sys.executable, "-m", "ossmount.emulator.cli", "--port", "0", "--populate", "demo",
         "--public-read", "--fault", "action=error,op=HeadObject,status=503,code=SlowDown"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    ) as proc:  # fmt: skip
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            assert line.startswith("http://127.0.0.1:")
            with httpx.Client(base_url=line) as c:
                r = c.get("/demo/?list-type=2&delimiter=/")
                assert r.status_code == 200
                assert "<Prefix>big/</Prefix>" in r.text
                assert c.get("/demo/docs/notes%20with%20space.txt").status_code == 200
                assert c.head("/demo/README.txt").status_code == 503
                size = c.head("/demo/big/synthetic-1GiB.bin").headers["content-length"]
                assert size == str(1 << 30)
                assert c.put("/demo/x", content=b"no").status_code == 403  # anonymous write
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0
