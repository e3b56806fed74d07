"""Browsing and copying through a real mount: ls, find, cat, cp -r, rsync -a (twice)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ossmount.emulator import Emulator
from tests.mount.conftest import MountFactory
from tests.mount.harness import BUCKET

TREE = {
    "readme.txt": b"hello from ossmount\n",
    "docs/a.txt": b"a" * 1000,
    "docs/deep/b.bin": bytes(range(256)) * 40,
    "docs/with space.txt": b"space",
    "marker-only/": b"",  # a directory marker with nothing under it
    "implicit/x/y.txt": b"y",  # implicit directories: no marker objects
    "empty.bin": b"",
    "bad//name": b"skipped: empty path component",
}


def _fill(emu: Emulator) -> None:
    for key, data in TREE.items():
        emu.put_object(BUCKET, key, data)


def _ops(emu: Emulator) -> list[str]:
    return [r.op for r in emu.requests]


def test_ls_find_cat_use_listings_only_and_show_the_tree(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    _fill(emulator)
    mount = make_mount().start()
    emulator.requests.clear()

    found = subprocess.run(
        ["find", str(mount.path)], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    rel = sorted(os.path.relpath(p, mount.path) for p in found if p)
    assert rel == sorted(
        [
            ".",
            "readme.txt",
            "docs",
            "docs/a.txt",
            "docs/deep",
            "docs/deep/b.bin",
            "docs/with space.txt",
            "marker-only",
            "implicit",
            "implicit/x",
            "implicit/x/y.txt",
            "empty.bin",
            "bad",  # only "bad//name" lives under it: the directory shows, the key does not
        ]
    )
    listing = subprocess.run(
        ["ls", "-lR", str(mount.path)], capture_output=True, text=True, check=True
    ).stdout
    assert "hello" not in listing
    assert set(_ops(emulator)) <= {"ListObjectsV2"}, _ops(emulator)  # zero HEAD, zero GET

    st = os.stat(mount.path / "docs/deep/b.bin")
    assert st.st_size == 256 * 40
    assert (mount.path / "marker-only").is_dir()
    assert (mount.path / "readme.txt").read_bytes() == TREE["readme.txt"]
    assert (mount.path / "empty.bin").read_bytes() == b""
    assert (mount.path / "docs/with space.txt").read_bytes() == b"space"


def test_cp_r_and_rsync_twice_second_run_fetches_nothing(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    _fill(emulator)
    mount = make_mount().start()

    subprocess.run(["cp", "-r", str(mount.path / "docs"), str(tmp_path / "cp-out")], check=True)
    assert (tmp_path / "cp-out/deep/b.bin").read_bytes() == TREE["docs/deep/b.bin"]

    dest = tmp_path / "rsync-out"
    subprocess.run(["rsync", "-a", f"{mount.path}/", f"{dest}/"], check=True)
    for key, data in TREE.items():
        if key.endswith("/") or "//" in key:
            continue
        assert (dest / key).read_bytes() == data, key

    # Same bucket, new mount: inode numbers and mtimes are stable, so rsync transfers nothing.
    inode_before = os.stat(mount.path / "docs/a.txt").st_ino
    mount.stop()
    mount = make_mount().start()
    assert os.stat(mount.path / "docs/a.txt").st_ino == inode_before
    emulator.requests.clear()
    out = subprocess.run(
        ["rsync", "-a", "--stats", f"{mount.path}/", f"{dest}/"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "Number of regular files transferred: 0" in out, out
    ops = _ops(emulator)
    assert "GetObject" not in ops, ops
    assert "HeadObject" not in ops, ops


def test_writes_are_refused_read_only(emulator: Emulator, make_mount: MountFactory) -> None:
    _fill(emulator)
    mount = make_mount().start()
    result = subprocess.run(["touch", str(mount.path / "new.txt")], capture_output=True, text=True)
    assert result.returncode != 0
    assert "Read-only file system" in result.stderr
