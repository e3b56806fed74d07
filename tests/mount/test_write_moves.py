"""What a rename moves, as a local filesystem moves it: a symlink stays a symlink with its
POSIX target (a tree renamed with its internal relative links keeps them pointing inside it),
also for a link the kernel already knows under the renamed directory."""

from __future__ import annotations

import os

from ossmount.emulator import Emulator
from tests.mount.conftest import MountFactory
from tests.mount.harness import BUCKET
from tests.mount.test_write import RW, server_keys


def test_mv_of_a_symlink_keeps_a_link_to_the_same_file(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    emulator.put_object(BUCKET, "a", b"target bytes")
    mount = make_mount(args=RW).start()
    os.symlink("a", mount.path / "l")
    os.rename(mount.path / "l", mount.path / "l2")  # it became a plain object (EINVAL)
    assert os.readlink(mount.path / "l2") == "a"
    assert (mount.path / "l2").read_bytes() == b"target bytes"
    assert emulator.head(BUCKET, "l2").object_type == "Symlink"  # type: ignore[union-attr]


def test_mv_of_a_tree_keeps_its_internal_relative_links_inside_it(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    emulator.put_object(BUCKET, "venv/lib/libfoo.so.1", b"library")
    emulator.put_object(BUCKET, "venv/lib/data", b"data")
    mount = make_mount(args=RW).start()
    os.symlink("libfoo.so.1", mount.path / "venv" / "lib" / "libfoo.so")
    os.symlink("../lib/data", mount.path / "venv" / "lib" / "up")
    assert os.readlink(mount.path / "venv" / "lib" / "libfoo.so") == "libfoo.so.1"  # cached
    os.rename(mount.path / "venv", mount.path / "venv2")
    lib = mount.path / "venv2" / "lib"
    assert os.readlink(lib / "libfoo.so") == "libfoo.so.1"  # read the old key (ENOENT)
    assert (lib / "libfoo.so").read_bytes() == b"library"  # pointed at the old tree
    assert (lib / "up").read_bytes() == b"data"
    assert emulator.head(BUCKET, "venv2/lib/libfoo.so").symlink_target == (  # type: ignore[union-attr]
        "venv2/lib/libfoo.so.1"
    )
    assert not any(k.startswith("venv/") for k in server_keys(emulator))
