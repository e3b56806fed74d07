"""Names a --rw mount cannot store as OSS keys are refused when created, with the errno that
says why, before anything is staged or sent: a key over 1023 bytes (prefix + path, + `/` for a
directory) is ENAMETOOLONG, a name that is not UTF-8 is EINVAL. Both used to be accepted and
then fail at close with EIO (InvalidObjectName), or answer ENOENT."""

from __future__ import annotations

import errno
import os
import subprocess

from ossmount.emulator import Emulator
from tests.mount.conftest import MountFactory
from tests.mount.harness import BUCKET
from tests.mount.test_write import RW, errno_of, server_keys

D = "d" * 250


def test_a_key_over_1023_bytes_is_enametoolong_and_nothing_is_sent(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    deep = "/".join([D] * 4)  # a file named n bytes below it has a key of 1004 + n bytes
    emulator.put_object(BUCKET, f"{deep}/ok", b"k")
    mount = make_mount(args=RW).start()
    base = mount.path / deep
    touch = subprocess.run(["touch", str(base / ("f" * 30))], capture_output=True, text=True)
    assert touch.returncode != 0
    assert "File name too long" in touch.stderr, touch.stderr
    assert errno_of(lambda: os.mkdir(base / ("x" * 19))) == errno.ENAMETOOLONG  # with its "/"
    assert errno_of(lambda: os.symlink("ok", base / ("y" * 20))) == errno.ENAMETOOLONG
    assert errno_of(lambda: os.rename(base / "ok", base / ("y" * 20))) == errno.ENAMETOOLONG
    os.mkdir(base / ("x" * 18))  # 1023 bytes with its "/": allowed
    (base / ("y" * 19)).write_bytes(b"fits")  # 1023 bytes: allowed
    # A directory rename that would take those two over the limit: refused before any copy.
    assert errno_of(lambda: os.rename(mount.path / D, mount.path / (D + "e"))) == (
        errno.ENAMETOOLONG
    )
    assert server_keys(emulator) == {f"{deep}/ok", f"{deep}/{'x' * 18}/", f"{deep}/{'y' * 19}"}
    assert (base / "ok").read_bytes() == b"k"


def test_a_name_that_is_not_utf8_is_einval(emulator: Emulator, make_mount: MountFactory) -> None:
    mount = make_mount(args=RW).start()
    bad = os.fsencode(mount.path) + b"/caf\xe9"  # Latin-1
    assert errno_of(lambda: os.close(os.open(bad, os.O_WRONLY | os.O_CREAT))) == errno.EINVAL
    assert errno_of(lambda: os.mkdir(bad)) == errno.EINVAL
    assert errno_of(lambda: os.symlink("x", bad)) == errno.EINVAL
    (mount.path / "good").write_bytes(b"g")
    assert errno_of(lambda: os.rename(mount.path / "good", bad)) == errno.EINVAL
    assert server_keys(emulator) == {"good"}
    assert "not valid UTF-8" in mount.log()
