"""write/bigcopy.py against the emulator: a copy by UploadPartCopy ranges, fenced on the
source's ETag and checked against its CRC-64; CopyObject refused as too large falls back."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ossmount.crc64 import crc64
from ossmount.emulator import Emulator
from ossmount.oss import OssWrites
from ossmount.oss._errors import PreconditionFailed
from ossmount.write import UploadLedger
from ossmount.write.bigcopy import copy_any, copy_by_parts
from tests.unit.test_write_uploader import make_client

BUCKET = "bkt"
KiB = 1024


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(buckets=[BUCKET], access_key_id="ak", access_key_secret="sk") as e:
        yield e


def stored(emu: Emulator, key: str) -> tuple[bytes, int | None, dict[str, str], str]:
    obj = emu.store.bucket(BUCKET).objects[key]  # type: ignore[union-attr]
    data = b"".join(bytes(s) for s in obj.body.segments(0, obj.size))  # type: ignore[attr-defined]
    return data, obj.crc64, dict(obj.meta), obj.content_type


async def test_a_copy_by_parts_is_byte_identical_verified_and_keeps_metadata(
    emu: Emulator, tmp_path: Path
) -> None:
    data = os.urandom(700 * KiB + 3)
    etag = emu.put_object(BUCKET, "src", data, content_type="text/x-k", meta={"a": "1"})
    ledger = UploadLedger(tmp_path / "ledger")
    async with make_client(emu.endpoint) as client:
        done = await copy_by_parts(OssWrites(client), "src", "dst", size=len(data), etag=etag,
                                   ledger=ledger, part_size=256 * KiB)  # fmt: skip
    assert done.crc64 == crc64(data)
    got, crc, meta, ctype = stored(emu, "dst")
    assert got == data
    assert crc == crc64(data)
    assert meta == {"x-oss-meta-a": "1"}
    assert ctype == "text/x-k"
    assert [r.op for r in emu.requests].count("UploadPartCopy") == 3
    assert not ledger.active


async def test_a_source_replaced_before_the_copy_fails_it_and_leaves_no_upload(
    emu: Emulator, tmp_path: Path
) -> None:
    etag = emu.put_object(BUCKET, "src", os.urandom(300 * KiB))
    emu.put_object(BUCKET, "src", os.urandom(300 * KiB))  # another version
    async with make_client(emu.endpoint) as client:
        writes = OssWrites(client)
        with pytest.raises(PreconditionFailed):
            await copy_by_parts(writes, "src", "dst", size=300 * KiB, etag=etag,
                                part_size=100 * KiB)  # fmt: skip
        assert await writes.list_multipart_uploads() == []
    assert "dst" not in emu.store.bucket(BUCKET).objects  # type: ignore[union-attr]


async def test_copyobject_refused_as_too_large_is_copied_by_parts(emu: Emulator) -> None:
    data = os.urandom(200 * KiB)
    etag = emu.put_object(BUCKET, "src", data)
    emu.store.copy_object_limit = 100 * KiB
    async with make_client(emu.endpoint) as client:
        await copy_any(OssWrites(client), "src", "dst", size=len(data), etag=etag)
    assert stored(emu, "dst")[0] == data
    ops = [r.op for r in emu.requests]
    assert "CopyObject" in ops
    assert "UploadPartCopy" in ops


async def test_a_copy_by_parts_with_replaced_metadata_carries_it_instead(
    emu: Emulator, tmp_path: Path
) -> None:
    """A rename whose type follows the new name (fs/movetype.py), above CopyObject's limit."""
    data = os.urandom(300 * KiB)
    etag = emu.put_object(BUCKET, "src.tmp", data, meta={"a": "1"})
    headers = {"x-oss-meta-a": "1", "content-type": "text/html"}
    async with make_client(emu.endpoint) as client:
        await copy_by_parts(OssWrites(client), "src.tmp", "dst.html", size=len(data), etag=etag,
                            part_size=100 * KiB, replace=headers)  # fmt: skip
    got, _, meta, ctype = stored(emu, "dst.html")
    assert got == data
    assert meta == {"x-oss-meta-a": "1"}
    assert ctype == "text/html"
