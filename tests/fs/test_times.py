"""atime and ctime kept and shown as ossfs 1.x keeps them (fs/stamps.py, fs/shown.py, the
journal): parsing, packing, the rules per operation, and setattr through the file system.
In-process over the emulator (tests/fs/test_writes.py's rig); requests counted in its log."""

from __future__ import annotations

import os
import stat
import time

import pytest

from ossmount.fs.shown import Posix, ShownAttrs, posix_of
from ossmount.fs.stamps import only_ctime_differs, stamped
from ossmount.sealed import seal, unseal
from ossmount.tree.inodes import ROOT_INODE
from ossmount.write.journal import MAGIC, CorruptJournal, JournalRecord, decode, encode
from tests.fs.test_write_attrs import _meta, _new, _ops
from tests.fs.test_writes import BUCKET, WriteRig, emu, rw

__all__ = ["emu", "rw"]

S = 1_000_000_000
T = 1_600_000_000 * S


# -- parsing and the table ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "posix"),
    [
        ({"x-oss-meta-atime": "1600000000", "x-oss-meta-ctime": "1600000001.000000002"},
         Posix(atime_ns=T, ctime_ns=T + S + 2)),
        ({"x-oss-meta-atime": "1600000000.5"}, Posix(atime_ns=T + 5)),  # as ossfs reads it
        ({"x-oss-meta-atime": "0", "x-oss-meta-ctime": "-3"}, Posix()),  # Last-Modified then
        ({"x-oss-meta-atime": "yesterday", "x-oss-meta-ctime": ""}, Posix()),
        ({"x-oss-meta-mtime": "1", "x-oss-meta-atime": "2", "x-oss-meta-ctime": "3"},
         Posix(mtime_ns=S, atime_ns=2 * S, ctime_ns=3 * S)),
    ],
)  # fmt: skip
def test_atime_and_ctime_are_parsed_as_ossfs_parses_them(
    headers: dict[str, str], posix: Posix
) -> None:
    assert posix_of(headers) == posix


def test_what_is_parsed_is_written_back_the_same() -> None:
    posix = Posix(0o100600, 1, 2, T + 1, T + 250_000_000, T)
    assert posix.meta() == {
        "x-oss-meta-mode": str(0o100600), "x-oss-meta-uid": "1", "x-oss-meta-gid": "2",
        "x-oss-meta-mtime": "1600000000.000000001",
        "x-oss-meta-atime": "1600000000.250000000", "x-oss-meta-ctime": "1600000000",
    }  # fmt: skip
    assert posix_of(posix.meta()) == posix


@pytest.mark.parametrize(
    "posix",
    [
        Posix(0o100644, 1, 2, T, T + 1, T + 2),
        Posix(0o100644, 1, 2, T, T + 1, T + 1),  # equal: packed once
        Posix(atime_ns=T),
        Posix(ctime_ns=T),
        Posix(mode=0o100600, ctime_ns=T),
        Posix(uid=0, atime_ns=-S, ctime_ns=-S),
    ],
)
def test_the_table_keeps_atime_and_ctime_and_still_fences_on_the_etag(posix: Posix) -> None:
    table = ShownAttrs()
    table.learn("k", '"etag-1"', posix)
    assert table.get("k", '"etag-1"') == posix
    assert table.get("k", '"etag-2"') is None
    assert table.etag("k") == '"etag-1"'
    table.moved("k", "m", '"etag-3"', time.time_ns())
    assert table.get("m", '"etag-3"') == posix


def test_atime_and_ctime_cost_the_table_nothing_when_absent_and_8_bytes_when_equal() -> None:
    table = ShownAttrs()
    for key, posix in (("none", Posix(0o100644, 1, 2, T)),
                       ("equal", Posix(0o100644, 1, 2, T, T, T)),
                       ("both", Posix(0o100644, 1, 2, T, T, T + 1))):  # fmt: skip
        table.learn(key, '"e"', posix)
    sizes = {key: len(table._known[key]) for key in ("none", "equal", "both")}
    assert sizes["equal"] - sizes["none"] == 8
    assert sizes["both"] - sizes["none"] == 16


# -- the rules (ossfs src/s3fs.cpp) ---------------------------------------------------------


def test_a_chmod_or_chown_stamps_the_ctime_now_and_nothing_else() -> None:
    before = time.time_ns() // S * S
    stored = stamped(Posix(mode=0o600), Posix(T, atime_ns=T, ctime_ns=T), T)
    assert stored.mode == 0o600
    assert (stored.mtime_ns, stored.atime_ns) == (None, None)
    assert stored.ctime_ns is not None
    assert stored.ctime_ns % S == 0
    assert before <= stored.ctime_ns <= time.time_ns()
    assert stamped(Posix(uid=3), Posix(), None).ctime_ns is not None


def test_utimens_stores_the_atime_given_as_both_atime_and_ctime() -> None:
    current = Posix(mtime_ns=T, atime_ns=T + 1, ctime_ns=T + 2)
    both = stamped(Posix(mtime_ns=5 * S, atime_ns=7 * S), current, T + 3)
    assert (both.mtime_ns, both.atime_ns, both.ctime_ns) == (5 * S, 7 * S, 7 * S)
    # touch -m: the atime left out is the current *ctime* (ossfs's UTIME_OMIT), and so is the ctime
    m_only = stamped(Posix(mtime_ns=5 * S), current, T + 3)
    assert (m_only.mtime_ns, m_only.atime_ns, m_only.ctime_ns) == (5 * S, T + 2, T + 2)
    # touch -a: the mtime left out is written again as it is
    a_only = stamped(Posix(atime_ns=7 * S), current, T + 3)
    assert (a_only.mtime_ns, a_only.atime_ns, a_only.ctime_ns) == (T, 7 * S, 7 * S)


def test_utimens_falls_back_to_the_last_modified_as_ossfs_does() -> None:
    a_only = stamped(Posix(atime_ns=7 * S), Posix(), T)
    assert (a_only.mtime_ns, a_only.atime_ns, a_only.ctime_ns) == (T, 7 * S, 7 * S)
    m_only = stamped(Posix(mtime_ns=5 * S), Posix(ctime_ns=0), None)  # nothing known
    assert (m_only.mtime_ns, m_only.atime_ns, m_only.ctime_ns) == (5 * S, None, None)


def test_a_new_ctime_alone_is_no_change() -> None:
    kept = {"x-oss-meta-mode": "33188", "x-oss-meta-ctime": "1"}
    assert only_ctime_differs({"x-oss-meta-mode": "33188", "x-oss-meta-ctime": "2"}, kept)
    assert not only_ctime_differs({"x-oss-meta-mode": "33152", "x-oss-meta-ctime": "2"}, kept)
    assert not only_ctime_differs({"x-oss-meta-atime": "1"}, kept)


# -- the journal ----------------------------------------------------------------------------


@pytest.mark.parametrize(("atime", "ctime"), [(T, None), (None, T), (T + 1, -S), (0, 0)])
def test_a_journal_keeps_atime_and_ctime(atime: int | None, ctime: int | None) -> None:
    rec = JournalRecord("bkt", "k", 3, 1 << 20, uid=1, atime_ns=atime, ctime_ns=ctime,
                        sealed=True, boot_id="b")  # fmt: skip
    assert decode(encode(rec)) == rec


def test_a_journal_refuses_a_second_flags_word_it_does_not_know() -> None:
    rec = JournalRecord("bkt", "k", 3, 1 << 20, atime_ns=T)
    data = bytearray(encode(rec))
    assert decode(bytes(data)) == rec
    bad = _reseal(data, more=4)
    with pytest.raises(CorruptJournal):
        decode(bad)
    with pytest.raises(CorruptJournal):
        decode(_reseal(data, more=0))


def _reseal(data: bytearray, *, more: int) -> bytes:
    """`data` (a record with only an atime) with another second flags word, resealed."""
    payload = bytearray(unseal(bytes(data), magic=MAGIC, version=1, max_payload=1 << 20,
                               corrupt=CorruptJournal, what="journal"))  # fmt: skip
    payload[-12:-8] = more.to_bytes(4, "big")
    return seal(MAGIC, 1, bytes(payload))


# -- through the file system ------------------------------------------------------------------


async def test_a_new_file_goes_up_with_its_create_s_atime_and_its_commit_s_ctime(
    rw: WriteRig,
) -> None:
    before = time.time()
    opened, attr = await rw.fs.create(ROOT_INODE, "n", os.O_WRONLY | os.O_CREAT, 0o644)
    created = await rw.fs.getattr(attr.inode)
    assert created.atime_ns == created.ctime_ns
    assert created.atime_ns % S == 0
    rw.fs.write(opened.fh, 0, b"data")
    await rw.fs.flush(opened.fh)
    await rw.fs.release(opened.fh)
    meta = _meta(rw, "n")
    assert meta["x-oss-meta-atime"] == str(created.atime_ns // S)
    assert before - 1 <= int(meta["x-oss-meta-ctime"]) <= time.time()
    shown = await rw.fs.getattr(attr.inode)
    assert (shown.atime_ns, shown.ctime_ns) == (created.atime_ns,
                                                int(meta["x-oss-meta-ctime"]) * S)  # fmt: skip


async def test_utimens_of_a_closed_object_stores_what_ossfs_stores(rw: WriteRig) -> None:
    rw.emu.put_object(
        BUCKET,
        "o",
        b"theirs",
        meta={"mtime": "1500000000", "ctime": "1400000000", "atime": "1300000000", "mode": "33188"},
    )
    node = await rw.fs.lookup(ROOT_INODE, "o")
    attr = await rw.fs.setattr(node.inode, size=None, mtime_ns=None, atime_ns=T + 5, fh=None)
    assert _ops(rw, "o") == ["HeadObject", "CopyObject"], "another's object: stored at once"
    assert _meta(rw, "o") == {"x-oss-meta-mtime": "1500000000", "x-oss-meta-mode": "33188",
                              "x-oss-meta-atime": "1600000000.000000005",
                              "x-oss-meta-ctime": "1600000000.000000005"}  # fmt: skip
    assert (attr.mtime_ns, attr.atime_ns, attr.ctime_ns) == (1_500_000_000 * S, T + 5, T + 5)
    attr = await rw.fs.setattr(node.inode, size=None, mtime_ns=T, fh=None)  # touch -m
    assert (attr.mtime_ns, attr.atime_ns, attr.ctime_ns) == (T, T + 5, T + 5)
    await rw.fs.setattr(node.inode, size=None, mtime_ns=T, atime_ns=T + 5, fh=None)
    assert len(_ops(rw, "o")) == 2, "then known: owed, sent a moment later"
    await rw.stored()
    assert _meta(rw, "o")["x-oss-meta-atime"] == "1600000000.000000005", "the ctime it had"
    assert _ops(rw, "o") == ["HeadObject", "CopyObject", "CopyObject"], "one HEAD, one copy"
    await rw.fs.setattr(node.inode, size=None, mtime_ns=T, atime_ns=T + 5, fh=None)
    await rw.stored()
    assert len(_ops(rw, "o")) == 3, "the same times again: no copy"


async def test_a_chmod_to_the_same_mode_copies_nothing_for_the_ctime_alone(
    rw: WriteRig,
) -> None:
    inode = await _new(rw, "c", 0o640)
    committed = _meta(rw, "c")
    await rw.fs.setattr(inode, size=None, mtime_ns=None, fh=None, mode=0o640)
    await rw.stored()
    assert _ops(rw, "c") == ["PutObject"]
    assert _meta(rw, "c") == committed
    await rw.fs.setattr(inode, size=None, mtime_ns=None, fh=None, mode=0o600)
    await rw.stored()
    changed = _meta(rw, "c")
    assert _ops(rw, "c") == ["PutObject", "CopyObject"]
    assert changed["x-oss-meta-atime"] == committed["x-oss-meta-atime"], "atime untouched"
    assert int(changed["x-oss-meta-ctime"]) >= int(committed["x-oss-meta-ctime"])


async def test_reading_a_file_stores_no_atime(rw: WriteRig) -> None:
    """ossfs's read updates no atime (s3fs_read; UpdateAtime is never called): nor do we."""
    inode = await _new(rw, "r", 0o644)
    assert rw.staging is not None
    await rw.staging.adoptions_done()  # read back from the cache: no GET either
    stored = _meta(rw, "r")
    shown = await rw.fs.getattr(inode)
    opened = await rw.fs.open(inode, os.O_RDONLY)
    assert await rw.fs.read(opened.fh, 0, 100) == b"data"
    await rw.fs.release(opened.fh)
    assert _ops(rw, "r") == ["PutObject"], "no request for the read's atime"
    assert _meta(rw, "r") == stored
    assert (await rw.fs.getattr(inode)).atime_ns == shown.atime_ns


async def test_directories_and_links_get_all_three_times_as_ossfs_gives_them(
    rw: WriteRig,
) -> None:
    d = await rw.fs.mkdir(ROOT_INODE, "d", 0o755)
    link = await rw.fs.symlink(ROOT_INODE, "l", "d")
    for key, node in (("d/", d), ("l", link)):
        meta = _meta(rw, key)
        stamps = {meta[f"x-oss-meta-{name}"] for name in ("atime", "mtime", "ctime")}
        assert len(stamps) == 1, meta
        attr = await rw.fs.getattr(node.inode)
        assert attr.atime_ns == attr.ctime_ns == attr.mtime_ns == int(stamps.pop()) * S
        attr = await rw.fs.setattr(node.inode, size=None, mtime_ns=T, atime_ns=T + 1, fh=None)
        await rw.stored()
        meta = _meta(rw, key)
        assert (meta["x-oss-meta-mtime"], meta["x-oss-meta-atime"], meta["x-oss-meta-ctime"]) == (
            "1600000000", "1600000000.000000001", "1600000000.000000001")  # fmt: skip
        assert (attr.mtime_ns, attr.atime_ns, attr.ctime_ns) == (T, T + 1, T + 1)
    assert stat.S_ISLNK((await rw.fs.getattr(link.inode)).mode)
