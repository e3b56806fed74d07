"""`mount -t fuse.ossmount` and fstab lines, through the real mount(8), mount.fuse3 and umount(8).

mount(8) runs /sbin/mount.fuse (mount.fuse3), which runs `ossmount SOURCE MOUNTPOINT -o OPTS`
through /bin/sh. mount(8) does not hand PATH to its helper (measured with util-linux 2.38: the
helper's environment has no PATH), so the shell searches its default path
(/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin), never the venv's bin/ — which
is why the README has `ossmount` linked into /usr/local/bin. To test that without touching the
machine, each test runs in a private mount namespace (unshare) where a directory holding a link
to the venv's `ossmount` is bind-mounted over /usr/local/sbin; mount, reads and umount are run
in that namespace with nsenter, and nothing (the bind mount, the FUSE mount) is visible outside.
The venv's bin/ is on PATH as well, as a user would have it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ossmount.emulator import Emulator
from ossmount.errors import ExitCode
from tests.mount.harness import AK, BUCKET, SK, daemon_pids

VENV_BIN = Path(sys.executable).parent


class Namespace:
    """A private mount namespace, held open by a `sleep` we started (and stop, by pid)."""

    def __init__(self, root: Path) -> None:
        self.bin = root / "sbin"
        self.bin.mkdir()
        (self.bin / "ossmount").symlink_to(VENV_BIN / "ossmount")
        self.holder = subprocess.Popen(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                f"mount --bind {self.bin} /usr/local/sbin && echo ready && exec sleep 600",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.holder.stdout is not None
        line = self.holder.stdout.readline()
        if line.strip() != "ready":
            self.close()
            pytest.fail(f"cannot set up a mount namespace (unshare): {line}", pytrace=False)

    def run(
        self, *argv: str, env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("OSS_")}
        full_env["PATH"] = f"{VENV_BIN}:{full_env.get('PATH', '/usr/bin:/bin')}"
        full_env.update(env or {})
        return subprocess.run(
            ["nsenter", "-t", str(self.holder.pid), "-m", "--", *argv],
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def mounts(self) -> list[list[str]]:
        text = Path(f"/proc/{self.holder.pid}/mounts").read_text()
        return [line.split() for line in text.splitlines()]

    def close(self) -> None:
        self.holder.send_signal(signal.SIGTERM)
        self.holder.wait(timeout=10)
        for stream in (self.holder.stdout, self.holder.stderr):
            if stream is not None:
                stream.close()


def _wait_gone(mountpoint: Path, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while daemon_pids(mountpoint):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def ns(tmp_path: Path) -> Iterator[Namespace]:
    namespace = Namespace(tmp_path)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        yield namespace
    finally:
        # Whatever a failed test left: detach the mount, stop the daemons we caused, by pid.
        namespace.run("fusermount3", "-u", "-z", str(mnt))
        for pid in daemon_pids(mnt):
            os.kill(pid, signal.SIGKILL)
        namespace.close()


@pytest.fixture
def passwd(tmp_path: Path) -> Path:
    path = tmp_path / "passwd-ossfs"
    path.write_text(f"{BUCKET}:{AK}:{SK}\n")
    path.chmod(0o600)
    return path


def _options(emulator: Emulator, tmp_path: Path, passwd: Path) -> str:
    return (
        f"url={emulator.endpoint},passwd_file={passwd},use_cache={tmp_path}/cache,"
        f"log_file={tmp_path}/ossmount.log,allow_other"
    )


def _log(tmp_path: Path) -> str:
    try:
        return (tmp_path / "ossmount.log").read_text()
    except FileNotFoundError:
        return ""


def test_mount_t_fuse_ossmount_returns_when_the_filesystem_answers(
    ns: Namespace, emulator: Emulator, tmp_path: Path, passwd: Path
) -> None:
    emulator.put_object(BUCKET, "data/hello.txt", b"hi\n")
    emulator.put_object(BUCKET, "other/no.txt", b"no\n")
    mnt = tmp_path / "mnt"
    opts = _options(emulator, tmp_path, passwd) + ",_netdev,nofail"
    result = ns.run("mount", "-t", "fuse.ossmount", f"{BUCKET}:/data", str(mnt), "-o", opts)
    assert result.returncode == 0, (result.stderr, _log(tmp_path))

    # The filesystem answers the moment mount(8) returns: no polling.
    listed = ns.run("ls", str(mnt))
    assert listed.stdout.split() == ["hello.txt"], listed
    assert ns.run("cat", str(mnt / "hello.txt")).stdout == "hi\n"
    [entry] = [m for m in ns.mounts() if m[1] == str(mnt)]
    assert entry[0].replace("\\043", "#").rstrip("/") == f"ossmount#{BUCKET}:/data"
    assert entry[2] == "fuse.ossmount"
    assert "ro" in entry[3].split(",")
    [pid] = daemon_pids(mnt)
    assert os.getsid(pid) == pid  # detached: its own session, mount(8) long gone
    assert not os.path.ismount(mnt)  # private to the namespace

    result = ns.run("umount", str(mnt))
    assert result.returncode == 0, result.stderr
    assert _wait_gone(mnt), f"the daemon did not exit after umount; log: {_log(tmp_path)}"
    assert "unmounted" in _log(tmp_path)
    assert not [m for m in ns.mounts() if m[1] == str(mnt)]


def test_an_fstab_line_mounts_with_mount_and_unmounts_with_umount(
    ns: Namespace, emulator: Emulator, tmp_path: Path, passwd: Path
) -> None:
    emulator.put_object(BUCKET, "x/y.bin", b"\x00" * 4096)
    mnt = tmp_path / "mnt"
    fstab = tmp_path / "fstab"
    opts = _options(emulator, tmp_path, passwd)
    # The README's line: generic and systemd options ride along and are ignored by ossmount.
    fstab.write_text(
        f"# test fstab\n{BUCKET} {mnt} fuse.ossmount "
        f"_netdev,nofail,x-systemd.automount,x-systemd.idle-timeout=600,{opts} 0 0\n"
    )
    result = ns.run("mount", "--fstab", str(fstab), str(mnt))
    assert result.returncode == 0, (result.stderr, _log(tmp_path))
    assert ns.run("stat", "-c", "%s", str(mnt / "x" / "y.bin")).stdout.strip() == "4096"
    assert "ignored mount options" in _log(tmp_path)
    result = ns.run("umount", str(mnt))
    assert result.returncode == 0, result.stderr
    assert _wait_gone(mnt)


@pytest.mark.parametrize(
    ("case", "code", "needle"),
    [
        ("missing-bucket", ExitCode.BUCKET, "does not exist"),
        ("wrong-secret", ExitCode.ACCESS, "credentials refused"),
    ],
)
def test_mount_fails_with_one_line_and_the_exit_code(
    ns: Namespace,
    emulator: Emulator,
    tmp_path: Path,
    passwd: Path,
    case: str,
    code: int,
    needle: str,
) -> None:
    bucket = BUCKET
    if case == "missing-bucket":
        bucket = "no-such-bucket"
        passwd.write_text(f"{AK}:{SK}\n")
    else:
        passwd.write_text(f"{BUCKET}:{AK}:not-the-secret\n")
    mnt = tmp_path / "mnt"
    opts = _options(emulator, tmp_path, passwd)
    result = ns.run("mount", "-t", "fuse.ossmount", bucket, str(mnt), "-o", opts)
    # mount(8) passes the helper's status through.
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert needle in lines[0]
    assert SK not in result.stderr
    assert "not-the-secret" not in result.stderr
    assert not [m for m in ns.mounts() if m[1] == str(mnt)]
    assert not daemon_pids(mnt)
