"""The attributes a `--rw` mount keeps and shows (issue 15): what it stores is what `stat`
shows, so `rsync -a` sets every mode it must and a second run sends nothing; chown of an open
file; directories' attributes on their `dir/` markers. Read back with the official SDK, never
the mount; requests counted in the emulator's log."""

from __future__ import annotations

import collections
import json
import os
import re
import stat
import subprocess
import time
from pathlib import Path

import alibabacloud_oss_v2 as oss

from ossmount.emulator import Emulator
from ossmount.emulator.faults import FaultRule
from tests.mount.conftest import MountFactory
from tests.mount.harness import BUCKET, fsynced
from tests.mount.test_cache_commands import _cli
from tests.mount.test_write import RW, sdk, server_bytes

OLD = 1_500_000_000  # an mtime long past: the upload time would differ from it
MODES = {"a644": 0o644, "b755": 0o755, "c600": 0o600, "d640": 0o640}


def _meta(emu: Emulator, key: str) -> dict[str, str]:
    head = sdk(emu).head_object(oss.HeadObjectRequest(bucket=BUCKET, key=key))
    return dict(head.metadata or {})


def _wait_for_mode(emu: Emulator, key: str, mode: int) -> None:
    """Until the server has `mode` stored on `key` (an owed copy landed), at most 30 s."""
    deadline = time.monotonic() + 30
    while _meta(emu, key).get("mode") != str(stat.S_IFREG | mode):
        assert time.monotonic() < deadline, _meta(emu, key)
        time.sleep(0.02)


def _ops(emu: Emulator, since: int, prefix: str) -> collections.Counter[str]:
    return collections.Counter(r.op for r in emu.requests[since:] if r.key.startswith(prefix))


def _source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for i, (name, mode) in enumerate(MODES.items()):
        path = src / "sub" / name
        path.write_bytes(os.urandom(3000 + i))
        path.chmod(mode)
        os.utime(path, ns=(OLD * 10**9, (OLD + i) * 10**9 + (250_000_000 if i == 3 else 0)))
    (src / "sub").chmod(0o750)
    os.utime(src / "sub", (OLD - 5, OLD - 5))
    return src


def _transferred(stats: str) -> int:
    found = re.search(r"Number of regular files transferred: (\d+)", stats)
    assert found is not None, stats
    return int(found.group(1))


def test_rsync_a_stores_and_shows_every_mode_and_mtime_and_a_second_run_sends_nothing(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    src = _source(tmp_path)
    # Attributes owed are sent only at the rename, fsync or unmount (not after 1 s, which a
    # slow machine may reach between two of rsync's calls): the counts below are exact.
    mount = make_mount(args=(*RW, "--attr-delay", "600")).start()
    dst = mount.path / "r"
    before = len(emulator.requests)
    first = subprocess.run(["rsync", "-a", "--stats", f"{src}/", str(dst)], check=True,
                           capture_output=True, text=True)  # fmt: skip
    assert _transferred(first.stdout) == len(MODES)
    # Per file: PutObject of the temp file (mode 0600 or 0700: rsync's INITACCESSPERMS), then
    # the rename's copy, which carries the mtime and mode set on the temp file (owed, not
    # sent by copies of their own: fs/owedattrs.py), and the delete. No HEAD: the mount
    # wrote them.
    files = collections.Counter(
        r.op for r in emulator.requests[before:]
        if r.key.startswith("r/sub/") and not r.key.endswith("/")
    )  # fmt: skip
    dirs = collections.Counter(r.op for r in emulator.requests[before:] if r.key.endswith("/"))
    print(f"first rsync -a, {len(MODES)} files: {dict(files)}; directory markers: {dict(dirs)}")
    assert files["HeadObject"] == 0, files
    assert files["PutObject"] == len(MODES)
    assert files["DeleteObject"] == len(MODES)
    assert files["CopyObject"] == len(MODES), files
    for i, (name, mode) in enumerate(MODES.items()):
        meta = _meta(emulator, f"r/sub/{name}")
        want = src / "sub" / name
        assert meta["mode"] == str(stat.S_IFREG | mode), f"{name}: as ossfs 1.x stores it, {meta}"
        assert meta["mtime"] == (f"{OLD + i}.250000000" if i == 3 else str(OLD + i)), meta
        shown = os.stat(dst / "sub" / name)
        assert stat.S_IMODE(shown.st_mode) == mode, f"{name}: the mount shows what it stored"
        assert shown.st_mtime_ns == want.stat().st_mtime_ns
    fsynced(dst / "sub")  # the directory's times and mode, set last, are sent a moment later
    assert dirs["CopyObject"] == 0, "owed"
    marker = _meta(emulator, "r/sub/")
    assert marker["mode"] == str(stat.S_IFDIR | 0o750), marker
    assert marker["mtime"] == str(OLD - 5)
    assert stat.S_IMODE(os.stat(dst / "sub").st_mode) == 0o750
    assert os.stat(dst / "sub").st_mtime == OLD - 5
    # The second run: every file's size, mtime and mode match, so nothing is sent, and no
    # request at all is made (all of it is known to the mount within the metadata TTL).
    before = len(emulator.requests)
    second = subprocess.run(["rsync", "-a", "--stats", "--itemize-changes", f"{src}/", str(dst)],
                            check=True, capture_output=True, text=True)  # fmt: skip
    assert _transferred(second.stdout) == 0, second.stdout
    assert _ops(emulator, before, "r") == {}, "a second rsync -a costs no request"


def test_chown_of_a_file_open_for_writing_rides_with_its_upload(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    mount = make_mount(args=RW).start()
    path = mount.path / "owned"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o640)
    try:
        os.write(fd, b"mine")
        os.fchown(fd, 1234, 5678)
        assert os.fstat(fd).st_uid == 1234, "shown at once"
    finally:
        os.close(fd)
    assert [r.op for r in emulator.requests if r.key == "owned"] == ["PutObject"]
    meta = _meta(emulator, "owned")
    assert (meta["uid"], meta["gid"], meta["mode"]) == ("1234", "5678", str(0o100640)), meta
    shown = os.stat(path)
    assert (shown.st_uid, shown.st_gid) == (1234, 5678)
    before = len(emulator.requests)
    os.chown(path, 4321, -1)  # closed: a copy onto itself (no HEAD: the mount wrote it),
    assert os.stat(path).st_uid == 4321, "shown at once"
    fsynced(path)  # sent a moment later, or at fsync
    assert [r.op for r in emulator.requests[before:] if r.key == "owned"] == ["CopyObject"]
    assert _meta(emulator, "owned")["uid"] == "4321"
    assert os.stat(path).st_uid == 4321


def test_directory_attributes_live_on_their_markers(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    emulator.put_object(BUCKET, "implicit/x", b"x")  # a directory with no marker
    emulator.put_object(BUCKET, "theirs/", b"", meta={"mode": str(stat.S_IFDIR | 0o700)})
    mount = make_mount(args=RW).start()
    made = mount.path / "made"
    os.mkdir(made, 0o750)
    os.chmod(made, 0o705)
    os.utime(made, (OLD, OLD))
    fsynced(made)
    assert [r.op for r in emulator.requests if r.key == "made/"] == [
        "PutObject", "CopyObject",
    ], "no HEAD: the mount made the marker; one copy for both (fs/owedattrs.py)"  # fmt: skip
    marker = _meta(emulator, "made/")
    assert (marker["uid"], marker["gid"]) == (str(os.getuid()), str(os.getgid())), marker
    assert (marker["mode"], marker["mtime"]) == (str(stat.S_IFDIR | 0o705), str(OLD))
    assert (stat.S_IMODE(os.stat(made).st_mode), os.stat(made).st_mtime) == (0o705, OLD)
    made2 = mount.path / "made2"
    os.mkdir(made2, 0o750)
    marker = _meta(emulator, "made2/")
    assert marker["mode"] == str(stat.S_IFDIR | 0o750)
    assert int(marker["mtime"]) > OLD, "mkdir stores its time, as ossfs does"
    assert stat.S_IMODE(os.stat(made2).st_mode) == 0o750
    # An implicit directory gets a marker, as ossfs gives it one; then it is a directory of
    # its own and outlives its last entry.
    os.chmod(mount.path / "implicit", 0o711)
    marker = _meta(emulator, "implicit/")
    assert marker.pop("ctime").isdigit(), "a chmod's ctime: now"
    assert marker == {"mode": str(stat.S_IFDIR | 0o711)}
    assert stat.S_IMODE(os.stat(mount.path / "implicit").st_mode) == 0o711
    os.unlink(mount.path / "implicit" / "x")
    os.rmdir(mount.path / "implicit")
    # Someone else's marker: found by a HEAD, its metadata kept, updated by a copy; then
    # what it carries is known and shown (the HEAD told it).
    before = len(emulator.requests)
    os.utime(mount.path / "theirs", (OLD, OLD))
    ops = [r.op for r in emulator.requests[before:] if r.key == "theirs/"]
    assert ops == ["HeadObject", "HeadObject", "CopyObject"], ops
    assert _meta(emulator, "theirs/") == {"mode": str(stat.S_IFDIR | 0o700), "mtime": str(OLD),
                                          "atime": str(OLD), "ctime": str(OLD)}  # fmt: skip
    shown = os.stat(mount.path / "theirs")
    assert (stat.S_IMODE(shown.st_mode), shown.st_mtime) == (0o700, OLD)


def test_owed_attributes_reach_oss_by_themselves_and_survive_a_directory_rename(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    """fs/owedattrs.py: a chmod of a file the mount just wrote is sent within --attr-delay
    with no fsync; one still owed when its directory is renamed is sent before the keys are
    copied (which keep the metadata OSS has)."""
    mount = make_mount(args=(*RW, "--attr-delay", "0.2")).start()
    f = mount.path / "f"
    f.write_bytes(b"alone")
    f.chmod(0o640)
    _wait_for_mode(emulator, "f", 0o640)
    mount.stop()

    slow = make_mount(args=(*RW, "--attr-delay", "600")).start()
    (slow.path / "d").mkdir()
    (slow.path / "d" / "g").write_bytes(b"moved")
    os.chmod(slow.path / "d" / "g", 0o604)
    os.utime(slow.path / "d" / "g", (OLD, OLD))
    os.rename(slow.path / "d", slow.path / "e")
    meta = _meta(emulator, "e/g")
    assert (meta["mode"], meta["mtime"]) == (str(stat.S_IFREG | 0o604), str(OLD)), meta
    assert stat.S_IMODE(os.stat(slow.path / "e" / "g").st_mode) == 0o604


def test_the_owner_of_an_acknowledged_file_survives_a_crash_before_its_upload(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    """Write-back: close returns once the file and its journal are on local disk; the owner
    set on the descriptor is in that journal, so the upload after a kill -9 carries it."""
    held = FaultRule("stall", op="PutObject", key="wb", times=None, seconds=10.0)
    emulator.faults.add(held)
    mount = make_mount(args=(*RW, "--writeback")).start()
    fd = os.open(mount.path / "wb", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"acknowledged")
        os.fchown(fd, 1234, 5678)
        os.utime(fd, (OLD, OLD))
    finally:
        os.close(fd)
    assert emulator.head(BUCKET, "wb") is None, "close returned before the upload finished"
    mount.kill()
    subprocess.run(["fusermount3", "-u", "-z", str(mount.path)], check=False)
    emulator.faults.clear()
    make_mount(args=(*RW, "--writeback")).start()  # ready only once it is uploaded
    meta = _meta(emulator, "wb")
    assert int(meta.pop("ctime")) > OLD, "the close's ctime, as ossfs's flush stores it"
    assert meta == {
        "mode": str(0o100600), "uid": "1234", "gid": "5678", "mtime": str(OLD),
        "atime": str(OLD),
    }  # fmt: skip


def test_a_chmod_and_utime_acknowledged_before_a_kill_9_are_stored_by_the_next_mount(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    """write/owedlog.py: attributes owed (--attr-delay, not sent yet) when the daemon is
    killed are in the log beside the cache; the next --rw mount stores them before it is
    ready, fenced on the version they were set on: one the file outgrew before the kill is
    dropped (its new version carries its own), and the log is empty after."""
    args = (*RW, "--attr-delay", "600")
    mount = make_mount(args=args).start()
    (mount.path / "kept").write_bytes(b"kept")
    os.chmod(mount.path / "kept", 0o604)
    os.utime(mount.path / "kept", (OLD, OLD))
    (mount.path / "outgrown").write_bytes(b"first")
    os.chmod(mount.path / "outgrown", 0o600)
    (mount.path / "outgrown").write_bytes(b"second version")  # commits, paying the debt
    (mount.path / "gone").write_bytes(b"gone")
    os.chmod(mount.path / "gone", 0o600)
    (mount.path / "gone").unlink()
    assert _meta(emulator, "kept").get("mode") != str(stat.S_IFREG | 0o604), "still owed"
    owed_file = mount.cache / f"owed-{BUCKET}.attrs"
    assert owed_file.stat().st_size > 0
    mount.kill()
    status = _cli("cache", "status", "--cache-dir", str(mount.cache)).stdout
    assert "not on OSS yet: 0 files written and 1 objects' modes, owners or times" in status
    read_only = make_mount().start()  # says so, and leaves them alone
    assert "the modes, owners or times of 1 object(s) set through an earlier" in read_only.log()
    read_only.stop()
    before = len(emulator.requests)

    again = make_mount(args=args).start()  # ready once they are stored
    meta = _meta(emulator, "kept")
    assert (meta["mode"], meta["mtime"]) == (str(stat.S_IFREG | 0o604), str(OLD)), meta
    assert _meta(emulator, "outgrown").get("mode") == str(stat.S_IFREG | 0o600), (
        "the new version kept the mode the old one was given"
    )
    copies = [r.key for r in emulator.requests[before:] if r.op == "CopyObject"]
    assert copies == ["kept"], copies
    assert owed_file.stat().st_size == 0
    shown = os.stat(again.path / "kept")
    assert (stat.S_IMODE(shown.st_mode), shown.st_mtime) == (0o604, OLD)


def test_a_chmod_and_utime_of_a_file_whose_write_back_upload_waits_survive_a_kill_9(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    """They ride in the file's fields, for its upload; a crash leaves its sealed journal, so
    they also go to the owed attributes' log, laid over its record by the next mount
    (Staging.attrs_set, fs/recovery.py), for a one-PUT file and for one
    whose parts went while it was written."""
    args = (*RW, "--writeback", "--writeback-delay", "600")
    mount = make_mount(args=args).start()
    bodies = {"small": b"small file", "big": os.urandom(3 * 1024 * 1024 + 5)}
    for name, body in bodies.items():
        (mount.path / name).write_bytes(body)
        os.chmod(mount.path / name, 0o621)
        os.utime(mount.path / name, (OLD, OLD))
    assert emulator.head(BUCKET, "small") is None, "held back: nothing uploaded"
    mount.kill()
    status = json.loads(_cli("cache", "status", "--cache-dir", str(mount.cache), "--json").stdout)
    assert status["not_on_oss"] == {"files": 2, "attributes": 0}
    make_mount(args=args).start()  # ready once they are uploaded
    assert (mount.cache / f"owed-{BUCKET}.attrs").stat().st_size == 0, "all paid"
    for name, body in bodies.items():
        assert (
            sdk(emulator).get_object(oss.GetObjectRequest(bucket=BUCKET, key=name)).body.read()
            == body
        )
        meta = _meta(emulator, name)
        assert (meta["mode"], meta["mtime"]) == (str(stat.S_IFREG | 0o621), str(OLD)), (name, meta)


def test_an_old_utime_after_a_rename_over_an_object_does_not_make_the_kill_9_drop_the_file(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    """A new file renamed over an object while its write-back upload waits, then given an
    old time (`touch -d`; as ossfs, a utimens stores the atime as the ctime too), then a
    kill -9: the next mount uploads it. Its recovery tells another writer's newer version
    by the time the file was sealed (or renamed), not by its ctime, which the utimens set
    back years: that made every version on the server look newer, and the acknowledged
    file was dropped (a stress run: seed 81, under write-back with kills)."""
    emulator.put_object(BUCKET, "dst", b"the old object")
    args = (*RW, "--writeback", "--writeback-delay", "600")
    mount = make_mount(args=args).start()
    (mount.path / "tmp").write_bytes(b"the new file")
    os.rename(mount.path / "tmp", mount.path / "dst")
    os.utime(mount.path / "dst", (OLD, OLD))
    assert server_bytes(emulator, "dst") == b"the old object", "held back: not uploaded"
    mount.kill()
    make_mount(args=args).start()  # ready once it is uploaded
    assert server_bytes(emulator, "dst") == b"the new file"
    assert _meta(emulator, "dst")["mtime"] == str(OLD)
    assert emulator.head(BUCKET, "tmp") is None


def test_a_pending_upload_s_attributes_survive_the_old_version_s_owed_copy_and_a_kill_9(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    """The previous version owes a chmod, sent while the new version's upload waits: that
    copy's end pays the version's debt, not what was logged for the waiting upload (they
    are apart in the log, write/owedlog.py STAGED), so a kill after it still loses nothing."""
    args = (*RW, "--writeback", "--writeback-delay", "600", "--attr-delay", "0.2")
    mount = make_mount(args=args).start()
    f = mount.path / "f"
    f.write_bytes(b"first")
    fsynced(f)  # committed now, not held back
    f.chmod(0o640)  # owed by that version, sent 0.2 s later
    f.write_bytes(b"second version")  # held back: its upload waits
    f.chmod(0o621)
    _wait_for_mode(emulator, "f", 0o640)
    mount.kill()
    make_mount(args=args).start()  # ready once the held-back file is uploaded
    assert server_bytes(emulator, "f") == b"second version"
    assert _meta(emulator, "f")["mode"] == str(stat.S_IFREG | 0o621)
