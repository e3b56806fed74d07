"""Pure parts of the emulator: range rules, synthetic bodies and their CRC, list tokens."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ossmount.crc64 import crc64
from ossmount.emulator.listing import decode_token, encode_token
from ossmount.emulator.objects import parse_range
from ossmount.emulator.store import BLOCK, SyntheticBody, valid_bucket_name, valid_key
from ossmount.emulator.xml import OssError


@pytest.mark.parametrize(
    ("header", "size", "standard", "expect"),
    [
        (None, 10, False, None),
        ("bytes=0-0", 10, False, (0, 0)),
        ("bytes=-3", 10, False, (7, 9)),
        ("bytes=3-", 10, False, (3, 9)),
        ("bytes=0-10", 10, False, None),
        ("bytes=0-10", 10, True, (0, 9)),
        ("bytes=10-", 10, False, None),
        ("bytes=-0", 10, False, None),
        ("bytes=0-0", 0, False, None),
        ("junk", 10, True, None),
    ],
)
def test_parse_range(
    header: str | None, size: int, standard: bool, expect: tuple[int, int] | None
) -> None:
    assert parse_range(header, size, standard) == expect


@pytest.mark.parametrize("header", ["bytes=10-", "bytes=5-2", "bytes=-0", "bytes=0-1,3-4"])
def test_parse_range_standard_416(header: str) -> None:
    with pytest.raises(OssError) as ei:
        parse_range(header, 10, True)
    assert (ei.value.status, ei.value.code) == (416, "InvalidRange")


@given(st.integers(0, 3 * BLOCK + 77), st.integers(0, 5))
def test_synthetic_crc_matches_bytes(size: int, seed: int) -> None:
    body = SyntheticBody(seed, size)
    data = body.read(0, size)
    assert len(data) == size
    assert body.crc() == crc64(data)


@given(st.integers(0, 2 * BLOCK), st.integers(0, BLOCK))
def test_synthetic_ranges_are_slices(offset: int, length: int) -> None:
    body = SyntheticBody(3, 3 * BLOCK)
    whole = body.read(0, 3 * BLOCK)
    assert body.read(offset, length) == whole[offset : offset + length]


def test_synthetic_blocks_differ() -> None:
    body = SyntheticBody(9, 8 * BLOCK)
    blocks = {body.read(i * BLOCK, BLOCK) for i in range(8)}
    assert len(blocks) >= 7  # rotations collide rarely; neighbours never repeat a block


@given(st.sampled_from("kp"), st.text())
def test_tokens_roundtrip(kind: str, value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return
    assert decode_token(encode_token(kind, value)) == (kind, value)


def test_names() -> None:
    assert valid_bucket_name("demo")
    assert not valid_bucket_name("-demo")
    assert not valid_bucket_name("De")
    assert not valid_bucket_name("a" * 64)
    assert valid_key("a//b")
    assert valid_key("..")
    assert not valid_key("/a")
    assert not valid_key("\\a")
    assert not valid_key("a\x00b")
    assert not valid_key("é" * 512)
