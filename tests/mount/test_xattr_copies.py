"""Our `user.ossmount.*` attributes are read by name, never listed, so tools that copy every
listed attribute neither plant them on local copies (`cp -a` out of the mount) nor fail on
them (`rsync -aX` into a --rw mount used to exit 23, unable to remove them)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ossmount.emulator import Emulator
from tests.mount.conftest import MountFactory
from tests.mount.harness import BUCKET
from tests.mount.test_write import RW, server_bytes


def test_cp_a_out_and_rsync_ax_in_copy_no_attribute_of_ours(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    emulator.put_object(BUCKET, "d/f", b"from the bucket")
    mount = make_mount(args=RW).start()
    assert os.getxattr(mount.path / "d" / "f", "user.ossmount.state") in (b"uncached", b"verified")
    out = tmp_path / "out"
    subprocess.run(["cp", "-a", str(mount.path / "d"), str(out)], check=True)
    assert (out / "f").read_bytes() == b"from the bucket"
    assert os.listxattr(out / "f") == []  # no stale "verified" on a local file

    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"a" * 1000)
    (src / "b").write_bytes(b"b")
    for _ in range(2):  # the second run finds the files there, with our attributes readable
        done = subprocess.run(
            ["rsync", "-aX", f"{src}/", str(mount.path / "r")], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
    assert server_bytes(emulator, "r/a") == b"a" * 1000
    assert os.getxattr(mount.path / "r" / "b", "user.ossmount.key") == b"r/b"
