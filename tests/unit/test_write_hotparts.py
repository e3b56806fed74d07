"""Early parts sent from the FUSE write buffers (write/hotparts.py): a kept part is always the
staging file's bytes, the budget bounds what is held and is all given back, and the staging
file is not read back for parts sent from memory."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from ossmount.crc64 import crc64
from ossmount.emulator import Emulator
from ossmount.fs.staging import Staging
from ossmount.oss import _write_bodies
from ossmount.oss._writes import OssWrites
from ossmount.write import Uploader, UploadLedger, UploadSettings
from ossmount.write.hotparts import HotBudget, HotFiller
from tests.sdk import sdk_get
from tests.unit.test_write_unsynced_seal import client

PS = 128 * 1024


def joined(filler: HotFiller, index: int) -> bytes | None:
    part = filler.full.get(index)
    return None if part is None else b"".join(bytes(p) for p in part.pieces)


def test_appends_fill_parts_from_their_first_byte_only() -> None:
    budget = HotBudget(10 * PS)
    filler = HotFiller(PS, budget)
    data = random.Random(1).randbytes(3 * PS + 10)
    filler.append(0, data[: PS // 2])
    filler.append(PS // 2, data[PS // 2 : PS + PS // 3])  # straddles the boundary: sliced
    filler.append(PS + PS // 3, data[PS + PS // 3 :])
    assert joined(filler, 0) == data[:PS]
    assert joined(filler, 1) == data[PS : 2 * PS]
    assert joined(filler, 2) == data[2 * PS : 3 * PS]
    assert budget.held == 3 * PS + 10  # the 10 bytes of the unfinished part 3 too
    other = HotFiller(PS, budget)
    other.append(5, b"x" * (2 * PS))  # began mid-part: part 0 is not kept, part 1 is
    assert (joined(other, 0), joined(other, 1)) == (None, b"x" * PS)
    filler.clear()
    other.clear()
    assert budget.held == 0


def test_a_part_over_the_budget_is_not_kept_and_nothing_leaks() -> None:
    budget = HotBudget(PS + PS // 2)
    filler = HotFiller(PS, budget)
    for offset in range(0, 4 * PS, PS // 4):
        filler.append(offset, bytes(PS // 4))
        assert budget.held <= budget.limit
    assert sorted(filler.full) == [0]  # part 1 did not fit; 2 and 3 neither
    part = filler.take(0)
    assert part is not None
    part.release()
    part.release()  # idempotent
    assert budget.held == 0


def test_kept_parts_always_match_the_file_under_random_changes() -> None:
    """The invariant, against a model of the staging file: appends at the frontier are kept,
    any other write or a truncate forgets what it touches (as Staging.write/truncate do)."""
    rng = random.Random(15)
    for _ in range(50):
        budget = HotBudget(3 * PS)
        filler = HotFiller(PS, budget)
        model, seq_end = bytearray(), 0
        for _ in range(40):
            op = rng.random()
            if op < 0.7:  # append at the frontier, or a write behind or beyond it
                offset = seq_end if op < 0.5 else rng.randrange(0, len(model) + PS)
                data = rng.randbytes(rng.choice([1, 1000, PS // 3, PS, PS + 7]))
                end = offset + len(data)
                model.extend(bytes(max(0, end - len(model))))
                model[offset:end] = data
                if offset == seq_end:
                    filler.append(offset, data)
                else:
                    filler.forget(offset, end)
                if offset <= seq_end < end:
                    seq_end = end
            elif op < 0.8:
                size = rng.randrange(0, len(model) + PS)
                filler.forget(min(size, len(model)))
                model = model[:size] + bytearray(max(0, size - len(model)))
                seq_end = min(seq_end, size)
            elif filler.full:  # the uploader takes a part and sends it
                index = rng.choice(list(filler.full))
                want = bytes(model[index * PS : (index + 1) * PS])
                part = filler.take(index)
                assert part is not None
                assert b"".join(bytes(p) for p in part.pieces) == want
                part.release()
            for index in filler.full:
                assert joined(filler, index) == bytes(model[index * PS : (index + 1) * PS])
            assert budget.held <= budget.limit
        filler.clear()
        assert budget.held == 0


@pytest.fixture
async def staging(emu: Emulator, tmp_path: Path) -> AsyncIterator[Staging]:
    settings = UploadSettings(part_size=PS, single_put_max=PS, hot_bytes=8 * PS)
    async with client(emu) as c, trio.open_nursery() as nursery:
        up = Uploader(OssWrites(c), UploadLedger(tmp_path / "l"), settings)
        yield Staging(up, tmp_path / "staging", nursery, bucket="bkt")
        nursery.cancel_scope.cancel()


@pytest.fixture
def file_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of every staged-file read an upload body made."""
    reads: list[int] = []
    real = _write_bodies._read_crc

    def spy(fd: int, offset: int, n: int, crc: int) -> tuple[bytes, int]:
        reads.append(n)
        return real(fd, offset, n, crc)

    monkeypatch.setattr(_write_bodies, "_read_crc", spy)
    return reads


async def test_a_sequential_writer_s_parts_go_from_memory(
    emu: Emulator, staging: Staging, file_reads: list[int]
) -> None:
    data = random.Random(2).randbytes(6 * PS + 99)
    staged = staging.start(2, "/f", "f")
    for offset in range(0, len(data), 32 * 1024):
        staging.write(staged, offset, data[offset : offset + 32 * 1024])
    assert staged.session is not None
    await staged.session.drain()
    assert file_reads == []  # parts 1..5 went from the write buffers
    await staging.commit(staged)
    assert sum(file_reads) == 99  # only what was never handed over: the short last part
    assert sdk_get(emu, "f") == data
    await staging.release(staged)
    assert staging._hot is not None
    assert staging._hot.held == 0


async def test_a_part_changed_after_it_was_kept_goes_from_the_file(
    emu: Emulator, staging: Staging, file_reads: list[int]
) -> None:
    data = bytearray(random.Random(3).randbytes(4 * PS))
    staged = staging.start(2, "/g", "g")
    # Part 0 full and kept, not handed over yet (a file of one part would be one PUT).
    staging.write(staged, 0, bytes(data[:PS]))
    assert staged.hot is not None
    assert 0 in staged.hot.full
    staging.write(staged, 10, b"patched")  # behind the frontier: its kept bytes are dropped
    data[10:17] = b"patched"
    staging.write(staged, PS, bytes(data[PS:]))
    await staging.commit(staged)
    assert sdk_get(emu, "g") == bytes(data)
    assert crc64(bytes(data)) == staged.committed.crc64  # type: ignore[union-attr]
    assert sum(file_reads) >= PS  # part 0 went again, from the file
    await staging.release(staged)
    assert staging._hot is not None
    assert staging._hot.held == 0
