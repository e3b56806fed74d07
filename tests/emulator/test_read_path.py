"""Read-path faithfulness over raw HTTP (oss-protocol.md §8 items 1, 3-7, 9-12, 14-16)."""

from __future__ import annotations

import base64
import email.utils
import re
import time
from urllib.parse import quote

import httpx
import pytest
from defusedxml import ElementTree

from ossmount.crc64 import crc64
from ossmount.emulator import Emulator

DATA = bytes(range(256)) * 4  # 1024 bytes


def _common(r: httpx.Response) -> None:
    assert r.headers["server"] == "AliyunOSS"
    assert re.fullmatch(r"[0-9A-F]{24}", r.headers["x-oss-request-id"])
    email.utils.parsedate_to_datetime(r.headers["date"])
    assert r.headers["date"].endswith("GMT")


def test_get_and_head_headers(open_emu: Emulator, http: httpx.Client) -> None:
    etag = open_emu.put_object("demo", "dir/a.bin", DATA)
    r = http.get("/demo/dir/a.bin")
    assert r.status_code == 200
    assert r.content == DATA
    _common(r)
    assert r.headers["etag"] == etag
    assert re.fullmatch(r'"[0-9A-F]{32}"', etag)
    assert r.headers["x-oss-hash-crc64ecma"] == str(crc64(DATA))
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["x-oss-object-type"] == "Normal"
    assert r.headers["x-oss-storage-class"] == "Standard"
    assert r.headers["content-type"] == "application/octet-stream"
    email.utils.parsedate_to_datetime(r.headers["last-modified"])
    h = http.head("/demo/dir/a.bin")
    assert h.status_code == 200
    assert h.content == b""
    for name in ("etag", "last-modified", "x-oss-hash-crc64ecma", "content-length", "content-type"):
        assert h.headers[name] == r.headers[name], name


def test_content_type_from_extension(open_emu: Emulator, http: httpx.Client) -> None:
    open_emu.put_object("demo", "x.txt", b"hi")
    assert http.head("/demo/x.txt").headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize(
    ("header", "standard", "status", "body_range"),
    [
        ("bytes=0-9", False, 206, (0, 9)),
        ("bytes=1000-", False, 206, (1000, 1023)),
        ("bytes=-24", False, 206, (1000, 1023)),
        ("bytes=-5000", False, 206, (0, 1023)),
        ("bytes=1000-2000", False, 200, None),  # default: invalid range ignored
        ("bytes=0-1024", False, 200, None),
        ("bytes=1024-", False, 200, None),
        ("byte=0-499", False, 200, None),
        ("bytes=9-3", False, 200, None),
        ("bytes=1000-2000", True, 206, (1000, 1023)),  # standard: clamp end
        ("bytes=0-", True, 206, (0, 1023)),
        ("bytes=1024-", True, 416, None),  # standard: unsatisfiable start
        ("bytes=5000-6000", True, 416, None),
        ("bytes=0-1,4-5", True, 416, None),
        ("byte=0-499", True, 200, None),
    ],
)
def test_range_forms(
    open_emu: Emulator,
    http: httpx.Client,
    header: str,
    standard: bool,
    status: int,
    body_range: tuple[int, int] | None,
) -> None:
    open_emu.put_object("demo", "r.bin", DATA)
    headers = {"Range": header}
    if standard:
        headers["x-oss-range-behavior"] = "standard"
    r = http.get("/demo/r.bin", headers=headers)
    assert r.status_code == status
    # whole-object CRC on every successful GET, also 206
    if status != 416:
        assert r.headers["x-oss-hash-crc64ecma"] == str(crc64(DATA))
    if status == 206:
        assert body_range is not None
        a, b = body_range
        assert r.content == DATA[a : b + 1]
        assert r.headers["content-range"] == f"bytes {a}-{b}/1024"
        assert open_emu.requests[-1].range == (a, b)
    elif status == 200:
        assert r.content == DATA
        assert "content-range" not in r.headers
    else:
        root = ElementTree.fromstring(r.content)
        assert root.findtext("Code") == "InvalidRange"
        assert r.headers["content-range"] == "bytes */1024"


def test_conditionals(open_emu: Emulator, http: httpx.Client) -> None:
    etag = open_emu.put_object("demo", "c.bin", DATA)
    lm = http.head("/demo/c.bin").headers["last-modified"]
    past = email.utils.formatdate(time.time() - 3600, usegmt=True)
    future = email.utils.formatdate(time.time() + 3600, usegmt=True)
    assert http.get("/demo/c.bin", headers={"If-Match": etag}).status_code == 200
    r = http.get("/demo/c.bin", headers={"If-Match": '"0000"'})
    assert r.status_code == 412
    assert ElementTree.fromstring(r.content).findtext("Code") == "PreconditionFailed"
    h = http.head("/demo/c.bin", headers={"If-Match": '"0000"'})
    assert h.status_code == 412
    assert h.content == b""
    r = http.get("/demo/c.bin", headers={"If-None-Match": etag})
    assert r.status_code == 304
    assert r.content == b""
    _common(r)
    assert http.get("/demo/c.bin", headers={"If-None-Match": '"00"'}).status_code == 200
    assert http.get("/demo/c.bin", headers={"If-Modified-Since": lm}).status_code == 304
    assert http.get("/demo/c.bin", headers={"If-Modified-Since": past}).status_code == 200
    assert http.get("/demo/c.bin", headers={"If-Unmodified-Since": past}).status_code == 412
    assert http.get("/demo/c.bin", headers={"If-Unmodified-Since": future}).status_code == 200


def test_errors_xml_and_head_err_header(open_emu: Emulator, http: httpx.Client) -> None:
    r = http.get("/demo/missing")
    assert r.status_code == 404
    _common(r)
    root = ElementTree.fromstring(r.content)
    assert root.tag == "Error"
    assert root.findtext("Code") == "NoSuchKey"
    assert root.findtext("RequestId") == r.headers["x-oss-request-id"]
    assert root.findtext("EC") == r.headers["x-oss-ec"] == "0026-00000001"
    assert root.findtext("HostId")
    h = http.head("/demo/missing")
    assert h.status_code == 404
    assert h.content == b""
    err = ElementTree.fromstring(base64.b64decode(h.headers["x-oss-err"]))
    assert err.findtext("Code") == "NoSuchKey"
    assert h.headers["x-oss-ec"] == "0026-00000001"
    r = http.get("/nobucket/k")
    assert r.status_code == 404
    assert ElementTree.fromstring(r.content).findtext("Code") == "NoSuchBucket"
    r = http.get("/Bad_Bucket/k")
    assert r.status_code == 400
    assert ElementTree.fromstring(r.content).findtext("Code") == "InvalidBucketName"
    assert http.delete("/demo/never-existed").status_code == 204
    assert http.delete("/nobucket/x").status_code == 404


def test_odd_keys_roundtrip(open_emu: Emulator, http: httpx.Client) -> None:
    for key in ["a//b", "./x", "../x", "trailing/", "sp ace+plus", "é/中文", "%41"]:
        path = "/demo/" + quote(key, safe="/").replace(".", "%2E")  # keep httpx from folding ..
        assert http.put(path, content=key.encode()).status_code == 200, key
        r = http.get(path)
        assert r.status_code == 200, key
        assert r.content == key.encode()
        assert open_emu.get_bytes("demo", key) == key.encode()
    assert http.put("/demo/" + "k" * 1024, content=b"x").status_code == 400
    assert http.put("/demo/" + "k" * 1023, content=b"x").status_code == 200
    assert http.put("/demo/a%00b", content=b"x").status_code == 400


def test_virtual_hosted_and_cname() -> None:
    with Emulator(buckets=["demo"], verify_signatures=False, cname={"cdn.test": "demo"}) as emu:
        emu.put_object("demo", "k.txt", b"vh")
        with httpx.Client(base_url=emu.endpoint) as c:
            assert (
                c.get("/k.txt", headers={"Host": "demo.oss-cn-hangzhou.aliyuncs.com"}).content
                == b"vh"
            )
            assert c.get("/k.txt", headers={"Host": "demo.localhost"}).content == b"vh"
            assert c.get("/k.txt", headers={"Host": "cdn.test"}).content == b"vh"
            r = c.get("/demo/k.txt", headers={"Host": "oss-cn-hangzhou.aliyuncs.com"})
            assert r.status_code == 403  # path-style refused on a named endpoint, as OSS does
            assert (
                ElementTree.fromstring(r.content).findtext("Code") == "SecondLevelDomainForbidden"
            )
            assert c.get("/demo/k.txt").content == b"vh"  # IP endpoint: path-style


def test_synthetic_object(open_emu: Emulator, http: httpx.Client) -> None:
    size = 3 * (1 << 20) + 12345
    open_emu.put_synthetic("demo", "syn.bin", size, seed=7)
    r = http.get("/demo/syn.bin")
    assert len(r.content) == size
    assert r.headers["x-oss-hash-crc64ecma"] == str(crc64(r.content))
    assert r.content == open_emu.synthetic_bytes("demo", "syn.bin", 0, size)
    blocks = [r.content[i : i + (1 << 20)] for i in range(0, 3 << 20, 1 << 20)]
    assert len(set(blocks)) == 3  # not periodic per block
    r2 = http.get("/demo/syn.bin", headers={"Range": "bytes=1048000-2100000"})
    assert r2.content == r.content[1048000:2100001]
    open_emu.put_synthetic("demo", "syn2.bin", size, seed=8)
    assert http.get("/demo/syn2.bin").content != r.content


def test_archive_and_restore(open_emu: Emulator, http: httpx.Client) -> None:
    open_emu.put_object("demo", "cold.bin", b"ice", storage_class="Archive")
    h = http.head("/demo/cold.bin")
    assert h.status_code == 200
    assert h.headers["x-oss-storage-class"] == "Archive"
    r = http.get("/demo/cold.bin")
    assert r.status_code == 403
    assert ElementTree.fromstring(r.content).findtext("Code") == "InvalidObjectState"
    assert http.post("/demo/cold.bin?restore").status_code == 202
    r = http.get("/demo/cold.bin")
    assert r.status_code == 200
    assert r.content == b"ice"
    assert 'ongoing-request="false"' in r.headers["x-oss-restore"]
    assert http.post("/demo/cold.bin?restore").status_code == 200


def test_symlinks(open_emu: Emulator, http: httpx.Client) -> None:
    open_emu.put_object("demo", "target.txt", b"pointed-at")
    r = http.put("/demo/link?symlink", headers={"x-oss-symlink-target": "target.txt"})
    assert r.status_code == 200
    g = http.get("/demo/link")
    assert g.content == b"pointed-at"
    assert g.headers["x-oss-object-type"] == "Symlink"
    assert g.headers["x-oss-hash-crc64ecma"] == str(crc64(b"pointed-at"))
    s = http.get("/demo/link?symlink")
    assert s.headers["x-oss-symlink-target"] == "target.txt"
    meta = http.head("/demo/link?objectMeta")
    assert meta.headers["content-length"] == "0"  # the link's own metadata, not followed
    http.delete("/demo/target.txt")
    r = http.get("/demo/link")
    assert r.status_code == 404
    assert ElementTree.fromstring(r.content).findtext("Code") == "SymlinkTargetNotExist"


def test_request_log(open_emu: Emulator, http: httpx.Client) -> None:
    open_emu.put_object("demo", "l.bin", DATA)
    http.get("/demo/l.bin", headers={"Range": "bytes=0-99"})
    http.head("/demo/l.bin")
    http.get("/demo/?list-type=2")
    recs = list(open_emu.requests)
    assert [r.op for r in recs] == ["GetObject", "HeadObject", "ListObjectsV2"]
    assert recs[0].range == (0, 99)
    assert recs[0].bytes_sent == 100
    assert recs[0].status == 206
    assert recs[0].sig == "anon"
    assert recs[1].bytes_sent == 0
    open_emu.requests.clear()
    assert len(open_emu.requests) == 0


def test_keep_alive_reuses_connection(open_emu: Emulator, http: httpx.Client) -> None:
    open_emu.put_object("demo", "k", b"x")
    for _ in range(3):
        r = http.get("/demo/k")
        assert r.headers["connection"] == "keep-alive"


def test_oversized_header_is_400(open_emu: Emulator, http: httpx.Client) -> None:
    r = http.get("/demo/k", headers={"x-big": "a" * 100_000})
    assert r.status_code == 400
    assert ElementTree.fromstring(r.content).tag == "Error"
