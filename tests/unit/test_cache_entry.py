"""CacheEntry: what a flush saves, resume after a crash, verification, disk errors."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import crcmod
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ossmount.cache.checkpoint import EntryState, load
from ossmount.cache.entry import CacheEntry
from ossmount.cache.errors import CacheFull, CacheIOError, EntryStateError
from ossmount.cache.opening import open_entry as open_cache_entry
from ossmount.crc64 import crc64
from ossmount.oss.models import ObjectMeta
from tests.unit.cache_helpers import recheck_all, write_part

PART = 10
MiB = 1 << 20
DATA = bytes(range(256)) * 2 + b"tail"  # 516 bytes: 52 parts, the last one 6 bytes
BUCKET = "bkt"
KEY = "dir/some key ü"


AUTO = -1  # meta(crc=AUTO): the true CRC-64 of the data


def meta(data: bytes = DATA, *, etag: str = '"E1"', crc: int | None = AUTO) -> ObjectMeta:
    return ObjectMeta(
        key=KEY,
        size=len(data),
        etag=etag,
        mtime_ns=1_700_000_000_000_000_000,
        crc64=crc64(data) if crc == AUTO else crc,
    )


def open_entry(
    tmp_path: Path, m: ObjectMeta | None = None, part_size: int = PART, *, recheck: bool = True
) -> CacheEntry:
    """Open (or reopen) the entry; `recheck`: re-hash what its checkpoint lists, as a download
    does before serving it, so tests of resuming see the parts as a reader would."""
    entry = open_cache_entry(
        bucket=BUCKET,
        meta=m or meta(),
        part_size=part_size,
        path=tmp_path / "obj.data",
        checkpoint_path=tmp_path / "obj.ckpt",
    )
    return recheck_all(entry) if recheck else entry


def part(index: int, data: bytes = DATA) -> bytes:
    return data[index * PART : (index + 1) * PART]


def write_all(entry: CacheEntry, data: bytes = DATA) -> None:
    for i in range(entry.layout.count):
        write_part(entry, i, part(i, data))


def test_fresh_entry_is_sparse_and_sized(tmp_path: Path) -> None:
    big = ObjectMeta(key=KEY, size=1 << 30, etag='"B"', mtime_ns=0)
    entry = open_entry(tmp_path, big, part_size=8 << 20)
    st = os.fstat(entry.fd)
    assert st.st_size == 1 << 30
    assert st.st_blocks * 512 < 1 << 20  # sparse, not allocated
    assert entry.state is EntryState.PARTIAL
    assert entry.missing_parts(range(3)) == [0, 1, 2]
    assert entry.layout.contiguous_offset(set(entry.present_parts())) == 0
    entry.close()


def test_write_read_and_missing_part_is_refused(tmp_path: Path) -> None:
    entry = open_entry(tmp_path)
    write_part(entry, 0, part(0))
    write_part(entry, 2, part(2))
    # The prefetcher's way: pwrite to fd itself, then record with the CRC it computed.
    os.pwrite(entry.fd, part(1), PART)
    entry.record_part(1, crc64(part(1)))
    assert entry.read(5, 20) == DATA[5:25]
    assert entry.read(0, 30) == DATA[:30]
    assert entry.layout.contiguous_offset(set(entry.present_parts())) == 30
    assert entry.missing_parts([3, 1, 5, 2]) == [3, 5]
    with pytest.raises(EntryStateError, match=r"parts \[3\]"):
        entry.read(25, 10)
    assert entry.read(len(DATA), 100) == b""
    entry.close()
    with pytest.raises(EntryStateError, match="closed"):
        entry.read(0, 1)


def test_flush_saves_the_checkpoint_without_a_sync_and_is_cheap_when_clean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No fdatasync, no fsync (cache.checkpoint, "Durability": every listed part is re-checked
    before it is served again, so a sync would only bound re-fetching after a power loss)."""
    entry = open_entry(tmp_path)
    calls: list[str] = []
    real_replace, real_open = os.replace, os.open

    def sync(fd: int) -> None:
        calls.append("sync")

    def replace(src: str | Path, dst: str | Path) -> None:
        calls.append(f"replace {Path(dst).name}")
        real_replace(src, dst)

    def open_(path: str | Path, flags: int, *args: int, **kwargs: int) -> int:
        if flags & os.O_EXCL and Path(path).suffix == ".ckpt":
            calls.append(f"create {Path(path).name}")  # the first checkpoint, in place
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "fdatasync", sync)
    monkeypatch.setattr(os, "fsync", sync)
    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "replace", replace)
    entry.flush()
    assert calls == []  # nothing recorded, nothing to do
    write_part(entry, 0, part(0))
    assert entry.needs_flush
    entry.flush()
    assert calls == ["create obj.ckpt"]
    assert not entry.needs_flush
    entry.flush()
    assert calls == ["create obj.ckpt"]
    write_part(entry, 1, part(1))
    entry.flush()  # a checkpoint exists now: replaced atomically, never rewritten in place
    assert calls == ["create obj.ckpt", "replace obj.ckpt"]
    entry.close()
    assert set(load(tmp_path / "obj.ckpt").part_crcs) == {0, 1}


def test_resume_after_crash_keeps_exactly_the_flushed_parts(tmp_path: Path) -> None:
    entry = open_entry(tmp_path)
    for i in (0, 1, 5):
        write_part(entry, i, part(i))
    entry.flush()
    write_part(entry, 2, part(2))  # recorded, never flushed
    os.pwrite(entry.fd, b"torn", 3 * PART)  # a part being received when the crash hit
    # "Crash": the object is dropped without close() or flush(); only the fd goes away.
    os.close(entry.fd)
    del entry

    again = open_entry(tmp_path)
    assert [i for i in range(again.layout.count) if again.is_done(i)] == [0, 1, 5]
    assert again.read(0, 20) == DATA[:20]
    assert again.read(50, 10) == DATA[50:60]
    assert again.layout.contiguous_offset(set(again.present_parts())) == 20
    assert again.missing_parts(range(6)) == [2, 3, 4]
    again.close()


def test_resume_after_real_kill_9(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from ossmount.cache.opening import open_entry as open_cache_entry
        from ossmount.oss.models import ObjectMeta
        from tests.unit.cache_helpers import write_part
        data = {DATA!r}
        m = ObjectMeta(key={KEY!r}, size=len(data), etag='"E1"', mtime_ns=1_700_000_000_000_000_000)
        root = Path({str(tmp_path)!r})
        e = open_cache_entry(bucket="bkt", meta=m, part_size={PART}, path=root / "obj.data",
                            checkpoint_path=root / "obj.ckpt")
        for i in (0, 1, 2, 7):
            write_part(e, i, data[i * {PART}:(i + 1) * {PART}])
        e.flush()
        write_part(e, 3, data[3 * {PART}:4 * {PART}])
        os.pwrite(e.fd, b"XXXXX", 4 * {PART})
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, check=False)
    assert proc.returncode == -9, proc.stderr.decode()
    entry = open_entry(tmp_path, meta(crc=None))
    assert [i for i in range(entry.layout.count) if entry.is_done(i)] == [0, 1, 2, 7]
    assert entry.read(0, 30) == DATA[:30]
    for i in range(entry.layout.count):
        if not entry.is_done(i):
            write_part(entry, i, part(i))
    result = entry.verify()
    assert result.state is EntryState.UNVERIFIABLE
    assert result.actual == crc64(DATA)
    entry.close()


def test_verify_matches_crcmod_reference(tmp_path: Path) -> None:
    reference = crcmod.mkCrcFun(0x142F0E1EBA9EA3693, initCrc=0, xorOut=0xFFFFFFFFFFFFFFFF, rev=True)
    expected = reference(DATA)
    entry = open_entry(tmp_path, meta(crc=expected))
    for i in reversed(range(entry.layout.count)):  # out of order on purpose
        write_part(entry, i, part(i))
    assert entry.complete
    assert entry.state is EntryState.PARTIAL
    result = entry.verify()
    assert result.state is EntryState.VERIFIED
    assert result.expected == result.actual == expected
    assert load(tmp_path / "obj.ckpt") is None  # verify() does no I/O; flush persists
    entry.flush()
    cp = load(tmp_path / "obj.ckpt")
    assert cp is not None
    assert cp.state is EntryState.VERIFIED
    entry.close()
    # Persisted: a later open knows without any write or hash.
    again = open_entry(tmp_path, meta(crc=None))
    assert again.state is EntryState.VERIFIED
    assert again.complete
    assert again.meta.crc64 == expected  # taken from the checkpoint
    assert again.read(0, len(DATA)) == DATA
    with pytest.raises(EntryStateError, match="VERIFIED"):
        again.record_part(0, 1)
    again.close()


def test_verify_unverifiable_then_upgraded_when_crc_known(tmp_path: Path) -> None:
    entry = open_entry(tmp_path, meta(crc=None))
    write_all(entry)
    result = entry.verify()
    assert result == type(result)(EntryState.UNVERIFIABLE, None, crc64(DATA))
    entry.close()
    cp = load(tmp_path / "obj.ckpt")
    assert cp is not None
    assert cp.state is EntryState.UNVERIFIABLE
    assert open_entry(tmp_path, meta(crc=None)).state is EntryState.UNVERIFIABLE
    upgraded = open_entry(tmp_path, meta())
    assert upgraded.state is EntryState.PARTIAL
    assert upgraded.complete
    assert upgraded.verify().state is EntryState.VERIFIED
    upgraded.close()


def test_verify_corrupt_logs_and_discard_removes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    entry = open_entry(tmp_path)
    flipped = bytearray(DATA)
    flipped[123] ^= 0x01
    write_all(entry, bytes(flipped))
    entry.flush()
    with caplog.at_level(logging.ERROR):
        result = entry.verify()
    assert result.state is EntryState.CORRUPT
    assert result.expected == crc64(DATA)
    assert result.actual == crc64(bytes(flipped))
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    message = record.getMessage()
    for word in (BUCKET, f"oss://{BUCKET}/{KEY}:", str(result.expected), str(result.actual)):
        assert word in message
    # CORRUPT is never persisted: the checkpoint still says PARTIAL.
    cp = load(tmp_path / "obj.ckpt")
    assert cp is not None
    assert cp.state is EntryState.PARTIAL
    entry.discard()
    assert not (tmp_path / "obj.ckpt").exists()
    assert not (tmp_path / "obj.data").exists()
    assert not entry.usable
    with pytest.raises(EntryStateError, match="discarded"):
        entry.read(0, 1)
    # A part download still unwinding writes into the unlinked inode, never a reused fd.
    assert os.pwrite(entry.fd, b"late", 0) == 4
    entry.flush()  # no-op: nothing may recreate the checkpoint
    entry.close()
    assert entry.fd == -1
    assert not (tmp_path / "obj.ckpt").exists()


def test_verify_before_complete_is_refused(tmp_path: Path) -> None:
    entry = open_entry(tmp_path)
    write_part(entry, 0, part(0))
    with pytest.raises(EntryStateError, match="not complete"):
        entry.verify()
    entry.close()


def test_empty_object(tmp_path: Path) -> None:
    entry = open_entry(tmp_path, meta(b""))
    assert entry.layout.count == 0
    assert entry.complete
    assert entry.read(0, 10) == b""
    assert entry.verify().state is EntryState.VERIFIED
    entry.close()
    assert open_entry(tmp_path, meta(b"")).state is EntryState.VERIFIED


def test_other_version_is_discarded_never_mixed(tmp_path: Path) -> None:
    entry = open_entry(tmp_path)
    write_all(entry)
    entry.flush()
    entry.close()
    for changed in (
        meta(etag='"E2"'),
        meta(DATA + b"x"),
        ObjectMeta(key=KEY, size=len(DATA), etag='"E1"', mtime_ns=5, crc64=crc64(DATA)),
        meta(crc=12345),
    ):
        fresh = open_entry(tmp_path, changed)
        assert fresh.missing_parts(range(fresh.layout.count)) == list(range(fresh.layout.count))
        assert not (tmp_path / "obj.ckpt").exists()
        fresh.close()
        assert not (tmp_path / "obj.data").exists()  # nothing durable: no orphan left
    # Same version, another part size: also fresh.
    entry = open_entry(tmp_path)
    write_all(entry)
    entry.close()
    assert open_entry(tmp_path, part_size=PART * 2).missing_parts([0]) == [0]


def test_corrupt_checkpoint_on_open_starts_fresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    entry = open_entry(tmp_path)
    write_all(entry)
    entry.close()
    ckpt = tmp_path / "obj.ckpt"
    raw = bytearray(ckpt.read_bytes())
    raw[-1] ^= 0x80
    ckpt.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING):
        fresh = open_entry(tmp_path)
    assert fresh.missing_parts([0, 1]) == [0, 1]
    assert any(BUCKET in r.getMessage() and str(ckpt) in r.getMessage() for r in caplog.records)
    fresh.close()


def test_data_file_of_wrong_size_starts_fresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    entry = open_entry(tmp_path)
    write_all(entry)
    entry.close()
    os.truncate(tmp_path / "obj.data", 100)
    with caplog.at_level(logging.WARNING):
        fresh = open_entry(tmp_path)
    assert not fresh.is_done(0)
    assert os.fstat(fresh.fd).st_size == len(DATA)
    assert "100 bytes" in caplog.text
    fresh.close()


def test_a_failing_sync_cannot_fail_a_flush_nor_drop_parts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replaces the fdatasync-failure test: no flush syncs any more, so a disk whose syncs
    fail still gets its checkpoints, and recorded parts stay readable."""
    entry = open_entry(tmp_path)
    write_part(entry, 0, part(0))
    entry.flush()
    write_part(entry, 1, part(1))
    write_part(entry, 2, part(2))

    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", broken)
    monkeypatch.setattr(os, "fsync", broken)
    entry.flush()
    monkeypatch.undo()
    assert entry.missing_parts([0, 1, 2]) == []
    cp = load(tmp_path / "obj.ckpt")
    assert cp is not None
    assert set(cp.part_crcs) == {0, 1, 2}
    entry.close()


def test_full_disk_on_checkpoint_keeps_state_and_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = open_entry(tmp_path)
    write_part(entry, 0, part(0))
    real_write = os.write

    def full(fd: int, data: bytes | memoryview) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(CacheFull) as info:
        entry.flush()
    assert info.value.bucket == BUCKET
    assert info.value.path == tmp_path / "obj.ckpt"
    assert entry.is_done(0)  # the bytes are durable; only the checkpoint is missing
    assert entry.needs_flush
    monkeypatch.setattr(os, "write", real_write)
    entry.flush()
    assert not entry.needs_flush
    cp = load(tmp_path / "obj.ckpt")
    assert cp is not None
    assert set(cp.part_crcs) == {0}
    entry.close()


def test_full_disk_on_part_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = open_entry(tmp_path)

    def full(fd: int, data: bytes | memoryview, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(CacheFull, match="part 3"):
        write_part(entry, 3, part(3))
    monkeypatch.undo()
    assert not entry.is_done(3)
    entry.close()


def test_bad_arguments(tmp_path: Path) -> None:
    entry = open_entry(tmp_path)
    with pytest.raises(IndexError):
        entry.record_part(entry.layout.count, 0)
    with pytest.raises(ValueError, match="CRC"):
        entry.record_part(0, 1 << 64)
    with pytest.raises(EntryStateError, match="bytes"):
        write_part(entry, 0, b"short")  # a body shorter than its part is never recorded
    assert not entry.is_done(0)
    entry.close()
    entry.close()  # idempotent


def test_flush_in_thread_while_recording(tmp_path: Path) -> None:
    data = os.urandom(PART * 400)
    m = meta(data)
    entry = open_entry(tmp_path, m)
    stop = threading.Event()
    errors: list[BaseException] = []

    def flusher() -> None:
        try:
            while not stop.is_set():
                entry.flush()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=flusher)
    thread.start()
    try:
        for i in range(entry.layout.count):
            write_part(entry, i, part(i, data))
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert entry.verify().state is EntryState.VERIFIED
    entry.close()
    cp = load(tmp_path / "obj.ckpt")
    assert cp is not None
    assert cp.state is EntryState.VERIFIED


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=3000), st.integers(1, 700))
def test_combined_crc_equals_whole_crc(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, part_size: int
) -> None:
    tmp_path = tmp_path_factory.mktemp("combine")
    entry = open_entry(tmp_path, meta(data), part_size=part_size)
    for i in range(entry.layout.count):
        start, length = entry.layout.span(i)
        write_part(entry, i, data[start : start + length])
    assert entry.combined_crc() == crc64(data)
    assert entry.verify().state is EntryState.VERIFIED
    entry.close()


def test_server_crc_learnt_after_open_is_persisted(tmp_path: Path) -> None:
    entry = open_entry(tmp_path, meta(crc=None))
    write_part(entry, 0, part(0))
    entry.flush()
    entry.set_server_crc64(crc64(DATA))
    entry.set_server_crc64(crc64(DATA))  # same value again: fine
    with pytest.raises(ValueError, match="another object version"):
        entry.set_server_crc64(crc64(DATA) ^ 1)
    saved = load(tmp_path / "obj.ckpt")
    assert saved is not None
    assert set(saved.part_crcs) == set(entry.present_parts())  # no part pending
    entry.flush()  # no new part, but the CRC is new: written
    cp = load(tmp_path / "obj.ckpt")
    assert cp is not None
    assert cp.server_crc64 == crc64(DATA)
    write_all(entry)
    assert entry.verify().state is EntryState.VERIFIED
    entry.close()


def test_unverifiable_becomes_verifiable_when_crc_learnt(tmp_path: Path) -> None:
    entry = open_entry(tmp_path, meta(crc=None))
    write_all(entry)
    assert entry.verify().state is EntryState.UNVERIFIABLE
    entry.set_server_crc64(crc64(DATA))
    assert entry.state is EntryState.PARTIAL
    assert entry.verify().state is EntryState.VERIFIED
    entry.close()


def test_cache_io_error_is_an_oserror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = open_entry(tmp_path)

    def full(fd: int, data: bytes | memoryview, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(OSError, match="No space") as info:
        write_part(entry, 0, part(0))
    monkeypatch.undo()
    assert isinstance(info.value, CacheFull)
    assert info.value.errno == errno.ENOSPC
    assert str(tmp_path / "obj.data") in str(info.value)
    entry.close()


def test_needs_flush_says_exactly_when_flush_would_write(tmp_path: Path) -> None:
    """The scheduler skips the worker-thread hop when this is False, so it must never be
    False while flush would have persisted something."""
    entry = open_entry(tmp_path)
    assert not entry.needs_flush  # nothing recorded: no checkpoint to write
    entry.flush()
    assert not (tmp_path / "obj.ckpt").exists()
    write_part(entry, 0, part(0))
    assert entry.needs_flush
    entry.flush()
    assert not entry.needs_flush
    for i in range(1, entry.layout.count):
        write_part(entry, i, part(i))
    entry.flush()
    assert load(tmp_path / "obj.ckpt").state is EntryState.PARTIAL  # type: ignore[union-attr]
    entry.verify()
    assert entry.needs_flush  # the verdict is new
    entry.flush()
    assert not entry.needs_flush
    assert load(tmp_path / "obj.ckpt").state is EntryState.VERIFIED  # type: ignore[union-attr]
    entry.close()
    assert not entry.needs_flush


BIG_PART = 512 * 1024  # above the 256 KiB head part: parts 0 and last differ from the rest


@pytest.mark.parametrize(
    ("part_size", "size"),
    [
        *[(PART, n) for n in (0, 1, PART - 1, PART, PART + 1, 3 * PART, 3 * PART + 7)],
        *[(BIG_PART, n) for n in (1, 256 * 1024, 256 * 1024 + 1, 3 * BIG_PART + 99)],
    ],
)
def test_cached_bytes_is_the_sum_of_the_recorded_spans(
    tmp_path: Path, part_size: int, size: int
) -> None:
    data = bytes(i % 251 for i in range(size))
    entry = open_entry(tmp_path, meta(data), part_size=part_size)
    spans = {i: entry.layout.span(i) for i in range(entry.layout.count)}
    recorded: set[int] = set()
    assert entry.cached_bytes == 0
    for i in [*range(entry.layout.count)][::-1]:  # the last part first, then down to the head
        start, length = spans[i]
        write_part(entry, i, data[start : start + length])
        recorded.add(i)
        assert entry.cached_bytes == sum(spans[j][1] for j in recorded)
    assert entry.cached_bytes == size


def test_resuming_a_partial_download_is_info_reopening_a_verified_entry_is_debug(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    entry = open_entry(tmp_path)
    write_part(entry, 0, part(0))
    entry.flush()
    entry.close()
    caplog.set_level(logging.DEBUG, logger="ossmount.cache")
    open_entry(tmp_path).close()
    resumed = [r for r in caplog.records if "resumed" in r.getMessage()]
    assert [r.levelno for r in resumed] == [logging.INFO]
    entry = open_entry(tmp_path)
    write_all(entry)
    entry.verify()
    entry.flush()
    entry.close()
    caplog.clear()
    open_entry(tmp_path).close()
    resumed = [r for r in caplog.records if "resumed" in r.getMessage()]
    assert [r.levelno for r in resumed] == [logging.DEBUG]


def test_checkpoint_with_a_listing_mtime_resumes_for_a_head_meta(tmp_path: Path) -> None:
    """Checkpoints written before mtimes were whole seconds (a listing's meta kept its
    milliseconds) still resume: the version is key, ETag and size, not Last-Modified."""
    from dataclasses import replace

    listed = replace(meta(), mtime_ns=1_700_000_000_123_000_000)
    entry = open_entry(tmp_path, listed)
    write_all(entry)
    entry.close()
    headed = replace(meta(), mtime_ns=1_700_000_000_000_000_000)
    again = open_entry(tmp_path, headed)
    assert again.missing_parts(range(again.layout.count)) == []


def test_object_version_is_the_one_identity() -> None:
    from dataclasses import replace

    from ossmount.oss.models import ObjectVersion

    m = meta()
    assert m.version == ObjectVersion(KEY, '"E1"', len(DATA))
    assert replace(m, mtime_ns=0, crc64=None).version == m.version
    assert replace(m, etag='"E2"').version != m.version
    assert replace(m, size=1).version != m.version
    assert hash(m.version) == hash(ObjectVersion(KEY, '"E1"', len(DATA)))


def failing_pwrite(code: int) -> Callable[..., int]:
    def pwrite(*_args: object) -> int:
        raise OSError(code, os.strerror(code))

    return pwrite


def test_part_sink_maps_other_write_errors_to_cache_io_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = open_entry(tmp_path)
    monkeypatch.setattr(os, "pwrite", failing_pwrite(errno.EIO))
    with pytest.raises(CacheIOError, match="part 1") as info:
        write_part(entry, 1, part(1))
    assert not entry.is_done(1)
    assert (info.value.errno, type(info.value)) == (errno.EIO, CacheIOError)
    entry.close()


def test_a_large_part_gets_its_blocks_reserved_once_before_its_first_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(3 * MiB)
    entry = open_entry(tmp_path, meta(data), part_size=2 * MiB)
    calls: list[tuple[int, int]] = []
    real = os.posix_fallocate

    def allocate(fd: int, offset: int, length: int) -> None:
        calls.append((offset, length))
        real(fd, offset, length)

    monkeypatch.setattr(os, "posix_fallocate", allocate)
    for index in range(entry.layout.count):
        write_part(entry, index, data[slice(*_bounds(entry, index))])
    big = [
        entry.layout.span(i) for i in range(entry.layout.count) if entry.layout.span(i)[1] >= MiB
    ]
    assert calls == big  # each part of >= 1 MiB once, smaller ones never
    assert entry.read(0, len(data)) == data
    entry.close()


def test_a_full_disk_at_reservation_fails_the_part_before_its_bytes_and_no_fallocate_is_fine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(3 * MiB)
    entry = open_entry(tmp_path, meta(data), part_size=2 * MiB)
    big = max(range(entry.layout.count), key=lambda i: entry.layout.span(i)[1])  # >= 1 MiB
    span = _bounds(entry, big)

    def refuse(code: int) -> Callable[[int, int, int], None]:
        def allocate(fd: int, offset: int, length: int) -> None:
            raise OSError(code, os.strerror(code))

        return allocate

    monkeypatch.setattr(os, "posix_fallocate", refuse(errno.ENOSPC))
    with pytest.raises(CacheFull, match=f"allocating part {big}"):
        write_part(entry, big, data[slice(*span)])
    assert not entry.is_done(big)
    monkeypatch.setattr(os, "posix_fallocate", refuse(errno.EOPNOTSUPP))
    write_part(entry, big, data[slice(*span)])  # a filesystem without fallocate just writes
    assert entry.is_done(big)
    entry.close()


def _bounds(entry: CacheEntry, index: int) -> tuple[int, int]:
    start, length = entry.layout.span(index)
    return start, start + length
