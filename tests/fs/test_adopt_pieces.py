"""cache/adopt.py from the upload's CRC-64s: a committed file's checkpoint is built from the
pieces its upload took, without reading the file, only when they make the committed version
and the file has not changed since they were taken; otherwise the file is hashed as before.
Never a checkpoint that lies: every test compares the adopted checkpoint with the bytes."""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from ossmount.cache import adopt
from ossmount.cache.adopt import Adopter
from ossmount.cache.checkpoint import EntryState, load
from ossmount.cache.ranges import PartLayout
from ossmount.cache.store import CacheStore, key_hash
from ossmount.crc64 import crc64
from ossmount.emulator import Emulator
from ossmount.oss.models import ObjectMeta
from ossmount.tree.inodes import ROOT_INODE
from ossmount.write.commit_types import Piece
from tests.fs.test_writes import BUCKET, WriteRig, write_rig

PART = 64 * 1024
MiB = 1 << 20


def _pieces(data: bytes, cuts: list[int]) -> tuple[Piece, ...]:
    bounds = [0, *cuts, len(data)]
    return tuple(Piece(a, b - a, crc64(data[a:b])) for a, b in itertools.pairwise(bounds))


def _crcs(data: bytes, part_size: int) -> dict[int, int]:
    layout = PartLayout(len(data), part_size)
    return {i: crc64(data[layout.span(i)[0] : sum(layout.span(i))]) for i in range(layout.count)}


@pytest.fixture
def store(tmp_path: Path) -> CacheStore:
    s = CacheStore(tmp_path / "cache", bucket=BUCKET)
    s.lock()
    return s


@pytest.fixture
def unread_only(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts every hash of the staged file (`seal_for_cache`'s only read)."""
    hashed: list[int] = []
    real = adopt.hash_span

    def spy(fd: int, offset: int, length: int) -> int:
        hashed.append(offset)
        return real(fd, offset, length)

    monkeypatch.setattr(adopt, "hash_span", spy)
    return hashed


async def test_pieces_that_make_the_version_seal_it_without_reading_a_byte(
    tmp_path: Path, store: CacheStore, unread_only: list[int]
) -> None:
    data = os.urandom(5 * PART + 77)
    staged = tmp_path / "x.data"
    staged.write_bytes(data)
    meta = ObjectMeta("k", len(data), '"e"', 0, crc64(data))
    adopter = Adopter(store, PART)
    # upload parts of 100,000 bytes, cut at the cache's boundaries (64 KiB head, then 64 KiB)
    cuts = sorted({*range(PART, len(data), PART), *range(100_000, len(data), 100_000)})
    checkpoint = await adopter.prepare(staged, meta, _pieces(data, cuts))
    assert checkpoint is not None
    assert unread_only == [], "not read"
    assert adopter.unread == 1
    cp = load(checkpoint)
    assert cp is not None
    assert cp.state is EntryState.VERIFIED
    assert cp.part_crcs == _crcs(data, PART)


@pytest.mark.parametrize("fault", ["flipped", "gap", "straddles", "short", "changed"])
async def test_pieces_that_do_not_make_the_version_mean_hashing_the_file(
    tmp_path: Path, store: CacheStore, unread_only: list[int], fault: str
) -> None:
    data = os.urandom(3 * PART + 5)
    pieces = list(_pieces(data, [PART, 2 * PART, 3 * PART]))
    if fault == "flipped":
        pieces[1] = pieces[1]._replace(crc64=pieces[1].crc64 ^ 1)
    elif fault == "gap":
        del pieces[1]
    elif fault == "straddles":  # right CRCs, but not cut at a cache part boundary
        pieces = list(_pieces(data, [PART + 1, 2 * PART, 3 * PART]))
    elif fault == "short":
        pieces = pieces[:-1]
    else:  # the file holds other bytes than the pieces were taken of, and its CRC is theirs
        data = data[:-1] + bytes([data[-1] ^ 0xFF])
    staged = tmp_path / "x.data"
    staged.write_bytes(data)
    meta = ObjectMeta("k", len(data), '"e"', 0, crc64(data))
    adopter = Adopter(store, PART)
    checkpoint = await adopter.prepare(staged, meta, pieces)
    assert checkpoint is not None
    assert adopter.unread == 0
    assert len(unread_only) == 4, "hashed part by part"
    cp = load(checkpoint)
    assert cp is not None
    assert cp.part_crcs == _crcs(data, PART)


# -- through the FileSystem's staging, against the emulator -----------------------------------


@pytest.fixture
async def rw(emu: Emulator, tmp_path: Path) -> AsyncIterator[WriteRig]:
    async for rig in write_rig(emu, tmp_path, rw=True):
        yield rig


def _adopted(rig: WriteRig, key: str) -> dict[int, int]:
    h = key_hash(key)
    cp = load(rig.store.root / BUCKET / h[:2] / f"{h}.ckpt")
    assert cp is not None, f"{key} is not in the cache"
    assert cp.state is EntryState.VERIFIED
    return cp.part_crcs


async def _wait_adopted(rig: WriteRig, tmp_path: Path, key: str) -> tuple[int, dict[int, int]]:
    """Once the staged file has gone to the read cache: how many adoptions did not read
    their file again (Adopter.unread), and the part CRCs of `key`'s verified entry."""
    with trio.fail_after(20):
        while list((tmp_path / "staging").glob("*.data")):
            await trio.sleep(0.01)
    assert rig.staging is not None
    assert rig.staging.adopter is not None
    return rig.staging.adopter.unread, _adopted(rig, key)


async def test_a_part_rewritten_after_it_went_is_adopted_from_its_second_send(
    rw: WriteRig, tmp_path: Path
) -> None:
    fs = rw.fs
    data = bytearray(random.Random(1).randbytes(3 * MiB + 300_000))
    opened, _ = await fs.create(ROOT_INODE, "w", os.O_RDWR | os.O_CREAT)
    fs.write(opened.fh, 0, bytes(data))  # parts 0-2 go early
    assert rw.staging is not None
    staged = next(iter(rw.staging.by_inode.values()))
    assert staged.session is not None
    await staged.session.drain()
    fs.write(opened.fh, 100, b"rewritten after it went")
    data[100:123] = b"rewritten after it went"
    await fs.flush(opened.fh)
    await fs.release(opened.fh)
    assert await _wait_adopted(rw, tmp_path, "w") == (1, _crcs(bytes(data), MiB))


async def test_a_file_written_after_its_commit_is_adopted_as_its_last_commit(
    rw: WriteRig, tmp_path: Path
) -> None:
    fs = rw.fs
    data = bytearray(random.Random(2).randbytes(2 * MiB + 5))
    opened, _ = await fs.create(ROOT_INODE, "a", os.O_RDWR | os.O_CREAT)
    fs.write(opened.fh, 0, bytes(data))
    await fs.fsync(opened.fh)
    fs.write(opened.fh, 3, b"after the commit")  # dirty: the release commits again
    data[3:19] = b"after the commit"
    await fs.release(opened.fh)
    adopted = await _wait_adopted(rw, tmp_path, "a")
    assert rw.emu.get_bytes(BUCKET, "a") == bytes(data)
    # its unchanged part was copied server-side, its pieces taken as it was hashed
    assert sum(1 for r in rw.emu.requests if r.op == "UploadPartCopy") == 2
    assert adopted == (1, _crcs(bytes(data), MiB))


async def test_a_file_renamed_after_its_commit_is_hashed_not_taken_from_its_pieces(
    rw: WriteRig, tmp_path: Path
) -> None:
    fs = rw.fs
    data = random.Random(3).randbytes(2 * MiB + 5)
    opened, _ = await fs.create(ROOT_INODE, "r", os.O_RDWR | os.O_CREAT)
    fs.write(opened.fh, 0, data)
    await fs.fsync(opened.fh)
    await fs.rename(ROOT_INODE, "r", ROOT_INODE, "r2", 0)
    await fs.release(opened.fh)
    assert await _wait_adopted(rw, tmp_path, "r2") == (0, _crcs(data, MiB))
