"""The staging journal: exact round trip, any damage refused, atomic replace, kept aside."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ossmount.write.commit_types import UnreadStart
from ossmount.write.journal import (
    CorruptJournal,
    JournalRecord,
    PartRecord,
    WriteState,
    decode,
    encode,
    load,
    save_atomic,
)
from tests.unit.sealed_helpers import assert_cut_and_padded_refused

PS = 1 << 20


def uploading() -> JournalRecord:
    return JournalRecord(
        bucket="bkt",
        key="dir/a b é\udcff",  # a surrogate-escaped byte from a non-UTF-8 name survives
        size=3 * PS - 5,
        part_size=PS,
        state=WriteState.UPLOADING,
        mtime_ns=-5,
        mode=0o100640,
        base_etag='"ABC"',
        forbid_overwrite=True,
        upload_id="UPLOAD1",
        parts=(PartRecord(1, PS, 2**64 - 1, '"E1"'), PartRecord(3, PS - 5, 7, '"E3"')),
    )


def committed() -> JournalRecord:
    return JournalRecord(
        bucket="bkt",
        key="k",
        size=10,
        part_size=PS,
        state=WriteState.COMMITTED,
        sealed=True,
        result_etag='"X"',
        result_crc64=0,
    )


@pytest.mark.parametrize("rec", [uploading(), committed(), JournalRecord("b", "k", 0, PS)])
def test_round_trip(rec: JournalRecord) -> None:
    assert decode(encode(rec)) == rec


def test_every_truncation_and_extension_is_refused() -> None:
    assert_cut_and_padded_refused(encode(uploading()), decode, CorruptJournal)


def test_every_flipped_bit_is_refused() -> None:
    data = bytearray(encode(uploading()))
    for i in range(len(data)):
        for bit in (0, 7):
            data[i] ^= 1 << bit
            with pytest.raises(CorruptJournal):
                decode(bytes(data))
            data[i] ^= 1 << bit


@pytest.mark.parametrize(
    "change",
    [
        {"state": WriteState.DIRTY},  # parts and an upload id without an upload
        {"upload_id": ""},
        {"parts": (PartRecord(2, PS, 0, "e"), PartRecord(2, PS, 0, "e"))},
        {"parts": (PartRecord(1, PS + 1, 0, "e"),)},
        {"parts": (PartRecord(1, PS, 0, ""),)},
        {"parts": (PartRecord(10001, 1, 0, "e"),)},
        {"result_crc64": 5},
        {"key": ""},
        {"part_size": 0},
        {"unread": UnreadStart(PS + 1, 0, "k", '"E"', 3 * PS)},  # not whole parts
        {"unread": UnreadStart(PS, 0, "k", '"E"', PS - 1)},  # beyond its object
        {"unread": UnreadStart(PS, 0, "", '"E"', 3 * PS)},  # no object named
        {"unread": UnreadStart(PS, 0, "k", "", 3 * PS)},
        {"unread": UnreadStart(4 * PS, 0, "k", '"E"', 9 * PS), "sealed": True},  # > size
    ],
)
def test_inconsistent_records_cannot_be_built(change: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"."):  # each case has its own message
        dataclasses.replace(uploading(), **change)  # type: ignore[arg-type]


def test_committed_needs_its_result_and_the_seal() -> None:
    with pytest.raises(ValueError, match="exactly when COMMITTED"):
        dataclasses.replace(committed(), result_etag="")
    with pytest.raises(ValueError, match="is sealed"):
        dataclasses.replace(committed(), sealed=False)


def test_save_atomic_replaces_whole_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "f.journal"
    save_atomic(path, uploading())
    save_atomic(path, committed())
    assert load(path) == committed()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.journal"]


def test_save_failure_keeps_the_old_record(tmp_path: Path) -> None:
    path = tmp_path / "f.journal"
    save_atomic(path, uploading())
    (tmp_path / "f.journal.tmp").mkdir()  # the temp file cannot be created
    with pytest.raises(OSError, match="oss://bkt/k"):
        save_atomic(path, committed())
    assert load(path) == uploading()


def test_damaged_record_is_moved_aside_not_deleted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "f.journal"
    save_atomic(path, uploading())
    raw = path.read_bytes()
    path.write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))
    assert load(path) is None
    assert not path.exists()
    assert (tmp_path / "f.journal.corrupt").read_bytes()[:-1] == raw[:-1]
    assert "checksum mismatch" in caplog.text
    assert load(tmp_path / "absent.journal") is None


def test_keep_mode_round_trips_and_is_unset_in_records_written_before_it() -> None:
    kept = dataclasses.replace(uploading(), keep_mode=True)
    assert decode(encode(kept)).keep_mode
    assert encode(kept) != encode(uploading())  # one flag bit, no bytes of its own
    assert not decode(encode(uploading())).keep_mode


def test_an_unread_start_round_trips_and_is_absent_from_records_written_before_it() -> None:
    """An append's record names the object version its unread start is copied from."""
    unread = UnreadStart(2 * PS, 2**64 - 1, "logs/a é", '"SRC"', 2 * PS + 17)
    rec = dataclasses.replace(uploading(), unread=unread, sealed=True)
    assert decode(encode(rec)) == rec
    assert decode(encode(rec)).unread == unread
    assert decode(encode(uploading())).unread is None
    assert_cut_and_padded_refused(encode(rec), decode, CorruptJournal)


def test_the_seal_s_time_round_trips_after_every_other_field_and_is_absent_before_it() -> None:
    """The seal's time (UploadSession.overtaken) is the last field: with an unread start,
    times and owner before it, and none at all in a record written before it was kept."""
    unread = UnreadStart(2 * PS, 7, "k", '"SRC"', 2 * PS + 1)
    rec = dataclasses.replace(uploading(), unread=unread, sealed=True, atime_ns=-1, ctime_ns=3,
                              uid=5, sealed_ns=1_796_000_000_123_456_789)  # fmt: skip
    assert decode(encode(rec)) == rec
    alone = dataclasses.replace(committed(), sealed_ns=-(1 << 63))
    assert decode(encode(alone)) == alone
    assert decode(encode(uploading())).sealed_ns is None
    assert_cut_and_padded_refused(encode(rec), decode, CorruptJournal)
