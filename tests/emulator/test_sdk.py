"""The official SDK (alibabacloud-oss-v2), unmodified, against the emulator (issue 4)."""

from __future__ import annotations

import datetime
import glob
import os
import subprocess
import time
from pathlib import Path

import alibabacloud_oss_v2 as oss
import httpx
import pytest
from defusedxml import ElementTree

from ossmount.crc64 import crc64
from ossmount.emulator import Emulator, FaultRule


def client(emu: Emulator, version: str = "v4", secret: str = "sk") -> oss.Client:
    cfg = oss.config.load_default()
    cfg.credentials_provider = oss.credentials.StaticCredentialsProvider("ak", secret)
    cfg.region = "cn-hangzhou"
    cfg.endpoint = emu.endpoint
    cfg.signature_version = version
    return oss.Client(cfg)


@pytest.mark.parametrize("version", ["v4", "v1"])
def test_put_get_head_list_delete(emu: Emulator, version: str) -> None:
    c = client(emu, version)
    key = "dir/a b+cé.txt"
    data = os.urandom(5000)
    put = c.put_object(oss.PutObjectRequest(bucket="demo", key=key, body=data))
    assert put.status_code == 200
    assert put.hash_crc64 == str(crc64(data))
    get = c.get_object(
        oss.GetObjectRequest(
            bucket="demo", key=key, range_header="bytes=10-4999999", range_behavior="standard"
        )
    )
    assert get.status_code == 206
    assert get.content_range == "bytes 10-4999/5000"
    assert get.body.read() == data[10:]
    assert get.hash_crc64 == str(crc64(data))  # whole object even on 206
    head = c.head_object(oss.HeadObjectRequest(bucket="demo", key=key))
    assert head.content_length == 5000
    assert head.etag == put.etag
    for i in range(5):
        c.put_object(oss.PutObjectRequest(bucket="demo", key=f"dir/k{i}", body=b"x"))
    keys = []
    pages = 0
    for page in c.list_objects_v2_paginator().iter_page(
        oss.ListObjectsV2Request(bucket="demo", prefix="dir/", max_keys=2)
    ):
        pages += 1
        keys += [o.key for o in page.contents or []]
    assert keys == sorted([key] + [f"dir/k{i}" for i in range(5)], key=str.encode)
    assert pages == 3
    c.delete_object(oss.DeleteObjectRequest(bucket="demo", key=key))
    with pytest.raises(oss.exceptions.OperationError) as ei:
        c.head_object(oss.HeadObjectRequest(bucket="demo", key=key))
    err = ei.value.unwrap()
    assert err.status_code == 404
    assert err.code == "NoSuchKey"  # parsed from the base64 x-oss-err header of a HEAD error
    assert {r.sig for r in emu.requests} == {version}


@pytest.mark.parametrize("version", ["v4", "v1"])
def test_wrong_secret_is_signature_does_not_match(emu: Emulator, version: str) -> None:
    emu.put_object("demo", "k", b"v")
    c = client(emu, version, secret="wrong")
    with pytest.raises(oss.exceptions.OperationError) as ei:
        c.get_object(oss.GetObjectRequest(bucket="demo", key="k"))
    err = ei.value.unwrap()
    assert err.status_code == 403
    assert err.code == "SignatureDoesNotMatch"
    assert emu.requests[-1].code == "SignatureDoesNotMatch"


def test_wrong_access_key_id(emu: Emulator) -> None:
    cfg = oss.config.load_default()
    cfg.credentials_provider = oss.credentials.StaticCredentialsProvider("nobody", "sk")
    cfg.region = "cn-hangzhou"
    cfg.endpoint = emu.endpoint
    with pytest.raises(oss.exceptions.OperationError) as ei:
        oss.Client(cfg).get_object(oss.GetObjectRequest(bucket="demo", key="k"))
    assert ei.value.unwrap().code == "InvalidAccessKeyId"


def test_multipart_uploader_v4_and_copy_delete_objects(emu: Emulator, tmp_path: Path) -> None:
    c = client(emu)
    src = tmp_path / "src.bin"
    data = os.urandom(1 << 20)
    src.write_bytes(data)
    up = c.uploader(part_size=200 * 1024)
    res = up.upload_file(oss.PutObjectRequest(bucket="demo", key="mp.bin"), str(src))
    assert res.etag.endswith('-6"')
    assert res.hash_crc64 == str(crc64(data))  # the SDK also checked it against its own
    assert emu.get_bytes("demo", "mp.bin") == data
    ops = [r.op for r in emu.requests]
    assert ops.count("UploadPart") == 6
    assert "CompleteMultipartUpload" in ops
    cp = c.copy_object(
        oss.CopyObjectRequest(
            bucket="demo", key="copy.bin", source_bucket="demo", source_key="mp.bin"
        )
    )
    assert cp.status_code == 200
    head = c.head_object(oss.HeadObjectRequest(bucket="demo", key="copy.bin"))
    assert head.hash_crc64 is None  # copies carry no CRC-64
    d = c.delete_multiple_objects(
        oss.DeleteMultipleObjectsRequest(
            bucket="demo",
            objects=[oss.DeleteObject(key="mp.bin"), oss.DeleteObject(key="copy.bin")],
        )
    )
    assert sorted(o.key for o in d.deleted_objects) == ["copy.bin", "mp.bin"]
    assert emu.head("demo", "mp.bin") is None


def test_append_and_symlink_via_sdk(emu: Emulator) -> None:
    c = client(emu)
    r1 = c.append_object(oss.AppendObjectRequest(bucket="demo", key="log", position=0, body=b"ab"))
    r2 = c.append_object(
        oss.AppendObjectRequest(bucket="demo", key="log", position=r1.next_position, body=b"cd")
    )
    assert r2.next_position == 4
    assert r2.hash_crc64 == str(crc64(b"abcd"))
    c.put_symlink(oss.PutSymlinkRequest(bucket="demo", key="ln", target="log"))
    assert c.get_symlink(oss.GetSymlinkRequest(bucket="demo", key="ln")).target == "log"
    assert c.get_object(oss.GetObjectRequest(bucket="demo", key="ln")).body.read() == b"abcd"


def test_downloader_checkpoint_resume_after_fault(emu: Emulator, tmp_path: Path) -> None:
    size = 20 * (1 << 20) + 12345
    part = 4 << 20
    emu.put_synthetic("demo", "big.bin", size, seed=11)
    c = client(emu)
    ckdir = tmp_path / "ck"
    ckdir.mkdir()
    dest = tmp_path / "out.bin"
    opts = {
        "part_size": part,
        "parallel_num": 1,
        "enable_checkpoint": True,
        "checkpoint_dir": str(ckdir) + "/",
        "verify_data": True,
    }
    # Parts 1 and 2 arrive; part 3 is reset after 1 MiB, and every later GET (the SDK's
    # re-requests of the remainder) gets 503, so the download stops with a checkpoint after
    # two parts.
    emu.faults.add(FaultRule("reset", op="GetObject", key="big.bin", skip=2, after=1 << 20))
    emu.faults.add(
        FaultRule(
            "error", op="GetObject", key="big.bin", skip=3, times=None, status=503,
            code="ServiceUnavailable",
        )
    )  # fmt: skip
    with pytest.raises(Exception):  # noqa: B017, PT011 - the SDK wraps the transport error
        c.downloader(**opts).download_file(
            oss.GetObjectRequest(bucket="demo", key="big.bin"), str(dest)
        )
    cks = glob.glob(str(ckdir / "*.dcp"))
    assert len(cks) == 1
    interrupted = [r for r in emu.requests if not r.completed]
    assert len(interrupted) == 1
    assert interrupted[0].bytes_sent == 1 << 20
    assert interrupted[0].range == (2 * part, 3 * part - 1)
    assert [r.status for r in emu.requests if r.op == "GetObject"][-1] == 503
    emu.faults.clear()
    emu.requests.clear()
    res = c.downloader(**opts).download_file(
        oss.GetObjectRequest(bucket="demo", key="big.bin"), str(dest)
    )
    assert res.written == size  # the SDK reports the file size; the log shows the resume
    got = dest.read_bytes()
    assert got == emu.synthetic_bytes("demo", "big.bin", 0, size)
    assert crc64(got) == emu.head("demo", "big.bin").crc64  # type: ignore[union-attr]
    gets = [r for r in emu.requests if r.op == "GetObject"]
    assert gets[0].range == (2 * part, 3 * part - 1)  # resumed where the checkpoint said
    assert emu.requests[0].op == "HeadObject"
    assert glob.glob(str(ckdir / "*.dcp")) == []


def test_downloader_crc_mismatch_detected(emu: Emulator, tmp_path: Path) -> None:
    emu.put_object("demo", "k.bin", os.urandom(3 << 20))
    emu.faults.add(FaultRule("wrong-crc", op="HeadObject", times=None))
    with pytest.raises(Exception, match=r"(?i)crc"):
        client(emu).downloader(part_size=1 << 20).download_file(
            oss.GetObjectRequest(bucket="demo", key="k.bin"), str(tmp_path / "o")
        )


def test_presigned_urls_with_curl(emu: Emulator) -> None:
    data = b"presigned payload"
    emu.put_object("demo", "p/a b.txt", data)
    for version in ("v4", "v1"):
        c = client(emu, version)
        pre = c.presign(
            oss.GetObjectRequest(bucket="demo", key="p/a b.txt"),
            expires=datetime.timedelta(minutes=5),
        )
        out = subprocess.run(
            ["curl", "-sS", "--fail", pre.url], check=True, capture_output=True, timeout=30
        ).stdout
        assert out == data
        assert emu.requests[-1].sig == f"presign-{version}"
        tampered = pre.url.replace("p/a%20b.txt", "p/other.txt")
        r = httpx.get(tampered)
        assert r.status_code == 403
        assert ElementTree.fromstring(r.content).findtext("Code") == "SignatureDoesNotMatch"


def test_aws_sigv4_with_curl(emu: Emulator) -> None:
    emu.put_object("demo", "s3/obj.txt", b"from s3 tools")
    url = f"{emu.endpoint}/demo/s3/obj.txt"
    cmd = ["curl", "-sS", "--aws-sigv4", "aws:amz:cn-hangzhou:s3", "--user", "ak:sk"]
    out = subprocess.run([*cmd, url], check=True, capture_output=True, timeout=30).stdout
    assert out == b"from s3 tools"
    assert emu.requests[-1].sig == "aws4"
    assert emu.requests[-1].status == 200
    put = subprocess.run(
        [*cmd, "-X", "PUT", "--data-binary", "uploaded", "-o", "/dev/null", "-w", "%{http_code}",
         f"{emu.endpoint}/demo/s3/up.txt"],
        check=True, capture_output=True, text=True, timeout=30,
    ).stdout  # fmt: skip
    assert put == "200"
    assert emu.get_bytes("demo", "s3/up.txt") == b"uploaded"
    bad = ["curl", "-sS", "--aws-sigv4", "aws:amz:cn-hangzhou:s3", "--user", "ak:nope", url]
    out = subprocess.run(bad, check=True, capture_output=True, timeout=30).stdout
    assert ElementTree.fromstring(out).findtext("Code") == "SignatureDoesNotMatch"


def test_anonymous_refused_unless_public_read(emu: Emulator) -> None:
    emu.put_object("demo", "k", b"v")
    r = httpx.get(f"{emu.endpoint}/demo/k")
    assert r.status_code == 403
    assert ElementTree.fromstring(r.content).findtext("Code") == "AccessDenied"
    with Emulator(buckets=["demo"], public_read=True) as pub:
        pub.put_object("demo", "k", b"v")
        assert httpx.get(f"{pub.endpoint}/demo/k").content == b"v"
        assert httpx.get(f"{pub.endpoint}/demo/?list-type=2").status_code == 200
        assert httpx.put(f"{pub.endpoint}/demo/k", content=b"w").status_code == 403
        assert pub.requests[0].sig == "anon"


def test_clock_skew_refused(emu: Emulator) -> None:
    emu.put_object("demo", "k", b"v")
    from ossmount.oss.signing import sign_v4_headers

    for skew, status in ((-16 * 60, 403), (16 * 60, 403), (10 * 60, 200)):
        headers = sign_v4_headers(
            "GET", "demo", "k", [], {"x-oss-content-sha256": "UNSIGNED-PAYLOAD"},
            access_key_id="ak", secret="sk", region="cn-hangzhou", now=time.time() + skew,
        )  # fmt: skip
        r = httpx.get(f"{emu.endpoint}/demo/k", headers=headers)
        assert r.status_code == status, skew
        if status == 403:
            assert ElementTree.fromstring(r.content).findtext("Code") == "RequestTimeTooSkewed"
            assert r.headers["date"]


def test_listing_last_modified_matches_head_to_the_second(emu: Emulator) -> None:
    from dataclasses import replace

    c = client(emu)
    c.put_object(oss.PutObjectRequest(bucket="demo", key="t.txt", body=b"x"))
    b = emu.store.bucket("demo")
    assert b is not None
    emu.store.publish("demo", replace(b.objects["t.txt"], mtime=1700000000.5))
    page = c.list_objects_v2(oss.ListObjectsV2Request(bucket="demo"))
    listed = page.contents[0].last_modified
    want = datetime.datetime(2023, 11, 14, 22, 13, 20, tzinfo=datetime.UTC)
    assert listed == want
    head = c.head_object(oss.HeadObjectRequest(bucket="demo", key="t.txt"))
    assert head.last_modified == listed


def test_standard_headers_are_stored_with_the_object_and_replaced_by_a_copy(emu: Emulator) -> None:
    """Cache-Control, Content-Disposition, Content-Encoding, Content-Language and Expires are
    kept with an object as OSS keeps them: returned on HEAD and GET, carried by a COPY copy,
    replaced by a REPLACE one (with the user metadata)."""
    c = client(emu)
    c.put_object(
        oss.PutObjectRequest(
            bucket="demo", key="h", body=b"x", cache_control="no-cache",
            content_disposition="attachment", content_encoding="identity",
            expires="Thu, 01 Dec 1994 16:00:00 GMT", metadata={"k": "v"},
        )
    )  # fmt: skip
    head = c.head_object(oss.HeadObjectRequest(bucket="demo", key="h"))
    assert (head.cache_control, head.content_disposition) == ("no-cache", "attachment")
    assert (head.content_encoding, head.expires) == ("identity", "Thu, 01 Dec 1994 16:00:00 GMT")
    got = c.get_object(oss.GetObjectRequest(bucket="demo", key="h"))
    assert got.cache_control == "no-cache"
    c.copy_object(oss.CopyObjectRequest(bucket="demo", key="c", source_key="h"))
    assert c.head_object(oss.HeadObjectRequest(bucket="demo", key="c")).cache_control == "no-cache"
    c.copy_object(
        oss.CopyObjectRequest(
            bucket="demo", key="h", source_key="h", metadata_directive="REPLACE",
            metadata={"k": "w"},
        )
    )  # fmt: skip
    head = c.head_object(oss.HeadObjectRequest(bucket="demo", key="h"))
    assert head.cache_control is None
    assert head.metadata == {"k": "w"}
