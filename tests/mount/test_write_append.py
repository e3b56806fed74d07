"""Appending to a big existing object through a real `-o rw` mount reads only its last part
(fs/staging.py `fill`); the rest is copied server-side and the object checked by CRC-64 at
the commit. Read back with the official SDK; requests counted in the emulator's log."""

from __future__ import annotations

import os
import subprocess

import pytest

from ossmount.emulator import Emulator, FaultRule
from tests.mount.conftest import MountFactory
from tests.mount.harness import BUCKET
from tests.mount.test_write import RW, MiB, server_bytes
from tests.mount.test_write_features import wait_until

DATA = os.urandom(5 * MiB + 123)  # parts of 1 MiB (RW): 5 whole ones stay unread


def _size(emu: Emulator) -> int | None:
    head = emu.head(BUCKET, "log")
    return None if head is None else head.size


def _get_bytes(emu: Emulator) -> int:
    return sum(r.bytes_sent for r in emu.requests if r.op == "GetObject")


@pytest.mark.parametrize("writeback", [False, True], ids=["sync", "writeback"])
def test_a_shell_append_to_a_big_object_reads_only_its_last_part(
    emulator: Emulator, make_mount: MountFactory, writeback: bool
) -> None:
    emulator.put_object(BUCKET, "log", DATA)
    mount = make_mount(args=(*RW, "--writeback") if writeback else RW).start()
    emulator.requests.clear()
    subprocess.run(["sh", "-c", f"echo one more line >> {mount.path / 'log'}"], check=True)
    if writeback:  # the close sealed it; the upload goes a moment later
        wait_until("the append is on the server", lambda: _size(emulator) == len(DATA) + 14)
    assert _get_bytes(emulator) <= 2 * MiB, "the last part, not the object"
    copies = [r for r in emulator.requests if r.op == "UploadPartCopy"]
    assert len(copies) == 1, "its 5 unread parts in one piece (fs/unread.py upload_part_size)"
    assert server_bytes(emulator, "log") == DATA + b"one more line\n"
    assert (mount.path / "log").read_bytes() == DATA + b"one more line\n"


def test_dd_into_the_start_of_an_object_open_for_append_fetches_it_first(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    emulator.put_object(BUCKET, "img", DATA)
    mount = make_mount(args=RW).start()
    path = mount.path / "img"
    with open(path, "a+b") as f:  # O_APPEND: its start stays unread
        f.write(b"appended")
        f.flush()
        assert os.pread(f.fileno(), 16, 2 * MiB) == DATA[2 * MiB : 2 * MiB + 16], "unread"
        subprocess.run(
            ["dd", "of=" + str(path), "bs=1", "seek=1000", "conv=notrunc", "status=none"],
            input=b"PATCHED", check=True,
        )  # fmt: skip
        assert os.pread(f.fileno(), 10, 998) == DATA[998:1000] + b"PATCHED" + DATA[1007:1008]
    want = DATA[:1000] + b"PATCHED" + DATA[1007:] + b"appended"
    assert server_bytes(emulator, "img") == want


def test_a_kill_9_mid_commit_of_an_append_resumes_it_without_reading_the_start(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    """A sync close of an append seals its journal (this boot's) with the unread start named;
    killed while the appended part is sent, the next mount completes the upload, copying the
    start from the version the journal names."""
    emulator.put_object(BUCKET, "log", DATA)
    stall = FaultRule("stall", op="UploadPart", key="log", seconds=8.0)
    emulator.faults.add(stall)
    mount = make_mount(args=RW).start()
    sh = subprocess.Popen(["sh", "-c", f"echo last words >> {mount.path / 'log'}"],
                          stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_until("the appended part is being sent", lambda: stall.fired > 0)
        mount.kill()
    finally:
        sh.wait()
    subprocess.run(["fusermount3", "-u", "-z", str(mount.path)], check=False)
    emulator.faults.clear()
    assert server_bytes(emulator, "log") == DATA, "not committed before the kill"
    emulator.requests.clear()
    make_mount(args=RW).start()  # ready only once the staged file is committed
    assert server_bytes(emulator, "log") == DATA + b"last words\n"
    assert [r.op for r in emulator.requests].count("GetObject") == 1, "the SDK's read-back"
