"""Checkpoint encoding: round trips, and every truncation and bit flip is caught."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import struct
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ossmount.cache.checkpoint import (
    FORMAT_VERSION,
    MAGIC,
    Checkpoint,
    EntryState,
    decode,
    encode,
    load,
    save_atomic,
    save_first,
)
from ossmount.cache.errors import CacheFull, CorruptCheckpoint
from ossmount.cache.ranges import HEAD_PART_SIZE, PartLayout
from tests.unit.sealed_helpers import assert_cut_and_padded_refused


def small() -> Checkpoint:
    return Checkpoint(
        bucket="bkt",
        key="a/é\x00b",
        etag='"E1"',
        size=25,
        mtime_ns=1_700_000_000_000_000_000,
        server_crc64=0xFFFF_FFFF_FFFF_FFFF,
        part_size=10,
        part_crcs={0: 1, 2: 0xDEAD_BEEF},
    )


@st.composite
def checkpoints(draw: st.DrawFn) -> Checkpoint:
    size = draw(st.integers(0, 1 << 40))
    part_size = draw(st.integers(1, 1 << 30))
    count = PartLayout(size, part_size).count
    indices = draw(st.sets(st.integers(0, max(count - 1, 0)), max_size=min(count, 50)))
    crcs = {i: draw(st.integers(0, (1 << 64) - 1)) for i in indices if i < count}
    server = draw(st.none() | st.integers(0, (1 << 64) - 1))
    complete = len(crcs) == count
    states = [EntryState.PARTIAL]
    if complete:
        states.append(EntryState.UNVERIFIABLE if server is None else EntryState.VERIFIED)
    return Checkpoint(
        bucket=draw(st.from_regex(r"[a-z0-9][a-z0-9-]{2,62}", fullmatch=True)),
        key=draw(st.text(min_size=1, max_size=300)),
        etag=draw(st.text(max_size=40)),
        size=size,
        mtime_ns=draw(st.integers(-(1 << 63), (1 << 63) - 1)),
        server_crc64=server,
        part_size=part_size,
        part_crcs=crcs,
        state=draw(st.sampled_from(states)),
    )


@given(checkpoints())
def test_round_trip(cp: Checkpoint) -> None:
    assert decode(encode(cp)) == cp


def test_contiguous_offset_and_complete() -> None:
    cp = small()
    assert cp.contiguous_offset == 10
    assert not cp.complete
    full = replace(cp, part_crcs={0: 1, 1: 2, 2: 3})
    assert full.contiguous_offset == 25
    assert full.complete


def test_truncation_at_every_byte_is_detected() -> None:
    assert_cut_and_padded_refused(encode(small()), decode, CorruptCheckpoint)


def test_every_single_bit_flip_is_detected() -> None:
    data = encode(small())
    for bit in range(len(data) * 8):
        damaged = bytearray(data)
        damaged[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(CorruptCheckpoint):
            decode(bytes(damaged))


@given(checkpoints(), st.data())
def test_random_bit_flips_on_random_checkpoints(cp: Checkpoint, data: st.DataObject) -> None:
    raw = bytearray(encode(cp))
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(CorruptCheckpoint):
        decode(bytes(raw))


def _reseal(head: bytes) -> bytes:
    """A structurally damaged checkpoint with a valid digest: only the field checks stand."""
    return head + hashlib.sha256(head).digest()


def test_wrong_magic_and_version_are_rejected() -> None:
    data = encode(small())
    body = data[:-32]
    with pytest.raises(CorruptCheckpoint, match="magic"):
        decode(_reseal(b"XXXXXXXX" + body[8:]))
    with pytest.raises(CorruptCheckpoint, match="version"):
        decode(_reseal(body[:8] + struct.pack(">H", FORMAT_VERSION + 1) + body[10:]))
    assert body.startswith(MAGIC)


def test_head_part_size_is_pinned_to_the_format_version() -> None:
    """The part layout is not stored: a new head size must come with a new format version,
    or an older checkpoint's part map would name other bytes than the ones it vouches for."""
    assert (FORMAT_VERSION, HEAD_PART_SIZE) == (2, 256 * 1024)


def test_a_checkpoint_of_the_previous_format_is_discarded_not_misread(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cp = Checkpoint(
        bucket="b", key="k", etag='"e"', size=3 << 20, mtime_ns=0, server_crc64=None,
        part_size=1 << 20, part_crcs={0: 1, 1: 2},
    )  # fmt: skip
    body = encode(cp)[:-32]
    path = tmp_path / "old.ckpt"
    path.write_bytes(_reseal(body[:8] + struct.pack(">H", 1) + body[10:]))
    with caplog.at_level(logging.WARNING):
        assert load(path, bucket="b", key="k") is None
    assert "format 1 is not 2" in caplog.text
    assert not path.exists()


def test_inconsistent_content_with_valid_digest_is_rejected() -> None:
    # A part index beyond the part count, sealed with a correct digest.
    cp = small()
    payload = bytearray(encode(cp)[16:-32])
    # last part record: index u64, crc u64 -> set index to 99
    payload[-16:-8] = struct.pack(">Q", 99)
    head = struct.pack(">8sHHI", MAGIC, FORMAT_VERSION, 0, len(payload)) + payload
    with pytest.raises(CorruptCheckpoint, match="out of range"):
        decode(_reseal(head))


def test_invalid_states_cannot_be_built() -> None:
    base = small()
    with pytest.raises(ValueError, match="VERIFIED"):
        replace(base, state=EntryState.VERIFIED)
    with pytest.raises(ValueError, match="CORRUPT"):
        replace(base, state=EntryState.CORRUPT)
    with pytest.raises(ValueError, match="UNVERIFIABLE"):
        replace(base, part_crcs={0: 0, 1: 0, 2: 0}, state=EntryState.UNVERIFIABLE)
    with pytest.raises(ValueError, match="out of range"):
        replace(base, part_crcs={3: 0})


def test_save_and_load(tmp_path: Path) -> None:
    path = tmp_path / "x.ckpt"
    assert load(path) is None
    save_atomic(path, small())
    assert load(path) == small()
    assert not (tmp_path / "x.ckpt.tmp").exists()
    newer = replace(small(), part_crcs={0: 1, 1: 5, 2: 7})
    save_atomic(path, newer)
    assert load(path) == newer


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "garbage"])
def test_load_discards_damaged_file_with_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    path = tmp_path / "x.ckpt"
    save_atomic(path, small())
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[40] ^= 0x10
    elif damage == "empty":
        data = bytearray()
    else:
        data = bytearray(os.urandom(200))
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="ossmount.cache.checkpoint"):
        assert load(path, bucket="bkt", key="a/b") is None
    assert not path.exists()
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert str(path) in message
    assert "bkt" in message
    assert "a/b" in message


def test_save_on_full_disk_raises_cache_full_and_keeps_old(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "x.ckpt"
    save_atomic(path, small())
    real_write = os.write

    def full(fd: int, data: bytes | memoryview) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    newer = replace(small(), part_crcs={0: 9})
    with pytest.raises(CacheFull) as info:
        save_atomic(path, newer)
    monkeypatch.setattr(os, "write", real_write)
    assert info.value.bucket == "bkt"
    assert info.value.key == small().key
    assert info.value.path == path
    assert "No space" in str(info.value)
    assert load(path) == small()
    assert not (tmp_path / "x.ckpt.tmp").exists()


def test_a_first_checkpoint_is_written_in_place_and_a_torn_one_is_discarded(
    tmp_path: Path,
) -> None:
    path = tmp_path / "obj.ckpt"
    cp = small()
    save_first(path, cp)
    assert load(path) == cp
    assert sorted(p.name for p in tmp_path.iterdir()) == ["obj.ckpt"]  # no temp file
    # A crash while it was written leaves a torn file: never trusted, deleted.
    data = path.read_bytes()
    for cut in (1, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        assert load(path) is None
        assert not path.exists()


def test_a_first_save_onto_an_existing_checkpoint_replaces_it_atomically(
    tmp_path: Path,
) -> None:
    path = tmp_path / "obj.ckpt"
    save_atomic(path, small())
    newer = replace(small(), part_crcs={})
    save_first(path, newer)
    assert load(path) == newer
