"""The write half of the client (`OssWrites`) against the package emulator over real HTTP, read
back with the official SDK (alibabacloud-oss-v2, unmodified), with the emulator's faults."""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import alibabacloud_oss_v2 as oss
import pytest

from ossmount.crc64 import combine, crc64
from ossmount.emulator import Emulator, FaultRule
from ossmount.oss import (
    Credentials,
    NoSuchKey,
    OssClient,
    OssConfig,
    PreconditionFailed,
    RetryPolicy,
    ServiceUnavailable,
    StaticCredentialsProvider,
)
from ossmount.oss._writes import (
    CrcMismatch,
    FileAlreadyExists,
    FileRange,
    NoSuchUpload,
    OssWrites,
    StagingError,
    posix_meta,
)

DATA = random.Random(15).randbytes(300 * 1024 + 7)
PART = 128 * 1024


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(buckets=["bkt"], access_key_id="ak", access_key_secret="sk") as e:
        yield e


def _client(emu: Emulator, read_timeout: float = 5.0) -> OssClient:
    return OssClient(
        OssConfig(
            emu.endpoint,
            "bkt",
            region="cn-hangzhou",
            read_timeout_s=read_timeout,
            connect_timeout_s=5,
            stall_timeout_s=2,
        ),
        StaticCredentialsProvider(Credentials("ak", "sk")),
        retry=RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.05),
    )


@pytest.fixture
async def writes(emu: Emulator) -> AsyncIterator[OssWrites]:
    async with _client(emu) as c:
        yield OssWrites(c, chunk_size=64 * 1024)


def sdk(emu: Emulator) -> oss.Client:
    cfg = oss.config.load_default()
    cfg.credentials_provider = oss.credentials.StaticCredentialsProvider("ak", "sk")
    cfg.region = "cn-hangzhou"
    cfg.endpoint = emu.endpoint
    return oss.Client(cfg)


def sdk_read(emu: Emulator, key: str) -> tuple[bytes, oss.HeadObjectResult]:
    c = sdk(emu)
    body = c.get_object(oss.GetObjectRequest(bucket="bkt", key=key)).body.read()
    return body, c.head_object(oss.HeadObjectRequest(bucket="bkt", key=key))


@pytest.fixture
def staged(tmp_path: Path) -> Iterator[int]:
    path = tmp_path / "staged"
    path.write_bytes(b"HEAD" + DATA)
    fd = os.open(path, os.O_RDONLY)
    yield fd
    os.close(fd)


def ops(emu: Emulator, op: str) -> list[object]:
    return [r for r in emu.requests if r.op == op]


async def test_put_from_file_range_with_ossfs_meta(
    emu: Emulator, writes: OssWrites, staged: int
) -> None:
    meta = posix_meta(mtime_ns=1_700_000_000_123_000_000, mode=0o100640, uid=1000, gid=100)
    res = await writes.put_object("dir/a b+é.bin", FileRange(staged, 4, len(DATA)), meta=meta)
    assert res.crc64 == crc64(DATA)
    assert res.size == len(DATA)
    body, head = sdk_read(emu, "dir/a b+é.bin")
    assert body == DATA
    assert head.hash_crc64 == str(crc64(DATA))
    assert head.etag == res.etag
    # The exact strings ossfs writes and parses (src/metaheader.cpp): seconds[.9 digits], decimal.
    assert head.metadata == {
        "mtime": "1700000000.123000000",
        "mode": str(0o100640),
        "uid": "1000",
        "gid": "100",
    }


def test_posix_meta_whole_seconds() -> None:
    assert posix_meta(mtime_ns=5_000_000_000) == {"x-oss-meta-mtime": "5"}
    assert posix_meta(mtime_ns=5_000_000_001)["x-oss-meta-mtime"] == "5.000000001"


async def test_put_empty_and_bytes(emu: Emulator, writes: OssWrites) -> None:
    assert (await writes.put_object("empty", b"")).crc64 == 0
    await writes.put_object("small", b"hello")
    assert sdk_read(emu, "empty")[0] == b""
    assert sdk_read(emu, "small")[0] == b"hello"


async def test_put_wrong_crc_is_resent_then_verified(emu: Emulator, writes: OssWrites) -> None:
    emu.faults.add(FaultRule("wrong-crc", op="PutObject", times=1))
    res = await writes.put_object("k", DATA)
    assert res.crc64 == crc64(DATA)
    assert len(ops(emu, "PutObject")) == 2


async def test_put_crc_never_matches_raises(emu: Emulator, writes: OssWrites) -> None:
    emu.faults.add(FaultRule("wrong-crc", op="PutObject", times=None))
    with pytest.raises(CrcMismatch) as info:
        await writes.put_object("k", DATA)
    assert "oss://bkt/k" in str(info.value)
    assert str(crc64(DATA)) in str(info.value)
    assert len(ops(emu, "PutObject")) == writes.crc_resends + 1


async def test_missing_crc_header_counts_as_mismatch(emu: Emulator, writes: OssWrites) -> None:
    emu.faults.add(FaultRule("missing-crc", op="PutObject", times=None))
    with pytest.raises(CrcMismatch, match="server CRC-64 none"):
        await writes.put_object("k", b"abc")


async def test_put_503_is_retried(emu: Emulator, writes: OssWrites) -> None:
    emu.faults.add(FaultRule("error", op="PutObject", status=503, code="ServiceUnavailable"))
    await writes.put_object("k", DATA)
    assert sdk_read(emu, "k")[0] == DATA


@pytest.mark.parametrize("action", ["reset", "truncate"])
async def test_put_cut_mid_body_is_resent_whole(
    emu: Emulator, writes: OssWrites, staged: int, action: str
) -> None:
    rule = emu.faults.add(FaultRule(action, op="PutObject", after=100_000))
    res = await writes.put_object("k", FileRange(staged, 4, len(DATA)))
    assert rule.fired == 1
    assert res.crc64 == crc64(DATA)
    assert sdk_read(emu, "k")[0] == DATA


async def test_put_503_forever_names_the_key(emu: Emulator, writes: OssWrites) -> None:
    emu.faults.add(
        FaultRule("error", op="PutObject", status=503, code="ServiceUnavailable", times=None)
    )
    with pytest.raises(ServiceUnavailable, match="oss://bkt/k"):
        await writes.put_object("k", b"x")


async def test_forbid_overwrite(emu: Emulator, writes: OssWrites) -> None:
    await writes.put_object("k", b"one", forbid_overwrite=True)
    with pytest.raises(FileAlreadyExists, match="oss://bkt/k"):
        await writes.put_object("k", b"two", forbid_overwrite=True)
    assert sdk_read(emu, "k")[0] == b"one"


async def test_forbid_overwrite_retry_after_lost_reply_finds_its_own_object(
    emu: Emulator,
) -> None:
    # The first PUT is stored but its reply comes too late (read timeout): the retry meets
    # FileAlreadyExists, and a HEAD shows the object has our CRC, so the PUT succeeded.
    emu.faults.add(FaultRule("latency", op="PutObject", seconds=1.0, times=1))
    async with _client(emu, read_timeout=0.3) as c:
        res = await OssWrites(c).put_object("k", DATA, forbid_overwrite=True)
    assert res.crc64 == crc64(DATA)
    assert [r.status for r in ops(emu, "PutObject")][-1] == 409


async def test_forbid_overwrite_lost_reply_but_other_content_still_refused(
    emu: Emulator,
) -> None:
    emu.put_object("bkt", "k", b"someone else's")
    emu.faults.add(FaultRule("error", op="PutObject", status=503, code="ServiceUnavailable"))
    async with _client(emu) as c:
        with pytest.raises(FileAlreadyExists):
            await OssWrites(c).put_object("k", DATA, forbid_overwrite=True)
    assert sdk_read(emu, "k")[0] == b"someone else's"


async def test_staged_file_too_short_is_a_local_error(writes: OssWrites, staged: int) -> None:
    with pytest.raises(StagingError, match="oss://bkt/k"):
        await writes.put_object("k", FileRange(staged, 0, len(DATA) + 100))


async def test_multipart_upload_verified_and_read_back_by_sdk(
    emu: Emulator, writes: OssWrites, staged: int
) -> None:
    uid = await writes.initiate_multipart("big", meta=posix_meta(mode=0o100600))
    p2 = await writes.upload_part("big", uid, 2, FileRange(staged, 4 + PART, len(DATA) - PART))
    p1 = await writes.upload_part("big", uid, 1, FileRange(staged, 4, PART))
    assert p1.crc64 == crc64(DATA[:PART])
    listed = await writes.list_parts("big", uid)
    assert [(p.number, p.etag, p.crc64, p.size) for p in listed] == [
        (1, p1.etag, p1.crc64, PART),
        (2, p2.etag, p2.crc64, len(DATA) - PART),
    ]
    done = await writes.complete_multipart("big", uid, [p2, p1])
    assert done.crc64 == crc64(DATA) == combine(p1.crc64, p2.crc64, p2.size)
    body, head = sdk_read(emu, "big")
    assert body == DATA
    assert head.object_type == "Multipart"
    assert head.etag.endswith('-2"')
    assert head.metadata == {"mode": str(0o100600)}


async def test_part_wrong_crc_is_resent(emu: Emulator, writes: OssWrites) -> None:
    uid = await writes.initiate_multipart("big")
    emu.faults.add(FaultRule("wrong-crc", op="UploadPart", times=1))
    part = await writes.upload_part("big", uid, 1, DATA)
    assert part.crc64 == crc64(DATA)
    assert len(ops(emu, "UploadPart")) == 2


async def test_complete_crc_mismatch_is_never_reported_written(
    emu: Emulator, writes: OssWrites
) -> None:
    uid = await writes.initiate_multipart("big")
    part = await writes.upload_part("big", uid, 1, DATA)
    emu.faults.add(FaultRule("wrong-crc", op="CompleteMultipartUpload"))
    with pytest.raises(CrcMismatch, match="CompleteMultipartUpload"):
        await writes.complete_multipart("big", uid, [part])


async def test_complete_retry_after_lost_reply(emu: Emulator, writes: OssWrites) -> None:
    # Complete succeeds on the server but the connection drops before its reply body: the
    # retry meets NoSuchUpload, and the object's CRC (HEAD) proves the upload completed.
    uid = await writes.initiate_multipart("big")
    part = await writes.upload_part("big", uid, 1, DATA)
    emu.faults.add(FaultRule("reset", op="CompleteMultipartUpload", after=0))
    done = await writes.complete_multipart("big", uid, [part])
    assert done.crc64 == crc64(DATA)
    assert [r.status for r in ops(emu, "CompleteMultipartUpload")] == [200, 404]


async def test_complete_of_unknown_upload_raises_typed(writes: OssWrites) -> None:
    with pytest.raises(NoSuchUpload, match="oss://bkt/nope"):
        await writes.complete_multipart("nope", "0123", [])


async def test_abort_then_parts_are_gone(emu: Emulator, writes: OssWrites) -> None:
    uid = await writes.initiate_multipart("big")
    await writes.upload_part("big", uid, 1, b"x" * 10)
    await writes.abort_multipart("big", uid)
    await writes.abort_multipart("big", uid)  # already gone: still fine
    with pytest.raises(NoSuchUpload):
        await writes.list_parts("big", uid)


async def test_list_multipart_uploads_by_prefix(writes: OssWrites) -> None:
    a = await writes.initiate_multipart("dir/a b")
    b = await writes.initiate_multipart("dir/b")
    await writes.initiate_multipart("other/c")
    listed = await writes.list_multipart_uploads("dir/")
    assert sorted((u.key, u.upload_id) for u in listed) == [("dir/a b", a), ("dir/b", b)]


async def test_copy_object_fenced_on_etag(emu: Emulator, writes: OssWrites) -> None:
    put = await writes.put_object("src", DATA, meta=posix_meta(mode=0o100644))
    res = await writes.copy_object("src", "dst", if_match=put.etag)
    body, head = sdk_read(emu, "dst")
    assert body == DATA
    assert head.metadata == {"mode": str(0o100644)}
    assert res.etag
    await writes.copy_object("src", "dst2", meta=posix_meta(mode=0o100600))
    assert sdk_read(emu, "dst2")[1].metadata == {"mode": str(0o100600)}
    with pytest.raises(PreconditionFailed, match="oss://bkt/dst3"):
        await writes.copy_object("src", "dst3", if_match='"0000"')
    with pytest.raises(NoSuchKey):
        await writes.copy_object("missing", "dst4")


async def test_upload_part_copy_keeps_the_crc_chain(emu: Emulator, writes: OssWrites) -> None:
    put = await writes.put_object("src", DATA)
    uid = await writes.initiate_multipart("dst")
    p1 = await writes.upload_part_copy(
        "dst", uid, 1, "src", (0, PART), expected_crc=crc64(DATA[:PART]), if_match=put.etag
    )
    p2 = await writes.upload_part("dst", uid, 2, b"new tail")
    done = await writes.complete_multipart("dst", uid, [p1, p2])
    assert done.crc64 == crc64(DATA[:PART] + b"new tail")
    assert sdk_read(emu, "dst")[0] == DATA[:PART] + b"new tail"


async def test_delete_object(emu: Emulator, writes: OssWrites) -> None:
    await writes.put_object("k", b"x")
    await writes.delete_object("k")
    await writes.delete_object("k")  # 204 for a missing key too
    with pytest.raises(oss.exceptions.OperationError):
        sdk_read(emu, "k")


async def test_delete_multiple_objects(emu: Emulator, writes: OssWrites) -> None:
    keys = [f"d/{i} &<é>" for i in range(5)]
    for k in keys:
        await writes.put_object(k, b"x")
    await writes.delete_objects([*keys, "d/never-existed"])
    assert not [o for o in emu.store.bucket("bkt").objects if o.startswith("d/")]  # type: ignore[union-attr]


async def test_put_symlink(emu: Emulator, writes: OssWrites) -> None:
    await writes.put_object("dir/target é", b"pointed")
    await writes.put_symlink("link", "dir/target é", meta=posix_meta(mode=0o120777))
    res = sdk(emu).get_symlink(oss.GetSymlinkRequest(bucket="bkt", key="link"))
    assert res.target in ("dir/target é", "dir%2Ftarget%20%C3%A9")
    assert sdk_read(emu, "link")[0] == b"pointed"
