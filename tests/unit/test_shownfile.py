"""The attribute table kept across remounts (fs/shownfile.py): round trip, damage, saving."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import pytest
import trio

from ossmount.fs.shown import Posix, ShownAttrs
from ossmount.fs.shownfile import (
    SHOWN_FORMAT,
    ShownFileCorrupt,
    ShownSaver,
    decode_shown,
    encode_shown,
    load_shown,
)
from ossmount.sealed import pack_str

T = 1_700_000_000_123_456_789
ENTRIES = {
    "bin/tool": ('"A1"', Posix(0o100755, 1000, 1000, T, None, None)),
    "notes.txt": ('"B2"', Posix(0o100640, None, None, T, T, T)),
    "times": ('"C3"', Posix(None, None, None, T, T + 1, T + 2)),
    "d/": ("", Posix(0o40750, 0, 0, T)),  # a marker: no ETag compared
    "odd \udcff name/\u00e9": ('"D4-2"', Posix(0o100600)),
}


def _table(capacity: int = 100_000) -> ShownAttrs:
    table = ShownAttrs(capacity)
    for key, (etag, posix) in ENTRIES.items():
        table.learn(key, etag, posix)
    return table


def test_a_saved_table_reads_back_entry_for_entry_in_order(tmp_path: Path) -> None:
    path = tmp_path / "shown.attrs"
    path.write_bytes(encode_shown(_table().packed()))
    loaded = load_shown(path)
    for key, (etag, posix) in ENTRIES.items():
        assert loaded.get(key, etag or None) == posix, key
        assert loaded.get(key, '"other"') is None or not etag, key
    assert [key for key, _ in loaded.packed()] == list(ENTRIES)
    small = load_shown(path, capacity=2)  # a smaller table keeps the most recently learnt
    assert [key for key, _ in small.packed()] == list(ENTRIES)[-2:]


def test_an_entry_a_head_taught_keeps_its_last_modified_fence(tmp_path: Path) -> None:
    table = _table()
    table.learn("seen", '"S"', Posix(0o100600, None, None, T), seen_ns=T)
    path = tmp_path / "shown.attrs"
    path.write_bytes(encode_shown(table.packed()))
    loaded = load_shown(path)
    assert loaded.get("seen", '"S"', T) == Posix(0o100600, None, None, T)
    assert loaded.get("seen", '"S"', T + 10**9) is None


def test_a_missing_file_is_an_empty_table(tmp_path: Path) -> None:
    assert len(load_shown(tmp_path / "none")) == 0


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[:-1],  # truncated
        lambda b: b[: len(b) // 2],
        lambda b: b + b"\0",  # trailing junk
        lambda b: b[:40] + bytes([b[40] ^ 1]) + b[41:],  # a flipped bit
        lambda b: b"OSSMCKPT" + b[8:],  # another record kind
        lambda b: b"",
    ],
)
def test_a_damaged_file_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: object
) -> None:
    path = tmp_path / "shown.attrs"
    path.write_bytes(damage(encode_shown(_table().packed())))  # type: ignore[operator]
    with caplog.at_level(logging.WARNING):
        assert len(load_shown(path)) == 0
    assert str(path) in caplog.text


def test_an_entry_that_does_not_unpack_is_corrupt_even_with_a_good_digest() -> None:
    for value in (b"", b"\x80" + bytes(27), b"\x01" + bytes(5)):
        payload = struct.pack(">I", 1) + pack_str("k") + struct.pack(">H", len(value)) + value
        with pytest.raises(ShownFileCorrupt, match="malformed entry for key 'k'"):
            decode_shown(SHOWN_FORMAT.seal(payload))
    payload = struct.pack(">I", 0) + b"x"
    with pytest.raises(ShownFileCorrupt, match="after its last entry"):
        decode_shown(SHOWN_FORMAT.seal(payload))


async def test_the_saver_writes_only_when_the_table_changed(tmp_path: Path) -> None:
    path = tmp_path / "shown.attrs"
    table = ShownAttrs()
    saver = ShownSaver(table, path)
    await saver.save()
    assert not path.exists(), "nothing learnt, nothing written"
    table.learn("a", '"E"', Posix(0o100700))
    await saver.save()
    assert load_shown(path).get("a", '"E"') == Posix(0o100700)
    stamp = path.stat().st_mtime_ns
    path.unlink()
    await saver.save()
    assert not path.exists(), "unchanged since the last save"
    table.forget("a")
    await saver.save()
    assert len(load_shown(path)) == 0
    assert stamp  # the first save happened


async def test_the_saver_runs_every_interval_and_overlapping_saves_do_not_collide(
    tmp_path: Path,
) -> None:
    path = tmp_path / "shown.attrs"
    table = ShownAttrs()
    saver = ShownSaver(table, path)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(saver.run, 0.05)
        table.learn("a", '"E"', Posix(0o100700))
        while not path.exists():
            await trio.sleep(0.01)
        async with trio.open_nursery() as saves:
            for i in range(20):
                table.learn(f"k{i}", '"F"', Posix(0o100600 + i))
                saves.start_soon(saver.save)
                saves.start_soon(saver.save)
        nursery.cancel_scope.cancel()
    await saver.save()
    assert len(load_shown(path)) == 21
    assert not path.with_name("shown.attrs.tmp").exists()


async def test_a_save_that_fails_is_logged_once_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    table = ShownAttrs()
    saver = ShownSaver(table, tmp_path / "missing-dir" / "shown.attrs")
    with caplog.at_level(logging.WARNING):
        for i in range(3):
            table.learn(f"k{i}", '"E"', Posix(0o100700))
            await saver.save()
    assert caplog.text.count("cannot save the attribute table") == 1
    (tmp_path / "missing-dir").mkdir()
    await saver.save()
    assert len(load_shown(tmp_path / "missing-dir" / "shown.attrs")) == 3
