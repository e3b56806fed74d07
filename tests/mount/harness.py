"""Harness for real FUSE mounts through the real CLI, against the emulator over HTTP on 127.0.0.1.

The emulator runs in a thread of the test process (tests call blocking tools such as cp and
rsync, which would starve an emulator living on the test's own trio loop). The mount is the
`ossmount` program in a subprocess, in the foreground so the test knows its PID; teardown
unmounts with fusermount3 and requires the daemon to exit 0. Nothing is skipped when FUSE is
missing: the session fails with the reason.
"""

from __future__ import annotations

import errno
import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ossmount.cachecmd.through import ask_mount
from ossmount.emulator import Emulator

AK = "test-key-id"
SK = "test-secret-value-0123456789"
BUCKET = "bkt"
MiB = 1024 * 1024


class Mount:
    """One `ossmount` daemon in the foreground; `stop()` unmounts and checks a clean exit."""

    def __init__(
        self,
        emulator: Emulator,
        root: Path,
        *,
        source: str = BUCKET,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.emulator = emulator
        self.root = root
        self.path = root / "mnt"
        self.cache = root / "cache"
        for flag, value in itertools.pairwise(args):
            if flag == "--cache-dir":  # the test's own, given after ours, wins
                self.cache = Path(value)
        self.log_path = root / "ossmount.log"
        self.path.mkdir(exist_ok=True)
        self.source = source
        self.args = args
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "ossmount",
            self.source,
            str(self.path),
            "--endpoint",
            self.emulator.endpoint,
            "--cache-dir",
            str(self.root / "cache"),
            "--log-file",
            str(self.log_path),
            "--log-level",
            "DEBUG",
            "-f",
            *self.args,
        ]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"OSS_ACCESS_KEY_ID": AK, "OSS_ACCESS_KEY_SECRET": SK})
        if self.env is not None:
            env.update(self.env)
        return env

    def start(self) -> Mount:
        self.proc = subprocess.Popen(
            self.command(), env=self.environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode() if self.proc.stdout else ""
                raise AssertionError(
                    f"ossmount exited {self.proc.returncode}: {out}\nlog: {self.log()}"
                )
            if os.path.ismount(self.path):
                os.stat(self.path)
                return self
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"mount did not appear within 20 s; log: {self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text()
        except FileNotFoundError:
            return ""

    def status(self) -> dict[str, Any]:
        """The daemon's own figures, over its control socket."""
        reply = ask_mount(self.cache, "status", timeout=20)
        assert reply is not None, f"the mount does not answer on its control socket; {self.log()}"
        return reply

    def wait_idle(self) -> dict[str, Any]:
        """Once no download work is scheduled or running in the daemon (its `idle` request):
        what a test waits for instead of sleeping "long enough" for background work."""
        reply = ask_mount(self.cache, "idle", timeout=90)
        assert reply is not None, f"the mount does not answer on its control socket; {self.log()}"
        return reply

    def settle(self, in_use: int = 0, timeout: float = 20) -> dict[str, Any]:
        """Once the daemon holds `in_use` open cache entries (the kernel sends a close's
        RELEASE after close() returned) and is idle: the event a test waits for after closing
        files whose release matters (eviction, checkpoints)."""
        deadline = time.monotonic() + timeout
        while self.status()["in_use"] != in_use:
            assert time.monotonic() < deadline, f"still in use: {self.status()}"
            time.sleep(0.02)
        return self.wait_idle()

    def stop(self) -> None:
        """Unmount like a user would and require the daemon to exit 0."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            subprocess.run(["fusermount3", "-u", str(self.path)], check=False, capture_output=True)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            _lazy_unmount(self.path)
            raise AssertionError(
                f"ossmount did not exit after unmount; log: {self.log()}"
            ) from None
        finally:
            if proc.stdout:
                proc.stdout.close()
        _lazy_unmount(self.path)
        assert code == 0, f"ossmount exited {code} after unmount; log: {self.log()}"

    def kill(self) -> None:
        """kill -9: the crash case. The dead mount is detached lazily."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.stdout:
            proc.stdout.close()
        _lazy_unmount(self.path)


def _lazy_unmount(path: Path) -> None:
    """Detach the mount at `path`, alive or dead: os.path.ismount says False for the dead
    one a kill leaves (its stat fails with ENOTCONN), which then stayed mounted."""
    try:
        os.stat(path)
        mounted = os.path.ismount(path)
    except OSError as exc:
        mounted = exc.errno == errno.ENOTCONN  # a dead FUSE mount
    if mounted:
        subprocess.run(["fusermount3", "-u", "-z", str(path)], check=False, capture_output=True)


def fuse_problem() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed (apt-get install fuse3)"
    return None


def daemon_pids(mountpoint: Path) -> list[int]:
    """PIDs of ossmount daemons serving `mountpoint` (found by their command line)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"ossmount" in arg for arg in cmdline[:3]) and str(mountpoint).encode() in cmdline:
            pids.append(int(entry.name))
    return pids


def fsynced(path: Path) -> None:
    """fsync `path` (a file or a directory) through the mount: what its attributes owe is on
    OSS when this returns (fs/owedattrs.py: a chmod or utimens of a file the mount just wrote
    is sent a moment later, or at fsync)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
