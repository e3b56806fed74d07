"""Attributes a `--rw` mount keeps where ossfs 1.x keeps them, beyond chmod/chown/utimens of a
file (issue 15): the mode and owner of an overwritten object the mount knew only from a
listing. Through a real mount against the emulator, read back with the official SDK."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import alibabacloud_oss_v2 as oss

from ossmount.emulator import Emulator
from tests.mount.conftest import MountFactory
from tests.mount.harness import BUCKET
from tests.mount.test_write import RW, MiB, sdk, server_bytes

OSSFS_0600 = {"mode": str(stat.S_IFREG | 0o600), "uid": "1234", "gid": "5678"}


def _meta(emu: Emulator, key: str) -> dict[str, str]:
    head = sdk(emu).head_object(oss.HeadObjectRequest(bucket=BUCKET, key=key))
    return {k.lower(): v for k, v in (head.metadata or {}).items()}


def _put(emu: Emulator, key: str, body: bytes, meta: dict[str, str]) -> None:
    sdk(emu).put_object(oss.PutObjectRequest(bucket=BUCKET, key=key, body=body, metadata=meta))


def test_an_overwrite_keeps_the_mode_and_owner_of_an_object_known_only_from_a_listing(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    """As ossfs's s3fs_open keeps the HEAD's metadata: `cp` over a file (open O_TRUNC, one
    PutObject), a shell's `>` (O_CREAT|O_TRUNC of an existing name is an open, not a create)
    and an append to a large object (multipart) keep its x-oss-meta-mode, -uid and -gid,
    and `stat` shows them once the file is committed. No request is added: the commit's
    conflict HEAD learns them."""
    big = os.urandom(3 * MiB + 1)
    for key, body in (("cp", b"old"), ("shell", b"old"), ("big", big)):
        _put(emulator, key, body, OSSFS_0600)
    mount = make_mount(args=RW).start()
    assert stat.S_IMODE((mount.path / "cp").stat().st_mode) != 0o600  # the listing's default
    new = tmp_path / "new"
    new.write_bytes(b"new contents")
    new.chmod(0o755)  # cp over an existing file does not take the source's mode
    subprocess.run(["cp", str(new), str(mount.path / "cp")], check=True)
    subprocess.run(["sh", "-c", f"echo shell > '{mount.path / 'shell'}'"], check=True)
    with open(mount.path / "big", "ab") as f:
        f.write(b"tail")
    heads = [r for r in emulator.requests if r.key == "cp" and r.method == "HEAD"]
    assert len(heads) == 1, heads  # the commit's, before the SDK's below
    for key in ("cp", "shell", "big"):
        meta = _meta(emulator, key)
        assert {k: meta.get(k) for k in OSSFS_0600} == OSSFS_0600, (key, meta)
        st = (mount.path / key).stat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, 1234, 5678), key
    assert server_bytes(emulator, "cp") == b"new contents"
    assert server_bytes(emulator, "shell") == b"shell\n"
    assert server_bytes(emulator, "big") == big + b"tail"


def test_a_mode_set_on_an_overwritten_file_wins_over_the_kept_one(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    """A chmod of the open file (before or after its bytes) is a mode this mount was told:
    it goes up instead of the old one; the owner nobody changed is still kept. An object
    with no x-oss-meta-mode goes up with the mount's default, as before."""
    _put(emulator, "told", b"old", OSSFS_0600)
    _put(emulator, "plain", b"old", {"other": "x"})
    mount = make_mount(args=RW).start()
    with open(mount.path / "told", "r+b") as f:
        os.fchmod(f.fileno(), 0o640)
        f.write(b"new")
    with open(mount.path / "plain", "wb") as f:
        f.write(b"new")
    told = _meta(emulator, "told")
    assert (told["mode"], told["uid"], told["gid"]) == (str(stat.S_IFREG | 0o640), "1234", "5678")
    assert stat.S_IMODE((mount.path / "told").stat().st_mode) == 0o640
    plain = _meta(emulator, "plain")
    shown = stat.S_IMODE((mount.path / "plain").stat().st_mode)
    assert (plain["mode"], plain["other"]) == (str(stat.S_IFREG | shown), "x"), plain


def _link(emu: Emulator, key: str) -> tuple[str, dict[str, str]]:
    got = sdk(emu).get_symlink(oss.GetSymlinkRequest(bucket=BUCKET, key=key))
    assert got.target is not None
    return got.target, {k.lower(): v for k, v in (got.metadata or {}).items()}


def test_a_symlink_keeps_its_owner_and_mtime_on_its_object_as_ossfs_does(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    """symlink stores ossfs's x-oss-meta-mode (S_IFLNK|0777), the caller's uid/gid, the time
    and ossfs's copy of the target on the PutSymlink object; lchown and
    utimensat(AT_SYMLINK_NOFOLLOW) change them on the link (the target untouched) and lstat
    shows them. So `rsync -a` sets a link's time once: a second run changes nothing."""
    _put(emulator, "f", b"target", {"other": "x"})
    mount = make_mount(args=RW).start()
    link = mount.path / "link"
    os.symlink("f", link)
    target, meta = _link(emulator, "link")
    assert target == "f"
    stamp = meta.pop("mtime")
    assert stamp.isdigit()
    assert (meta.pop("atime"), meta.pop("ctime")) == (stamp, stamp), "all three now, as ossfs"
    assert meta == {"mode": str(stat.S_IFLNK | 0o777), "uid": str(os.getuid()),
                    "gid": str(os.getgid()), "symlink-target": "header:1:f"}  # fmt: skip
    os.chown(link, 1234, 5678, follow_symlinks=False)
    when = 1_600_000_000_250_000_000
    os.utime(link, ns=(when, when), follow_symlinks=False)
    target, meta = _link(emulator, "link")
    assert target == "f"
    assert meta == {"mode": str(stat.S_IFLNK | 0o777), "uid": "1234", "gid": "5678",
                    "mtime": "1600000000.250000000", "atime": "1600000000.250000000",
                    "ctime": "1600000000.250000000", "symlink-target": "header:1:f"}  # fmt: skip
    assert _meta(emulator, "f") == {"other": "x"}, "the target is not touched"
    st = os.lstat(link)
    assert (stat.S_ISLNK(st.st_mode), st.st_uid, st.st_gid) == (True, 1234, 5678)
    assert st.st_mtime_ns == when
    assert os.readlink(link) == "f"
    assert (mount.path / "link").read_bytes() == b"target"
    src = tmp_path / "src"
    src.mkdir()
    (src / "file").write_bytes(b"x")
    os.symlink("file", src / "ln")
    os.utime(src / "ln", (1_500_000_000, 1_500_000_000), follow_symlinks=False)
    subprocess.run(["rsync", "-a", f"{src}/", str(mount.path / "r")], check=True)
    assert os.lstat(mount.path / "r" / "ln").st_mtime == 1_500_000_000
    second = subprocess.run(["rsync", "-a", "--itemize-changes", f"{src}/", str(mount.path / "r")],
                            check=True, capture_output=True, text=True)  # fmt: skip
    assert second.stdout == "", second.stdout


def test_the_mount_root_s_attributes_are_ignored_not_refused_unlike_ossfs(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    """ossfs 1.x fails chmod, chown and utimens of its mount point with EIO ("Could not
    change mode for mount point"), so `rsync -a src/ mnt/` exits 23 there. The root has no
    object of ours to keep them on: they succeed, change nothing (stat shows the same
    values) and cost no request, so `rsync -a src/ mnt/` and `cp -a src/. mnt/` exit 0."""
    mount = make_mount(args=RW).start()
    before = os.stat(mount.path)
    requests = len(emulator.requests)
    os.chmod(mount.path, 0o700)
    os.chown(mount.path, 1234, 5678)
    os.utime(mount.path, (1_500_000_000, 1_500_000_000))
    after = os.stat(mount.path)
    assert (after.st_mode, after.st_uid, after.st_gid) == (
        before.st_mode, before.st_uid, before.st_gid,
    )  # fmt: skip
    assert after.st_mtime != 1_500_000_000
    assert emulator.requests[requests:] == []
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x")
    src.chmod(0o750)
    os.utime(src, (1_500_000_000, 1_500_000_000))
    subprocess.run(["rsync", "-a", f"{src}/", f"{mount.path}/"], check=True)
    subprocess.run(["cp", "-a", f"{src}/.", f"{mount.path}/"], check=True)
    assert server_bytes(emulator, "f") == b"x"
