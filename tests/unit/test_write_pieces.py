"""The CRC-64s of an upload's parts cut at the read cache's part boundaries (oss/_cuts.py,
write/pieces.py): taken in the pass that hashes what is sent, on every send path that can, and
only handed to the commit when every part of the Complete has its own."""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from ossmount.cache.adopt import part_crcs
from ossmount.cache.ranges import HEAD_PART_SIZE, PartLayout
from ossmount.crc64 import combine, crc64
from ossmount.emulator import Emulator
from ossmount.oss import _upload_wire
from ossmount.oss._cuts import fold, pieces, pieces_of_bytes
from ossmount.oss._writes import OssWrites
from ossmount.write import CommitResult, PartRecord, Uploader, UploadLedger, UploadSettings
from ossmount.write.commit_types import Piece
from ossmount.write.pieces import PieceBook, cache_cuts, hash_part
from tests.unit.test_write_uploader import make_client, stage

KiB = 1024


def _direct_cache_crcs(data: bytes, cache_part_size: int) -> dict[int, int]:
    layout = PartLayout(len(data), cache_part_size)
    out = {}
    for index in range(layout.count):
        start, length = layout.span(index)
        out[index] = crc64(data[start : start + length])
    return out


def _file_pieces(data: bytes, part_size: int, cache_part_size: int) -> tuple[Piece, ...]:
    """Every part hashed as the wire does (`fold` over reads of random sizes), kept in a
    PieceBook, collected."""
    rng = random.Random(len(data) ^ part_size ^ cache_part_size)
    book = PieceBook(cache_part_size)
    parts = {}
    for number in range(1, -(-len(data) // part_size) + 1):
        start = (number - 1) * part_size
        body = data[start : start + part_size]
        cuts = book.cuts(start, len(body))
        crc, marks, pos = 0, list[int](), 0
        while pos < len(body):
            view = memoryview(body)[pos : pos + rng.randint(1, 3 * cache_part_size)]
            crc = fold(view, crc, pos, cuts, marks)
            pos += len(view)
        found = pieces(marks, cuts, len(body), crc)
        whole = 0
        for got, (a, b) in zip(found, itertools.pairwise((0, *cuts, len(body))), strict=True):
            assert got == crc64(body[a:b])
            whole = combine(whole, got, b - a)
        assert whole == crc == crc64(body)
        parts[number] = PartRecord(number, len(body), crc, "e")
        book.keep(parts[number], start, found)
    return book.collect(parts, part_size, len(data))


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(1, 1_500_000),
    part_size=st.integers(100 * KiB, 700 * KiB),
    cache_part_size=st.sampled_from([4 * KiB, 100 * KiB, HEAD_PART_SIZE, 300 * KiB, 1 << 20]),
)
def test_pieces_make_both_the_part_crcs_and_the_cache_part_crcs(
    size: int, part_size: int, cache_part_size: int
) -> None:
    data = random.Random(size).randbytes(size)
    found = _file_pieces(data, part_size, cache_part_size)
    assert found, "every part has its pieces"
    assert [p.offset for p in found] == sorted({p.offset for p in found})
    assert sum(p.length for p in found) == size
    crcs = part_crcs(PartLayout(size, cache_part_size), found)
    assert crcs == _direct_cache_crcs(data, cache_part_size)


@settings(max_examples=200, deadline=None)
@given(
    start=st.integers(0, 5 << 20),
    length=st.integers(1, 3 << 20),
    cache_part_size=st.integers(1, 2 << 20),
)
def test_cuts_are_exactly_the_cache_boundaries_inside_a_part(
    start: int, length: int, cache_part_size: int
) -> None:
    layout = PartLayout(start + length, cache_part_size)
    want = [layout.start(i) - start for i in range(1, layout.count) if layout.start(i) > start]
    assert list(cache_cuts(start, length, cache_part_size)) == want


def test_a_part_whose_pieces_are_missing_or_superseded_leaves_the_commit_without_pieces() -> None:
    data = random.Random(3).randbytes(700 * KiB)
    book = PieceBook(HEAD_PART_SIZE)
    parts = {}
    for number, start in ((1, 0), (2, 350 * KiB)):
        body = data[start : start + 350 * KiB]
        parts[number] = PartRecord(number, len(body), crc64(body), "e")
        book.keep(parts[number], start, pieces_of_bytes(body, book.cuts(start, len(body))))
    assert len(book.collect(parts, 350 * KiB, len(data))) == 4
    parts[2] = PartRecord(2, 350 * KiB, parts[2].crc64, "e2")  # sent again: no pieces taken
    assert book.collect(parts, 350 * KiB, len(data)) == ()
    book.keep(parts[2], 350 * KiB, ())
    assert book.collect(parts, 350 * KiB, len(data)) == ()
    assert PieceBook(0).collect(parts, 350 * KiB, len(data)) == (), "nobody asked"


def test_hash_part_takes_the_pieces_of_a_copied_part_in_its_one_read(tmp_path: Path) -> None:
    data = random.Random(4).randbytes(2 << 20)
    path = tmp_path / "f"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        crc, found = hash_part(fd, 1 << 20, 1 << 20, (5, 600 * KiB))
        with pytest.raises(EOFError):
            hash_part(fd, 1 << 20, (1 << 20) + 1)
    finally:
        os.close(fd)
    body = data[1 << 20 :]
    assert crc == crc64(body)
    assert found == (crc64(body[:5]), crc64(body[5 : 600 * KiB]), crc64(body[600 * KiB :]))


# -- through the uploader, against the emulator ----------------------------------------------

CACHE_PART = 1 << 20


@pytest.fixture
async def writes(emu: Emulator) -> AsyncIterator[OssWrites]:
    async with make_client(emu.endpoint) as c:
        yield OssWrites(c)


async def _commit(
    writes: OssWrites, tmp_path: Path, data: bytes, part_size: int, *, patch_part0: bool = False
) -> CommitResult:
    """A sequential writer's commit: every full part sent early, then `finish`; with
    `patch_part0`, part 0 rewritten (and invalidated) after it went."""
    settings_ = UploadSettings(part_size=part_size, single_put_max=part_size, parallel=3)
    uploader = Uploader(writes, UploadLedger(tmp_path / "ledger"), settings_)
    staged = stage(tmp_path, data)
    async with trio.open_nursery() as nursery:
        session = uploader.session(staged, uploader.new_record("k"), nursery)
        session.pieces.cache_part_size = CACHE_PART
        for index in range(len(data) // part_size):
            session.part_ready(index)
        await session.drain()
        if patch_part0:
            with open(staged.data, "r+b") as f:
                f.write(b"PATCHED")
            session.invalidate(0)
        try:
            return await session.finish(len(data))
        finally:
            session.close()


@pytest.mark.parametrize(
    ("part_size", "size"),
    [
        (512 * KiB, 3 * (1 << 20) + 100 * KiB),  # full parts on the worker thread, short last
        (128 * KiB, 1 << 20),  # every part short: read whole, sent from memory
        (8 << 20, 5 << 20),  # one PutObject on the worker thread
    ],
)
async def test_a_commit_carries_the_cache_part_crcs_of_what_it_sent(
    writes: OssWrites, tmp_path: Path, part_size: int, size: int
) -> None:
    data = random.Random(size).randbytes(size)
    result = await _commit(writes, tmp_path, data, part_size)
    assert result.crc64 == crc64(data)
    assert part_crcs(PartLayout(size, CACHE_PART), result.pieces) == _direct_cache_crcs(
        data, CACHE_PART
    )


async def test_a_part_rewritten_after_it_went_brings_the_pieces_of_its_new_bytes(
    writes: OssWrites, tmp_path: Path
) -> None:
    data = random.Random(9).randbytes(2 << 20)
    result = await _commit(writes, tmp_path, data, 512 * KiB, patch_part0=True)
    now = b"PATCHED" + data[7:]
    assert result.crc64 == crc64(now)
    assert part_crcs(PartLayout(len(now), CACHE_PART), result.pieces) == _direct_cache_crcs(
        now, CACHE_PART
    )


async def test_a_long_part_through_httpcore_takes_no_pieces_so_the_commit_has_none(
    writes: OssWrites, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_upload_wire, "ENABLED", False)  # the TLS path
    data = random.Random(10).randbytes(3 << 20)
    result = await _commit(writes, tmp_path, data, 1 << 20)
    assert result.crc64 == crc64(data)
    assert result.pieces == ()
