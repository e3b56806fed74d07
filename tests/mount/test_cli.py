"""The daemonizing CLI: exit 0 only when the mount answers, else one line and the right code."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ossmount.emulator import Emulator, FaultRule
from ossmount.errors import ExitCode
from tests.mount.conftest import MountFactory
from tests.mount.harness import AK, BUCKET, SK, daemon_pids


def _run(
    args: list[str], env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("OSS_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "ossmount", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


CREDS = {"OSS_ACCESS_KEY_ID": AK, "OSS_ACCESS_KEY_SECRET": SK}


def test_daemon_returns_when_mounted_and_exits_on_unmount(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.put_object(BUCKET, "hello.txt", b"hi\n")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    result = _run(
        [
            BUCKET,
            str(mnt),
            "-o",
            f"url={emulator.endpoint},use_cache={tmp_path}/c,_netdev,nofail,allow_other",
        ],
        CREDS,
    )
    try:
        assert result.returncode == 0, result.stderr
        assert (mnt / "hello.txt").read_text() == "hi\n"  # answers as soon as we return
        pids = daemon_pids(mnt)
        assert len(pids) == 1
        cmdline = Path(f"/proc/{pids[0]}/cmdline").read_bytes()
        assert SK.encode() not in cmdline
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
    deadline = time.monotonic() + 20
    while daemon_pids(mnt) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not daemon_pids(mnt), "the daemon did not exit after unmount"
    assert not os.path.ismount(mnt)


@pytest.mark.parametrize(
    ("case", "code", "needle"),
    [
        ("no-credentials", ExitCode.CREDENTIALS, "credentials"),
        ("wrong-secret", ExitCode.ACCESS, "credentials refused"),
        ("missing-bucket", ExitCode.BUCKET, "does not exist"),
        ("unreachable", ExitCode.ENDPOINT, "cannot reach"),
        ("not-empty", ExitCode.MOUNTPOINT, "not empty"),
        ("missing-mountpoint", ExitCode.MOUNTPOINT, "does not exist"),
        ("bad-option", ExitCode.USAGE, "unknown mount option"),
    ],
)
def test_startup_failures_are_one_line_with_the_documented_exit_code(
    emulator: Emulator, tmp_path: Path, case: str, code: int, needle: str
) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = dict(CREDS)
    bucket = BUCKET
    endpoint = emulator.endpoint
    extra: list[str] = []
    if case == "no-credentials":
        env = {}
    elif case == "wrong-secret":
        env["OSS_ACCESS_KEY_SECRET"] = "not-the-secret"
    elif case == "missing-bucket":
        bucket = "no-such-bucket"
    elif case == "unreachable":
        endpoint = "http://127.0.0.1:9"
        extra = ["--max-attempts", "1", "--connect-timeout", "2"]
    elif case == "not-empty":
        (mnt / "file").write_text("x")
    elif case == "missing-mountpoint":
        mnt = tmp_path / "nope"
    elif case == "bad-option":
        extra = ["-o", "definitely_not_an_option=1"]
    result = _run(
        [bucket, str(mnt), "--endpoint", endpoint, "--cache-dir", str(tmp_path / "cache"), *extra],
        env,
    )
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert needle in lines[0]
    assert "Traceback" not in result.stderr
    assert SK not in result.stderr
    assert "not-the-secret" not in result.stderr
    assert not os.path.ismount(mnt)


def test_a_listing_that_is_not_oss_exits_10_naming_the_endpoint_not_access_denied(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Issue 14 finding 7: a hostile reply (here its first byte flipped) is a bad reply from
    the endpoint, exit 10, not "access denied" (6). The log file the daemon creates for it is
    private (finding 8): it names the bucket and, on a running mount, keys."""
    emulator.faults.add(FaultRule("flip", op="ListObjectsV2", after=0, times=None))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    log_file = tmp_path / "new.log"
    old_umask = os.umask(0o022)
    try:
        result = _run(
            [
                BUCKET,
                str(mnt),
                "--endpoint",
                emulator.endpoint,
                "--cache-dir",
                str(tmp_path / "cache"),
                "--log-file",
                str(log_file),
            ],
            CREDS,
        )
    finally:
        os.umask(old_umask)
    assert result.returncode == ExitCode.BAD_REPLY, (result.returncode, result.stderr)
    (line,) = result.stderr.strip().splitlines()
    assert "the endpoint sent a reply that is not a valid OSS listing" in line
    assert f"bucket {BUCKET!r} at {emulator.endpoint}" in line
    assert "access denied" not in line
    assert not os.path.ismount(mnt)
    assert (log_file.stat().st_mode & 0o777) == 0o600
    assert "not a valid OSS listing" in log_file.read_text()


def test_a_second_mount_on_the_same_cache_dir_is_refused(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    first = make_mount().start()
    other = tmp_path / "other"
    other.mkdir()
    result = _run(
        [BUCKET, str(other), "--endpoint", emulator.endpoint, "--cache-dir", str(first.cache)],
        CREDS,
    )
    assert result.returncode == ExitCode.CACHE, result.stderr
    assert "in use" in result.stderr
    assert not os.path.ismount(other)


def test_help_and_python_m_are_the_same_program() -> None:
    a = _run(["--help"])
    b = subprocess.run(
        [str(Path(sys.executable).parent / "ossmount"), "--help"], capture_output=True, text=True
    )
    assert a.returncode == b.returncode == 0
    assert a.stdout == b.stdout
    assert "exit codes:" in a.stdout
    assert "use_cache" in a.stdout


def test_sigusr1_dumps_every_thread_stack_into_the_log(make_mount: MountFactory) -> None:
    mount = make_mount().start()
    assert mount.proc is not None
    mount.proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while "Current thread" not in mount.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = mount.log()
    assert "Current thread" in log
    assert "trio" in log  # the event loop's frames
    assert os.path.ismount(mount.path)  # and the mount goes on
