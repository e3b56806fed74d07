"""The log of owed attributes (write/owedlog.py) and what KnownMeta tells it (fs/attrstore.py)."""

from __future__ import annotations

import logging
import zlib
from pathlib import Path
from typing import cast

import pytest
import trio
import trio.testing

from ossmount.fs.attrstore import KnownMeta
from ossmount.fs.owedattrs import OwedAttrs
from ossmount.fs.recovery import _with_attrs
from ossmount.oss._writes import OssWrites
from ossmount.write import owedlog
from ossmount.write.journal import JournalRecord
from ossmount.write.owedlog import STAGED, OwedLog, split_owed
from tests.unit.test_owedattrs import FakeWrites

MODE = {"x-oss-meta-mode": str(0o100600)}
TIMES = {"x-oss-meta-mode": str(0o100644), "x-oss-meta-mtime": "1500000000"}


def _log(tmp_path: Path) -> OwedLog:
    return OwedLog.resume(tmp_path / "owed.attrs")[0]


def test_a_later_line_of_a_key_replaces_earlier_ones_and_paid_ones_are_gone(
    tmp_path: Path,
) -> None:
    book = _log(tmp_path)
    book.owe("a", '"E1"', MODE)
    book.owe("b", '"E2"', MODE)
    book.owe("a", '"E1"', TIMES)
    book.paid("b")
    book.paid("never owed")
    assert OwedLog.outstanding(book.path) == {"a": ('"E1"', TIMES)}
    assert len(book) == 1


def test_nothing_owed_leaves_an_empty_file_that_appends_start_again(tmp_path: Path) -> None:
    book = _log(tmp_path)
    book.owe("a", "E", MODE)
    book.paid("a")
    assert book.path.stat().st_size == 0
    book.owe("c", "E", MODE)
    assert OwedLog.outstanding(book.path) == {"c": ("E", MODE)}


def test_any_key_round_trips(tmp_path: Path) -> None:
    """Keys are 1023 bytes of anything: tabs, newlines, quotes, lone surrogates (undecodable
    bytes of a name), non-ASCII."""
    keys = ["t\tab", "new\nline", 'qu"ote\\', "bad\udc80byte", "日本/語", " "]
    book = _log(tmp_path)
    for key in keys:
        book.owe(key, '"E"', {"x-oss-meta-mtime": "1", "x-oss-meta-odd": "\t\n\u00e9"})
    assert set(OwedLog.outstanding(book.path)) == set(keys)


def test_a_damaged_or_torn_line_is_skipped_with_a_warning_and_forgets_only_its_event(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    book = _log(tmp_path)
    book.owe("a", "E", MODE)
    book.owe("b", "E", MODE)
    book.owe("c", "E", MODE)
    data = bytearray(book.path.read_bytes())
    first_end = data.index(b"\n")
    data[first_end - 12] ^= 0x01  # a flipped bit in the first line's JSON
    book.path.write_bytes(bytes(data[:-7]))  # and the last line torn by a crash mid-append
    with caplog.at_level(logging.WARNING):
        assert OwedLog.outstanding(book.path) == {"b": ("E", MODE)}
    assert len([r for r in caplog.records if "damaged line" in r.getMessage()]) == 2


def test_lines_that_are_whole_but_not_events_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "owed.attrs"
    lines = [b'["o","k","E",{"m":1}]', b'["x","k"]', b'{"o":1}', b'["p",3]']
    path.write_bytes(b"".join(b"%s\t%08x\n" % (s, zlib.crc32(s)) for s in lines))
    assert OwedLog.outstanding(path) == {}


def test_it_is_compacted_to_the_debts_once_it_grows_past_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(owedlog, "COMPACT_BYTES", 4096)
    book = _log(tmp_path)
    book.owe("stays", "E", MODE)
    for i in range(500):
        book.owe(f"k{i}", "E", MODE)
        book.paid(f"k{i}")
        assert book.path.stat().st_size <= 4096
    assert OwedLog.outstanding(book.path) == {"stays": ("E", MODE)}


def test_resume_returns_what_was_owed_and_keeps_it_until_paid(tmp_path: Path) -> None:
    book = _log(tmp_path)
    book.owe("a", "E", MODE)
    book.owe("b", "E", MODE)
    book.paid("a")
    book.close()
    again, owed = OwedLog.resume(book.path)
    assert owed == {"b": ("E", MODE)}
    assert OwedLog.outstanding(book.path) == owed, "compacted, still there"
    again.paid("b")
    assert OwedLog.outstanding(book.path) == {}


def test_a_log_that_cannot_be_written_warns_once_and_raises_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """At mount time a cache dir that refuses files fails the start (mount.py); a failure
    later costs only the log: the debts are still sent."""
    book = _log(tmp_path)
    book.close()
    (tmp_path / "owed.attrs").unlink()
    (tmp_path / "owed.attrs").mkdir()  # neither appendable nor replaceable
    with caplog.at_level(logging.WARNING):
        book.owe("a", "E", MODE)
        book.owe("b", "E", MODE)
        book.paid("a")
        book.paid("b")
    assert len([r for r in caplog.records if "cannot keep owed" in r.getMessage()]) == 1
    with pytest.raises(IsADirectoryError):
        OwedLog.resume(tmp_path / "owed.attrs")


def _known(tmp_path: Path) -> tuple[KnownMeta, Path]:
    known = KnownMeta()
    known.owed_log = _log(tmp_path)
    return known, known.owed_log.path


def test_a_debt_taken_to_be_sent_stays_logged_until_it_is_stored(tmp_path: Path) -> None:
    known, path = _known(tmp_path)
    known.wrote("f", "E1", MODE)
    assert OwedLog.outstanding(path) == {}, "a commit owes nothing"
    known.owe("f", "E1", TIMES)
    assert known.settle("f") == ("E1", TIMES)
    assert OwedLog.outstanding(path) == {"f": ("E1", TIMES)}, "a crash mid-copy loses nothing"
    known.wrote("f", "E1", TIMES)
    assert OwedLog.outstanding(path) == {}


def test_forgetting_a_key_pays_its_debt_unless_told_to_keep_it(tmp_path: Path) -> None:
    known, path = _known(tmp_path)
    known.owe("gone", "E", MODE)
    known.owe("cut", "E", MODE)
    known.forget("gone")  # deleted: nothing to send
    known.forget_version("cut", "E", paid=False)  # a copy cut short by unmount
    assert OwedLog.outstanding(path) == {"cut": ("E", MODE)}
    known.owe("cut", "E2", MODE)
    known.forget_version("cut", "E")  # known as another version by now: kept
    assert OwedLog.outstanding(path) == {"cut": ("E2", MODE)}


def test_a_move_pays_the_old_key_and_a_debt_set_meanwhile_moves_along(tmp_path: Path) -> None:
    known, path = _known(tmp_path)
    known.owe("old", "E", MODE)
    known.settle("old")  # taken by the rename's copy
    known.owe("old", "E", TIMES)  # a chmod while it ran
    known.moved("old", "new", "E9")
    assert OwedLog.outstanding(path) == {"new": ("E9", TIMES)}


async def test_a_copy_cut_short_by_the_end_of_the_mount_leaves_its_debt_for_the_next(
    tmp_path: Path,
) -> None:
    """Unmount gives the owed copies a bounded time (mount.py `_store_owed`); one still
    running then is cancelled: the mount stops showing it, the log keeps it."""
    known, path = _known(tmp_path)
    writes = FakeWrites()
    writes.gate = trio.Event()  # the copy never answers
    owed = OwedAttrs(cast(OssWrites, writes), known, delay_s=600)
    known.wrote("f", "E1", MODE)
    known.owe("f", "E1", TIMES)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(owed.store_all)
        await trio.testing.wait_all_tasks_blocked()  # the copy is sent, and waits
        nursery.cancel_scope.cancel()
    assert known.owed("f") is None
    assert known.headers("f", "E1") is None
    assert OwedLog.outstanding(path) == {"f": ("E1", TIMES)}


def test_a_staged_file_s_debt_is_kept_apart_from_its_key_s_version_debt(
    tmp_path: Path,
) -> None:
    """Staging.attrs_set logs under STAGED + the journal's name, with the key in place of the
    ETag: a version of the same key owing attributes (and paying them) leaves it alone, and
    split_owed tells the two apart for the next mount."""
    book = _log(tmp_path)
    book.owe(STAGED + "abc.data.journal", "f", MODE)
    book.owe("f", '"E"', TIMES)
    owed = OwedLog.outstanding(book.path)
    assert split_owed(owed) == ({"f": ('"E"', TIMES)}, {"abc.data.journal": ("f", MODE)})
    book.paid("f")  # the version's copy landed
    assert split_owed(OwedLog.outstanding(book.path))[1] == {"abc.data.journal": ("f", MODE)}
    book.paid(STAGED + "abc.data.journal")
    assert OwedLog.outstanding(book.path) == {}


def test_attributes_set_after_the_seal_are_laid_over_the_record() -> None:
    record = JournalRecord(bucket="b", key="k", size=3, part_size=1 << 20, mtime_ns=5,
                           mode=0o100644, keep_mode=True, uid=1, atime_ns=7)  # fmt: skip
    later = {"x-oss-meta-mode": str(0o100600), "x-oss-meta-mtime": "1500000000",
             "x-oss-meta-gid": "9"}  # fmt: skip
    got = _with_attrs(record, later)
    assert (got.mode, got.keep_mode, got.mtime_ns) == (0o100600, False, 1_500_000_000 * 10**9)
    assert (got.uid, got.gid, got.atime_ns, got.ctime_ns) == (1, 9, 7, None), "the rest kept"
    assert (got.key, got.size) == ("k", 3)
