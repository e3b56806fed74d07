"""Journal saves of uploaded parts do not hold the upload up (write/session.py `_save_parts`):
while one save is slow, the other parts keep going out, and one later save covers them all."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest
import trio

from ossmount.crc64 import crc64
from ossmount.emulator import Emulator
from ossmount.oss import Credentials, OssClient, OssConfig, StaticCredentialsProvider
from ossmount.oss._writes import FileRange, OssWrites, PartResult
from ossmount.write import StagedFile, Uploader, UploadLedger, UploadSettings, WriteState
from ossmount.write import session as session_module
from ossmount.write.journal import JournalRecord, load
from tests.sdk import sdk_get

PS = 128 * 1024
PARTS = 6
DATA = random.Random(11).randbytes(PARTS * PS)


async def test_parts_go_on_while_a_journal_save_is_slow(
    emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    all_sent = threading.Event()
    sent = 0
    saved_parts: list[list[int]] = []
    real_save = session_module.save_atomic

    def gated_save(path: Path, rec: JournalRecord, *, fsync: bool = True) -> None:
        if rec.parts and not any(saved_parts):  # the first save naming a part waits for the rest
            all_sent.wait(timeout=10)
        saved_parts.append([p.number for p in rec.parts])
        real_save(path, rec, fsync=fsync)

    monkeypatch.setattr(session_module, "save_atomic", gated_save)
    staged = StagedFile.beside(tmp_path / "f")
    staged.data.write_bytes(DATA)
    config = OssConfig(emu.endpoint, "bkt", region="cn-hangzhou")
    async with OssClient(config, StaticCredentialsProvider(Credentials("ak", "sk"))) as client:
        writes = OssWrites(client)
        real_upload = writes.upload_part

        async def counted(
            key: str, uid: str, number: int, body: FileRange | bytes, *, cuts: tuple[int, ...] = ()
        ) -> PartResult:
            nonlocal sent
            result = await real_upload(key, uid, number, body, cuts=cuts)
            sent += 1
            if sent == PARTS:
                all_sent.set()
            return result

        monkeypatch.setattr(writes, "upload_part", counted)
        settings = UploadSettings(part_size=PS, single_put_max=PS, parallel=2)
        up = Uploader(writes, UploadLedger(tmp_path / "uploads.ledger"), settings)
        with trio.fail_after(30):
            result = await up.commit(staged, up.new_record("big"))
    assert all_sent.is_set()  # every part went out while the first part save was held up
    assert result.crc64 == crc64(DATA)
    assert sdk_get(emu, "big") == DATA
    part_saves = [numbers for numbers in saved_parts if numbers]
    assert len(part_saves) < PARTS  # coalesced, not one save per part
    assert list(range(1, PARTS + 1)) in part_saves  # a later save names every part
    rec = load(staged.journal)
    assert rec is not None
    assert rec.state is WriteState.COMMITTED
