"""S3 spellings of write requests that OSS accepts (rclone, s3fs), with real AWS SigV4.

The signer below is a plain SigV4 written from the AWS description; it signs every x-amz-*
header it is given, as the AWS SDKs do.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import os
from urllib.parse import quote

import httpx
from defusedxml import ElementTree

from ossmount.crc64 import crc64
from ossmount.emulator import Emulator

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"


def s3(
    emu: Emulator,
    method: str,
    path: str,
    query: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> httpx.Response:
    """One AWS SigV4-signed request (path style, payload hash signed)."""
    query = query or {}
    hs = {k.lower(): v for k, v in (headers or {}).items()}
    now = datetime.datetime.now(datetime.UTC)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    host = emu.endpoint.removeprefix("http://")
    payload = hashlib.sha256(body).hexdigest()
    hs.update({"host": host, "x-amz-date": amz_date, "x-amz-content-sha256": payload})
    signed = sorted(hs)
    canon_q = "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query.items())
    )
    canonical = "\n".join(
        [
            method,
            quote(path, safe="/-_.~"),
            canon_q,
            "".join(f"{n}:{hs[n].strip()}\n" for n in signed),
            ";".join(signed),
            payload,
        ]
    )
    scope = f"{amz_date[:8]}/cn-hangzhou/s3/aws4_request"
    sts = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    k = b"AWS4sk"
    for part in (amz_date[:8], "cn-hangzhou", "s3", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    hs["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential=ak/{scope}, SignedHeaders={';'.join(signed)}, Signature={sig}"
    )
    url = emu.endpoint + quote(path, safe="/") + ("?" + canon_q if canon_q else "")
    with httpx.Client() as c:
        return c.request(method, url, headers=hs, content=body)


def test_complete_multipart_with_s3_namespace(emu: Emulator) -> None:
    r = s3(emu, "POST", "/demo/big.bin", {"uploads": ""})
    assert r.status_code == 200, r.text
    uid = ElementTree.fromstring(r.content).findtext("UploadId")
    assert uid
    parts = [os.urandom(150 * 1024), b"tail"]
    etags = []
    for n, data in enumerate(parts, 1):
        r = s3(emu, "PUT", "/demo/big.bin", {"partNumber": str(n), "uploadId": uid}, body=data)
        assert r.status_code == 200, r.text
        etags.append(r.headers["etag"])
    xml = f'<?xml version="1.0" encoding="UTF-8"?><CompleteMultipartUpload xmlns="{S3_NS}">'
    xml += "".join(
        f"<Part><ETag>{e}</ETag><PartNumber>{n}</PartNumber></Part>" for n, e in enumerate(etags, 1)
    )
    xml += "</CompleteMultipartUpload>"
    r = s3(emu, "POST", "/demo/big.bin", {"uploadId": uid}, body=xml.encode())
    assert r.status_code == 200, r.text
    assert r.headers["x-oss-hash-crc64ecma"] == str(crc64(b"".join(parts)))
    assert emu.get_bytes("demo", "big.bin") == b"".join(parts)
    assert {rec.sig for rec in emu.requests} == {"aws4"}


def test_s3_copy_is_a_copy_with_amz_metadata(emu: Emulator) -> None:
    """rclone sets an mtime by copying an object onto itself with REPLACE metadata."""
    data = os.urandom(70000)
    r = s3(emu, "PUT", "/demo/f.txt", headers={"x-amz-meta-mtime": "1.5"}, body=data)
    assert r.status_code == 200, r.text
    h = s3(emu, "HEAD", "/demo/f.txt")
    assert h.headers["x-amz-meta-mtime"] == "1.5"
    r = s3(
        emu,
        "PUT",
        "/demo/f.txt",
        headers={
            "x-amz-copy-source": "demo/f.txt",
            "x-amz-metadata-directive": "REPLACE",
            "x-amz-meta-mtime": "1700000000.25",
            "content-type": "text/plain",
        },
    )
    assert r.status_code == 200, r.text
    assert ElementTree.fromstring(r.content).tag == "CopyObjectResult"
    assert emu.requests[-1].op == "CopyObject"
    assert emu.get_bytes("demo", "f.txt") == data
    h = s3(emu, "HEAD", "/demo/f.txt")
    assert h.headers["content-length"] == str(len(data))
    assert h.headers["x-amz-meta-mtime"] == "1700000000.25"
    assert h.headers["x-oss-meta-mtime"] == "1700000000.25"
    assert h.headers["content-type"] == "text/plain"
    # COPY (the default) to a new key keeps the metadata; the source's ETag carries over
    r = s3(emu, "PUT", "/demo/g dir/g.txt", headers={"x-amz-copy-source": "/demo/f.txt"})
    assert r.status_code == 200, r.text
    h = s3(emu, "HEAD", "/demo/g dir/g.txt")
    assert h.headers["x-amz-meta-mtime"] == "1700000000.25"
    assert emu.get_bytes("demo", "g dir/g.txt") == data


def test_s3_upload_part_copy_range(emu: Emulator) -> None:
    data = os.urandom(300 * 1024)
    emu.put_object("demo", "src", data)
    uid = ElementTree.fromstring(s3(emu, "POST", "/demo/dst", {"uploads": ""}).content).findtext(
        "UploadId"
    )
    assert uid
    r = s3(
        emu,
        "PUT",
        "/demo/dst",
        {"partNumber": "1", "uploadId": uid},
        headers={"x-amz-copy-source": "demo/src", "x-amz-copy-source-range": "bytes=10-109"},
    )
    assert r.status_code == 200, r.text
    assert emu.requests[-1].op == "UploadPartCopy"
    etag = ElementTree.fromstring(r.content).findtext("ETag")
    xml = f'<CompleteMultipartUpload xmlns="{S3_NS}"><Part><PartNumber>1</PartNumber>'
    xml += f"<ETag>{etag}</ETag></Part></CompleteMultipartUpload>"
    r = s3(emu, "POST", "/demo/dst", {"uploadId": uid}, body=xml.encode())
    assert r.status_code == 200, r.text
    assert emu.get_bytes("demo", "dst") == data[10:110]


def test_s3_delete_objects_with_namespace(emu: Emulator) -> None:
    for k in ("a", "b"):
        emu.put_object("demo", k, b"x")
    xml = f'<Delete xmlns="{S3_NS}"><Object><Key>a</Key></Object><Quiet>true</Quiet></Delete>'
    md5 = base64.b64encode(hashlib.md5(xml.encode()).digest()).decode()
    r = s3(emu, "POST", "/demo/", {"delete": ""}, {"content-md5": md5}, xml.encode())
    assert r.status_code == 200, r.text
    assert ElementTree.fromstring(r.content).find("Deleted") is None  # quiet
    assert emu.head("demo", "a") is None
    assert emu.head("demo", "b") is not None
