"""A `kill -9` while a write-back upload is pending must not lose what a close acknowledged,
nor bring back what an unlink or a rename removed. Found by the crash walk
(test_write_crashwalk.py); each test here failed before its fix.

A write-back upload is made to wait its turn by holding the 16 that may run at once
(Staging's `writeback_parallel`) with a stall on the server."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from ossmount.emulator import Emulator
from ossmount.emulator.app import RequestRecord
from ossmount.emulator.faults import FaultRule
from ossmount.write.journal import load
from tests.mount.conftest import MountFactory
from tests.mount.harness import BUCKET, Mount
from tests.mount.test_write import (
    RW,
    MiB,
    kill_9_while_the_last_part_is_sent,
    server_bytes,
    server_keys,
)
from tests.mount.test_write_crashwalk import _open_uploads

WB = (*RW, "--writeback")
PARALLEL = 16  # write-back uploads at once (fs/staging.py)


def _hold_the_uploads(emulator: Emulator, mount: Mount) -> FaultRule:
    """Write-back-close PARALLEL files whose uploads the server then holds: the next file
    closed waits for one of them to finish before its upload starts."""
    held = FaultRule("stall", op="PutObject", key="held*", times=None, seconds=3.0)
    emulator.faults.add(held)
    for i in range(PARALLEL):
        (mount.path / f"held{i}").write_bytes(b"h")
    deadline = time.monotonic() + 10
    while held.seen < PARALLEL:
        assert time.monotonic() < deadline, f"only {held.seen} uploads started"
        time.sleep(0.01)
    return held


def _crash(emulator: Emulator, mount: Mount) -> None:
    mount.kill()
    subprocess.run(["fusermount3", "-u", "-z", str(mount.path)], check=False)
    emulator.faults.clear()


def _staged_files(mount: Mount) -> list[str]:
    return [
        p.name for p in (mount.cache / "staging").iterdir() if p.suffix not in (".ledger", ".spare")
    ]


def _reopen_and_truncate(path: Path, kept: int) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)  # waits for that upload now
    os.write(fd, b"never closed")
    return fd


def _write_through_the_other(path: Path, kept: int) -> int:
    os.pwrite(kept, b"NEVER", 0)
    os.pwrite(kept, b"closed", 100)
    return kept


def _ftruncate_the_other(path: Path, kept: int) -> int:
    os.ftruncate(kept, 3)
    return kept


@pytest.mark.parametrize(
    "change", [_reopen_and_truncate, _write_through_the_other, _ftruncate_the_other]
)
def test_a_file_changed_while_its_writeback_upload_waits_keeps_the_closed_version(
    emulator: Emulator, make_mount: MountFactory, change: Callable[[Path, int], int]
) -> None:
    """An O_TRUNC open, a write or an ftruncate used to change the sealed bytes before their
    upload read them: the close's version never went up, and the sealed journal no longer
    matched the file (another size: never uploaded; the same: other bytes went up)."""
    mount = make_mount(args=WB).start()
    path = mount.path / "f"
    kept = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    _hold_the_uploads(emulator, mount)
    acknowledged = b"the version the close acknowledged"
    path.write_bytes(acknowledged)  # sealed; its upload waits its turn
    fd = change(path, kept)  # waits for that upload now
    _crash(emulator, mount)
    for dead in {fd, kept}:
        _close_dead(dead)
    new = make_mount(args=WB).start()
    assert server_bytes(emulator, "f") == acknowledged
    assert (new.path / "f").read_bytes() == acknowledged
    assert _staged_files(new) == []


def test_a_writeback_close_of_an_unlinked_file_is_not_uploaded_after_a_crash(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    """The close of an unlinked file still open elsewhere sealed its journal under the name
    it lost; the next mount uploaded it there."""
    mount = make_mount(args=WB).start()
    keep = os.open(mount.path / "f", os.O_RDWR | os.O_CREAT, 0o644)
    fd = os.open(mount.path / "f", os.O_WRONLY)
    os.write(fd, b"unlinked before its close")
    os.unlink(mount.path / "f")
    os.close(fd)
    _crash(emulator, mount)
    _close_dead(keep)
    new = make_mount(args=WB).start()
    assert "f" not in server_keys(emulator)
    assert not (new.path / "f").exists()
    assert _staged_files(new) == []


def test_unlink_and_rename_over_a_file_whose_writeback_upload_waits_are_not_undone(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    """Each left the file's sealed journal behind (its upload had not started, and a handle
    kept it staged): after a crash the next mount uploaded the unlinked file again, and the
    replaced one over the file renamed onto its name."""
    emulator.put_object("bkt", "src", b"the file renamed over victim")
    mount = make_mount(args=WB).start()
    _hold_the_uploads(emulator, mount)
    handles = []
    for name in ("gone", "victim"):
        handles.append(os.open(mount.path / name, os.O_RDWR | os.O_CREAT, 0o644))
        (mount.path / name).write_bytes(b"sealed, waiting for its upload")  # a close: sealed
    os.unlink(mount.path / "gone")
    os.rename(mount.path / "src", mount.path / "victim")
    _crash(emulator, mount)
    for fd in handles:
        _close_dead(fd)
    new = make_mount(args=WB).start()
    assert "gone" not in server_keys(emulator)
    assert "src" not in server_keys(emulator)
    assert server_bytes(emulator, "victim") == b"the file renamed over victim"
    assert (new.path / "victim").read_bytes() == b"the file renamed over victim"
    assert _staged_files(new) == []


def _close_dead(fd: int) -> None:
    """A descriptor of the killed mount (its close fails with ENOTCONN)."""
    with contextlib.suppress(OSError):
        os.close(fd)


def _until(what: str, ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 15
    while not ready():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _failed_writeback(
    emulator: Emulator, make_mount: MountFactory, data: bytes, refusals: int | None = None
) -> Mount:
    """A write-back mount (one attempt per upload) whose upload of `f` (written with `data`)
    failed: the server refuses it `refusals` times (None: until its faults are cleared)."""
    emulator.faults.add(FaultRule("error", op="PutObject", key="f", times=refusals, status=503,
                                  code="ServiceUnavailable"))  # fmt: skip
    mount = make_mount(args=(*WB, "--max-attempts", "1")).start()
    (mount.path / "f").write_bytes(data)
    _until("the failed upload", lambda: "write-back upload failed" in mount.log())
    return mount


def test_a_writeback_file_whose_upload_failed_stays_shown_and_is_uploaded_before_it_changes(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    """Its close acknowledged v1, so v1 may neither vanish from the mount (it did: the file
    was dropped from view, and its sealed copy could later land over a newer version) nor be
    changed before it is on OSS: a write first commits v1, and fails while that fails."""
    failing = FaultRule("error", op="PutObject", key="f", times=None, status=503,
                        code="ServiceUnavailable")  # fmt: skip
    emulator.faults.add(failing)
    mount = make_mount(args=(*WB, "--max-attempts", "1")).start()
    f = mount.path / "f"
    f.write_bytes(b"acknowledged v1")
    _until("the failed upload", lambda: "write-back upload failed" in mount.log())
    assert os.listdir(mount.path) == ["f"]
    assert f.read_bytes() == b"acknowledged v1"
    assert os.getxattr(f, "user.ossmount.state") == b"upload-failed"
    fd = os.open(f, os.O_WRONLY)
    try:
        with pytest.raises(OSError, match="Input/output error") as refused:
            os.pwrite(fd, b"V2", 0)  # v1 is tried first, and fails again
        assert refused.value.errno == errno.EIO
        assert f.read_bytes() == b"acknowledged v1", "not changed before it is on OSS"
        emulator.faults.clear()
        os.pwrite(fd, b"V2", 0)  # v1 goes up first, then this write lands
        assert server_bytes(emulator, "f") == b"acknowledged v1"
    finally:
        os.close(fd)
    mount.stop()
    assert server_bytes(emulator, "f") == b"V2knowledged v1"


def test_a_writeback_file_whose_upload_failed_is_uploaded_by_the_next_mount(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    mount = _failed_writeback(emulator, make_mount, b"acknowledged")
    mount.stop()  # the file is still shown, and staged: unmount keeps it for the next mount
    assert "f" not in server_keys(emulator)
    emulator.faults.clear()
    make_mount(args=WB).start()
    assert server_bytes(emulator, "f") == b"acknowledged"


def test_a_writeback_file_whose_upload_failed_is_tried_again_in_the_background(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    """An outage of the endpoint left it unsent until someone opened it, or the next mount."""
    mount = _failed_writeback(emulator, make_mount, b"acknowledged", refusals=2)
    _until("the retries", lambda: "f" in server_keys(emulator))  # the 1st retry fails too
    assert server_bytes(emulator, "f") == b"acknowledged"
    assert mount.log().count("trying its upload again") == 2
    _until("the hand-over", lambda: _staged_files(mount) == [])
    mount.stop()


def _unsent_after_a_failed_recovery(
    emulator: Emulator, make_mount: MountFactory, data: bytes
) -> Mount:
    """A write-back file whose upload fails, then a mount whose start fails to upload it
    too (the server still refuses): that mount is returned."""
    mount = _failed_writeback(emulator, make_mount, data)
    mount.stop()
    again = make_mount(args=(*WB, "--max-attempts", "1")).start()
    assert "staged before the restart failed" in again.log()
    assert "f" not in server_keys(emulator)
    return again


def test_a_file_whose_upload_fails_at_mount_start_is_shown_and_uploaded_at_its_next_close(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    """It was shown nowhere until a later mount uploaded it: the name showed the older
    object (or nothing) and could be written anew meanwhile. Now it is shown, and tried
    again in the background once the server takes it."""
    mount = _unsent_after_a_failed_recovery(emulator, make_mount, b"acknowledged")
    f = mount.path / "f"
    assert os.listdir(mount.path) == ["f"]
    assert f.stat().st_size == len(b"acknowledged")
    assert f.read_bytes() == b"acknowledged"  # its close tries again, and fails again
    assert os.getxattr(f, "user.ossmount.state") == b"upload-failed"
    emulator.faults.clear()
    _until("the retry", lambda: "f" in server_keys(emulator))  # nobody touches it
    assert server_bytes(emulator, "f") == b"acknowledged"
    _until("the hand-over", lambda: _staged_files(mount) == [])
    assert f.read_bytes() == b"acknowledged"
    mount.stop()


def _parts_stored(emulator: Emulator, key: str) -> int:
    return sum(1 for r in emulator.requests if (r.op, r.key, r.status) == ("UploadPart", key, 200))


def test_a_multipart_upload_whose_resume_fails_at_mount_start_is_resumed_by_its_retry(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    """The retry started a new upload: every part went again, and the upload the recovery
    had resumed stayed open on the server (its parts stored, and billed) until the next
    mount's sweep."""
    data = os.urandom(6 * MiB + 4321)
    (tmp_path / "src").write_bytes(data)
    kill_9_while_the_last_part_is_sent(emulator, make_mount, tmp_path / "src", "big", parts=7)
    emulator.faults.clear()
    emulator.faults.add(FaultRule("error", op="UploadPart", key="big", times=None, status=503,
                                  code="ServiceUnavailable"))  # fmt: skip
    mount = make_mount(args=(*RW, "--max-attempts", "1")).start()
    assert "staged before the restart failed" in mount.log()
    assert [key for key, _ in _open_uploads(emulator)] == ["big"]
    stored = _parts_stored(emulator, "big")
    emulator.faults.clear()
    _until("the retry", lambda: "big" in server_keys(emulator))  # nobody touches it
    assert server_bytes(emulator, "big") == data
    assert _parts_stored(emulator, "big") == stored + 1, "the parts stored are not sent again"
    assert _open_uploads(emulator) == []
    mount.stop()


def test_a_file_whose_upload_fails_at_mount_start_is_gone_for_good_once_unlinked(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    mount = _unsent_after_a_failed_recovery(emulator, make_mount, b"unwanted")
    os.unlink(mount.path / "f")
    assert os.listdir(mount.path) == []
    assert _staged_files(mount) == []
    mount.stop()
    emulator.faults.clear()
    again = make_mount(args=WB).start()
    assert os.listdir(again.path) == []
    assert "f" not in server_keys(emulator)


def test_a_writeback_file_whose_upload_failed_leaves_nothing_staged_once_unlinked(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    """With no handle open, nobody else drops its staged bytes: they stayed (and counted
    against the cache) until the unmount."""
    mount = _failed_writeback(emulator, make_mount, b"unwanted")
    os.unlink(mount.path / "f")
    assert _staged_files(mount) == []
    mount.stop()
    assert "f" not in server_keys(emulator)


def test_a_read_only_mount_says_that_files_wait_for_a_rw_mount(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    mount = _failed_writeback(emulator, make_mount, b"acknowledged")
    mount.stop()
    emulator.faults.clear()
    ro = make_mount().start()
    assert (
        "1 file(s) written and the modes, owners or times of 0 object(s) set through an "
        "earlier --rw mount wait in" in ro.log()
    )
    assert os.listdir(ro.path) == []
    ro.stop()
    assert _staged_files(ro) != [], "a read-only mount leaves them alone"
    make_mount(args=WB).start()
    assert server_bytes(emulator, "f") == b"acknowledged"


def test_an_unlinked_file_closed_while_its_early_part_goes_leaves_no_journal_behind(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    """Found by the fault walk (test_write_faultwalk.py, seed 3). The last close dropped the
    staged files, then waited for the part still in flight, whose upload was journaled again
    afterwards: a journal with no data stayed in the staging dir until the next mount, which
    warned of a file "never closed"."""
    slow = emulator.faults.add(FaultRule("latency", op="InitiateMultipartUpload", times=None,
                                         seconds=0.5))  # fmt: skip
    mount = make_mount(args=WB).start()
    fd = os.open(mount.path / "f", os.O_RDWR | os.O_CREAT, 0o644)
    os.pwrite(fd, os.urandom(2 * 1024 * 1024 + 3), 0)  # its first part goes while written
    _until("the Initiate", lambda: slow.seen >= 1)
    os.unlink(mount.path / "f")
    os.close(fd)  # its release drops it and aborts that upload
    mount.stop()
    assert _staged_files(mount) == []


@pytest.mark.parametrize("name", ["f", "d/f"])
def test_a_new_file_whose_last_close_failed_can_be_created_again(
    emulator: Emulator, make_mount: MountFactory, name: str
) -> None:
    """Found by the fault walk (test_write_faultwalk.py, seeds 105 and 149). The close of a
    new file whose parts went early commits it; when that fails, its staged bytes are
    dropped and the name is gone, but the kernel kept the entry of the create: opening the
    name again with O_CREAT (`cp` run again) failed with ENOENT. The drop comes with the
    release, after close returned, so the kernel may still use that entry for the next
    open: that open is answered ESTALE, and the kernel looks again. (Under write-back such
    a close seals the file and succeeds, and the upload is retried: no name is dropped,
    tests/fs/test_writeback_multipart.py.)"""
    emulator.faults.add(FaultRule("error", op="*Upload*", times=None, status=503,
                                  code="ServiceUnavailable"))  # fmt: skip
    mount = make_mount(args=(*RW, "--max-attempts", "1")).start()
    (mount.path / "d").mkdir()
    f = mount.path / name
    fd = os.open(f, os.O_RDWR | os.O_CREAT, 0o644)
    os.pwrite(fd, b"x" * (2 * 1024 * 1024 + 3), 0)  # its first part goes while written
    with pytest.raises(OSError, match="Input/output error"):
        os.close(fd)
    emulator.faults.clear()
    fd = os.open(f, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"again")
    os.close(fd)
    mount.stop()
    assert server_bytes(emulator, name) == b"again"


def test_a_file_unlinked_while_its_writeback_upload_fails_leaves_nothing_staged(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    """Found by the fault walk (test_write_faultwalk.py, seed 108). The unlink waits for the
    running upload; when that failed, the file was dropped with its staged bytes kept for
    the next mount, whose journal the unlink then removed: its data stayed in the staging
    dir (counted nowhere) until the next mount."""
    slow = emulator.faults.add(FaultRule("latency", op="InitiateMultipartUpload", times=None,
                                         seconds=0.5))  # fmt: skip
    emulator.faults.add(FaultRule("error", op="UploadPart", times=None, status=503,
                                  code="ServiceUnavailable"))  # fmt: skip
    mount = make_mount(args=(*WB, "--max-attempts", "1")).start()
    fd = os.open(mount.path / "f", os.O_WRONLY | os.O_CREAT, 0o644)
    os.pwrite(fd, b"2" * 1000, 1024 * 1024)
    os.pwrite(fd, b"1" * 1024 * 1024, 0)  # out of order: no part goes before the close
    os.close(fd)  # sealed; its multipart upload runs in the background
    _until("the upload", lambda: slow.seen >= 1)
    os.unlink(mount.path / "f")  # waits for that upload, which fails
    assert "write-back upload failed" in mount.log()
    assert _staged_files(mount) == []
    mount.stop()
    emulator.faults.clear()
    assert "f" not in server_keys(emulator)


def test_rsync_into_a_writeback_mount_killed_before_any_upload_leaves_only_final_names(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    """rsync renames each temporary file it closed moments before; its upload is held back
    (--writeback-delay), so the rename re-seals the journal under the final name and sends
    nothing (fs/writeback.py `rekey`). After a kill -9 the next mount uploads each file
    once, under its final name, with its mode and mtime: no temporary name ever reaches OSS."""
    src = tmp_path / "src"
    src.mkdir()
    files = {f"f{i}": os.urandom(3000 + i) for i in range(5)}
    for i, (name, body) in enumerate(files.items()):
        (src / name).write_bytes(body)
        (src / name).chmod(0o640)
        os.utime(src / name, (1_600_000_000 + i, 1_600_000_000 + i))
    args = (*WB, "--writeback-delay", "600")
    mount = make_mount(args=args).start()
    subprocess.run(["rsync", "-a", f"{src}/", str(mount.path / "r")], check=True)
    assert not _file_requests(emulator), "nothing of the files went before the crash"
    _crash(emulator, mount)
    make_mount(args=args).start()  # ready once the sealed files are uploaded
    for i, (name, body) in enumerate(files.items()):
        assert server_bytes(emulator, f"r/{name}") == body
        meta = dict(emulator.head("bkt", f"r/{name}").meta)  # type: ignore[union-attr]
        assert meta["x-oss-meta-mode"] == str(0o100640)
        assert meta["x-oss-meta-mtime"] == str(1_600_000_000 + i)
    sent = _file_requests(emulator)
    assert sorted((r.op, r.key) for r in sent) == [("PutObject", f"r/{n}") for n in files]


def _file_requests(emulator: Emulator) -> list[RequestRecord]:
    """The writes the server was asked for on files (not on directory markers)."""
    return [r for r in emulator.requests if r.method != "GET" and r.op != "HeadObject"
            and not r.key.endswith("/")]  # fmt: skip


def test_cp_of_a_big_file_into_a_writeback_mount_returns_sealed_and_a_kill_loses_nothing(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    """A file whose parts went while cp wrote it: cp's close seals the upload's journal and
    returns before the upload is completed (held back here for good). After kill -9 the next
    mount resumes that upload: the parts sent before the crash are not sent again."""
    data = os.urandom(4 * MiB + 777)
    (tmp_path / "src").write_bytes(data)
    args = (*WB, "--writeback-delay", "600")
    mount = make_mount(args=args).start()
    subprocess.run(["cp", str(tmp_path / "src"), str(mount.path / "big")], check=True)
    assert "CompleteMultipartUpload" not in [r.op for r in _file_requests(emulator)]
    assert os.getxattr(mount.path / "big", "user.ossmount.state") == b"queued"
    shown = os.stat(mount.path / "big").st_mtime_ns  # the close's time
    (journal,) = (mount.cache / "staging").glob("*.journal")
    _until("the 4 full parts journaled", lambda: len(_parts_of(journal)) == 4)
    _crash(emulator, mount)
    make_mount(args=args).start()  # ready once the sealed file is uploaded
    assert server_bytes(emulator, "big") == data
    meta = dict(emulator.head("bkt", "big").meta)  # type: ignore[union-attr]
    stored = meta["x-oss-meta-mtime"]  # which the Initiate, before the close, lacked
    assert int(Decimal(stored) * 10**9) == shown, "the mtime stat showed before the crash"
    ops = [r.op for r in _file_requests(emulator)]
    assert ops.count("InitiateMultipartUpload") == 1, "the upload of before the crash resumed"
    assert ops.count("UploadPart") == 5, "each of the 5 parts sent once"
    assert ops.count("CopyObject") == 1, "the mtime, stored after the upload completed"
    assert not _open_uploads(emulator)


def _parts_of(journal: Path) -> list[int]:
    """The parts a sealed journal lists as sent (none until it is sealed)."""
    record = load(journal)
    return [p.number for p in record.parts] if record is not None and record.sealed else []


def test_a_kill_9_while_a_file_bigger_than_the_cache_is_written_uploads_no_zeros(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    """Parts of a file bigger than the cache cap left the staging disk once OSS had them
    (fs/staging.py `_shed`): the file keeps no journal from then on, so after kill -9 no
    mount resumes it (it could only send the zeros a punched range reads as). Its close had
    not returned: the next mount drops the rest and aborts the upload."""
    data = os.urandom(24 * MiB)
    (tmp_path / "src").write_bytes(data)
    held = emulator.faults.add(FaultRule("stall", op="UploadPart", key="huge", nth=16,
                                         seconds=30.0))  # fmt: skip
    args = (*RW, "--max-cache-size-mb", "6", "--min-free-mb", "0")
    mount = make_mount(args=args).start()
    cp = subprocess.Popen(["cp", str(tmp_path / "src"), str(mount.path / "huge")],
                          stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        _until("the 16th part", lambda: held.fired >= 1)
        assert "left the staging disk to make room" in mount.log()
        assert not list((mount.cache / "staging").glob("*.journal"))
        _crash(emulator, mount)
    finally:
        cp.wait()
    assert cp.returncode != 0
    make_mount(args=args).start()
    assert "huge" not in server_keys(emulator)
    assert not _open_uploads(emulator), "the sweep aborted the upload"
    assert not list((mount.cache / "staging").glob("*.data"))


def test_an_append_closed_under_writeback_survives_a_kill_without_reading_the_start(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    """An append to a big object leaves its start unread (fs/staging.py `fill`); its
    write-back close seals a journal naming the object version that holds that start. After
    kill -9 the next mount copies it from there (no GET of it) and checks the whole object's
    CRC-64 at Complete."""
    data = os.urandom(5 * MiB + 99)  # parts of 1 MiB: 5 unread
    emulator.put_object(BUCKET, "log", data)
    args = (*WB, "--writeback-delay", "600")
    mount = make_mount(args=args).start()
    subprocess.run(["sh", "-c", f"echo one more line >> {mount.path / 'log'}"], check=True)
    assert os.getxattr(mount.path / "log", "user.ossmount.state") == b"queued"
    (journal,) = (mount.cache / "staging").glob("*.journal")
    record = load(journal)
    assert record is not None
    assert record.sealed
    assert record.unread is not None
    assert record.unread.below == 5 * MiB
    assert record.part_size == 5 * MiB  # copied in one piece (fs/unread.py upload_part_size)
    _crash(emulator, mount)
    # The killed daemon's early copy of the start may still be answered (a loaded machine):
    # the emulator records a request when it ends, stamped with when it began.
    restarted = time.time()
    make_mount(args=args).start()  # ready once the sealed file is uploaded
    assert server_bytes(emulator, "log") == data + b"one more line\n"
    ops = [r.op for r in emulator.requests if r.time >= restarted]
    assert ops.count("UploadPartCopy") == 1
    assert ops.count("UploadPart") == 1
    gets = [r for r in emulator.requests if r.op == "GetObject" and r.time >= restarted]
    assert len(gets) == 1, "the SDK's read-back only: the start was never read"
    assert not _open_uploads(emulator)


def test_an_append_whose_upload_fails_after_a_kill_is_shown_whole_and_retried(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    """The next mount could not copy the unread start (the server refused every copy): the
    file is restored, shown with its start read from the object its journal names, and
    uploaded once the server takes copies again."""
    data = os.urandom(3 * MiB + 5)
    emulator.put_object(BUCKET, "log", data)
    args = (*WB, "--writeback-delay", "600")
    mount = make_mount(args=args).start()
    subprocess.run(["sh", "-c", f"echo more >> {mount.path / 'log'}"], check=True)
    _crash(emulator, mount)
    emulator.faults.add(FaultRule("error", op="UploadPartCopy", times=None, status=503,
                                  code="ServiceUnavailable"))  # fmt: skip
    mount = make_mount(args=(*WB, "--writeback-delay", "0")).start()
    assert (mount.path / "log").read_bytes() == data + b"more\n"
    assert server_bytes(emulator, "log") == data, "not uploaded yet"
    emulator.faults.clear()
    _until("the retry uploads it", lambda: emulator.head(BUCKET, "log").size == len(data) + 5)  # type: ignore[union-attr]
    assert server_bytes(emulator, "log") == data + b"more\n"
