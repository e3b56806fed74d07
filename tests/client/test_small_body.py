"""Small staged bodies (`oss/_small_body.py`): sent with their head on `_wire`, not through
httpcore; CRC-checked, typed errors kept. Against the package emulator over real HTTP."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from ossmount.crc64 import crc64
from ossmount.emulator import Emulator, FaultRule
from ossmount.oss import Credentials, OssClient, OssConfig, RetryPolicy, StaticCredentialsProvider
from ossmount.oss._errors import OssError
from ossmount.oss._writes import CrcMismatch, FileRange, OssWrites, StagingError
from tests.client.test_writes import sdk_read

SMALL = random.Random(8).randbytes(60 * 1024)


def _client(emu: Emulator, secret: str = "sk") -> OssClient:
    return OssClient(
        OssConfig(
            emu.endpoint,
            "bkt",
            region="cn-hangzhou",
            read_timeout_s=5,
            connect_timeout_s=5,
            stall_timeout_s=2,
        ),
        StaticCredentialsProvider(Credentials("ak", secret)),
        retry=RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.05),
    )


@pytest.fixture
def staged(tmp_path: Path) -> Iterator[int]:
    path = tmp_path / "staged"
    path.write_bytes(b"HEAD" + SMALL)
    fd = os.open(path, os.O_RDONLY)
    yield fd
    os.close(fd)


def _no_httpcore(client: OssClient, monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a small staged body went through httpcore")

    monkeypatch.setattr(client, "_send", refuse)


async def test_a_small_staged_put_goes_on_wire_verified(
    emu: Emulator, staged: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _client(emu) as c:
        _no_httpcore(c, monkeypatch)
        res = await OssWrites(c).put_object("k", FileRange(staged, 4, len(SMALL)))
        empty = await OssWrites(c).put_object("empty", FileRange(staged, 0, 0))
    assert res.crc64 == crc64(SMALL)
    assert res.size == len(SMALL)
    assert sdk_read(emu, "k")[0] == SMALL
    assert empty.size == 0
    assert sdk_read(emu, "empty")[0] == b""


async def test_a_wrong_crc_reply_resends_the_small_body(
    emu: Emulator, staged: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu.faults.add(FaultRule(action="wrong-crc", op="PutObject", times=1))
    async with _client(emu) as c:
        _no_httpcore(c, monkeypatch)
        res = await OssWrites(c).put_object("k", FileRange(staged, 4, len(SMALL)))
    assert res.crc64 == crc64(SMALL)
    assert len([r for r in emu.requests if r.op == "PutObject"]) == 2
    emu.faults.add(FaultRule(action="wrong-crc", op="PutObject", times=None))
    async with _client(emu) as c:
        with pytest.raises(CrcMismatch):
            await OssWrites(c, crc_resends=1).put_object("k2", FileRange(staged, 4, len(SMALL)))


async def test_a_refused_small_put_raises_its_typed_error(emu: Emulator, staged: int) -> None:
    async with _client(emu, secret="wrong") as c:
        with pytest.raises(OssError) as info:
            await OssWrites(c).put_object("k", FileRange(staged, 4, len(SMALL)))
    assert info.value.code == "SignatureDoesNotMatch", info.value
    assert "oss://bkt/k" in str(info.value)


async def test_a_short_staged_file_sends_nothing(emu: Emulator, staged: int) -> None:
    async with _client(emu) as c:
        with pytest.raises(StagingError, match="oss://bkt/k"):
            await OssWrites(c).put_object("k", FileRange(staged, 4, len(SMALL) + 10))
    assert not [r for r in emu.requests if r.op == "PutObject"]
