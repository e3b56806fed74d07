"""A file changed by one call while another is committing it, or replaced while open: what a
local file would do, and nothing uploaded that the mount no longer shows. Found by a random
walk of open/write/truncate/rename/unlink/close on a mount against a local directory."""

from __future__ import annotations

import errno
import os
import subprocess
import time

from ossmount.emulator import Emulator
from ossmount.emulator.faults import FaultRule
from tests.mount.conftest import MountFactory
from tests.mount.harness import BUCKET
from tests.mount.test_write import RW, errno_of, server_bytes, server_keys

WB = (*RW, "--writeback")


def _read_rest(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _wait_seen(rule: FaultRule) -> None:
    deadline = time.monotonic() + 10
    while rule.seen < 1:
        assert time.monotonic() < deadline, "the upload never started"
        time.sleep(0.01)


def test_a_file_unlinked_while_open_and_its_name_reused_stay_two_files(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    mount = make_mount(args=RW).start()
    path = mount.path / "f"
    old = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(old, b"old bytes")
        os.unlink(path)
        new = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.write(new, b"new")
            assert os.fstat(old).st_ino != os.fstat(new).st_ino  # else the kernel mixes pages
            os.ftruncate(old, 3)  # the unlinked file is still a file (this was ENOENT)
            assert os.pread(old, 100, 0) == b"old"
            assert os.pread(new, 100, 0) == b"new"
        finally:
            os.close(new)
    finally:
        os.close(old)
    assert server_bytes(emulator, "f") == b"new"


def test_a_rename_over_a_file_being_written_is_not_undone_by_its_close(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    emulator.put_object(BUCKET, "g", b"the version renamed over it")
    mount = make_mount(args=RW).start()
    fd = os.open(mount.path / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"written, not yet closed")
        os.rename(mount.path / "g", mount.path / "f")
        os.write(fd, b", and more")  # the replaced file still takes writes
    finally:
        os.close(fd)  # and its close must not commit them over the renamed one
    assert server_bytes(emulator, "f") == b"the version renamed over it"
    assert (mount.path / "f").read_bytes() == b"the version renamed over it"
    assert server_keys(emulator) == {"f"}


def test_unlink_truncate_and_rename_during_a_writeback_upload(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    """Each waits for the upload running in the background, then acts on what it stored:
    the unlinked file is not resurrected by it, the truncation is committed (it was dropped
    with the staged file), the renamed file is found (it was ENOENT)."""
    rules = {
        name: FaultRule("stall", op="PutObject", key=name, times=1, seconds=1.0)
        for name in ("gone", "cut", "moved")
    }
    for rule in rules.values():
        emulator.faults.add(rule)
    mount = make_mount(args=WB).start()
    for name in rules:
        (mount.path / name).write_bytes(b"0123456789")  # close returns; the upload is held
    for rule in rules.values():
        _wait_seen(rule)
    os.unlink(mount.path / "gone")
    os.truncate(mount.path / "cut", 4)
    os.rename(mount.path / "moved", mount.path / "there")
    mount.stop()  # waits for the background uploads
    assert server_keys(emulator) == {"cut", "there"}
    assert server_bytes(emulator, "cut") == b"0123"
    assert server_bytes(emulator, "there") == b"0123456789"


def test_a_rename_over_a_file_whose_upload_runs_lands_after_that_upload(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    """The replaced file's write-back upload, still running when the rename copies the other
    file over its name, used to land after the copy and undo it."""
    held = FaultRule("stall", op="PutObject", key="b", times=1, seconds=1.0)
    emulator.faults.add(held)
    mount = make_mount(args=WB).start()
    (mount.path / "c").write_bytes(b"the file renamed over b")
    fd = os.open(mount.path / "b", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"b, still open")
        os.close(os.open(mount.path / "b", os.O_WRONLY))  # a close: b's upload starts, held
        _wait_seen(held)
        os.rename(mount.path / "c", mount.path / "b")
    finally:
        os.close(fd)
    mount.stop()
    assert server_keys(emulator) == {"b"}
    assert server_bytes(emulator, "b") == b"the file renamed over b"


def test_a_directory_holding_a_file_being_created_is_not_empty_for_a_rename(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    """The new file is not on OSS yet, so the listing shows the target directory empty: a
    rename of another directory onto it used to go ahead, and the file's close then put it
    into the renamed directory's place."""
    mount = make_mount(args=RW).start()
    (mount.path / "src").mkdir()
    (mount.path / "src" / "x").write_bytes(b"x")
    (mount.path / "dst").mkdir()
    fd = os.open(mount.path / "dst" / "new", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"being written")
        assert errno_of(lambda: os.rename(mount.path / "src", mount.path / "dst")) == (
            errno.ENOTEMPTY
        )
    finally:
        os.close(fd)
    assert server_keys(emulator) == {"src/", "src/x", "dst/", "dst/new"}


def test_files_open_for_reading_stay_readable_after_mv_rm_and_mv_over_them(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    """As local files: a descriptor reads its file to the end after `mv` renames it, `rm`
    removes it or `mv` replaces it (fs/filesystem.py `_keep_for_readers`, `_readers_moved`);
    these reads were ESTALE or ENOENT once past what had been read ahead."""
    files = {name: os.urandom(3 * (1 << 20) + 11) for name in ("moved", "removed", "replaced")}
    for name, data in files.items():
        emulator.put_object(BUCKET, name, data)
    emulator.put_object(BUCKET, "other", b"the new one")
    mount = make_mount(args=RW).start()
    fds = {name: os.open(mount.path / name, os.O_RDONLY) for name in files}
    try:
        for name, fd in fds.items():
            assert os.read(fd, 4096) == files[name][:4096]
        subprocess.run(["mv", str(mount.path / "moved"), str(mount.path / "moved2")], check=True)
        subprocess.run(["rm", str(mount.path / "removed")], check=True)
        subprocess.run(["mv", str(mount.path / "other"), str(mount.path / "replaced")], check=True)
        for name, fd in fds.items():
            assert _read_rest(fd) == files[name][4096:], name
    finally:
        for fd in fds.values():
            os.close(fd)
    assert server_keys(emulator) == {"moved2", "replaced"}
    assert server_bytes(emulator, "replaced") == b"the new one"
