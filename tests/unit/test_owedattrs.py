"""Attributes owed and sent a moment later in one copy (fs/owedattrs.py, KnownMeta's debts)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import cast

import pytest
import trio
import trio.testing

from ossmount.fs.attrstore import KnownMeta, store_attrs
from ossmount.fs.owedattrs import OwedAttrs
from ossmount.fs.shown import Posix, ShownAttrs
from ossmount.fs.shownfile import ShownSaver, read_shown
from ossmount.oss import NoSuchKey
from ossmount.oss._errors import OssError, PreconditionFailed
from ossmount.oss._write_types import CopyResult
from ossmount.oss._writes import OssWrites
from ossmount.oss.models import ObjectMeta

WROTE = {"x-oss-meta-mode": str(0o100600), "x-oss-meta-mtime": "1700000000"}


class FakeWrites:
    """The copies an `OssWrites` would send: recorded; `fail` raises for the next ones."""

    bucket = "bkt"

    def __init__(self) -> None:
        self.copies: list[tuple[str, str, dict[str, str]]] = []
        self.fail: Exception | None = None
        self.gate: trio.Event | None = None  # a copy waits for it when set
        self.new_etag: str | None = None

    async def copy_object(
        self, src: str, dst: str, *, if_match: str, meta: Mapping[str, str] | None = None
    ) -> CopyResult:
        assert src == dst
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        self.copies.append((src, if_match, dict(meta or {})))
        return CopyResult(self.new_etag or if_match, 0, None)


def _rig(delay_s: float = 1.0) -> tuple[FakeWrites, KnownMeta, OwedAttrs]:
    writes = FakeWrites()
    known = KnownMeta(clock=trio.current_time)
    known.wrote("f", "E1", WROTE)
    return writes, known, OwedAttrs(cast(OssWrites, writes), known, delay_s=delay_s)


async def _set(writes: FakeWrites, known: KnownMeta, posix: Posix) -> None:
    meta = ObjectMeta("f", 4, "E1", 1_700_000_000 * 10**9)
    stored = await store_attrs(cast(OssWrites, writes), meta, posix, known=known, request=True,
                               defer=True)  # fmt: skip
    assert stored is None, "owed: nothing stored yet"


async def test_attributes_set_in_a_row_go_out_in_one_copy_after_the_delay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    writes, known, owed = _rig()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(owed.run)
        await _set(writes, known, Posix(mtime_ns=1_500_000_000 * 10**9))
        start = trio.current_time()
        await trio.sleep(0.5)
        await _set(writes, known, Posix(mode=0o644))
        assert known.shown.get("f", "E1") is not None
        assert known.shown.get("f", "E1").mode == 0o100644, "shown at once"  # type: ignore[union-attr]
        assert writes.copies == []
        while not writes.copies:
            await trio.sleep(0.01)
        assert trio.current_time() - start == pytest.approx(1.0, abs=0.05), "from the first"
        nursery.cancel_scope.cancel()
    [(key, fence, headers)] = writes.copies
    assert (key, fence) == ("f", "E1")
    assert headers["x-oss-meta-mode"] == str(0o100644)
    assert headers["x-oss-meta-mtime"] == "1500000000"
    assert known.owed("f") is None
    assert known.headers("f", "E1") == headers, "stored: known as the object's"


async def test_fsync_sends_now_and_a_second_store_waits_for_the_running_copy() -> None:
    writes, known, owed = _rig(delay_s=600)
    await _set(writes, known, Posix(mode=0o640))
    writes.gate = trio.Event()
    done: list[str] = []

    async def fsync(name: str) -> None:
        await owed.store("f")
        done.append(name)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fsync, "first")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(fsync, "second")
        await trio.testing.wait_all_tasks_blocked()
        assert done == [], "both wait for the one copy"
        writes.gate.set()
    assert sorted(done) == ["first", "second"]
    assert len(writes.copies) == 1


async def test_a_rename_takes_the_debt_and_the_timer_then_sends_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    writes, known, owed = _rig()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(owed.run)
        await _set(writes, known, Posix(mode=0o644))
        etag, headers = known.settle("f") or ("", {})  # what fs/filerename.py does
        assert (etag, headers["x-oss-meta-mode"]) == ("E1", str(0o100644))
        known.moved("f", "g", "E1")
        await trio.sleep(5)
        nursery.cancel_scope.cancel()
    assert writes.copies == []


@pytest.mark.parametrize(
    ("fail", "level", "said"),
    [
        (PreconditionFailed(412, "PreconditionFailed", "etag", bucket="bkt", key="f"),
         logging.INFO, "oss://bkt/f: replaced or deleted"),
        (NoSuchKey(404, "NoSuchKey", "gone", bucket="bkt", key="f"),
         logging.INFO, "oss://bkt/f: replaced or deleted"),
        (OssError(500, "InternalError", "boom", bucket="bkt", key="f"),
         logging.WARNING, "oss://bkt/f: storing its mode/owner/times failed"),
    ],
)  # fmt: skip
async def test_a_copy_that_fails_is_logged_naming_the_object_and_stops_the_showing(
    caplog: pytest.LogCaptureFixture, fail: OssError, level: int, said: str
) -> None:
    """Replaced or deleted meanwhile (INFO: its new writer's metadata stands), or failed
    (WARNING): either way the mount no longer shows attributes OSS does not have."""
    writes, known, owed = _rig(delay_s=600)
    await _set(writes, known, Posix(mode=0o644))
    writes.fail = fail
    with caplog.at_level(logging.INFO, "ossmount.fs.owedattrs"):
        await owed.store_all()
    [record] = [r for r in caplog.records if r.name == "ossmount.fs.owedattrs"]
    assert (record.levelno, said in record.getMessage()) == (level, True)
    assert known.shown.get("f", "E1") is None, "no longer shown as stored"
    assert known.owed_keys() == set()
    await owed.store("f")  # nothing owed any more: no copy, no error
    assert writes.copies == []


async def test_a_copy_that_changes_the_etag_is_told() -> None:
    writes, known, owed = _rig(delay_s=600)
    told: list[str] = []
    owed.on_new_etag = told.append
    writes.new_etag = "E2"
    await _set(writes, known, Posix(mode=0o644))
    await owed.store("f")
    assert told == ["f"]
    assert known.headers("f", "E2") is not None
    assert known.shown.get("f", "E2") is not None


async def test_a_debt_set_again_while_its_copy_runs_is_sent_after_it() -> None:
    writes, known, owed = _rig(delay_s=600)
    await _set(writes, known, Posix(mode=0o644))
    writes.gate = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(owed.store, "f")
        await trio.testing.wait_all_tasks_blocked()
        await _set(writes, known, Posix(mtime_ns=1_400_000_000 * 10**9))
        writes.gate.set()
    assert known.owed("f") is not None, "the newer debt is still owed"
    await owed.store("f")
    sent = [(c[2]["x-oss-meta-mode"], c[2]["x-oss-meta-mtime"]) for c in writes.copies]
    assert sent == [(str(0o100644), "1700000000"), (str(0o100644), "1400000000")], (
        "the second built on the first, running when it was set"
    )


async def test_the_saved_table_leaves_out_what_is_owed(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "shown.attrs"
    shown = ShownAttrs()
    saver = ShownSaver(shown, path)
    known = KnownMeta(shown=shown)
    saver.leave_out = known.owed_keys
    known.wrote("sent", "E1", WROTE)
    known.wrote("f", "E1", WROTE)
    known.owe("f", "E1", {**WROTE, "x-oss-meta-mode": str(0o100644)})
    await saver.save()
    assert [key for key, _ in read_shown(path)] == ["sent"], "a crash must not show it as stored"
    etag, headers = known.settle("f") or ("", {})
    known.wrote("f", etag, headers, already_shown=True)  # sent: the table itself unchanged
    await saver.save()
    assert [key for key, _ in read_shown(path)] == ["sent", "f"], "saved once sent"


async def test_without_a_delay_nothing_is_owed() -> None:
    writes, known, _ = _rig()
    assert OwedAttrs(cast(OssWrites, writes), known, delay_s=0).defers is False


async def test_many_debts_go_oldest_first_at_most_parallel_at_a_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    writes = FakeWrites()
    known = KnownMeta(clock=trio.current_time)
    owed = OwedAttrs(cast(OssWrites, writes), known, delay_s=1.0, parallel=4)
    running, most = 0, 0
    real = writes.copy_object

    async def counted(src: str, dst: str, **kwargs: object) -> CopyResult:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await trio.sleep(0.01)
        running -= 1
        return await real(src, dst, **kwargs)  # type: ignore[arg-type]

    writes.copy_object = counted  # type: ignore[method-assign]
    keys = [f"k{i:02d}" for i in range(40)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(owed.run)
        for key in keys:
            known.wrote(key, "E", WROTE)
            known.owe(key, "E", {**WROTE, "x-oss-meta-mode": str(0o100644)})
            await trio.sleep(0.001)
        while len(writes.copies) < len(keys):
            await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert most == 4
    assert [c[0] for c in writes.copies][:4] == keys[:4], "oldest first"
    assert sorted(c[0] for c in writes.copies) == keys
    assert known.owed_keys() == set()


def test_a_debt_set_while_a_rename_copied_moves_with_the_object_still_owed() -> None:
    known = KnownMeta()
    known.wrote("old", "E1", WROTE)
    taken = known.settle("old")  # nothing owed yet: the rename copies as it is
    assert taken is None
    known.owe("old", "E1", {**WROTE, "x-oss-meta-mode": str(0o100644)})  # a chmod meanwhile
    known.moved("old", "new", "E1")
    assert known.owed("old") is None
    assert known.owed("new") == ("E1", {**WROTE, "x-oss-meta-mode": str(0o100644)})
    assert known.shown.get("new", "E1").mode == 0o100644  # type: ignore[union-attr]
