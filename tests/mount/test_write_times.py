"""atime and ctime kept where ossfs 1.x keeps them (`x-oss-meta-atime`, `-ctime`; issue 15),
through a real `--rw` mount against the emulator: `touch -a`, `touch -m`, `os.utime` and
`chmod` store what ossfs would store (fs/stamps.py), read back with the official SDK; `stat`
shows what is stored, and an object ossfs wrote shows its times once the mount has its headers;
a read stores nothing."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from ossmount.emulator import Emulator
from tests.mount.conftest import MountFactory
from tests.mount.harness import fsynced
from tests.mount.test_write import RW
from tests.mount.test_write_kept_attrs import _link, _meta, _put

S = 10**9


def _ns(value: str) -> int:
    """ossfs's `sec[.nsec]` (written by us with nine digits) in nanoseconds."""
    sec, _, frac = value.partition(".")
    return int(sec) * S + (int(frac) if frac else 0)


def _times(meta: dict[str, str]) -> tuple[int, int, int | None]:
    """(atime, ctime, mtime or None) stored in `meta`, in nanoseconds."""
    mtime = meta.get("mtime")
    return _ns(meta["atime"]), _ns(meta["ctime"]), None if mtime is None else _ns(mtime)


def _shown(path: Path) -> tuple[int, int, int]:
    st = os.lstat(path)
    return st.st_atime_ns, st.st_ctime_ns, st.st_mtime_ns


def test_touch_utime_and_chmod_store_atime_and_ctime_as_ossfs_does(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    mount = make_mount(args=RW).start()
    f = mount.path / "f"
    before = time.time_ns() // S * S
    f.write_bytes(b"new")
    atime, ctime, mtime = _times(_meta(emulator, "f"))
    assert before <= atime <= ctime <= time.time_ns(), "the create's atime, the commit's ctime"
    assert (atime % S, ctime % S) == (0, 0)
    assert mtime is not None
    assert before <= mtime <= time.time_ns(), "the commit's time, as ossfs stores one"
    assert _shown(f) == (atime, ctime, mtime)

    # touch -m: the mtime given; atime AND ctime become the ctime the object had
    subprocess.run(["touch", "-m", "-d", "@1400000000", str(f)], check=True)
    fsynced(f)  # sent a moment later, or at fsync (fs/owedattrs.py)
    assert _times(_meta(emulator, "f")) == (ctime, ctime, 1_400_000_000 * S)
    assert _shown(f) == (ctime, ctime, 1_400_000_000 * S)

    # touch -a: atime and ctime the one given; the mtime written again as it was
    subprocess.run(["touch", "-a", "-d", "@1500000000.5", str(f)], check=True)
    fsynced(f)
    half = 1_500_000_000 * S + S // 2
    assert _times(_meta(emulator, "f")) == (half, half, 1_400_000_000 * S)
    assert _shown(f) == (half, half, 1_400_000_000 * S)

    # os.utime with both: mtime, and the atime as atime and ctime
    os.utime(f, ns=(1_300_000_000 * S + 7, 1_200_000_000 * S + 9))
    fsynced(f)
    meta = _meta(emulator, "f")
    assert meta["atime"] == meta["ctime"] == "1300000000.000000007"
    assert meta["mtime"] == "1200000000.000000009"
    assert _shown(f) == (1_300_000_000 * S + 7, 1_300_000_000 * S + 7, 1_200_000_000 * S + 9)

    # touch -a with no date (UTIME_NOW): now, to the nanosecond, as atime and ctime
    start = time.time_ns()
    subprocess.run(["touch", "-a", str(f)], check=True)
    fsynced(f)
    atime, ctime, mtime = _times(_meta(emulator, "f"))
    assert start - S <= atime == ctime <= time.time_ns()
    assert mtime == 1_200_000_000 * S + 9

    # chmod: ctime now (whole seconds), atime and mtime untouched
    start = time.time_ns() // S * S
    f.chmod(0o600)
    fsynced(f)
    meta = _meta(emulator, "f")
    assert (_ns(meta["atime"]), _ns(meta["mtime"])) == (atime, 1_200_000_000 * S + 9)
    assert start <= _ns(meta["ctime"]) <= time.time_ns()
    assert _ns(meta["ctime"]) % S == 0
    assert meta["mode"] == str(stat.S_IFREG | 0o600)
    assert _shown(f) == (atime, _ns(meta["ctime"]), 1_200_000_000 * S + 9)


def test_directories_and_symlinks_keep_their_times_on_their_objects(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    mount = make_mount(args=RW).start()
    (mount.path / "d").mkdir()
    os.symlink("d", mount.path / "l")
    marker = _meta(emulator, "d/")
    link = _link(emulator, "l")[1]  # a HEAD of a link answers its target's
    for read, path in ((lambda: _meta(emulator, "d/"), mount.path / "d"),
                       (lambda: _link(emulator, "l")[1], mount.path / "l")):  # fmt: skip
        atime, ctime, mtime = _times(read())
        assert atime == ctime == mtime, "as ossfs's mkdir and symlink: all three now"
        assert _shown(path) == (atime, ctime, mtime)
        os.utime(path, ns=(1_300_000_000 * S, 1_200_000_000 * S), follow_symlinks=False)
        if path.name == "d":
            fsynced(path)  # a marker the mount made owes its times (fs/owedattrs.py)
        assert _times(read()) == (1_300_000_000 * S, 1_300_000_000 * S, 1_200_000_000 * S)
        assert _shown(path) == (1_300_000_000 * S, 1_300_000_000 * S, 1_200_000_000 * S)
    assert marker["mode"] == str(stat.S_IFDIR | 0o755)
    assert link["mode"] == str(stat.S_IFLNK | 0o777)


OSSFS_FILE = {"mode": str(stat.S_IFREG | 0o644), "uid": "0", "gid": "0",
              "atime": "1300000000", "ctime": "1400000000", "mtime": "1500000000"}  # fmt: skip


def test_an_object_written_by_ossfs_shows_its_times_once_the_mount_has_its_headers(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    """Objects known only from a listing show the Last-Modified for all three times (no HEAD
    per entry, as for their mode and owner); a chmod, or an overwrite, HEADs the object
    anyway, and from then on its atime and ctime are shown as ossfs shows them."""
    for key in ("chmod", "append", "touch"):
        _put(emulator, key, b"ossfs", OSSFS_FILE)
    mount = make_mount(args=RW).start()
    listed = _shown(mount.path / "chmod")
    assert listed[0] == listed[1] == listed[2], "known from a listing: the Last-Modified"

    (mount.path / "chmod").chmod(0o640)
    shown = _shown(mount.path / "chmod")
    assert (shown[0], shown[2]) == (1_300_000_000 * S, 1_500_000_000 * S), "ossfs's atime, mtime"
    assert shown[1] == _ns(_meta(emulator, "chmod")["ctime"]) > 1_400_000_000 * S, "chmod: now"

    with open(mount.path / "append", "ab") as f:
        f.write(b" and us")
    meta = _meta(emulator, "append")
    assert meta["atime"] == "1300000000", "an overwrite keeps the atime, as ossfs's open"
    assert _ns(meta["ctime"]) > 1_400_000_000 * S, "and its commit stores its own ctime"
    assert _shown(mount.path / "append")[:2] == (1_300_000_000 * S, _ns(meta["ctime"]))

    subprocess.run(["touch", "-m", "-d", "@1600000000", str(mount.path / "touch")], check=True)
    meta = _meta(emulator, "touch")
    assert (meta["atime"], meta["ctime"], meta["mtime"]) == ("1400000000", "1400000000",
                                                             "1600000000")  # fmt: skip
    assert _shown(mount.path / "touch") == (1_400_000_000 * S, 1_400_000_000 * S,
                                            1_600_000_000 * S)  # fmt: skip


def test_reading_through_the_mount_stores_no_atime(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    """ossfs does not update the atime on a read (s3fs_read), and neither do we: a read costs
    its GET only, however the kernel's own atime moves."""
    mount = make_mount(args=RW).start()
    f = mount.path / "f"
    f.write_bytes(b"x" * 5000)
    os.utime(f, ns=(1_300_000_000 * S, 1_200_000_000 * S))
    stored = _meta(emulator, "f")
    since = len(emulator.requests)
    for _ in range(3):
        assert f.read_bytes() == b"x" * 5000
        subprocess.run(["cat", str(f)], check=True, stdout=subprocess.DEVNULL)
    assert {r.op for r in emulator.requests[since:]} <= {"GetObject", "ListObjectsV2"}
    assert _meta(emulator, "f") == stored


@pytest.mark.parametrize("args", [RW, (*RW, "-o", "writeback")], ids=["sync", "writeback"])
def test_a_write_after_futimens_makes_the_mtime_now_as_on_a_local_disk(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path, args: tuple[str, ...]
) -> None:
    """A time set while the file is open holds only until the next write (POSIX, and ext4
    here); one set after the last write (cp -p, tar) is what stays."""
    mount = make_mount(args=args).start()
    local = tmp_path / "local"
    local.mkdir()
    old = 1_500_000_000 * S
    start = time.time_ns() - S  # whole seconds on the server
    for root in (local, mount.path):
        for name, write_after in (("rewritten", True), ("kept", False)):
            with open(root / name, "wb") as f:
                f.write(b"first")
                f.flush()
                os.utime(f.fileno(), ns=(old, old))
                if write_after:
                    f.write(b" second")
    mount.stop()
    again = make_mount(args=RW).start()
    for root in (local, again.path):
        assert os.stat(root / "kept").st_mtime_ns == old, root
        assert os.stat(root / "rewritten").st_mtime_ns >= start, root
    assert _ns(_meta(emulator, "kept")["mtime"]) == old
    assert _ns(_meta(emulator, "rewritten")["mtime"]) >= start


def test_a_file_keeps_its_mtime_through_a_rename_and_a_remount(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    """A commit stores its time as x-oss-meta-mtime (as ossfs does), so the mtime is not the
    Last-Modified, which the rename's copy would move, nor does another mount see another
    one. A sequential file of several parts (its upload initiated before the close) keeps
    its Last-Modified instead: adding the time would cost a copy of the whole object."""
    mount = make_mount(args=RW).start()
    small, big = mount.path / "small", mount.path / "big"
    small.write_bytes(b"one put")
    big.write_bytes(os.urandom(3 * 1024 * 1024 + 1))  # parts of 1 MiB: initiated early
    shown = os.stat(small).st_mtime_ns
    assert _times(_meta(emulator, "small"))[2] == shown
    assert "mtime" not in _meta(emulator, "big")
    os.rename(small, mount.path / "moved")
    assert os.stat(mount.path / "moved").st_mtime_ns == shown
    assert _times(_meta(emulator, "moved"))[2] == shown
    mount.stop()
    again = make_mount().start()
    assert os.stat(again.path / "moved").st_mtime_ns == shown


def test_a_big_write_back_file_keeps_its_close_time_and_stays_verifiable(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    """Under write-back a file of several parts has its upload initiated before the close,
    so the close's mtime is stored afterwards by a copy onto itself. OSS changes only the
    metadata of such a copy: the object keeps its CRC-64, and a fresh mount verifies it."""
    mount = make_mount(args=(*RW, "-o", "writeback")).start()
    data = os.urandom(3 * 1024 * 1024 + 1)  # parts of 1 MiB: they go before the close
    (tmp_path / "big").write_bytes(data)
    subprocess.run(["cp", str(tmp_path / "big"), str(mount.path / "big")], check=True)
    shown = os.stat(mount.path / "big").st_mtime_ns
    mount.stop()  # waits for the upload and the copy
    assert "CopyObject" in [r.op for r in emulator.requests]
    assert _ns(_meta(emulator, "big")["mtime"]) == shown
    fresh = make_mount().start()
    assert (fresh.path / "big").read_bytes() == data
    assert os.stat(fresh.path / "big").st_mtime_ns == shown
    assert os.getxattr(fresh.path / "big", "user.ossmount.state") == b"verified"
