"""The CRC-64 a rename's copy carries (ossmount/oss/carriedcrc.py), through real mounts
against the emulator, whose copies have no CRC-64 of their own (as OSS's "may not"):
`rsync -a` into a `--rw` mount renames each file it wrote, and a fresh mount still reads
every one `verified`; a carried value is checked (wrong bytes are EIO) and believed only
for the version it names."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from ossmount.crc64 import crc64
from ossmount.emulator import Emulator
from ossmount.oss.carriedcrc import CARRIED_CRC
from tests.mount.conftest import MountFactory
from tests.mount.harness import BUCKET
from tests.mount.test_write import RW

MiB = 1 << 20


def _state(path: Path) -> str:
    return os.getxattr(path, "user.ossmount.state").decode()


def test_files_rsync_renamed_into_place_stay_verifiable(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    files = {"small": os.urandom(5000), "mid": os.urandom(300_000), "big": os.urandom(2 * MiB + 1)}
    for name, data in files.items():
        (src / name).write_bytes(data)
    mount = make_mount(args=RW).start()
    subprocess.run(["rsync", "-a", f"{src}/", str(mount.path / "r")], check=True)
    mount.stop()
    for name in files:
        obj = emulator.head(BUCKET, f"r/{name}")
        assert obj is not None
        assert obj.crc64 is None, "a copy: the server has no CRC-64 for it"
        assert dict(obj.meta)[CARRIED_CRC].startswith(f"{crc64(files[name])};")
    fresh = make_mount().start()
    for name, data in files.items():
        assert (fresh.path / "r" / name).read_bytes() == data
        assert _state(fresh.path / "r" / name) == "verified", name


@pytest.mark.parametrize("right_version", [True, False], ids=["this-version", "another"])
def test_a_carried_crc_is_checked_and_believed_only_for_its_version(
    emulator: Emulator, make_mount: MountFactory, right_version: bool
) -> None:
    """A wrong value naming this version's ETag: the read fails with EIO, as for a wrong
    server CRC-64. One naming another version (the content was rewritten, its user metadata
    kept): ignored, the object is `unverifiable`."""
    data = os.urandom(100_000)
    etag = emulator.put_object(BUCKET, "o", data, crc64=False)
    named = etag.strip('"') if right_version else "0123456789ABCDEF0123456789ABCDEF"
    carried = {CARRIED_CRC.removeprefix("x-oss-meta-"): f"{crc64(data) ^ 1};{named}"}
    emulator.put_object(BUCKET, "o", data, crc64=False, meta=carried)
    mount = make_mount().start()
    if right_version:
        with pytest.raises(OSError, match="Input/output error") as caught:
            (mount.path / "o").read_bytes()
        assert caught.value.errno == errno.EIO
    else:
        assert (mount.path / "o").read_bytes() == data
        assert _state(mount.path / "o") == "unverifiable"
