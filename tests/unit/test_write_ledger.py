"""The ledger of our multipart uploads: durable appends, torn lines forgotten, atomic rewrite."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ossmount.write.ledger import UploadLedger


def test_add_entries_rewrite(tmp_path: Path) -> None:
    ledger = UploadLedger(tmp_path / "uploads.ledger")
    assert ledger.entries() == {}
    ledger.add("U1", "dir/a\tb é")
    ledger.add("U2", "k")
    assert ledger.entries() == {"U1": "dir/a\tb é", "U2": "k"}
    assert ledger.active == {"U1", "U2"}
    ledger.rewrite({"U2": "k"})
    assert UploadLedger(ledger.path).entries() == {"U2": "k"}


def test_torn_or_damaged_lines_are_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = UploadLedger(tmp_path / "uploads.ledger")
    ledger.add("U1", "a")
    ledger.add("U2", "b")
    raw = ledger.path.read_bytes()
    first, second = raw.split(b"\n")[:2]
    damaged = first.replace(b"U1", b"U9") + b"\n" + second[:-3]  # flipped id, torn tail
    ledger.path.write_bytes(damaged)
    assert ledger.entries() == {}
    assert "damaged line" in caplog.text


def test_unusable_ids_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unusable upload id"):
        UploadLedger(tmp_path / "l").add("a\tb", "k")


def test_intents_are_kept_apart_from_upload_ids_and_survive_a_rewrite_only_when_given(
    tmp_path: Path,
) -> None:
    ledger = UploadLedger(tmp_path / "uploads.ledger")
    before = time.time_ns()
    ledger.intend("dir/a é")
    ledger.add("U1", "dir/a é")
    ledger.intend("q/b")
    assert ledger.entries() == {"U1": "dir/a é"}, "an intent is no upload id"
    intents = ledger.intents()
    assert [key for key, _ in intents] == ["dir/a é", "q/b"]
    assert all(before <= ns <= time.time_ns() for _, ns in intents)
    ledger.rewrite({"U1": "dir/a é"}, intents[1:])
    again = UploadLedger(ledger.path)
    assert (again.entries(), again.intents()) == ({"U1": "dir/a é"}, intents[1:])
    ledger.rewrite({})
    assert UploadLedger(ledger.path).intents() == []


def test_an_id_that_looks_like_an_intent_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unusable upload id"):
        UploadLedger(tmp_path / "l").add("@123", "k")
