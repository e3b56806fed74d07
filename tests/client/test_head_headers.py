"""`OssClient.head_headers`: one HEAD's reply headers, on our own connections (`_wire`) or,
with the fast path off, through httpx; both against the package emulator."""

from __future__ import annotations

import pytest

from ossmount.emulator import Emulator, FaultRule
from ossmount.oss import NoSuchKey, OssWrites, PreconditionFailed, _body
from tests.client.sinks import get_into
from tests.client.test_client_emulator import client_for

BODY = b"x" * 100_000
META = {"mode": "33261", "mtime": "1500000000"}


@pytest.fixture(params=["wire", "httpx"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(_body, "FAST_PATH_ENABLED", request.param == "wire")
    return str(request.param)


@pytest.mark.parametrize("version", ["v4", "v1"])
async def test_the_reply_headers_lower_case_with_the_user_metadata(
    emu: Emulator, path: str, version: str
) -> None:
    etag = emu.put_object("bkt", "dir/a b+é", BODY, meta=META)
    async with client_for(emu, version=version) as client:
        headers = await client.head_headers("dir/a b+é")
        fenced = await client.head_headers("dir/a b+é", if_match=etag)
    for got in (headers, fenced):
        assert got["etag"] == etag
        assert got["content-length"] == str(len(BODY))
        assert got["x-oss-meta-mode"] == "33261"
        assert got["x-oss-meta-mtime"] == "1500000000"


async def test_errors_are_typed_and_a_transient_one_is_retried(emu: Emulator, path: str) -> None:
    emu.put_object("bkt", "k", BODY)
    async with client_for(emu) as client:
        with pytest.raises(NoSuchKey):
            await client.head_headers("missing")
        with pytest.raises(PreconditionFailed):
            await client.head_headers("k", if_match='"not-it"')
        rule = emu.faults.add(FaultRule(action="error", op="HeadObject", key="k", status=503,
                                        code="ServiceUnavailable", times=1))  # fmt: skip
        assert (await client.head_headers("k"))["content-length"] == str(len(BODY))
        assert rule.fired == 1
        headed = await OssWrites(client).object_headers("k")
        assert headed.crc64 is not None
        assert headed.size == len(BODY)
        assert "content-length" not in headed.kept


async def test_heads_keep_one_connection_and_leave_it_clean_for_gets(emu: Emulator) -> None:
    """A HEAD reply says Content-Length but sends no body: the connection must be reused
    at once, and the next reply on it (a GET's) read from its first byte."""
    emu.put_object("bkt", "k", BODY)
    async with client_for(emu) as client:
        for _ in range(20):
            assert (await client.head_headers("k"))["content-length"] == str(len(BODY))
            buf = bytearray(1000)
            await get_into(client, "k", 5, buf)
            assert bytes(buf) == BODY[5:1005]
        assert len(client._wire.connections) == 1
