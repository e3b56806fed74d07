"""kill -9 mid-upload, then resume: the object ends complete, CRC-verified, and the parts the
dead process had recorded are not sent again."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import trio

from ossmount.crc64 import crc64
from ossmount.emulator import Emulator, FaultRule
from ossmount.oss import Credentials, OssClient, OssConfig, StaticCredentialsProvider
from ossmount.oss._writes import OssWrites
from ossmount.write import StagedFile, Uploader, UploadLedger, UploadSettings, WriteState
from ossmount.write.journal import load
from tests.sdk import sdk_get

PS = 128 * 1024
DATA = random.Random(9).randbytes(5 * PS + 99)
CHILD = Path(__file__).with_name("write_child.py")
ROOT = Path(__file__).resolve().parents[2]


def ok_parts(emu: Emulator) -> int:
    return len([r for r in emu.requests if r.op == "UploadPart" and r.status == 200])


async def test_kill_9_mid_upload_then_resume(emu: Emulator, tmp_path: Path) -> None:
    staged = StagedFile.beside(tmp_path / "f")
    staged.data.write_bytes(DATA)
    ledger = tmp_path / "uploads.ledger"
    # Parts 3+ are not read for a long while: the child is killed while it waits. (Not a
    # "latency" rule, which delays only the reply: part 3 was then stored, and counted among
    # the parts the resume sent, when the emulator got to it before the count: 1 run in 40.)
    stall = emu.faults.add(FaultRule("stall", op="UploadPart", skip=2, seconds=30, times=None))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-u", str(CHILD), emu.endpoint, str(staged.data), str(ledger), str(PS)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        with trio.fail_after(60):  # a hung child fails the test, it does not hang the suite
            while not any("part 2 recorded" in line for line in lines):
                line = await trio.to_thread.run_sync(proc.stdout.readline, abandon_on_cancel=True)
                assert line, f"child ended early: {lines}"
                lines.append(line)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    emu.faults.remove(stall)

    rec = load(staged.journal)
    assert rec is not None
    assert rec.state is WriteState.UPLOADING
    assert [p.number for p in rec.parts] == [1, 2]
    assert rec.size == len(DATA)  # recorded before any byte went out

    before = ok_parts(emu)
    config = OssConfig(emu.endpoint, "bkt", region="cn-hangzhou")
    async with OssClient(config, StaticCredentialsProvider(Credentials("ak", "sk"))) as client:
        uploader = Uploader(
            OssWrites(client),
            UploadLedger(ledger),
            UploadSettings(part_size=PS, single_put_max=PS),
        )
        result = await uploader.resume(staged)
        meta = await client.head("killed")
    assert result is not None
    assert result.crc64 == crc64(DATA)
    assert meta.crc64 == crc64(DATA)
    assert meta.size == len(DATA)
    assert ok_parts(emu) - before == 4  # parts 3..6 only
    assert sdk_get(emu, "killed") == DATA
    done = load(staged.journal)
    assert done is not None
    assert done.state is WriteState.COMMITTED
