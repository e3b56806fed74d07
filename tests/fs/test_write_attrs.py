"""What a `--rw` mount shows of the modes, owners and mtimes it stored (fs/shown.py), and where
setattr keeps them (fs/setattrs.py, fs/dirattrs.py). In-process over the emulator
(tests/fs/test_writes.py's rig); requests counted in the emulator's log."""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

from ossmount.emulator import objects as emu_objects
from ossmount.fs.shown import STORED_SLACK_NS, Posix, ShownAttrs, posix_of
from ossmount.tree.inodes import ROOT_INODE
from ossmount.write.journal import JournalRecord, decode, encode
from tests.fs.conftest import LOOK
from tests.fs.test_append_unread import rig
from tests.fs.test_writes import BUCKET, WriteRig, emu, rw

__all__ = ["emu", "rig", "rw"]

CREATE = os.O_WRONLY | os.O_CREAT
T = 1_600_000_000_000_000_000
S = 1_000_000_000


def _ops(rig: WriteRig, key: str) -> list[str]:
    return [r.op for r in rig.emu.requests if r.key == key]


def _meta(rig: WriteRig, key: str) -> dict[str, str]:
    obj = rig.emu.head(BUCKET, key)
    assert obj is not None
    return dict(obj.meta)


def _commit_mtime(meta: dict[str, str]) -> int:
    """Pop the x-oss-meta-mtime of `meta`: a commit's time (of about now, in nanoseconds),
    which a commit whose upload it initiates stores (Staging._commit_owing)."""
    sec, _, frac = meta.pop("x-oss-meta-mtime").partition(".")
    assert abs(int(sec) - time.time()) < 300, sec
    return int(sec) * 10**9 + int(frac or 0)


def _stamps(meta: dict[str, str]) -> tuple[str, str]:
    """Pop the x-oss-meta-atime and -ctime of `meta`: whole seconds of about now, as a create,
    a commit, a chmod or a mkdir stores them (fs/stamps.py)."""
    atime, ctime = meta.pop("x-oss-meta-atime"), meta.pop("x-oss-meta-ctime")
    for stamp in (atime, ctime):
        assert stamp.isdigit(), stamp
        assert abs(int(stamp) - time.time()) < 300, stamp
    return atime, ctime


async def _new(rig: WriteRig, name: str, mode: int, uid: int | None = None) -> int:
    opened, attr = await rig.fs.create(ROOT_INODE, name, CREATE, mode, uid, uid)
    assert stat.S_IMODE(attr.mode) == mode, "the create's mode, shown at once"
    rig.fs.write(opened.fh, 0, b"data")
    await rig.fs.flush(opened.fh)
    await rig.fs.release(opened.fh)
    return attr.inode


async def test_an_unlink_waits_for_the_owed_copy_in_flight_so_it_cannot_bring_the_file_back(
    rw: WriteRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy sending what a file owed, still running when the file is unlinked, would land
    after the DeleteObject and bring the object back (a stress run: seed 108, an unlink 12 ms
    after the owed copy began left the file on OSS). The unlink waits for that copy, and no
    other starts before its delete."""
    staging = rw.staging
    assert staging is not None
    inode = await _new(rw, "f", 0o644)
    await rw.fs.setattr(inode, size=None, mtime_ns=None, fh=None, mode=0o600)  # owed
    started, go = trio.Event(), trio.Event()
    copy = staging.uploader.writes.copy_object

    async def held_copy(*args: Any, **kwargs: Any) -> Any:
        started.set()
        await go.wait()
        return await copy(*args, **kwargs)

    monkeypatch.setattr(staging.uploader.writes, "copy_object", held_copy)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(staging.owed.store, "f")
            await started.wait()  # the owed copy is on its way
            nursery.start_soon(rw.fs.unlink, ROOT_INODE, "f")
            await trio.testing.wait_all_tasks_blocked()
            assert "DeleteObject" not in _ops(rw, "f"), "the unlink waits for the copy"
            go.set()
    assert _ops(rw, "f") == ["PutObject", "CopyObject", "DeleteObject"]
    assert rw.emu.head(BUCKET, "f") is None


async def test_a_rename_over_a_file_waits_for_that_file_s_owed_copy_in_flight(
    rw: WriteRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same race at a rename's target: the copy storing what the replaced file owed,
    landing after the rename's copy, put the replaced file back under the name (a stress
    run: seed 130). The rename waits for it, and no other starts before its copy."""
    staging = rw.staging
    assert staging is not None
    target = await _new(rw, "dst", 0o644)
    await _new(rw, "src", 0o640)
    await rw.fs.setattr(target, size=None, mtime_ns=None, fh=None, mode=0o605)  # owed
    started, go = trio.Event(), trio.Event()
    copy = staging.uploader.writes.copy_object

    async def held_copy(source: str, *args: Any, **kwargs: Any) -> Any:
        if source == "dst":  # the owed copy of dst onto itself
            started.set()
            await go.wait()
        return await copy(source, *args, **kwargs)

    monkeypatch.setattr(staging.uploader.writes, "copy_object", held_copy)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(staging.owed.store, "dst")
            await started.wait()  # the owed copy is on its way
            nursery.start_soon(rw.fs.rename, ROOT_INODE, "src", ROOT_INODE, "dst", 0)
            await trio.testing.wait_all_tasks_blocked()
            go.set()
    assert _ops(rw, "dst") == ["PutObject", "CopyObject", "CopyObject"]
    assert rw.emu.get_bytes(BUCKET, "dst") == b"data"
    assert _meta(rw, "dst")["x-oss-meta-mode"] == str(0o100640), "the moved file's mode"
    assert rw.emu.head(BUCKET, "src") is None


# -- parsing and the table ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "posix"),
    [
        ({"x-oss-meta-mode": "33188", "x-oss-meta-uid": "0", "x-oss-meta-gid": "7"},
         Posix(0o100644, 0, 7, None)),
        ({"x-oss-meta-mode": "0755"}, Posix(0o755, None, None, None)),  # strtoull base 0: octal
        ({"x-oss-meta-mode": "0x1ed"}, Posix(0o755, None, None, None)),
        ({"x-oss-meta-mtime": "1600000000"}, Posix(mtime_ns=T)),
        ({"x-oss-meta-mtime": "1600000000.250000000"}, Posix(mtime_ns=T + 250_000_000)),
        ({"x-oss-meta-mtime": "1600000000.5"}, Posix(mtime_ns=T + 5)),  # as ossfs reads it
        ({"x-oss-meta-mtime": "0"}, Posix()),  # ossfs falls back to Last-Modified
        ({"x-oss-meta-mtime": "soon", "x-oss-meta-mode": "rw", "x-oss-meta-uid": "-1"}, Posix()),
        ({"x-oss-meta-other": "1"}, Posix()),
    ],
)  # fmt: skip
def test_headers_are_read_as_ossfs_reads_them(headers: dict[str, str], posix: Posix) -> None:
    assert posix_of(headers) == posix


def test_the_table_trusts_only_the_version_it_learnt_and_stays_bounded() -> None:
    table = ShownAttrs(capacity=2)
    table.learn("a", '"1"', Posix(0o100600, 5, None, T))
    assert table.get("a", '"1"') == Posix(0o100600, 5, None, T)
    assert table.get("a", '"2"') is None, "another version: the defaults"
    assert table.get("a", None) == Posix(0o100600, 5, None, T), "a marker: no ETag to compare"
    assert table.etag("a") == '"1"'
    table.learn("b", '"b"', Posix(mode=0o100644))
    table.learn("c", '"c"', Posix(mode=0o100644))
    assert len(table) == 2
    assert table.get("a", '"1"') is None, "the oldest learnt went first"
    table.moved("b", "moved", '"m"', time.time_ns())
    assert table.get("moved", '"m"') == Posix(mode=0o100644)
    assert table.get("b", '"b"') is None
    table.learn("d/x", '"x"', Posix(uid=3))
    table.moved_tree("d/", "e/", time.time_ns())
    assert table.get("e/x", '"x"') == Posix(uid=3)
    table.learn("e/x", '"x"', Posix())
    assert table.get("e/x", '"x"') == Posix(), "carries nothing: known, not HEADed again"


def test_an_entry_this_mount_stored_keeps_its_time_for_own_attrs_and_answers_any_listing() -> None:
    """An entry stored here answers whatever Last-Modified a listing shows (the object's is
    the server's clock, unknown here; without --own-attrs nothing else could show the
    attributes). --own-attrs asks `changed_since_stored`: a Last-Modified later than the
    store (by more than the slack) is another client's change, maybe of the metadata only."""
    table = ShownAttrs()
    stored = 1_800_000_000 * S
    table.learn("f", '"e"', Posix(mode=0o100600), stored_ns=stored)
    for listed in (stored - 5 * S, stored, stored + 60 * S):
        assert table.get("f", '"e"', listed) == Posix(mode=0o100600)
    assert not table.changed_since_stored("f", stored + STORED_SLACK_NS)
    assert table.changed_since_stored("f", stored + STORED_SLACK_NS + S)
    table.restamp("f", stored + 60 * S)  # a debt of it was paid by a copy then
    assert not table.changed_since_stored("f", stored + 61 * S)
    assert table.get("f", '"e"', stored) == Posix(mode=0o100600)
    table.moved("f", "g", '"e"', stored + 120 * S)
    assert not table.changed_since_stored("g", stored + 121 * S)
    table.learn("h", '"e"', Posix(), seen_ns=stored)  # a HEAD taught it: `get` compares
    assert table.get("h", '"e"', stored + S) is None
    assert not table.changed_since_stored("h", stored + 60 * S)
    table.learn("old", '"e"', Posix())  # stored before stamps were kept: trusted as it was
    assert not table.changed_since_stored("old", stored + 60 * S)


# -- the journal keeps the owner, and still reads records written before it did ------------

# A sealed record (unsynced, with a boot id) as the ossmount before this change wrote it.
_OLD_RECORD = bytes.fromhex(
    "4f53534d574a4e4c000100000000004c00000003626b7400000003642f6b0000000000000000000000000000"
    "00000000000516345785d8a00000000081a00000000000100000000c00000000000000000000000000000004"
    "62303074da4becec5bc6faab74be220c9ddb7645625840524e797f61ec00ebff076cbe84"
)


def test_a_journal_written_before_owners_were_kept_still_loads() -> None:
    rec = decode(_OLD_RECORD)
    assert (rec.key, rec.mode, rec.mtime_ns, rec.boot_id) == ("d/k", 0o100640, T, "b00t")
    assert (rec.uid, rec.gid) == (None, None)
    assert encode(rec) == _OLD_RECORD, "a record with no owner is written as before"


@pytest.mark.parametrize(("uid", "gid"), [(1234, None), (None, 0), (0, 2**32 - 1)])
def test_a_journal_keeps_the_owner(uid: int | None, gid: int | None) -> None:
    rec = JournalRecord("bkt", "k", 3, 1 << 20, uid=uid, gid=gid, sealed=True, boot_id="b")
    assert decode(encode(rec)) == rec


# -- shown through the file system --------------------------------------------------------


async def test_a_file_shows_the_mode_owner_and_mtime_it_was_stored_with(rw: WriteRig) -> None:
    inode = await _new(rw, "f", 0o600, uid=4242)
    attr = await rw.fs.getattr(inode)
    assert (stat.S_IMODE(attr.mode), attr.uid, attr.gid) == (0o600, 4242, 4242)
    meta = _meta(rw, "f")
    _stamps(meta)
    assert _commit_mtime(meta) == attr.mtime_ns, "shown as stored"
    assert meta == {"x-oss-meta-mode": str(0o100600), "x-oss-meta-uid": "4242",
                    "x-oss-meta-gid": "4242"}  # fmt: skip
    attr = await rw.fs.setattr(inode, size=None, mtime_ns=T, fh=None, mode=0o644)
    assert (stat.S_IMODE(attr.mode), attr.mtime_ns) == (0o644, T), "setattr answers the new"
    assert (await rw.fs.lookup(ROOT_INODE, "f")).mode == stat.S_IFREG | 0o644
    assert _ops(rw, "f") == ["PutObject"], "owed: sent a moment later"
    await rw.stored()
    assert _ops(rw, "f") == ["PutObject", "CopyObject"], "one copy for both, no HEAD"
    rw.fs._ns.invalidate()  # as after the TTL: known again from a listing, same ETag
    attr = await rw.fs.getattr(inode)
    assert (stat.S_IMODE(attr.mode), attr.uid, attr.mtime_ns) == (0o644, 4242, T)
    assert _ops(rw, "f") == ["PutObject", "CopyObject"]


async def test_an_object_changed_by_someone_else_shows_the_defaults_again(rw: WriteRig) -> None:
    inode = await _new(rw, "g", 0o600)
    rw.emu.put_object(BUCKET, "g", b"theirs")
    rw.fs._ns.invalidate()  # as after the TTL: the listing shows the new ETag
    attr = await rw.fs.getattr(inode)
    assert attr.mode == LOOK.file_mode, "the mount's default"


async def test_a_listed_object_shows_the_defaults_with_no_head(rw: WriteRig) -> None:
    rw.emu.put_object(BUCKET, "listed", b"x", meta={"mode": str(0o100600)})
    await _new(rw, "mine", 0o600)  # the table is not empty
    entry = await rw.fs.lookup(ROOT_INODE, "listed")
    assert entry.mode == LOOK.file_mode
    assert "HeadObject" not in _ops(rw, "listed")


async def test_rewriting_an_existing_file_keeps_the_mode_and_owner_it_shows(
    rw: WriteRig,
) -> None:
    inode = await _new(rw, "script", 0o755, uid=7)
    opened = await rw.fs.open(inode, os.O_WRONLY | os.O_TRUNC)
    rw.fs.write(opened.fh, 0, b"#!/bin/sh\n")
    await rw.fs.flush(opened.fh)
    await rw.fs.release(opened.fh)
    meta = _meta(rw, "script")
    _stamps(meta)
    _commit_mtime(meta)
    assert meta == {"x-oss-meta-mode": str(0o100755), "x-oss-meta-uid": "7",
                    "x-oss-meta-gid": "7"}  # fmt: skip
    assert stat.S_IMODE((await rw.fs.getattr(inode)).mode) == 0o755


async def test_chown_of_an_open_file_goes_with_its_commit(rw: WriteRig) -> None:
    opened, attr = await rw.fs.create(ROOT_INODE, "o", CREATE, 0o640)
    rw.fs.write(opened.fh, 0, b"x")
    await rw.fs.setattr(attr.inode, size=None, mtime_ns=None, fh=opened.fh, uid=11, gid=12)
    assert ((await rw.fs.getattr(attr.inode)).uid, _ops(rw, "o")) == (11, [])
    await rw.fs.flush(opened.fh)
    await rw.fs.release(opened.fh)
    meta = _meta(rw, "o")
    _stamps(meta)
    _commit_mtime(meta)
    assert meta == {"x-oss-meta-mode": str(0o100640), "x-oss-meta-uid": "11",
                    "x-oss-meta-gid": "12"}  # fmt: skip
    assert _ops(rw, "o") == ["PutObject"]


async def test_a_renamed_file_keeps_showing_what_it_carries(rw: WriteRig) -> None:
    inode = await _new(rw, "a", 0o600)
    await rw.fs.rename(ROOT_INODE, "a", ROOT_INODE, "b", 0)
    assert stat.S_IMODE((await rw.fs.getattr(inode)).mode) == 0o600
    await rw.fs.mkdir(ROOT_INODE, "d", 0o700)
    await rw.fs.rename(ROOT_INODE, "b", (await rw.fs.lookup(ROOT_INODE, "d")).inode, "c", 0)
    await rw.fs.rename(ROOT_INODE, "d", ROOT_INODE, "e", 0)
    e = await rw.fs.lookup(ROOT_INODE, "e")
    assert stat.S_IMODE(e.mode) == 0o700, "a renamed directory's marker moved with it"
    assert stat.S_IMODE((await rw.fs.lookup(e.inode, "c")).mode) == 0o600


# -- directories --------------------------------------------------------------------------


async def test_mkdir_stores_the_mode_owner_and_time_on_the_marker(rw: WriteRig) -> None:
    attr = await rw.fs.mkdir(ROOT_INODE, "d", 0o750, 5, 6)
    assert (stat.S_IMODE(attr.mode), attr.uid, attr.gid) == (0o750, 5, 6)
    meta = _meta(rw, "d/")
    stamp = meta.pop("x-oss-meta-mtime")
    assert _stamps(meta) == (stamp, stamp), "as ossfs's mkdir: atime, mtime, ctime now"
    assert meta == {"x-oss-meta-mode": str(stat.S_IFDIR | 0o750), "x-oss-meta-uid": "5",
                    "x-oss-meta-gid": "6"}  # fmt: skip
    attr = await rw.fs.setattr(attr.inode, size=None, mtime_ns=T, fh=None, mode=0o700)
    assert (stat.S_IMODE(attr.mode), attr.mtime_ns) == (0o700, T)
    await rw.stored()
    assert _ops(rw, "d/") == ["PutObject", "CopyObject"], "no HEAD for our own marker"
    await rw.fs.rmdir(ROOT_INODE, "d")
    assert rw.emu.head(BUCKET, "d/") is None


async def test_an_implicit_directory_gets_a_marker_as_ossfs_gives_it(rw: WriteRig) -> None:
    rw.emu.put_object(BUCKET, "imp/x", b"x")
    node = await rw.fs.lookup(ROOT_INODE, "imp")
    attr = await rw.fs.setattr(node.inode, size=None, mtime_ns=T, fh=None)
    assert attr.mtime_ns == T
    assert _meta(rw, "imp/") == {"x-oss-meta-mode": str(LOOK.dir_mode),  # the mode it shows
                                 "x-oss-meta-mtime": "1600000000"}  # fmt: skip
    assert _ops(rw, "imp/") == ["HeadObject", "PutObject"]


async def test_the_mount_root_s_attributes_are_ignored_not_refused(rw: WriteRig) -> None:
    attr = await rw.fs.setattr(ROOT_INODE, size=None, mtime_ns=T, fh=None, mode=0o700)
    assert attr.mtime_ns == 0
    assert rw.emu.requests.ops("PutObject") == []


async def _copy_then_commit(
    rig: WriteRig,
    monkeypatch: pytest.MonkeyPatch,
    inode: int,
    copy: Callable[[], Awaitable[object]],
) -> None:
    """Start `copy` (a copy of the object onto itself), hold it in the emulator after its
    fence (before it stores), and commit a new version of `inode` meanwhile; then let the
    copy go. If the commit did not wait for it, it lands first, as it would on OSS. The new
    version must be the object in the end, and the copy must have landed before it."""
    assert rig.staging is not None
    held, release = threading.Event(), threading.Event()
    real_body = emu_objects._copy_body

    async def held_copy(*args: Any) -> Any:  # in the emulator's thread
        held.set()
        await trio.to_thread.run_sync(release.wait)
        return await real_body(*args)

    monkeypatch.setattr(emu_objects, "_copy_body", held_copy)
    writes = rig.staging.uploader.writes
    real_put = writes.put_object
    put_called, put_done = trio.Event(), trio.Event()

    async def put(key: str, *args: Any, **kwargs: Any) -> Any:
        put_called.set()
        try:
            return await real_put(key, *args, **kwargs)
        finally:
            put_done.set()

    monkeypatch.setattr(writes, "put_object", put)

    async def rewrite() -> None:
        opened = await rig.fs.open(inode, os.O_WRONLY | os.O_TRUNC)
        rig.fs.write(opened.fh, 0, b"the new version")
        await rig.fs.flush(opened.fh)
        await rig.fs.release(opened.fh)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(copy)
            await trio.to_thread.run_sync(held.wait)  # the copy passed its fence
            nursery.start_soon(rewrite)
            await wait_all_tasks_blocked()
            if put_called.is_set():  # it did not wait: let it land first, as it would
                await put_done.wait()
            release.set()
    assert rig.emu.get_bytes(BUCKET, "f") == b"the new version"
    ops = _ops(rig, "f")
    last_put = max(i for i, op in enumerate(ops) if op == "PutObject")
    assert ops.index("CopyObject") < last_put, ops


async def test_a_commit_lands_after_the_copy_storing_what_the_replaced_version_owes(
    rw: WriteRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chmod of a file just written is owed, then stored by a copy of that version onto
    itself (fs/owedattrs.py), fenced on its ETag when the copy starts. A new version
    committed while that copy runs must land after it: landing first, it was replaced by
    the copy of the old bytes (a stress run: a rewritten file came back as its previous
    version)."""
    rig = rw
    assert rig.staging is not None
    inode = await _new(rig, "f", 0o644)
    await rig.fs.setattr(inode, size=None, mtime_ns=None, fh=None, mode=0o600)  # owed
    await _copy_then_commit(rig, monkeypatch, inode, partial(rig.staging.owed.store, "f"))


async def test_a_commit_lands_after_a_chmods_own_copy(
    rw: WriteRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chmod of an object this mount did not write is stored at once (a HEAD, then a copy
    onto itself: nothing is owed); a new version committed by another handle meanwhile must
    land after that copy too (OwedAttrs.copying)."""
    rig = rw
    rig.emu.put_object(BUCKET, "f", b"data")
    inode = (await rig.fs.lookup(ROOT_INODE, "f")).inode
    chmod = partial(rig.fs.setattr, inode, size=None, mtime_ns=None, fh=None, mode=0o600)
    await _copy_then_commit(rig, monkeypatch, inode, chmod)


@pytest.mark.parametrize("size", [0, 4])
async def test_an_o_trunc_open_after_a_utimens_makes_the_mtime_now_even_of_an_empty_file(
    rig: WriteRig, size: int
) -> None:
    """open(O_TRUNC) marks the mtime for update (POSIX; ext4 does it for an empty file too).
    Under write-back an empty file whose upload was pending kept its utimens's time (a
    stress run: `utime`, then `open(.., "wb")` with nothing written)."""
    opened, attr = await rig.fs.create(ROOT_INODE, "f", CREATE, 0o644)
    rig.fs.write(opened.fh, 0, b"data"[:size])
    await rig.fs.flush(opened.fh)
    await rig.fs.release(opened.fh)
    await rig.fs.setattr(attr.inode, size=None, mtime_ns=T, fh=None)
    before = time.time_ns()
    again = await rig.fs.open(attr.inode, os.O_WRONLY | os.O_TRUNC)
    await rig.fs.flush(again.fh)
    await rig.fs.release(again.fh)
    assert (await rig.fs.getattr(attr.inode)).mtime_ns >= before
    assert rig.staging is not None
    with trio.fail_after(30):
        await rig.staging.drain()
    assert int(_meta(rig, "f")["x-oss-meta-mtime"].partition(".")[0]) >= before // S
    assert rig.emu.get_bytes(BUCKET, "f") == b""


async def test_a_truncate_after_a_utimens_makes_the_mtime_now_as_on_ext4(rw: WriteRig) -> None:
    """As a write does; ext4 does it even for a truncate to the size the file has (a
    stress run's mirror under write-back: utimens, then truncate, of a file whose upload
    was pending)."""
    for name, size in (("cut", 2), ("same", 4)):
        opened, attr = await rw.fs.create(ROOT_INODE, name, CREATE, 0o644)
        rw.fs.write(opened.fh, 0, b"data")
        await rw.fs.setattr(attr.inode, size=None, mtime_ns=T, fh=opened.fh)
        before = time.time_ns()
        attr = await rw.fs.setattr(attr.inode, size=size, mtime_ns=None, fh=opened.fh)
        assert attr.size == size
        assert attr.mtime_ns >= before, "now, not the utimens's"
        await rw.fs.flush(opened.fh)
        await rw.fs.release(opened.fh)
        assert _commit_mtime(_meta(rw, name)) == attr.mtime_ns
