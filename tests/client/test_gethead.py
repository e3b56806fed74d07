"""Ranged GET heads (ossmount/oss/_gethead.py): the signed lines are made once per key, second
and credentials, and every head still carries its own Range and If-Match."""

from __future__ import annotations

import time

import pytest

from ossmount.emulator import Emulator
from ossmount.oss import Credentials, signing
from ossmount.oss._gethead import GetHeads
from tests.client.sinks import get_into
from tests.client.test_client_emulator import client_for

A = Credentials("ak", "sk")
B = Credentials("ak2", "sk2")


def heads() -> tuple[GetHeads, list[tuple[str, str, float]]]:
    """GetHeads whose signer records each call and signs with a made-up header."""
    calls: list[tuple[str, str, float]] = []

    def sign(creds: Credentials, key: str, headers: dict[str, str], now: float) -> dict[str, str]:
        calls.append((creds.access_key_id, key, now))
        return {**headers, "Authorization": f"sig {creds.access_key_id} {key} {int(now)}"}

    made = GetHeads(
        bucket="b",
        authority="h:1",
        fixed={"x-oss-range-behavior": "standard"},
        target=lambda key: f"/b/{key}",
        sign=sign,
    )
    return made, calls


def test_one_signature_per_key_second_and_credentials() -> None:
    made, calls = heads()
    first = made.head("k", 0, 99, None, A, 100.1)
    second = made.head("k", 4096, 8191, '"e1"', A, 100.9)
    assert calls == [("ak", "k", 100.1)]
    assert first == (
        b"GET /b/k HTTP/1.1\r\nHost: h:1\r\nx-oss-range-behavior: standard\r\n"
        b"Authorization: sig ak k 100\r\nRange: bytes=0-99\r\n\r\n"
    )
    assert second == (
        b"GET /b/k HTTP/1.1\r\nHost: h:1\r\nx-oss-range-behavior: standard\r\n"
        b'Authorization: sig ak k 100\r\nRange: bytes=4096-8191\r\nIf-Match: "e1"\r\n\r\n'
    )
    made.head("other", 0, 9, None, A, 100.5)  # another key
    made.head("k", 0, 9, None, B, 100.5)  # other credentials (refreshed STS keys)
    made.head("k", 0, 9, None, A, 101.0)  # the next second
    assert calls[1:] == [("ak", "other", 100.5), ("ak2", "k", 100.5), ("ak", "k", 101.0)]
    assert b"sig ak k 101" in made.head("k", 0, 9, None, A, 101.7)
    assert len(calls) == 4


def test_the_memo_keeps_only_the_current_second() -> None:
    made, calls = heads()
    for i in range(50):
        made.head(f"k{i}", 0, 9, None, A, 100.0)
    made.head("k0", 0, 9, None, A, 101.0)
    made.head("k1", 0, 9, None, A, 100.0)  # a clock stepping back: signed again, not stale
    assert len(calls) == 52
    assert len(made._memo) == 1


def test_an_if_match_with_a_line_break_is_refused() -> None:
    made, _ = heads()
    with pytest.raises(ValueError, match="oss://b/k"):
        made.head("k", 0, 9, '"e1"\nX-Injected: 1', A, 100.0)


@pytest.mark.parametrize("version", ["v4", "v1"])
async def test_gets_in_one_second_share_a_signature_the_server_accepts(
    emu: Emulator, version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = bytes(range(256)) * 64
    etag = emu.put_object("bkt", "dir/a b.bin", data)
    signs = {"v4": "sign_v4_headers", "v1": "sign_v1_headers"}[version]
    real = getattr(signing, signs)
    calls: list[str | None] = []

    def counted(*args: object, **kwargs: object) -> dict[str, str]:
        calls.append(args[2])  # type: ignore[arg-type]
        return real(*args, **kwargs)  # type: ignore[no-any-return]

    monkeypatch.setattr(signing, signs, counted)
    async with client_for(emu, version=version) as client:
        second = float(int(time.time()))
        client._signer.now = lambda: second + 0.5  # type: ignore[method-assign]
        for offset, pin in ((0, None), (5000, etag), (12000, etag)):
            buf = bytearray(1000)
            await get_into(client, "dir/a b.bin", offset, buf, if_match=pin)
            assert bytes(buf) == data[offset : offset + 1000]
        assert calls == ["dir/a b.bin"]
        client._signer.now = lambda: second + 1.5  # type: ignore[method-assign]
        buf = bytearray(10)
        await get_into(client, "dir/a b.bin", 7, buf)
        assert bytes(buf) == data[7:17]
        assert calls == ["dir/a b.bin"] * 2
    assert len([r for r in emu.requests if r.op == "GetObject"]) == 4
