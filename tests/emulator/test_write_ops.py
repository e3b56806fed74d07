"""Write operations issue 15 needs, each through the official SDK unmodified."""

from __future__ import annotations

import os

import alibabacloud_oss_v2 as oss
import httpx
import pytest

from ossmount.crc64 import combine, crc64
from ossmount.emulator import Emulator

from .test_sdk import client

MiB = 1 << 20


def _op_error(exc: pytest.ExceptionInfo[oss.exceptions.OperationError]) -> tuple[int, str]:
    err = exc.value.unwrap()
    return err.status_code, err.code


def _initiate(c: oss.Client, key: str, **kw: object) -> str:
    r = c.initiate_multipart_upload(
        oss.InitiateMultipartUploadRequest(bucket="demo", key=key, **kw)
    )
    assert r.upload_id
    return str(r.upload_id)


def test_upload_part_copy_with_range_and_combined_crc(emu: Emulator) -> None:
    c = client(emu)
    src = os.urandom(MiB + 12345)
    c.put_object(oss.PutObjectRequest(bucket="demo", key="src.bin", body=src))
    uid = _initiate(c, "dst.bin")
    new = os.urandom(200 * 1024)
    p1 = c.upload_part(
        oss.UploadPartRequest(bucket="demo", key="dst.bin", upload_id=uid, part_number=1, body=new)
    )
    assert p1.hash_crc64 == str(crc64(new))  # the part's own CRC
    p2 = c.upload_part_copy(
        oss.UploadPartCopyRequest(
            bucket="demo",
            key="dst.bin",
            upload_id=uid,
            part_number=2,
            source_key="src.bin",
            source_range=f"bytes=1000-{MiB + 999}",
        )
    )
    assert p2.etag
    assert p2.etag.startswith('"')
    assert p2.last_modified is not None
    p3 = c.upload_part_copy(
        oss.UploadPartCopyRequest(
            bucket="demo", key="dst.bin", upload_id=uid, part_number=3, source_key="src.bin"
        )
    )
    parts = c.list_parts(oss.ListPartsRequest(bucket="demo", key="dst.bin", upload_id=uid))
    assert [(p.part_number, p.size) for p in parts.parts] == [
        (1, len(new)),
        (2, MiB),
        (3, len(src)),
    ]
    assert parts.parts[1].hash_crc64 == str(crc64(src[1000 : MiB + 1000]))
    done = c.complete_multipart_upload(
        oss.CompleteMultipartUploadRequest(
            bucket="demo",
            key="dst.bin",
            upload_id=uid,
            complete_multipart_upload=oss.CompleteMultipartUpload(
                parts=[
                    oss.UploadPart(part_number=1, etag=p1.etag),
                    oss.UploadPart(part_number=2, etag=p2.etag),
                    oss.UploadPart(part_number=3, etag=p3.etag),
                ]
            ),
        )
    )
    whole = new + src[1000 : MiB + 1000] + src
    crc = combine(combine(crc64(new), crc64(src[1000 : MiB + 1000]), MiB), crc64(src), len(src))
    assert done.hash_crc64 == str(crc) == str(crc64(whole))
    got = c.get_object(oss.GetObjectRequest(bucket="demo", key="dst.bin"))
    assert got.body.read() == whole
    assert got.hash_crc64 == str(crc)
    assert got.object_type == "Multipart"


def test_list_multipart_uploads_paged_and_abort(emu: Emulator) -> None:
    c = client(emu)
    ids = {}
    for key in ("b/1", "a", "b/2", "a", "c"):
        ids.setdefault(key, []).append(_initiate(c, key))
    seen = []
    pages = 0
    for page in c.list_multipart_uploads_paginator().iter_page(
        oss.ListMultipartUploadsRequest(bucket="demo", max_uploads=2)
    ):
        pages += 1
        seen += [(u.key, u.upload_id) for u in page.uploads or []]
        assert all(u.initiated is not None for u in page.uploads or [])
    want = [("a", ids["a"][0]), ("a", ids["a"][1]), ("b/1", ids["b/1"][0])]
    want += [("b/2", ids["b/2"][0]), ("c", ids["c"][0])]
    assert seen == want
    assert pages == 3
    r = c.list_multipart_uploads(oss.ListMultipartUploadsRequest(bucket="demo", prefix="b/"))
    assert [u.key for u in r.uploads] == ["b/1", "b/2"]
    c.abort_multipart_upload(
        oss.AbortMultipartUploadRequest(bucket="demo", key="a", upload_id=ids["a"][0])
    )
    r = c.list_multipart_uploads(oss.ListMultipartUploadsRequest(bucket="demo"))
    assert [u.upload_id for u in r.uploads].count(ids["a"][0]) == 0
    assert len(r.uploads) == 4
    with pytest.raises(oss.exceptions.OperationError) as ei:
        c.abort_multipart_upload(
            oss.AbortMultipartUploadRequest(bucket="demo", key="a", upload_id=ids["a"][0])
        )
    assert _op_error(ei) == (404, "NoSuchUpload")


def test_list_multipart_uploads_delimiter_raw(open_emu: Emulator, http: httpx.Client) -> None:
    from defusedxml import ElementTree

    for key in ("d/x", "d/y", "e"):
        http.post(f"/demo/{key}?uploads")
    root = ElementTree.fromstring(http.get("/demo/?uploads&delimiter=/&max-uploads=1").content)
    assert root.findtext("CommonPrefixes/Prefix") == "d/"
    assert root.findtext("IsTruncated") == "true"
    marker = root.findtext("NextKeyMarker")
    root = ElementTree.fromstring(
        http.get("/demo/", params={"uploads": "", "delimiter": "/", "key-marker": marker}).content
    )
    assert [u.findtext("Key") for u in root.findall("Upload")] == ["e"]
    assert root.find("CommonPrefixes") is None
    assert http.get("/demo/?uploads&max-uploads=0").status_code == 400


def test_list_parts_paging(emu: Emulator) -> None:
    c = client(emu)
    uid = _initiate(c, "p")
    for n in (1, 2, 5):
        c.upload_part(
            oss.UploadPartRequest(bucket="demo", key="p", upload_id=uid, part_number=n, body=b"x")
        )
    nums = []
    for page in c.list_parts_paginator().iter_page(
        oss.ListPartsRequest(bucket="demo", key="p", upload_id=uid, max_parts=2)
    ):
        nums += [p.part_number for p in page.parts or []]
    assert nums == [1, 2, 5]


def test_symlink_put_get(emu: Emulator) -> None:
    c = client(emu)
    c.put_object(oss.PutObjectRequest(bucket="demo", key="dir/target é", body=b"T"))
    c.put_symlink(
        oss.PutSymlinkRequest(
            bucket="demo", key="link", target="dir/target é", metadata={"mode": "41471"}
        )
    )
    g = c.get_symlink(oss.GetSymlinkRequest(bucket="demo", key="link"))
    assert g.target is not None
    from urllib.parse import unquote

    assert unquote(g.target) == "dir/target é"
    assert g.metadata == {"mode": "41471"}
    assert c.get_object(oss.GetObjectRequest(bucket="demo", key="link")).body.read() == b"T"
    with pytest.raises(oss.exceptions.OperationError) as ei:
        c.put_symlink(
            oss.PutSymlinkRequest(bucket="demo", key="link", target="x", forbid_overwrite=True)
        )
    assert _op_error(ei) == (409, "FileAlreadyExists")


def test_delete_multiple_objects_sdk(emu: Emulator) -> None:
    c = client(emu)
    for k in ("a b", "c+d", "keep"):
        emu.put_object("demo", k, b"x")
    r = c.delete_multiple_objects(
        oss.DeleteMultipleObjectsRequest(
            bucket="demo",
            objects=[oss.DeleteObject(key="a b"), oss.DeleteObject(key="c+d")],
            encoding_type="url",
        )
    )
    assert sorted(d.key for d in r.deleted_objects) == ["a b", "c+d"]
    assert emu.head("demo", "a b") is None
    assert emu.head("demo", "keep") is not None


@pytest.mark.parametrize(
    "xml",
    [
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY e "x">]><Delete><Object><Key>&e;</Key>'
        b"</Object></Delete>",
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        b"<Delete><Object><Key>&e;</Key></Object></Delete>",
    ],
)
def test_delete_multiple_objects_refuses_hostile_xml(
    open_emu: Emulator, http: httpx.Client, xml: bytes
) -> None:
    open_emu.put_object("demo", "x", b"x")
    r = http.post("/demo/?delete", content=xml)
    assert r.status_code == 400
    assert b"MalformedXML" in r.content
    assert open_emu.head("demo", "x") is not None


def test_forbid_overwrite_everywhere(emu: Emulator) -> None:
    c = client(emu)
    c.put_object(oss.PutObjectRequest(bucket="demo", key="k", body=b"1"))
    c.put_object(oss.PutObjectRequest(bucket="demo", key="src", body=b"s"))
    with pytest.raises(oss.exceptions.OperationError) as ei:
        c.put_object(oss.PutObjectRequest(bucket="demo", key="k", body=b"2", forbid_overwrite=True))
    assert _op_error(ei) == (409, "FileAlreadyExists")
    with pytest.raises(oss.exceptions.OperationError) as ei:
        c.copy_object(
            oss.CopyObjectRequest(bucket="demo", key="k", source_key="src", forbid_overwrite=True)
        )
    assert _op_error(ei) == (409, "FileAlreadyExists")
    with pytest.raises(oss.exceptions.OperationError) as ei:
        _initiate(c, "k", forbid_overwrite=True)
    assert _op_error(ei) == (409, "FileAlreadyExists")
    # Complete checks its own header: the object may appear while the upload runs
    uid = _initiate(c, "late", forbid_overwrite=True)
    p = c.upload_part(
        oss.UploadPartRequest(bucket="demo", key="late", upload_id=uid, part_number=1, body=b"m")
    )
    c.put_object(oss.PutObjectRequest(bucket="demo", key="late", body=b"first"))
    req = oss.CompleteMultipartUploadRequest(
        bucket="demo",
        key="late",
        upload_id=uid,
        forbid_overwrite=True,
        complete_multipart_upload=oss.CompleteMultipartUpload(
            parts=[oss.UploadPart(part_number=1, etag=p.etag)]
        ),
    )
    with pytest.raises(oss.exceptions.OperationError) as ei:
        c.complete_multipart_upload(req)
    assert _op_error(ei) == (409, "FileAlreadyExists")
    assert emu.get_bytes("demo", "late") == b"first"
    assert emu.get_bytes("demo", "k") == b"1"
    req.forbid_overwrite = False
    c.complete_multipart_upload(req)
    assert emu.get_bytes("demo", "late") == b"m"


def test_user_metadata_and_copy_directive(emu: Emulator) -> None:
    c = client(emu)
    put = c.put_object(
        oss.PutObjectRequest(
            bucket="demo",
            key="f",
            body=b"data",
            metadata={"mtime": "1700000000", "mode": "33188"},
        )
    )
    assert put.hash_crc64 == str(crc64(b"data"))
    head = c.head_object(oss.HeadObjectRequest(bucket="demo", key="f"))
    assert head.metadata == {"mtime": "1700000000", "mode": "33188"}
    get = c.get_object(oss.GetObjectRequest(bucket="demo", key="f"))
    assert get.metadata == {"mtime": "1700000000", "mode": "33188"}
    c.copy_object(oss.CopyObjectRequest(bucket="demo", key="g", source_key="f"))
    head = c.head_object(oss.HeadObjectRequest(bucket="demo", key="g"))
    assert head.metadata == {"mtime": "1700000000", "mode": "33188"}
    c.copy_object(
        oss.CopyObjectRequest(
            bucket="demo",
            key="f",
            source_key="f",
            metadata_directive="REPLACE",
            metadata={"mtime": "1800000000"},
        )
    )
    head = c.head_object(oss.HeadObjectRequest(bucket="demo", key="f"))
    assert head.metadata == {"mtime": "1800000000"}
    assert emu.get_bytes("demo", "f") == b"data"
    mp = _initiate(c, "m", metadata={"mode": "420"})
    p = c.upload_part(
        oss.UploadPartRequest(bucket="demo", key="m", upload_id=mp, part_number=1, body=b"z")
    )
    c.complete_multipart_upload(
        oss.CompleteMultipartUploadRequest(
            bucket="demo",
            key="m",
            upload_id=mp,
            complete_multipart_upload=oss.CompleteMultipartUpload(
                parts=[oss.UploadPart(part_number=1, etag=p.etag)]
            ),
        )
    )
    assert c.head_object(oss.HeadObjectRequest(bucket="demo", key="m")).metadata == {"mode": "420"}
