"""What a small file's write costs besides its PutObject (issue 15): its adoption into the
read cache takes no hashing and no worker thread, and its attributes set after the commit
cost no HEAD (fs/attrstore.py KnownMeta). In-process over the emulator (tests/fs/test_writes.py's
rig); requests counted in the emulator's log."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from ossmount.cache import adopt
from ossmount.cache.checkpoint import EntryState
from ossmount.cache.store import key_hash
from ossmount.crc64 import crc64
from ossmount.emulator import Emulator
from ossmount.fs import staging as staging_module
from ossmount.fs.attrstore import KnownMeta
from ossmount.tree.inodes import ROOT_INODE
from ossmount.write import UploadSettings
from tests.fs.test_write_attrs import _stamps
from tests.fs.test_writes import BUCKET, WriteRig, emu, rw, write_rig

__all__ = ["emu", "rw"]

CREATE = os.O_WRONLY | os.O_CREAT


def _ops(rig: WriteRig, key: str) -> list[str]:
    return [r.op for r in rig.emu.requests if r.key == key]


def _meta(rig: WriteRig, key: str) -> dict[str, str]:
    obj = rig.emu.head(BUCKET, key)
    assert obj is not None
    return dict(obj.meta)


async def _write_file(rig: WriteRig, name: str, data: bytes) -> tuple[int, int]:
    opened, attr = await rig.fs.create(ROOT_INODE, name, CREATE, 0o600)
    rig.fs.write(opened.fh, 0, data)
    return opened.fh, attr.inode


async def _idle_until(done: Callable[[], bool]) -> None:
    """Let the loop go idle (Staging's idle work runs one step each time) until `done`."""
    with trio.fail_after(5):
        while not done():
            await trio.testing.wait_all_tasks_blocked()


async def _released(rig: WriteRig, fh: int) -> None:
    """The last close, and the adoption it queued (Staging.adoptions_done)."""
    await rig.fs.release(fh)
    assert rig.staging is not None
    await rig.staging.adoptions_done()


async def test_a_one_part_file_is_adopted_once_the_mount_is_idle_without_reading_it(
    rw: WriteRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_hashing(*args: object, **kwargs: object) -> None:
        raise AssertionError("a one-part file's CRC-64 is known from its commit")

    monkeypatch.setattr(adopt, "seal_for_cache", no_hashing)
    data = os.urandom(8192)
    fh, _ = await _write_file(rw, "small", data)
    await rw.fs.flush(fh)
    await rw.fs.release(fh)
    assert rw.store.cached_checkpoint("small") is None, "not in the release: once idle"
    assert rw.staging is not None
    await rw.staging.adoptions_done()
    cp = rw.store.cached_checkpoint("small")
    assert cp is not None
    assert cp.state is EntryState.VERIFIED
    assert cp.part_crcs == {0: crc64(data)}
    assert cp.etag == rw.emu.head(BUCKET, "small").etag  # type: ignore[union-attr]
    assert not list((rw.staging.directory).iterdir())  # type: ignore[union-attr]


async def test_bytes_rewritten_after_a_commit_are_committed_again_before_they_are_adopted(
    rw: WriteRig,
) -> None:
    first, second = os.urandom(5000), os.urandom(5000)
    fh, _ = await _write_file(rw, "f", first)
    await rw.fs.flush(fh)
    rw.fs.write(fh, 0, second)  # same size, other bytes: the first commit's CRC is stale
    await _released(rw, fh)
    assert rw.emu.get_bytes(BUCKET, "f") == second
    cp = rw.store.cached_checkpoint("f")
    assert cp is not None
    assert cp.part_crcs == {0: crc64(second)}
    assert cp.server_crc64 == crc64(second)


async def test_attributes_set_between_close_and_release_are_stored_without_a_head(
    rw: WriteRig,
) -> None:
    fh, inode = await _write_file(rw, "r", b"rsync's temp file")
    await rw.fs.flush(fh)  # close() returned; the kernel's RELEASE has not come yet
    assert _ops(rw, "r") == ["PutObject"]
    committed = _meta(rw, "r")["x-oss-meta-ctime"]
    await rw.fs.setattr(inode, size=None, mtime_ns=1_600_000_000_500_000_000, fh=None)
    await rw.fs.setattr(inode, size=None, mtime_ns=None, fh=None, mode=0o644)
    await _released(rw, fh)
    assert _ops(rw, "r") == ["PutObject"], "owed: sent a moment later, in one copy"
    await rw.stored()
    assert _ops(rw, "r") == ["PutObject", "CopyObject"]
    meta = _meta(rw, "r")
    assert meta.pop("x-oss-meta-ctime").isdigit(), "the chmod's: now"
    assert meta == {
        "x-oss-meta-mode": str(0o100644),
        "x-oss-meta-mtime": "1600000000.500000000",
        "x-oss-meta-atime": committed,  # ossfs's utimens with no atime: the ctime it had
    }
    cp = rw.store.cached_checkpoint("r")
    assert cp is not None, "still adopted after the copies (same bytes)"
    assert cp.etag == rw.emu.head(BUCKET, "r").etag  # type: ignore[union-attr]


async def test_attributes_of_a_file_this_mount_just_wrote_cost_no_head(rw: WriteRig) -> None:
    fh, inode = await _write_file(rw, "t", b"tar member")
    await rw.fs.flush(fh)
    await rw.fs.release(fh)
    committed = _meta(rw, "t")["x-oss-meta-ctime"]
    await rw.fs.setattr(inode, size=None, mtime_ns=1_500_000_000_000_000_000, fh=None,
                        mode=0o640)  # fmt: skip
    await rw.fs.setattr(inode, size=None, mtime_ns=None, fh=None, mode=0o640)  # no change
    await rw.stored()
    assert _ops(rw, "t") == ["PutObject", "CopyObject"], "a new ctime alone copies nothing"
    assert _meta(rw, "t") == {
        "x-oss-meta-mode": str(0o100640),
        "x-oss-meta-mtime": "1500000000",
        "x-oss-meta-atime": committed,
        "x-oss-meta-ctime": committed,
    }
    # An object someone else wrote is HEADed first, as before.
    rw.emu.put_object(BUCKET, "o", b"other writer")
    other = await rw.fs.lookup(ROOT_INODE, "o")
    await rw.fs.setattr(other.inode, size=None, mtime_ns=None, fh=None, mode=0o640)
    assert _ops(rw, "o") == ["HeadObject", "CopyObject"]


async def test_mode_and_mtime_set_after_a_multipart_upload_began_reach_the_object(
    rw: WriteRig,
) -> None:
    data = os.urandom(2 * (1 << 20) + 99)  # the rig's parts are 1 MiB: parts go early
    fh, inode = await _write_file(rw, "big", data)
    await rw.fs.setattr(inode, size=None, mtime_ns=1_400_000_000_000_000_000, fh=fh,
                        mode=0o755)  # fmt: skip
    await rw.fs.flush(fh)
    await rw.fs.release(fh)
    assert rw.emu.get_bytes(BUCKET, "big") == data
    assert "CopyObject" not in _ops(rw, "big"), "owed: a moment later (fs/owedattrs.py)"
    await rw.stored()
    meta = _meta(rw, "big")
    _stamps(meta)
    assert meta == {
        "x-oss-meta-mode": str(0o100755),
        "x-oss-meta-mtime": "1400000000",
    }
    ops = _ops(rw, "big")
    assert "HeadObject" not in ops
    assert ops.count("CopyObject") == 1


def test_known_metadata_is_trusted_only_for_the_version_written_and_only_briefly() -> None:
    now = [0.0]
    known = KnownMeta(capacity=2, max_age_s=30.0, clock=lambda: now[0])
    known.wrote("a", '"1"', {"X-Oss-Meta-Mode": "33188"})
    assert known.headers("a", '"1"') == {"x-oss-meta-mode": "33188"}
    assert known.headers("a", '"2"') is None, "another version: HEAD it"
    now[0] = 31.0
    assert known.headers("a", '"1"') is None, "too old: another client may have changed it"
    known.wrote("a", '"1"', {})
    known.moved("a", "b", '"1"')
    assert known.headers("a", '"1"') is None
    assert known.headers("b", '"1"') == {}
    known.wrote("c", '"3"', {})
    known.wrote("d", '"4"', {})
    assert known.headers("b", '"1"') is None, "bounded: the oldest goes"
    known.forget("d")
    assert known.headers("d", '"4"') is None


async def test_a_small_file_is_created_committed_and_adopted_without_a_worker_thread(
    rw: WriteRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert rw.staging is not None
    # As the mount runs without write-back: a small file's close waits for its PutObject,
    # so it has no journal and no fsync (UploadSettings.journal_small_puts).
    rw.staging.uploader.settings = UploadSettings(
        part_size=1 << 20, single_put_max=1 << 20, journal_small_puts=False
    )
    hops: list[str] = []
    real = trio.to_thread.run_sync

    async def counted(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        hops.append(getattr(fn, "__name__", repr(fn)))
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(trio.to_thread, "run_sync", counted)
    data = os.urandom(64 * 1024)
    fh, _ = await _write_file(rw, "w14", data)
    await rw.fs.flush(fh)
    await _released(rw, fh)
    assert hops == []
    assert rw.emu.get_bytes(BUCKET, "w14") == data
    assert rw.store.cached_checkpoint("w14") is not None


async def test_a_one_part_file_is_kept_as_one_cache_file_and_read_back_without_a_get(
    rw: WriteRig,
) -> None:
    """Its adoption makes the read path's one-file entry (cache.tail): no checkpoint file is
    created, and reading it back costs no request."""
    data = os.urandom(8192)
    fh, inode = await _write_file(rw, "one", data)
    await rw.fs.flush(fh)
    await _released(rw, fh)
    h = key_hash("one")
    kept = sorted(p.suffix for p in (rw.store.root / BUCKET / h[:2]).glob(h + ".*"))
    assert kept == [".one"]
    before = len(rw.emu.requests)
    opened = await rw.fs.open(inode, os.O_RDONLY)
    assert await rw.fs.read(opened.fh, 0, len(data) + 1) == data
    await rw.fs.release(opened.fh)
    assert [r.op for r in rw.emu.requests[before:]] == []
    state = rw.store.cached_checkpoint("one")
    assert state is not None
    assert state.state is EntryState.VERIFIED


async def test_an_open_right_after_the_release_adopts_the_file_first_and_costs_no_get(
    rw: WriteRig,
) -> None:
    """The adoption waits for an idle loop (the next file's PutObject, here); an open of
    the file before that (`cp f m/ && cat m/f` on a busy mount) adopts it then."""
    first, second = os.urandom(3000), os.urandom(4000)
    for name, data in (("a", first), ("b", second)):
        fh, _ = await _write_file(rw, name, data)
        await rw.fs.flush(fh)
        await rw.fs.release(fh)
    assert rw.store.cached_checkpoint("a") is not None, "adopted while b's PUT was sent"
    assert rw.store.cached_checkpoint("b") is None, "queued: the loop was not idle since"
    await trio.lowlevel.checkpoint()  # the adopter runs and waits for an idle loop
    before = len(rw.emu.requests)
    inode = (await rw.fs.lookup(ROOT_INODE, "b")).inode
    opened = await rw.fs.open(inode, os.O_RDONLY)
    assert await rw.fs.read(opened.fh, 0, 5000) == second
    await rw.fs.release(opened.fh)
    assert [r.op for r in rw.emu.requests[before:]] == []
    await trio.testing.wait_all_tasks_blocked()  # the idle adopter finds nothing left to do


async def test_a_loop_never_idle_adopts_in_the_release_past_a_bound(
    rw: WriteRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The queue of files waiting for an idle loop is bounded: past it the oldest is adopted
    in the release (their bytes are not counted in the cache's size while they wait)."""
    monkeypatch.setattr(staging_module, "ONE_PART_QUEUE", 2)
    monkeypatch.setattr(trio.testing, "wait_all_tasks_blocked", trio.sleep_forever)
    for i in range(4):
        fh, _ = await _write_file(rw, f"q{i}", b"x" * (i + 1))
        await rw.fs.flush(fh)
        await rw.fs.release(fh)
    adopted = [rw.store.cached_checkpoint(f"q{i}") is not None for i in range(4)]
    assert adopted == [True, True, False, False]


async def test_new_files_take_spares_made_in_idle_moments_and_the_end_removes_the_rest(
    emu: Emulator, tmp_path: Path
) -> None:
    """A create renames a spare made ahead (no inode allocated while the writer waits); the
    next ones are made once the loop is idle again; the mount's end removes those left."""
    async with contextlib.asynccontextmanager(write_rig)(emu, tmp_path, rw=True) as rig:
        assert rig.staging is not None
        directory = rig.staging.directory
        rig.staging.keep_spares(2)
        await _idle_until(lambda: len(list(directory.glob("*.spare"))) == 2)
        spares = {p.stat().st_ino: p for p in directory.glob("*.spare")}
        assert len(spares) == 2
        opened, _ = await rig.fs.create(ROOT_INODE, "n", CREATE, 0o644)
        (data,) = directory.glob("*.data")
        assert data.stat().st_ino in spares, "a spare, renamed"
        assert len(list(directory.glob("*.spare"))) == 1
        await _idle_until(lambda: len(list(directory.glob("*.spare"))) == 2)  # made again
        rig.fs.write(opened.fh, 0, b"spare")
        await rig.fs.flush(opened.fh)
        await _released(rig, opened.fh)
        assert rig.emu.get_bytes(BUCKET, "n") == b"spare"
    assert list(directory.iterdir()) == []
