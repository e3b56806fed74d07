"""A file sealed by a close that waits for its commit is not fsynced; its journal names the boot
instead, and recovery trusts it only in that boot (issue 15, W13: the fsync wrote the whole
file to disk on the close's path)."""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio

from ossmount.crc64 import crc64
from ossmount.emulator import Emulator
from ossmount.fs.recovery import recover_staged
from ossmount.fs.staging import Staging
from ossmount.oss import Credentials, OssClient, OssConfig, StaticCredentialsProvider
from ossmount.oss._writes import OssWrites
from ossmount.write import StagedFile, Uploader, UploadLedger, UploadSettings, WriteState
from ossmount.write.boot import current_boot_id
from ossmount.write.journal import (
    CorruptJournal,
    PartRecord,
    decode,
    encode,
    load,
    save_atomic,
)
from tests.sdk import sdk_get
from tests.unit.sealed_helpers import assert_cut_and_padded_refused

PS = 128 * 1024
DATA = random.Random(13).randbytes(3 * PS + 77)
SYNC_CLOSE = UploadSettings(part_size=PS, single_put_max=PS, fsync_staged=False)
WRITEBACK = UploadSettings(part_size=PS, single_put_max=PS)

# A sealed UPLOADING record as the code before the boot id encoded it (main at 3fafe56).
OLD_RECORD = bytes.fromhex(
    "4f53534d574a4e4c000100000000005e00000003626b74000000016b00000000000000015500000000000000"
    "000000000a0000000000000000000081a40000000000100000010400000000000000000000000100000001"
    "000000000000000a000000000000000700000003224522d9504f2d247fb5adb56a7352bc79afaf4de5a24c"
    "a93f77099c3bb294f1af1773"
)


def test_old_records_load_unchanged_and_encode_the_same() -> None:
    rec = decode(OLD_RECORD)
    assert (rec.sealed, rec.boot_id, rec.upload_id) == (True, "", "U")
    assert rec.parts == (PartRecord(1, 10, 7, '"E"'),)
    assert encode(rec) == OLD_RECORD  # no boot id: the old format, byte for byte


def test_boot_id_round_trips_and_damage_is_refused() -> None:
    rec = dataclasses.replace(decode(OLD_RECORD), boot_id="b0e4-ab")
    data = encode(rec)
    assert decode(data) == rec
    assert_cut_and_padded_refused(data, decode, CorruptJournal)
    with pytest.raises(ValueError, match="only with the seal"):
        dataclasses.replace(rec, sealed=False)


def test_this_boot_has_an_id() -> None:
    assert len(current_boot_id()) == 36  # Linux: a UUID


def client(emu: Emulator) -> OssClient:
    return OssClient(
        OssConfig(emu.endpoint, "bkt", region="cn-hangzhou"),
        StaticCredentialsProvider(Credentials("ak", "sk")),
    )


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Inode numbers of every file fsynced from here on."""
    seen: list[int] = []
    real: Callable[[int], None] = os.fsync

    def spy(fd: int) -> None:
        seen.append(os.fstat(fd).st_ino)
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return seen


@pytest.mark.parametrize("size", [100, len(DATA)], ids=["put", "multipart"])
async def test_sync_close_seals_without_fsync_and_names_the_boot(
    emu: Emulator, tmp_path: Path, fsynced: list[int], size: int
) -> None:
    staged = StagedFile.beside(tmp_path / "f")
    staged.data.write_bytes(DATA[:size])
    async with client(emu) as c:
        up = Uploader(OssWrites(c), UploadLedger(tmp_path / "l"), SYNC_CLOSE)
        result = await up.commit(staged, up.new_record("k"))
    assert result.crc64 == crc64(DATA[:size])
    assert sdk_get(emu, "k") == DATA[:size]
    assert staged.data.stat().st_ino not in fsynced
    assert staged.journal.stat().st_ino not in fsynced, "its journal saves are not fsynced"
    rec = load(staged.journal)
    assert rec is not None
    assert (rec.state, rec.boot_id) == (WriteState.COMMITTED, current_boot_id())


async def test_write_back_still_fsyncs_before_it_records(
    emu: Emulator, tmp_path: Path, fsynced: list[int]
) -> None:
    staged = StagedFile.beside(tmp_path / "f")
    staged.data.write_bytes(DATA)
    async with client(emu) as c:
        up = Uploader(OssWrites(c), UploadLedger(tmp_path / "l"), WRITEBACK)
        await up.commit(staged, up.new_record("k"))
    assert staged.data.stat().st_ino in fsynced
    assert staged.journal.stat().st_ino in fsynced
    rec = load(staged.journal)
    assert rec is not None
    assert rec.boot_id == ""


async def _sealed_with_parts_sent(live: Uploader, staged: StagedFile, boot_id: str) -> str:
    """What a daemon leaves when it dies after sealing (unsynced) with two parts on OSS."""
    up = Uploader(live.writes, UploadLedger(live.ledger.path), SYNC_CLOSE)  # the dead process
    async with trio.open_nursery() as nursery:
        session = up.session(staged, up.new_record("big"), nursery)
        session.part_ready(0)
        session.part_ready(1)
        await session.drain()
        session.close()
    rec = load(staged.journal)
    assert rec is not None
    assert len(rec.parts) == 2
    save_atomic(staged.journal, dataclasses.replace(rec, size=len(DATA), sealed=True,
                                                    boot_id=boot_id))  # fmt: skip
    return rec.upload_id


@pytest.fixture
async def staging(emu: Emulator, tmp_path: Path) -> AsyncIterator[Staging]:
    async with client(emu) as c, trio.open_nursery() as nursery:
        up = Uploader(OssWrites(c), UploadLedger(tmp_path / "staging" / "l"), SYNC_CLOSE)
        yield Staging(up, tmp_path / "staging", nursery, bucket="bkt")
        nursery.cancel_scope.cancel()


async def test_sealed_unsynced_in_another_boot_is_dropped_and_its_upload_aborted(
    emu: Emulator, staging: Staging, caplog: pytest.LogCaptureFixture
) -> None:
    emu.put_object("bkt", "big", b"the good old version")
    staged = StagedFile.beside(staging.directory / "x.data")
    staged.data.write_bytes(DATA)
    upload_id = await _sealed_with_parts_sent(staging.uploader, staged, "another-boot")
    assert (await recover_staged(staging.directory, staging.uploader, "")).done == 0
    assert "sealed unsynced before a reboot" in caplog.text
    assert sdk_get(emu, "big") == b"the good old version"
    assert not staged.data.exists()
    assert not staged.journal.exists()
    aborted = [r for r in emu.requests if r.op == "AbortMultipartUpload" and r.status < 300]
    assert len(aborted) == 1
    assert upload_id not in staging.uploader.ledger.entries()


async def test_sealed_unsynced_in_this_boot_is_committed_after_a_kill(
    emu: Emulator, staging: Staging, fsynced: list[int]
) -> None:
    staged = StagedFile.beside(staging.directory / "x.data")
    staged.data.write_bytes(DATA)
    await _sealed_with_parts_sent(staging.uploader, staged, current_boot_id())
    before = len([r for r in emu.requests if r.op == "UploadPart"])
    inode = staged.data.stat().st_ino
    assert (await recover_staged(staging.directory, staging.uploader, "")).done == 1
    assert sdk_get(emu, "big") == DATA
    assert len([r for r in emu.requests if r.op == "UploadPart"]) - before == 2  # parts 3, 4
    assert inode in fsynced  # a resumed file is fsynced before it is sealed again
