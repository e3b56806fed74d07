"""`--own-attrs` (fs/ownattrs.py): files show their own x-oss-meta-* mode, owner and times,
at one HEAD per object version, none again after a remount. Through real mounts against the
emulator; the objects are put with the official SDK as ossfs 1.x stores them."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

import alibabacloud_oss_v2 as oss

from ossmount.emulator import Emulator
from ossmount.emulator.faults import FaultRule
from ossmount.fs.shown import STORED_SLACK_NS
from tests.mount.conftest import MountFactory
from tests.mount.harness import BUCKET
from tests.mount.test_write import sdk

OLD = 1_500_000_000
OSSFS = {"mode": str(stat.S_IFREG | 0o750), "uid": "1234", "gid": "5678", "mtime": str(OLD)}
FILES = ("bin/run.sh", "bin/other", "data/a.txt")


def _put(emulator: Emulator, key: str, body: bytes, meta: dict[str, str]) -> None:
    sdk(emulator).put_object(oss.PutObjectRequest(bucket=BUCKET, key=key, body=body, metadata=meta))


def _bucket(emulator: Emulator) -> None:
    for key in FILES:
        _put(emulator, key, b"#!/bin/sh\necho own\n", OSSFS)
    _put(emulator, "plain.txt", b"no metadata", {})
    sdk(emulator).put_symlink(
        oss.PutSymlinkRequest(bucket=BUCKET, key="link", symlink_target="plain.txt")
    )


def _heads(emulator: Emulator) -> list[str]:
    return sorted(r.key for r in emulator.requests if r.method == "HEAD")


def _chmod_elsewhere(
    emulator: Emulator, key: str, meta: dict[str, str], *, wait_ns: int = 0
) -> None:
    """What ossfs's chmod does: the object copied onto itself with new metadata (same
    ETag), once `wait_ns` has passed and a new second began (a Last-Modified has whole
    seconds), so its Last-Modified moves."""
    start = time.time_ns()
    while time.time_ns() < start + wait_ns or time.time_ns() // 10**9 == start // 10**9:
        time.sleep(0.05)
    sdk(emulator).copy_object(oss.CopyObjectRequest(
        bucket=BUCKET, key=key, source_bucket=BUCKET, source_key=key,
        metadata_directive="REPLACE", metadata=meta,
    ))  # fmt: skip


def _walk(root: Path) -> dict[str, os.stat_result]:
    """What `ls -lR` asks: every entry's lstat."""
    found = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(top, name)
            found[str(path.relative_to(root))] = path.lstat()
    return found


def test_listed_files_show_their_own_attributes_at_one_head_each_and_none_after_a_remount(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    _bucket(emulator)
    mount = make_mount(args=("--own-attrs",)).start()
    seen = _walk(mount.path)
    for key in FILES:
        st = seen[key]
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o750, 1234, 5678), key
        assert st.st_mtime == OLD, key
    assert stat.S_IMODE(seen["plain.txt"].st_mode) == 0o444, "no metadata: the default"
    assert stat.S_ISLNK(seen["link"].st_mode)
    assert _heads(emulator) == sorted([*FILES, "plain.txt", "bin/", "data/"]), (
        "one per file, one per directory (of its marker: none here)"
    )
    out = subprocess.run([str(mount.path / "bin" / "run.sh")], check=True,
                         capture_output=True, text=True)  # fmt: skip
    assert out.stdout == "own\n"
    _walk(mount.path)
    assert len(_heads(emulator)) == 6, "known versions are not HEADed again"
    mount.stop()

    _put(emulator, "data/a.txt", b"replaced", {"mode": str(stat.S_IFREG | 0o600)})
    again = make_mount(args=("--own-attrs",)).start()
    before = len(_heads(emulator))
    seen = _walk(again.path)
    assert [r.key for r in emulator.requests if r.method == "HEAD"][before:] == ["data/a.txt"]
    assert stat.S_IMODE(seen["data/a.txt"].st_mode) == 0o600, "the new version's"
    assert stat.S_IMODE(seen["bin/run.sh"].st_mode) == 0o750, "kept from the first mount"


def test_a_chmod_by_another_client_is_seen_after_the_listing_shows_it(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    """ossfs's chmod copies the object onto itself: same ETag, new Last-Modified. The saved
    entry a HEAD taught no longer answers, so the remount HEADs that file again."""
    _bucket(emulator)
    first = make_mount(args=("--own-attrs",)).start()
    assert stat.S_IMODE((first.path / "bin" / "run.sh").stat().st_mode) == 0o750
    first.stop()
    _chmod_elsewhere(emulator, "bin/run.sh", {**OSSFS, "mode": str(stat.S_IFREG | 0o711)})
    again = make_mount(args=("--own-attrs",)).start()
    before = len(_heads(emulator))
    assert stat.S_IMODE((again.path / "bin" / "run.sh").stat().st_mode) == 0o711
    assert [r.key for r in emulator.requests if r.method == "HEAD"][before:] == ["bin/run.sh"]


def test_without_the_option_listed_files_show_the_defaults_and_cost_no_head(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    _bucket(emulator)
    mount = make_mount().start()
    seen = _walk(mount.path)
    assert stat.S_IMODE(seen["bin/run.sh"].st_mode) == 0o444
    assert seen["bin/run.sh"].st_mtime != OLD
    assert _heads(emulator) == []


def test_a_lookup_by_name_heads_that_file_and_its_directory_only(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    _bucket(emulator)
    mount = make_mount(args=("--own-attrs",)).start()
    st = (mount.path / "bin" / "other").stat()
    assert (stat.S_IMODE(st.st_mode), st.st_mtime) == (0o750, OLD)
    assert _heads(emulator) == ["bin/", "bin/other"], "its directory's marker, and it"


def test_a_refused_head_shows_the_defaults_with_a_warning_and_never_fails_the_listing(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    _bucket(emulator)
    emulator.faults.add(FaultRule(action="error", op="HeadObject", key="bin/*", times=None,
                                  status=403, code="AccessDenied"))  # fmt: skip
    mount = make_mount(args=("--own-attrs",)).start()
    seen = _walk(mount.path)
    assert stat.S_IMODE(seen["bin/run.sh"].st_mode) == 0o444
    assert stat.S_IMODE(seen["data/a.txt"].st_mode) == 0o750
    assert "--own-attrs: " in mount.log()
    assert "HEAD(s) failed" in mount.log()


def test_a_directory_shows_its_marker_s_attributes_and_a_chmod_elsewhere_once_listed(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    """ossfs keeps a directory's mode, owner and times on its `dir/` marker: `--own-attrs`
    shows them (one HEAD of the marker), and the kernel's permission checks follow them.
    A chmod of the directory by another client (the marker copied onto itself) shows once
    the directory's own listing shows the changed marker; a remount HEADs nothing."""
    marker = {"mode": str(stat.S_IFDIR | 0o700), "uid": "1234", "gid": "5678", "mtime": str(OLD)}
    _put(emulator, "private/", b"", marker)
    _put(emulator, "private/secret.txt", b"s", OSSFS)
    mount = make_mount(args=("--own-attrs",)).start()
    st = (mount.path / "private").stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o700, 1234, 5678)
    assert st.st_mtime == OLD
    assert _heads(emulator) == ["private/"]
    denied = subprocess.run(["setpriv", "--reuid=4321", "--regid=4321", "--clear-groups",
                             "ls", str(mount.path / "private")],
                            capture_output=True, text=True)  # fmt: skip
    assert denied.returncode != 0, "another user may not list a 0700 directory"
    assert "Permission denied" in denied.stderr

    _chmod_elsewhere(emulator, "private/", {**marker, "mode": str(stat.S_IFDIR | 0o755)})
    mount.stop()
    again = make_mount(args=("--own-attrs",)).start()
    before = len(_heads(emulator))
    assert stat.S_IMODE((again.path / "private").stat().st_mode) == 0o700, "not listed yet"
    assert sorted(os.listdir(again.path / "private")) == ["secret.txt"]  # lists its marker
    seen = {entry.name: entry.stat() for entry in os.scandir(again.path)}  # as `ls -l` does
    assert stat.S_IMODE(seen["private"].st_mode) == 0o755
    heads = [r.key for r in emulator.requests if r.method == "HEAD"][before:]
    assert sorted(heads) == ["private/", "private/secret.txt"], (
        "the marker again (known from the first mount until its listing showed it changed), "
        "and the file listed for the first time"
    )


def test_a_chmod_of_a_directory_learnt_to_have_no_marker_makes_one_with_one_head(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    """`--rw --own-attrs`: an implicit directory, learnt as having no marker, gets one
    carrying the new mode at its chmod (as ossfs gives it one), after a single HEAD that
    finds it still has none; that mode is shown."""
    _put(emulator, "implicit/x", b"x", {})
    mount = make_mount(args=("--rw", "--own-attrs")).start()
    assert stat.S_IMODE((mount.path / "implicit").stat().st_mode) == 0o755, "the default"
    before = len(emulator.requests)
    os.chmod(mount.path / "implicit", 0o711)
    ops = [r.op for r in emulator.requests[before:] if r.key == "implicit/"]
    assert ops == ["HeadObject", "PutObject"], ops
    head = sdk(emulator).head_object(oss.HeadObjectRequest(bucket=BUCKET, key="implicit/"))
    assert (head.metadata or {})["mode"] == str(stat.S_IFDIR | 0o711)
    assert stat.S_IMODE((mount.path / "implicit").stat().st_mode) == 0o711


def test_a_chmod_elsewhere_of_a_file_this_mount_wrote_is_seen_after_a_remount(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    """`--rw --own-attrs`: what this mount stored is kept across remounts (no HEAD), until
    a listing shows the object changed later than that: another client's chmod (a copy
    onto itself, same ETag) is then HEADed once and shown."""
    first = make_mount(args=("--rw", "--own-attrs")).start()
    (first.path / "mine.txt").write_bytes(b"hi")
    os.chmod(first.path / "mine.txt", 0o640)
    fd = os.open(first.path / "mine.txt", os.O_RDONLY)
    os.fsync(fd)  # the mode is stored now
    os.close(fd)
    first.stop()
    again = make_mount(args=("--rw", "--own-attrs")).start()
    before = len(_heads(emulator))
    assert stat.S_IMODE((again.path / "mine.txt").stat().st_mode) == 0o640
    assert len(_heads(emulator)) == before, "known from the first mount: no HEAD"
    again.stop()
    meta = sdk(emulator).head_object(oss.HeadObjectRequest(bucket=BUCKET, key="mine.txt"))
    chmod = {**(meta.metadata or {}), "mode": str(stat.S_IFREG | 0o711)}
    # Later than the store by the slack, in whole seconds (Last-Modified drops the fraction).
    _chmod_elsewhere(emulator, "mine.txt", chmod, wait_ns=STORED_SLACK_NS + 1_000_000_000)
    third = make_mount(args=("--rw", "--own-attrs")).start()
    before = len(_heads(emulator))
    assert stat.S_IMODE((third.path / "mine.txt").stat().st_mode) == 0o711
    assert [r.key for r in emulator.requests if r.method == "HEAD"][before:] == ["mine.txt"]
