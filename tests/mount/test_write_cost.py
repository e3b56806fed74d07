"""What writing small files costs per file through a real `-o rw` mount (issue 15: W14/W15):
the requests each tool's calls turn into, counted in the emulator's log, and the attributes
they set, read back with the official SDK."""

from __future__ import annotations

import collections
import io
import os
import subprocess
import tarfile
from pathlib import Path

import alibabacloud_oss_v2 as oss

from ossmount.emulator import Emulator
from tests.mount.conftest import MountFactory
from tests.mount.harness import BUCKET
from tests.mount.test_write import RW, sdk

MTIME = 1_600_000_000


def _head_meta(emu: Emulator, key: str) -> dict[str, str]:
    head = sdk(emu).head_object(oss.HeadObjectRequest(bucket=BUCKET, key=key))
    return dict(head.metadata or {})


def _ops(emu: Emulator, prefix: str) -> collections.Counter[str]:
    """Requests on files (not directory markers) under `prefix`."""
    return collections.Counter(
        r.op for r in emu.requests if r.key.startswith(prefix) and not r.key.endswith("/")
    )


def test_rsync_a_stores_mode_and_mtime_of_every_file_without_a_head(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    names = [f"d/f{i}" for i in range(6)]
    for i, name in enumerate(names):
        path = src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(1000 + i))
        path.chmod(0o640)
        os.utime(path, (MTIME + i, MTIME + i))
    mount = make_mount(args=(*RW, "--attr-delay", "600")).start()  # exact counts: see below
    # rsync: create .f.XXXX (0600), write, close; utimensat by path; open, fchmod; rename.
    subprocess.run(["rsync", "-a", f"{src}/", str(mount.path / "r")], check=True)
    ops = _ops(emulator, "r/d/")
    for i, name in enumerate(names):
        meta = _head_meta(emulator, f"r/{name}")
        assert meta.get("mode") == str(0o100640), f"{name}: {meta}"
        assert meta.get("mtime") == str(MTIME + i), f"{name}: {meta}"
    assert ops["HeadObject"] == 0, f"the mount wrote them: nothing to HEAD ({ops})"
    # Per file: the PutObject, then the rename's copy, carrying the mtime and mode set on
    # the temporary file (owed: fs/owedattrs.py), and its delete.
    assert ops["PutObject"] == len(names)
    assert ops["CopyObject"] == len(names)
    assert ops["DeleteObject"] == len(names)


def test_tar_x_sends_one_put_per_file_carrying_mode_and_mtime(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tar:
        for i in range(8):
            data = os.urandom(4096 + i)
            info = tarfile.TarInfo(f"t/f{i}")
            info.size, info.mtime, info.mode = len(data), MTIME + i, 0o600
            tar.addfile(info, io.BytesIO(data))
    mount = make_mount(args=RW).start()
    # tar: create, write, futimens + fchown + fchmod on the descriptor, close.
    subprocess.run(["tar", "xf", str(archive), "-C", str(mount.path)], check=True)
    ops = _ops(emulator, "t/f")
    for i in range(8):
        meta = _head_meta(emulator, f"t/f{i}")
        assert meta.get("mode") == str(0o100600)
        assert meta.get("mtime") == str(MTIME + i)
    assert ops == {"PutObject": 8}
