"""The modes and times a `--rw` mount stored stay shown after a remount of its cache dir
(fs/shownfile.py). Through real mounts against the emulator, with the real tools."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import alibabacloud_oss_v2 as oss

from ossmount.emulator import Emulator
from tests.mount.conftest import MountFactory
from tests.mount.harness import BUCKET
from tests.mount.test_write import RW, sdk

OLD = 1_500_000_000  # a source mtime far from any upload time


def _tree(root: Path) -> None:
    (root / "bin").mkdir(parents=True)
    script = root / "bin" / "hello.sh"
    script.write_text("#!/bin/sh\necho hello from the bucket\n")
    script.chmod(0o755)
    (root / "notes.txt").write_text("notes\n")
    (root / "notes.txt").chmod(0o640)
    (root / "data.bin").write_bytes(os.urandom(70_000))
    for path in (script, root / "notes.txt", root / "data.bin"):
        os.utime(path, (OLD, OLD))


def _writes(emulator: Emulator, since: int) -> list[str]:
    return [f"{r.method} {r.op} {r.key}" for r in emulator.requests[since:]
            if r.method in ("PUT", "POST", "DELETE")]  # fmt: skip


def test_a_second_rsync_after_a_remount_sends_nothing_and_scripts_still_run(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    """Without the saved table every file showed its upload time and the default mode after
    the remount: rsync sent all of them again, and the script failed with EACCES."""
    src = tmp_path / "src"
    _tree(src)
    first = make_mount(args=RW).start()
    subprocess.run(["rsync", "-a", f"{src}/", f"{first.path}/"], check=True)
    first.stop()
    assert (first.cache / "shown.attrs").is_file()

    again = make_mount(args=RW).start()
    before = len(emulator.requests)
    done = subprocess.run(["rsync", "-a", "-i", f"{src}/", f"{again.path}/"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    sent = [line for line in done.stdout.splitlines() if not line.startswith(".d")]
    assert sent == [], "rsync found files changed after the remount"
    assert _writes(emulator, before) == []
    for name in ("bin/hello.sh", "notes.txt", "data.bin"):
        mine, theirs = (src / name).stat(), (again.path / name).stat()
        assert stat.S_IMODE(theirs.st_mode) == stat.S_IMODE(mine.st_mode), name
        assert theirs.st_mtime == OLD, name
    out = subprocess.run([str(again.path / "bin" / "hello.sh")], check=True,
                         capture_output=True, text=True)  # fmt: skip
    assert out.stdout == "hello from the bucket\n"
    again.stop()

    read_only = make_mount().start()  # what a --rw mount stored, a read-only one shows too
    script = (read_only.path / "bin" / "hello.sh").stat()
    assert stat.S_IMODE(script.st_mode) & 0o111 == 0o111
    assert script.st_mtime == OLD


def test_an_object_replaced_by_another_client_between_mounts_shows_the_defaults(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    """The saved entry answers only for the version it was learnt from (its ETag)."""
    first = make_mount(args=RW).start()
    path = first.path / "tool"
    path.write_text("#!/bin/sh\n")
    path.chmod(0o700)
    os.utime(path, (OLD, OLD))
    first.stop()
    sdk(emulator).put_object(oss.PutObjectRequest(bucket=BUCKET, key="tool", body=b"other"))

    again = make_mount(args=RW).start()
    st = (again.path / "tool").stat()
    assert stat.S_IMODE(st.st_mode) != 0o700
    assert st.st_mtime != OLD
    assert st.st_size == len(b"other")


def test_a_damaged_table_is_ignored_with_a_warning_and_replaced(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    first = make_mount(args=RW).start()
    (first.path / "f").write_text("x")
    (first.path / "f").chmod(0o600)
    first.stop()
    saved = first.cache / "shown.attrs"
    data = bytearray(saved.read_bytes())
    data[len(data) // 2] ^= 0x40
    saved.write_bytes(bytes(data))

    again = make_mount(args=RW).start()
    assert stat.S_IMODE((again.path / "f").stat().st_mode) != 0o600  # unknown: the default
    assert "checksum mismatch" in again.log()
    (again.path / "f").chmod(0o600)
    again.stop()

    last = make_mount().start()
    assert stat.S_IMODE((last.path / "f").stat().st_mode) == 0o600


def test_the_table_keeps_the_last_max_attr_entries_objects(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    small = (*RW, "--max-attr-entries", "2")
    first = make_mount(args=small).start()
    for name in ("a", "b", "c"):
        (first.path / name).write_text(name)
        (first.path / name).chmod(0o600)
    first.stop()
    again = make_mount(args=small).start()
    shown = {name: stat.S_IMODE((again.path / name).stat().st_mode) for name in "abc"}
    assert shown["b"] == shown["c"] == 0o600
    assert shown["a"] != 0o600, "the oldest learnt went first"
