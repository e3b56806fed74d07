"""The uploader against the emulator: small and large commits, parts sent while writing,
faults (503, a reply that comes too late, a wrong part CRC, a wrong final CRC), conflicts,
O_EXCL, resume after a crash, and the sweeper."""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio

from ossmount.crc64 import crc64
from ossmount.emulator import Emulator, FaultRule
from ossmount.oss import Credentials, OssClient, OssConfig, RetryPolicy, StaticCredentialsProvider
from ossmount.oss._writes import CrcMismatch, FileAlreadyExists, ListedUpload, OssWrites
from ossmount.write import (
    JournalRecord,
    StagedFile,
    Uploader,
    UploadLedger,
    UploadSettings,
    WriteState,
    sweep_stale_uploads,
)
from ossmount.write.journal import load, save_atomic
from tests.sdk import sdk_get

PS = 128 * 1024
SETTINGS = UploadSettings(part_size=PS, single_put_max=PS, parallel=3)
BIG = random.Random(7).randbytes(5 * PS + 1234)


def make_client(endpoint: str, read_timeout: float = 5.0) -> OssClient:
    return OssClient(
        OssConfig(endpoint, "bkt", region="cn-hangzhou", read_timeout_s=read_timeout),
        StaticCredentialsProvider(Credentials("ak", "sk")),
        retry=RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.05),
    )


@pytest.fixture
async def uploader(emu: Emulator, tmp_path: Path) -> AsyncIterator[Uploader]:
    async with make_client(emu.endpoint) as c:
        yield Uploader(OssWrites(c), UploadLedger(tmp_path / "uploads.ledger"), SETTINGS)


def stage(tmp_path: Path, data: bytes, name: str = "f") -> StagedFile:
    staged = StagedFile.beside(tmp_path / name)
    staged.data.write_bytes(data)
    return staged


def count(emu: Emulator, op: str) -> int:
    return len([r for r in emu.requests if r.op == op and r.status < 300])


async def test_small_file_is_one_put_with_ossfs_meta(
    emu: Emulator, uploader: Uploader, tmp_path: Path
) -> None:
    staged = stage(tmp_path, b"small")
    rec = uploader.new_record("dir/small.txt", mtime_ns=1_600_000_000_000_000_000, mode=0o100600)
    result = await uploader.commit(staged, rec)
    assert (result.crc64, result.size, result.parts) == (crc64(b"small"), 5, 0)
    assert sdk_get(emu, "dir/small.txt") == b"small"
    obj = emu.store.bucket("bkt").objects["dir/small.txt"]  # type: ignore[union-attr]
    assert dict(obj.meta) == {"x-oss-meta-mtime": "1600000000", "x-oss-meta-mode": "33152"}
    saved = load(staged.journal)
    assert saved is not None
    assert saved.state is WriteState.COMMITTED
    assert saved.result_crc64 == crc64(b"small")
    assert (count(emu, "PutObject"), count(emu, "InitiateMultipartUpload")) == (1, 0)


async def test_small_puts_without_journal_when_close_waits(emu: Emulator, tmp_path: Path) -> None:
    async with make_client(emu.endpoint) as c:
        settings = UploadSettings(part_size=PS, single_put_max=PS, journal_small_puts=False)
        up = Uploader(OssWrites(c), UploadLedger(tmp_path / "l"), settings)
        small, big = stage(tmp_path, b"small", "s"), stage(tmp_path, BIG, "b")
        assert (await up.commit(small, up.new_record("s"))).crc64 == crc64(b"small")
        assert (await up.commit(big, up.new_record("b"))).crc64 == crc64(BIG)
    assert not small.journal.exists()
    assert sdk_get(emu, "s") == b"small"
    big_record = load(big.journal)  # a multipart upload is always journaled
    assert big_record is not None
    assert big_record.state is WriteState.COMMITTED


async def test_large_file_is_a_verified_multipart_upload(
    emu: Emulator, uploader: Uploader, tmp_path: Path
) -> None:
    staged = stage(tmp_path, BIG)
    result = await uploader.commit(staged, uploader.new_record("big"))
    assert (result.crc64, result.size, result.parts) == (crc64(BIG), len(BIG), 6)
    assert sdk_get(emu, "big") == BIG
    assert count(emu, "UploadPart") == 6
    saved = load(staged.journal)
    assert saved is not None
    assert saved.state is WriteState.COMMITTED
    assert saved.parts == ()
    assert list(uploader.ledger.entries().values()) == ["big"]


async def test_parts_go_while_the_file_is_written(
    emu: Emulator, uploader: Uploader, tmp_path: Path
) -> None:
    staged = stage(tmp_path, b"")
    async with trio.open_nursery() as nursery:
        session = uploader.session(staged, uploader.new_record("stream"), nursery)
        with open(staged.data, "r+b") as f:
            for index in range(4):
                f.write(BIG[index * PS : (index + 1) * PS])
                f.flush()
                session.part_ready(index)
                session.part_ready(index)  # twice is harmless
            await session.drain()
            assert count(emu, "UploadPart") == 4  # before close
            on_disk = load(staged.journal)
            assert on_disk is not None
            assert [p.number for p in on_disk.parts] == [1, 2, 3, 4]
            f.write(BIG[4 * PS :])
        result = await session.finish(len(BIG))
        session.close()
    assert result.crc64 == crc64(BIG)
    assert count(emu, "UploadPart") == 6  # only the rest was sent at close
    assert sdk_get(emu, "stream") == BIG


async def test_a_part_rewritten_after_it_went_is_sent_again(
    emu: Emulator, uploader: Uploader, tmp_path: Path
) -> None:
    staged = stage(tmp_path, BIG[: 2 * PS])
    async with trio.open_nursery() as nursery:
        session = uploader.session(staged, uploader.new_record("patched"), nursery)
        session.part_ready(0)
        await session.drain()
        with open(staged.data, "r+b") as f:
            f.seek(10)
            f.write(b"PATCH")
        session.invalidate(0)
        result = await session.finish(2 * PS)
        session.close()
    want = BIG[:10] + b"PATCH" + BIG[15 : 2 * PS]
    assert result.crc64 == crc64(want)
    assert sdk_get(emu, "patched") == want


@pytest.mark.parametrize(
    "fault",
    [
        FaultRule("error", op="UploadPart", nth=2, status=503, code="ServiceUnavailable"),
        FaultRule("wrong-crc", op="UploadPart", nth=3),
        FaultRule("error", op="CompleteMultipartUpload", status=500, code="InternalError"),
        FaultRule("reset", op="CompleteMultipartUpload", after=0),
        FaultRule("error", op="InitiateMultipartUpload", status=503, code="ServiceUnavailable"),
        FaultRule("reset", op="UploadPart", nth=2, after=50_000),  # mid request body
        FaultRule("truncate", op="UploadPart", nth=4, after=1),
    ],
    ids=lambda r: f"{r.action}-{r.op}",
)
async def test_faults_are_retried_never_corrupt(
    emu: Emulator, uploader: Uploader, tmp_path: Path, fault: FaultRule
) -> None:
    emu.faults.add(fault)
    result = await uploader.commit(stage(tmp_path, BIG), uploader.new_record("big"))
    assert fault.fired == 1
    assert result.crc64 == crc64(BIG)
    assert sdk_get(emu, "big") == BIG


@pytest.mark.parametrize(
    "fault",
    [
        FaultRule("latency", op="UploadPart", nth=2, seconds=1.0),  # the part is stored
        FaultRule("stall", op="UploadPart", nth=2, after=10_000, seconds=1.0),  # mid body
    ],
    ids=["reply-late", "body-stall"],
)
async def test_a_part_that_takes_too_long_is_retried(
    emu: Emulator, tmp_path: Path, fault: FaultRule, caplog: pytest.LogCaptureFixture
) -> None:
    emu.faults.add(fault)
    async with make_client(emu.endpoint, read_timeout=0.3) as c:
        up = Uploader(OssWrites(c), UploadLedger(tmp_path / "l"), SETTINGS)
        result = await up.commit(stage(tmp_path, BIG), up.new_record("big"))
    assert fault.fired == 1
    assert "retrying UploadPart" in caplog.text  # the slow one was given up on and sent again
    assert result.crc64 == crc64(BIG)
    assert sdk_get(emu, "big") == BIG


async def test_final_crc_mismatch_is_an_error_then_a_retry_checks_the_object(
    emu: Emulator, uploader: Uploader, tmp_path: Path
) -> None:
    staged = stage(tmp_path, BIG)
    emu.faults.add(FaultRule("wrong-crc", op="CompleteMultipartUpload"))
    with pytest.raises(CrcMismatch, match="oss://bkt/big"):
        await uploader.commit(staged, uploader.new_record("big"))
    saved = load(staged.journal)
    assert saved is not None
    assert saved.state is WriteState.UPLOADING  # never reported written
    # The next attempt (resume) finds the upload consumed and checks the object's CRC.
    result = await uploader.resume(staged)
    assert result is not None
    assert result.crc64 == crc64(BIG)
    assert count(emu, "UploadPart") == 6  # nothing sent twice


async def test_last_writer_wins_with_a_warning(
    emu: Emulator, uploader: Uploader, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base = emu.put_object("bkt", "shared", b"v1")
    emu.put_object("bkt", "shared", b"v2 from someone else")
    with caplog.at_level(logging.WARNING):
        await uploader.commit(
            stage(tmp_path, b"mine"), uploader.new_record("shared", base_etag=base)
        )
    assert sdk_get(emu, "shared") == b"mine"
    assert "oss://bkt/shared changed on the server since it was opened" in caplog.text


async def test_no_warning_when_the_base_is_current(
    emu: Emulator, uploader: Uploader, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base = emu.put_object("bkt", "shared", b"v1")
    with caplog.at_level(logging.WARNING):
        await uploader.commit(
            stage(tmp_path, b"mine"), uploader.new_record("shared", base_etag=base)
        )
    assert "changed on the server" not in caplog.text


@pytest.mark.parametrize("data", [b"small", BIG], ids=["put", "multipart"])
async def test_o_excl_refuses_an_existing_key(
    emu: Emulator, uploader: Uploader, tmp_path: Path, data: bytes
) -> None:
    emu.put_object("bkt", "taken", b"first")
    staged = stage(tmp_path, data)
    with pytest.raises(FileAlreadyExists, match="oss://bkt/taken"):
        await uploader.commit(staged, uploader.new_record("taken", forbid_overwrite=True))
    assert sdk_get(emu, "taken") == b"first"
    saved = load(staged.journal)
    assert saved is None or saved.state is not WriteState.COMMITTED


async def test_early_parts_then_shrunk_becomes_one_put(
    emu: Emulator, uploader: Uploader, tmp_path: Path
) -> None:
    staged = stage(tmp_path, BIG[: 2 * PS])
    async with trio.open_nursery() as nursery:
        session = uploader.session(staged, uploader.new_record("shrunk"), nursery)
        session.part_ready(0)
        session.part_ready(1)
        await session.drain()
        os.truncate(staged.data, 1000)
        result = await session.finish(1000)
        session.close()
    assert result.parts == 0
    assert sdk_get(emu, "shrunk") == BIG[:1000]
    assert count(emu, "AbortMultipartUpload") == 1


async def test_resume_keeps_only_parts_the_disk_and_server_agree_on(
    emu: Emulator, uploader: Uploader, tmp_path: Path
) -> None:
    staged = stage(tmp_path, BIG)
    async with trio.open_nursery() as nursery:  # a process that dies after three parts
        session = uploader.session(staged, uploader.new_record("big"), nursery)
        for index in range(3):
            session.part_ready(index)
        await session.drain()
        session.close()
    rec = load(staged.journal)
    assert rec is not None
    assert [p.number for p in rec.parts] == [1, 2, 3]
    save_atomic(staged.journal, JournalRecord(**{**_fields(rec), "size": len(BIG), "sealed": True}))
    with open(staged.data, "r+b") as f:  # part 2's staged bytes no longer match its record
        f.seek(PS + 1)
        f.write(b"X")
    want = BIG[: PS + 1] + b"X" + BIG[PS + 2 :]
    before = count(emu, "UploadPart")
    result = await uploader.resume(staged)
    assert result is not None
    assert result.crc64 == crc64(want)
    assert sdk_get(emu, "big") == want
    assert count(emu, "UploadPart") - before == 4  # parts 2, 4, 5, 6
    assert count(emu, "ListParts") == 1


def _fields(rec: JournalRecord) -> dict[str, object]:
    return {name: getattr(rec, name) for name in rec.__dataclass_fields__}


async def test_resume_after_the_upload_vanished_starts_again(
    emu: Emulator, uploader: Uploader, tmp_path: Path
) -> None:
    staged = stage(tmp_path, BIG)
    async with trio.open_nursery() as nursery:
        session = uploader.session(staged, uploader.new_record("big"), nursery)
        session.part_ready(0)
        await session.drain()
        session.close()
    rec = load(staged.journal)
    assert rec is not None
    await uploader.writes.abort_multipart("big", rec.upload_id)  # expired, say
    save_atomic(staged.journal, JournalRecord(**{**_fields(rec), "size": len(BIG), "sealed": True}))
    result = await uploader.resume(staged)
    assert result is not None
    assert result.crc64 == crc64(BIG)
    assert sdk_get(emu, "big") == BIG


async def test_a_never_closed_file_is_not_uploaded_on_resume(
    emu: Emulator, uploader: Uploader, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    emu.put_object("bkt", "big", b"the good old version")
    staged = stage(tmp_path, BIG)
    async with trio.open_nursery() as nursery:  # dies while still writing: never closed
        session = uploader.session(staged, uploader.new_record("big"), nursery)
        session.part_ready(0)
        await session.drain()
        session.close()
    assert await uploader.resume(staged) is None
    assert "was never closed; not uploaded" in caplog.text
    assert sdk_get(emu, "big") == b"the good old version"
    assert staged.data.read_bytes() == BIG


async def test_resumed_o_excl_put_that_had_landed_is_recognised(
    emu: Emulator, uploader: Uploader, tmp_path: Path
) -> None:
    # The process died after its forbid-overwrite PUT landed but before recording COMMITTED.
    staged = stage(tmp_path, b"mine")
    rec = uploader.new_record("excl", forbid_overwrite=True)
    save_atomic(staged.journal, JournalRecord(**{**_fields(rec), "size": 4, "sealed": True}))
    emu.put_object("bkt", "excl", b"mine")
    result = await uploader.resume(staged)
    assert result is not None
    assert result.crc64 == crc64(b"mine")
    emu.put_object("bkt", "excl", b"not mine")  # and someone else's object still wins
    save_atomic(staged.journal, JournalRecord(**{**_fields(rec), "size": 4, "sealed": True}))
    with pytest.raises(FileAlreadyExists):
        await uploader.resume(staged)


async def test_resume_without_journal_or_committed(uploader: Uploader, tmp_path: Path) -> None:
    staged = stage(tmp_path, b"x")
    assert await uploader.resume(staged) is None
    first = await uploader.commit(staged, uploader.new_record("k"))
    again = await uploader.resume(staged)
    assert again is not None
    assert (again.etag, again.crc64) == (first.etag, first.crc64)


class _StubWrites:
    """list_multipart_uploads/abort_multipart only: the sweeper's whole view of OSS."""

    bucket = "bkt"

    def __init__(self, uploads: list[ListedUpload]) -> None:
        self.uploads = uploads
        self.aborted: list[str] = []

    async def list_multipart_uploads(self, prefix: str = "") -> list[ListedUpload]:
        return [u for u in self.uploads if u.key.startswith(prefix)]

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        self.aborted.append(upload_id)


@pytest.mark.parametrize("data", [b"small", BIG], ids=["put", "multipart"])
async def test_a_resumed_file_does_not_replace_a_version_newer_than_its_close(
    emu: Emulator, uploader: Uploader, tmp_path: Path, data: bytes
) -> None:
    """A sealed file the recovery could not upload, whose name was then written anew (or by
    another client): the next resume must not put the older bytes over the newer version.
    The version it replaced (its base ETag), or an older object, is replaced as before."""
    closed_at = (time.time_ns() // 10**9 - 60) * 10**9  # sealed a minute ago
    for key, base in (("newer", None), ("replaced", "its-base"), ("older", "")):
        staged = stage(tmp_path, data, key)
        etag = emu.put_object("bkt", key, b"on the server")
        if key == "older":  # written before the close
            objects = emu.store.bucket("bkt").objects
            objects[key] = replace(objects[key], mtime=closed_at / 1e9 - 60)  # type: ignore[type-var]
        rec = uploader.new_record(key, base_etag=etag if base == "its-base" else "")
        sealed = {**_fields(rec), "size": len(data), "sealed": True, "ctime_ns": closed_at}
        save_atomic(staged.journal, JournalRecord(**sealed))
        result = await uploader.resume(staged)
        if key == "newer":
            assert result is None
            assert sdk_get(emu, key) == b"on the server"
        else:
            assert result is not None, key
            assert sdk_get(emu, key) == data, key


async def test_a_resume_judges_newer_by_the_seal_s_time_not_a_ctime_a_utimens_set_back(
    emu: Emulator, uploader: Uploader, tmp_path: Path
) -> None:
    """ossfs's utimens stores its atime as the ctime too: a `touch -d 2020-…` after the close
    sets the record's ctime years back. Judged by it, every version on the server looked
    newer and the acknowledged file was dropped; the seal's own time (`sealed_ns`) decides."""
    closed_at = (time.time_ns() // 10**9 - 60) * 10**9  # sealed a minute ago
    for key in ("older", "newer"):
        staged = stage(tmp_path, b"mine", key)
        emu.put_object("bkt", key, b"on the server")
        if key == "older":  # written before the close
            objects = emu.store.bucket("bkt").objects
            objects[key] = replace(objects[key], mtime=closed_at / 1e9 - 60)  # type: ignore[type-var]
        rec = uploader.new_record(key)
        sealed = {**_fields(rec), "size": 4, "sealed": True, "ctime_ns": 1_600_000_000 * 10**9,
                  "sealed_ns": closed_at}  # fmt: skip
        save_atomic(staged.journal, JournalRecord(**sealed))
        result = await uploader.resume(staged)
        assert (result is None) == (key == "newer"), key
        assert sdk_get(emu, key) == (b"on the server" if key == "newer" else b"mine"), key


async def test_sweeper_aborts_only_our_stale_uploads(tmp_path: Path) -> None:
    ledger = UploadLedger(tmp_path / "uploads.ledger")
    for uid, key in [("GONE", "p/a"), ("LIVE", "p/b"), ("DONE", "p/c"), ("ELSEWHERE", "q/d")]:
        ledger.add(uid, key)
    ledger.active.clear()  # a new process: nothing running yet
    live = JournalRecord("bkt", "p/b", 0, PS, state=WriteState.UPLOADING, upload_id="LIVE")
    stub = _StubWrites(
        [
            ListedUpload("p/a", "GONE", 0),
            ListedUpload("p/b", "LIVE", 0),
            ListedUpload("p/x", "FOREIGN", 0),  # not ours: another tool's upload
        ]
    )
    aborted = await sweep_stale_uploads(stub, ledger, [live], prefix="p/")  # type: ignore[arg-type]
    assert [u.upload_id for u in aborted] == ["GONE"]
    assert stub.aborted == ["GONE"]
    assert ledger.entries() == {"LIVE": "p/b", "ELSEWHERE": "q/d"}


async def test_sweeper_spares_an_upload_this_process_is_running(tmp_path: Path) -> None:
    ledger = UploadLedger(tmp_path / "uploads.ledger")
    ledger.add("RUNNING", "p/a")  # initiated, journal not yet written
    stub = _StubWrites([ListedUpload("p/a", "RUNNING", 0)])
    assert await sweep_stale_uploads(stub, ledger, [], prefix="p/") == []  # type: ignore[arg-type]
    assert ledger.entries() == {"RUNNING": "p/a"}


async def test_sweeper_aborts_an_upload_whose_id_never_reached_the_ledger(tmp_path: Path) -> None:
    """A crash between the Initiate's reply and the ledger's fsync (or a lost reply): the
    intent recorded before the Initiate makes the upload of that key, initiated near that
    time, ours; another key's, or the same key's long before, is not."""
    ledger = UploadLedger(tmp_path / "uploads.ledger")
    ledger.intend("p/a")
    (_, at), now = ledger.intents()[0], time.time_ns()
    hour = 3600 * 10**9
    stub = _StubWrites(
        [
            ListedUpload("p/a", "LOST", now),  # initiated, its id never recorded
            ListedUpload("p/a", "OLDER", at - hour),  # another client's, an hour before
            ListedUpload("p/b", "OTHER", now),  # another key
            ListedUpload("q/a", "OUTSIDE", now),  # not under the prefix: not even listed
        ]
    )
    aborted = await sweep_stale_uploads(stub, ledger, [], prefix="p/")  # type: ignore[arg-type]
    assert [u.upload_id for u in aborted] == ["LOST"]
    assert ledger.intents() == [], "swept: the intent is not kept"


async def test_the_sweep_finds_an_unrecorded_upload_on_the_server_by_its_initiated_time(
    emu: Emulator, uploader: Uploader
) -> None:
    """The same against the emulator's ListMultipartUploads, whose `Initiated` is parsed."""
    uploader.ledger.intend("k")
    lost = await uploader.writes.initiate_multipart("k", meta={})  # the crash: no `add`
    other = await uploader.writes.initiate_multipart("k2", meta={})  # no intent: not ours
    aborted = await sweep_stale_uploads(uploader.writes, uploader.ledger, [])
    assert [u.upload_id for u in aborted] == [lost]
    assert [u.upload_id for u in await uploader.writes.list_multipart_uploads()] == [other]


async def test_a_multipart_commit_records_its_intent_before_the_initiate(
    emu: Emulator, uploader: Uploader, tmp_path: Path
) -> None:
    """The intent is on disk before InitiateMultipartUpload goes out: a crash at any point
    after it leaves the sweeper able to find the upload (the test above)."""
    seen: list[list[tuple[str, int]]] = []
    real = uploader.writes.initiate_multipart

    async def initiate(key: str, **kwargs: Any) -> str:
        seen.append(UploadLedger(uploader.ledger.path).intents())
        return await real(key, **kwargs)

    uploader.writes.initiate_multipart = initiate  # type: ignore[method-assign]
    await uploader.commit(stage(tmp_path, BIG, "big"), uploader.new_record("big"))
    assert [[key for key, _ in intents] for intents in seen] == [["big"]]
    assert sdk_get(emu, "big") == BIG


@pytest.mark.parametrize("data", [b"small", BIG], ids=["put", "multipart"])
async def test_a_default_mode_yields_to_the_replaced_versions_and_survives_a_resume(
    emu: Emulator, uploader: Uploader, tmp_path: Path, data: bytes
) -> None:
    """`keep_mode` (nobody set a mode): the x-oss-meta-mode and owner of the version replaced
    stay, as ossfs keeps them, also for a record resumed from its journal after a crash; a
    mode that was set (no keep_mode) goes over them; an old version without a mode gets the
    record's."""
    old = {"mode": "33152", "uid": "7", "other": "x"}
    for key, keep in (("kept", True), ("told", False)):
        base = emu.put_object("bkt", key, b"old", meta=old)
        staged = stage(tmp_path, data, key)
        rec = uploader.new_record(key, base_etag=base, mode=0o100644, keep_mode=keep)
        save_atomic(staged.journal, JournalRecord(**{**_fields(rec), "size": len(data),
                                                     "sealed": True}))  # fmt: skip
        assert await uploader.resume(staged) is not None
        assert sdk_get(emu, key) == data
    kept = emu.store.bucket("bkt").objects["kept"].meta  # type: ignore[union-attr]
    told = emu.store.bucket("bkt").objects["told"].meta  # type: ignore[union-attr]
    stored = {f"x-oss-meta-{name}": value for name, value in old.items()}
    assert dict(kept) == stored
    assert dict(told) == {**stored, "x-oss-meta-mode": "33188"}
    base = emu.put_object("bkt", "bare", b"old")
    rec = uploader.new_record("bare", base_etag=base, mode=0o100640, keep_mode=True)
    await uploader.commit(stage(tmp_path, data, "bare"), rec)
    bare = emu.store.bucket("bkt").objects["bare"].meta  # type: ignore[union-attr]
    assert dict(bare) == {"x-oss-meta-mode": "33184"}
