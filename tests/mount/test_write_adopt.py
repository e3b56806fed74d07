"""A committed multi-part file joins the read cache from the CRC-64s its upload took, without
the daemon reading it again (cache/adopt.py, write/pieces.py), through a real `--rw` mount."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ossmount.emulator import Emulator
from tests.mount.conftest import MountFactory
from tests.mount.harness import BUCKET
from tests.mount.test_write import RW, MiB, server_bytes
from tests.mount.test_write_features import gets, staged_files, wait_until

pytestmark = pytest.mark.mount

UNREAD = "kept in the cache from its upload's CRC-64s"


def _state(path: Path) -> bytes:
    try:
        return os.getxattr(path, "user.ossmount.state")
    except OSError:
        return b""


def test_a_copied_multipart_file_is_verified_without_being_read_again(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    data = os.urandom(3 * MiB + 300_000)  # 4 upload parts, 5 cache parts: 8 pieces
    (tmp_path / "src").write_bytes(data)
    mount = make_mount(args=RW).start()
    target = mount.path / "big.bin"
    subprocess.run(["cp", str(tmp_path / "src"), str(target)], check=True)
    wait_until("the staged file is adopted", lambda: not staged_files(mount.cache))
    wait_until("the entry is verified", lambda: _state(target) == b"verified")
    log = mount.log()
    assert f"oss://{BUCKET}/big.bin: {UNREAD} (8 pieces), not read again" in log, log
    assert "hashing it" not in log
    emulator.requests.clear()
    assert target.read_bytes() == data
    assert gets(emulator, "big.bin") == 0, "read back from the adopted entry"
    assert server_bytes(emulator, "big.bin") == data
