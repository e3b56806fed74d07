"""What a rename moves, as a local filesystem moves it: a symlink stays a symlink with its
POSIX target (a tree renamed with its internal relative links keeps them pointing inside it),
also for a link the kernel already knows under the renamed directory."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

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


def _type_of(emulator: Emulator, key: str) -> str:
    version = emulator.head(BUCKET, key)
    assert version is not None, key
    return version.content_type


def test_rsync_into_the_mount_gives_each_file_the_type_of_its_name(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    """rsync uploads `.index.html.Xy12Ab` (typed application/octet-stream by that name) and
    renames it: the copy kept that type, so a site synced through the mount served every
    page as a download."""
    src = tmp_path / "site"
    src.mkdir()
    for name in ("index.html", "style.css", "logo.png", "README"):
        (src / name).write_bytes(b"content of " + name.encode())
    mount = make_mount(args=RW).start()
    subprocess.run(["rsync", "-a", f"{src}/", f"{mount.path}/site/"], check=True)
    assert _type_of(emulator, "site/index.html") == "text/html"
    assert _type_of(emulator, "site/style.css") == "text/css"
    assert _type_of(emulator, "site/logo.png") == "image/png"
    assert _type_of(emulator, "site/README") == "application/octet-stream"
    assert (mount.path / "site" / "index.html").read_bytes() == b"content of index.html"
    heads = [r for r in emulator.requests if r.op == "HeadObject"]
    assert heads == [], "what this mount just wrote needs no HEAD to be copied"


def test_mv_retypes_an_older_object_only_where_its_type_was_its_names_default(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    emulator.put_object(BUCKET, "draft.tmp", b"<html></html>")  # typed by its name
    emulator.put_object(BUCKET, "notes.dat", b"text", content_type="text/plain")  # on purpose
    emulator.put_object(BUCKET, "a.txt", b"a")
    mount = make_mount(args=RW).start()
    os.rename(mount.path / "draft.tmp", mount.path / "page.html")
    os.rename(mount.path / "notes.dat", mount.path / "notes.html")
    before = len([r for r in emulator.requests if r.op == "HeadObject"])
    os.rename(mount.path / "a.txt", mount.path / "b.txt")
    assert _type_of(emulator, "page.html") == "text/html"
    assert _type_of(emulator, "notes.html") == "text/plain", "a type set on purpose stays"
    assert _type_of(emulator, "b.txt") == "text/plain"
    assert len([r for r in emulator.requests if r.op == "HeadObject"]) == before, (
        "a move between names of one type costs no HEAD"
    )
    assert (mount.path / "page.html").read_bytes() == b"<html></html>"
    mount.stop()
    assert server_keys(emulator) >= {"page.html", "notes.html", "b.txt"}
