"""Write operations: Put, Copy, Append, multipart, DeleteObjects, persistence, atomicity."""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from pathlib import Path

import httpx
import pytest
from defusedxml import ElementTree

from ossmount.crc64 import combine, crc64
from ossmount.emulator import Emulator
from ossmount.emulator.store import md5_etag


def _code(r: httpx.Response) -> str | None:
    return ElementTree.fromstring(r.content).findtext("Code")


def test_put_object_etag_crc_md5(open_emu: Emulator, http: httpx.Client) -> None:
    r = http.put("/demo/hello", content=b"hello world")
    assert r.status_code == 200
    assert r.headers["etag"] == '"5EB63BBBE01EEED093CB22BB8F5ACDC3"'  # OSS2 fixture
    assert r.headers["x-oss-hash-crc64ecma"] == str(crc64(b"hello world"))
    md5 = base64.b64encode(hashlib.md5(b"hello world").digest()).decode()
    assert r.headers["content-md5"] == md5
    bad = http.put("/demo/hello2", content=b"x", headers={"Content-MD5": md5})
    assert bad.status_code == 400
    assert _code(bad) == "InvalidDigest"
    assert open_emu.head("demo", "hello2") is None
    r = http.put("/demo/hello", content=b"y", headers={"x-oss-forbid-overwrite": "true"})
    assert r.status_code == 409
    assert _code(r) == "FileAlreadyExists"
    r = http.put("/demo/meta.txt", content=b"m", headers={"x-oss-meta-Author": "alice"})
    assert http.head("/demo/meta.txt").headers["x-oss-meta-author"] == "alice"


def test_copy_object_has_no_crc(open_emu: Emulator, http: httpx.Client) -> None:
    open_emu.put_object("demo", "src dir/a+b", b"copied bytes")
    r = http.put("/demo/dst", headers={"x-oss-copy-source": "/demo/src%20dir/a%2Bb"})
    assert r.status_code == 200, r.text
    root = ElementTree.fromstring(r.content)
    assert root.tag == "CopyObjectResult"
    assert root.findtext("ETag", "").startswith('"')
    assert "x-oss-hash-crc64ecma" not in r.headers
    g = http.get("/demo/dst")
    assert g.content == b"copied bytes"
    assert "x-oss-hash-crc64ecma" not in g.headers
    r = http.put("/demo/dst2", headers={"x-oss-copy-source": "/demo/missing"})
    assert r.status_code == 404


@pytest.mark.parametrize("on_disk", [False, True])
def test_a_copy_onto_itself_changes_only_the_metadata(tmp_path: Path, on_disk: bool) -> None:
    """OSS docs (CopyObject, usage limits): onto itself, in an unversioned bucket, with the
    storage class and encryption unchanged, only the metadata changes; the content is not
    copied. So the object keeps its CRC-64, ETag and type (a close's mtime stored by a copy
    must not make a multipart object unverifiable); a change of storage class copies it."""
    data_dir = str(tmp_path / "data") if on_disk else None
    with (
        Emulator(buckets=["demo"], verify_signatures=False, data_dir=data_dir) as emu,
        httpx.Client(base_url=emu.endpoint) as http,
    ):
        data = os.urandom(300_000)
        init = http.post("/demo/mp?uploads")
        upload_id = ElementTree.fromstring(init.content).findtext("UploadId")
        part = http.put(f"/demo/mp?partNumber=1&uploadId={upload_id}", content=data)
        done = http.post(
            f"/demo/mp?uploadId={upload_id}",
            content="<CompleteMultipartUpload><Part><PartNumber>1</PartNumber>"
            f"<ETag>{part.headers['etag']}</ETag></Part></CompleteMultipartUpload>",
        )
        assert done.status_code == 200, done.text
        before = http.head("/demo/mp").headers
        copy = {"x-oss-copy-source": "/demo/mp", "x-oss-metadata-directive": "REPLACE"}
        r = http.put("/demo/mp", headers={**copy, "x-oss-meta-mode": "33188"})
        assert r.status_code == 200, r.text
        assert r.headers["x-oss-hash-crc64ecma"] == str(crc64(data))
        after = http.head("/demo/mp").headers
        assert after["x-oss-meta-mode"] == "33188"
        for h in ("etag", "x-oss-hash-crc64ecma", "x-oss-object-type"):
            assert after[h] == before[h], h
        assert http.get("/demo/mp").content == data
        r = http.put("/demo/mp", headers={**copy, "x-oss-storage-class": "IA"})
        assert r.status_code == 200, r.text
        assert "x-oss-hash-crc64ecma" not in http.head("/demo/mp").headers
        assert http.get("/demo/mp").content == data
        if on_disk:  # one body file left: the in-place copy kept it, the other replaced it
            assert len(list((tmp_path / "data" / "demo").glob("*.data"))) == 1
    if on_disk:
        with Emulator(buckets=["demo"], verify_signatures=False, data_dir=data_dir) as emu:
            assert emu.get_bytes("demo", "mp") == data


def test_put_object_without_crc(open_emu: Emulator, http: httpx.Client) -> None:
    open_emu.put_object("demo", "old", b"legacy", crc64=False)
    r = http.get("/demo/old")
    assert r.content == b"legacy"
    assert "x-oss-hash-crc64ecma" not in r.headers


def test_append_object(open_emu: Emulator, http: httpx.Client) -> None:
    r = http.post("/demo/log?append&position=0", content=b"abc")
    assert r.status_code == 200
    assert r.headers["x-oss-next-append-position"] == "3"
    etag1 = http.head("/demo/log").headers["etag"]
    r = http.post("/demo/log?append&position=1", content=b"zzz")
    assert r.status_code == 409
    assert _code(r) == "PositionNotEqualToLength"
    assert r.headers["x-oss-next-append-position"] == "3"
    r = http.post("/demo/log?append&position=3", content=b"def")
    assert r.headers["x-oss-hash-crc64ecma"] == str(crc64(b"abcdef"))
    h = http.head("/demo/log")
    assert h.headers["x-oss-object-type"] == "Appendable"
    assert h.headers["etag"] != etag1
    assert http.get("/demo/log").content == b"abcdef"
    open_emu.put_object("demo", "normal", b"n")
    r = http.post("/demo/normal?append&position=1", content=b"x")
    assert r.status_code == 409
    assert _code(r) == "ObjectNotAppendable"


def test_multipart_raw(open_emu: Emulator, http: httpx.Client) -> None:
    r = http.post("/demo/mp.bin?uploads")
    uid = ElementTree.fromstring(r.content).findtext("UploadId")
    parts = [os.urandom(100 * 1024), os.urandom(100 * 1024), b"tail"]
    etags = []
    for n, data in enumerate(parts, 1):
        r = http.put(f"/demo/mp.bin?partNumber={n}&uploadId={uid}", content=data)
        assert r.headers["x-oss-hash-crc64ecma"] == str(crc64(data))
        etags.append(r.headers["etag"])
    assert http.put(f"/demo/mp.bin?partNumber=0&uploadId={uid}", content=b"").status_code == 400
    body = "<CompleteMultipartUpload>" + "".join(
        f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>" for n, e in enumerate(etags, 1)
    )
    body += "</CompleteMultipartUpload>"
    r = http.post(f"/demo/mp.bin?uploadId={uid}", content=b"<bad")
    assert r.status_code == 400
    assert _code(r) == "MalformedXML"
    r = http.post(f"/demo/mp.bin?uploadId={uid}", content=body.encode())
    assert r.status_code == 200, r.text
    whole = b"".join(parts)
    crc = 0
    for p in parts:
        crc = combine(crc, crc64(p), len(p))
    assert r.headers["x-oss-hash-crc64ecma"] == str(crc) == str(crc64(whole))
    assert r.headers["etag"].endswith('-3"')
    g = http.get("/demo/mp.bin")
    assert g.content == whole
    assert g.headers["x-oss-object-type"] == "Multipart"
    r = http.post(f"/demo/mp.bin?uploadId={uid}", content=body.encode())
    assert r.status_code == 404
    assert _code(r) == "NoSuchUpload"


def test_multipart_small_part_rejected(open_emu: Emulator, http: httpx.Client) -> None:
    uid = ElementTree.fromstring(http.post("/demo/s?uploads").content).findtext("UploadId")
    e1 = http.put(f"/demo/s?partNumber=1&uploadId={uid}", content=b"a").headers["etag"]
    e2 = http.put(f"/demo/s?partNumber=2&uploadId={uid}", content=b"b").headers["etag"]
    xml = (
        f"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{e1}</ETag></Part>"
        f"<Part><PartNumber>2</PartNumber><ETag>{e2}</ETag></Part></CompleteMultipartUpload>"
    )
    r = http.post(f"/demo/s?uploadId={uid}", content=xml.encode())
    assert r.status_code == 400
    assert _code(r) == "EntityTooSmall"
    assert http.delete(f"/demo/s?uploadId={uid}").status_code == 204


def test_delete_objects(open_emu: Emulator, http: httpx.Client) -> None:
    for k in ("a", "b c", "d"):
        open_emu.put_object("demo", k, b"x")
    xml = "<Delete><Quiet>false</Quiet><Object><Key>a</Key></Object>"
    xml += "<Object><Key>b c</Key></Object><Object><Key>nope</Key></Object></Delete>"
    r = http.post("/demo/?delete", content=xml.encode())
    assert r.status_code == 200
    root = ElementTree.fromstring(r.content)
    assert [d.findtext("Key") for d in root.findall("Deleted")] == ["a", "b c", "nope"]
    assert open_emu.head("demo", "a") is None
    assert open_emu.head("demo", "d") is not None
    r = http.post("/demo/?delete", content=b"<Delete><Object>")
    assert r.status_code == 400
    assert _code(r) == "MalformedXML"


def test_concurrent_puts_leave_one_complete_version(open_emu: Emulator) -> None:
    size = 2 << 20
    bodies = [bytes([i]) * size for i in range(8)]

    def put(i: int) -> None:
        with httpx.Client(base_url=open_emu.endpoint) as c:
            assert c.put("/demo/race", content=bodies[i]).status_code == 200

    threads = [threading.Thread(target=put, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    data = open_emu.get_bytes("demo", "race")
    assert data in bodies


def test_data_dir_persistence_and_traversal(tmp_path: Path) -> None:
    outside = tmp_path / "etc"
    outside.mkdir()
    data_dir = tmp_path / "data"
    keys = ["../../etc/passwd", "../etc/x", "a//b", "./.", "dir/", "normal.txt"]
    with (
        Emulator(buckets=["demo"], verify_signatures=False, data_dir=str(data_dir)) as emu,
        httpx.Client(base_url=emu.endpoint) as c,
    ):
        for k in keys:
            path = "/demo/" + k.replace(".", "%2E")
            assert c.put(path, content=k.encode()).status_code == 200, k
        assert c.put("/demo/big", content=os.urandom(3 << 20)).status_code == 200
        big = c.get("/demo/big").content
    assert list(outside.iterdir()) == []
    for p in tmp_path.rglob("*"):
        assert p.is_relative_to(data_dir) or p == outside
    with (
        Emulator(buckets=["demo"], verify_signatures=False, data_dir=str(data_dir)) as emu,
        httpx.Client(base_url=emu.endpoint) as c,
    ):
        for k in keys:
            r = c.get("/demo/" + k.replace(".", "%2E"))
            assert r.content == k.encode(), k
        r = c.get("/demo/big")
        assert r.content == big
        assert r.headers["x-oss-hash-crc64ecma"] == str(crc64(big))
        assert c.get("/demo/big", headers={"Range": "bytes=5-9"}).content == big[5:10]


@pytest.mark.parametrize("path", ["/demo/%2e%2e/%2e%2e/etc/passwd", "/../etc/passwd"])
def test_traversal_get_is_oss_error(open_emu: Emulator, path: str) -> None:
    with httpx.Client(base_url=open_emu.endpoint) as c:
        r = c.get(path)
    assert r.status_code in (400, 404)
    assert ElementTree.fromstring(r.content).tag == "Error"


def test_large_puts_on_one_connection_with_data_dir(tmp_path: Path) -> None:
    """Bodies read past h11 leave the connection usable; multipart concatenates files."""
    data = [os.urandom(5 << 20), os.urandom(3 << 20)]
    with (
        Emulator(buckets=["demo"], verify_signatures=False, data_dir=str(tmp_path)) as emu,
        httpx.Client(base_url=emu.endpoint) as c,
    ):
        for i, d in enumerate(data):
            r = c.put(f"/demo/big{i}", content=d, headers={"Expect": "100-continue"})
            assert r.headers["etag"] == md5_etag(hashlib.md5(d).digest())
            assert r.headers["x-oss-hash-crc64ecma"] == str(crc64(d))
        uid = ElementTree.fromstring(c.post("/demo/mp?uploads").content).findtext("UploadId")
        etags = [c.put(f"/demo/mp?partNumber={n}&uploadId={uid}", content=d).headers["etag"]
                 for n, d in enumerate(data, 1)]  # fmt: skip
        xml = "<CompleteMultipartUpload>" + "".join(
            f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>"
            for n, e in enumerate(etags, 1)
        )
        r = c.post(f"/demo/mp?uploadId={uid}", content=(xml + "</CompleteMultipartUpload>"))
        assert r.headers["x-oss-hash-crc64ecma"] == str(crc64(b"".join(data)))
        assert c.get("/demo/mp").content == b"".join(data)


def test_fast_etag_mode() -> None:
    data = os.urandom(3 << 20)
    with (
        Emulator(buckets=["demo"], verify_signatures=False, fast_etag=True) as emu,
        httpx.Client(base_url=emu.endpoint) as c,
    ):
        r = c.put("/demo/f", content=data)
        assert r.headers["etag"] == f'"{crc64(data):016X}{len(data):016X}"'
        assert "content-md5" not in r.headers
        assert c.head("/demo/f").headers["etag"] == r.headers["etag"]
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
        r = c.put("/demo/g", content=data, headers={"Content-MD5": md5})
        assert r.headers["etag"] == md5_etag(hashlib.md5(data).digest())  # checked, so MD5
    with (
        Emulator(buckets=["demo"], verify_signatures=False) as emu,
        httpx.Client(base_url=emu.endpoint) as c,
    ):
        assert c.put("/demo/f", content=data).headers["etag"] == md5_etag(
            hashlib.md5(data).digest()
        )
