"""`ossmount demo`: the whole product in about a minute, with no cloud account.

Starts the built-in emulator on 127.0.0.1 with a demo bucket and mounts it with the real CLI
(as a daemon, as a user would).

Reading: lists the bucket, copies a large object out with `cp`, shows that the copy is
byte-identical and that the cached object is CRC-64 *verified*.

Writing: mounts it again with `-o rw,writeback` (uploads held back a minute after each
close), copies a directory of files in with `cp -r`, and `kill -9`s the daemon as soon as
`cp` returns, before any upload ran. The next `-o rw` mount uploads what the killed one had
acknowledged before it reports ready; a fresh mount with an empty cache then reads every
file back from the server, byte-identical and verified.

Everything it started is stopped, and its temporary directory removed.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ossmount.emulator.cli import DEMO_BIG_KEY, DEMO_SEED
from ossmount.emulator.store import SyntheticBody

__all__ = ["main"]

BUCKET = "demo-bucket"
MiB = 1024 * 1024
WRITTEN = "uploads"  # the directory the write part copies in
FILES, FILE_MIB = 16, 4  # each uploaded by one PUT: its CRC-64 comes with it


class DemoFailed(Exception):
    """A step did not show what it should; the message says which."""


def _say(text: str) -> None:
    print(f"\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"==> {text}", flush=True)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(8 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def _start_emulator(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """The emulator in its own process (as a user would run it), so it has its own core."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ossmount",
            "emulator",
            "--port",
            "0",
            "--bucket",
            BUCKET,
            "--populate",
            "demo",
        ],
        env=env,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    match = re.search(r"http://127\.0\.0\.1:\d+", line)
    if match is None:
        proc.terminate()
        proc.wait()
        raise RuntimeError(f"the emulator did not start: {line!r}")
    return proc, match.group(0)


def _expected_sha256(size: int) -> str:
    """What the emulator's synthetic demo object holds, computed here without the network."""
    body = SyntheticBody(seed=DEMO_SEED, size=size)
    digest = hashlib.sha256()
    for offset in range(0, size, 16 * MiB):
        digest.update(body.read(offset, min(16 * MiB, size - offset)))
    return digest.hexdigest()


class _Demo:
    """One run: the work directory, the emulator's endpoint and the keys' environment."""

    def __init__(self, work: Path, endpoint: str, env: dict[str, str]) -> None:
        self.work, self.endpoint, self.env = work, endpoint, env
        self.mnt, self.log = work / "mnt", work / "log"

    def _mount_command(self, cache: Path, extra: str, *, foreground: bool = False) -> list[str]:
        """The `ossmount mount` command line, shown as it runs."""
        options = f"url={self.endpoint},use_cache={cache}" + (f",{extra}" if extra else "")
        command = [sys.executable, "-m", "ossmount", "mount", BUCKET, str(self.mnt),
                   "-o", options, "--log-file", str(self.log)]  # fmt: skip
        _say("mount: " + " ".join(command[3:]) + (" (in the foreground)" if foreground else ""))
        return [*command, "-f"] if foreground else command

    @contextmanager
    def mounted(self, cache: Path, extra: str = "") -> Iterator[Path]:
        """Mounted as a daemon (the CLI returns once the mount is ready), unmounted after."""
        if subprocess.run(self._mount_command(cache, extra), env=self.env).returncode != 0:
            raise DemoFailed(f"the mount failed (see above and {self.log})")
        try:
            yield self.mnt
        finally:
            _say("unmount")
            subprocess.run(["fusermount3", "-u", str(self.mnt)], check=False)
            self._wait_unmounted()

    def killed_after(self, cache: Path, extra: str, step: Callable[[Path], None]) -> None:
        """Mounted in the foreground (this process holds the daemon's PID): `step`, then
        `kill -9` of the daemon, and the dead mount it leaves detached."""
        daemon = subprocess.Popen(self._mount_command(cache, extra, foreground=True), env=self.env)
        try:
            for _ in range(600):
                if os.path.ismount(self.mnt) or daemon.poll() is not None:
                    break
                time.sleep(0.05)
            if not os.path.ismount(self.mnt):
                raise DemoFailed(f"the mount did not come up (see {self.log})")
            step(self.mnt)
        finally:
            daemon.kill()
            daemon.wait()
            # The kernel keeps a dead mount ("Transport endpoint is not connected"): detach.
            subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], check=False,
                           capture_output=True)  # fmt: skip
            self._wait_unmounted()

    def _wait_unmounted(self) -> None:
        for _ in range(200):
            if not os.path.ismount(self.mnt):
                return
            time.sleep(0.05)

    def read(self, target: Path) -> None:
        """ls -lR, then `cp` of the big object out, byte-identical and verified."""
        with self.mounted(self.work / "cache") as mnt:
            _say("ls -lR (listings only, no object is downloaded)")
            subprocess.run(["ls", "-lR", str(mnt)], check=True)
            size = (mnt / DEMO_BIG_KEY).stat().st_size
            _say(f"cp {DEMO_BIG_KEY} ({size // MiB} MiB) out of the mount")
            start = time.monotonic()
            subprocess.run(["cp", str(mnt / DEMO_BIG_KEY), str(target)], check=True)
            elapsed = time.monotonic() - start
            print(f"    {size / elapsed / 1e6:,.0f} MB/s ({elapsed:.2f} s)")
            crc = _verified(mnt / DEMO_BIG_KEY)
            _say(f"cache state: verified (CRC-64 {crc} matches the server's)")
            if _sha256_file(target) != _expected_sha256(size):
                raise DemoFailed("COPY DIFFERS from the object")
            _say("copy is byte-identical to the object")

    def write(self, source: Path) -> None:
        """`cp -r` of files cut from `source` under write-back, kill -9, remount, read back."""
        tree = self.work / "out" / WRITTEN
        tree.mkdir()
        with source.open("rb") as f:
            for n in range(FILES):
                (tree / f"part-{n:02}.bin").write_bytes(f.read(FILE_MIB * MiB))
        cache = self.work / "cache"

        def copy_in(mnt: Path) -> None:
            start = time.monotonic()
            subprocess.run(["cp", "-r", str(tree), str(mnt)], check=True)
            print(f"    cp -r returned after {time.monotonic() - start:.2f} s: the files are "
                  "durable on local disk, none uploaded yet")  # fmt: skip

        _say(f"write: cp -r {FILES} files of {FILE_MIB} MiB into {WRITTEN}/, then kill -9")
        self.killed_after(cache, "rw,writeback,writeback_delay=60", copy_in)
        _say("the daemon was killed (kill -9) before any of its uploads ran")
        with self.mounted(cache, "rw"):
            line = f"committed {FILES} file(s) staged before the restart"  # mount.py's INFO
            if line not in self.log.read_text(errors="replace"):
                raise DemoFailed(f"the remount did not upload the {FILES} files (see {self.log})")
            _say(f"the remount uploaded all {FILES}, each verified, before it reported ready")
        with self.mounted(self.work / "fresh-cache") as mnt:
            _say(f"a fresh mount (empty cache) reads {WRITTEN}/ back from the server")
            for local in sorted(tree.iterdir()):
                remote = mnt / WRITTEN / local.name
                if remote.read_bytes() != local.read_bytes():
                    raise DemoFailed(f"{remote} DIFFERS from what cp wrote")
                _verified(remote)
            _say(f"all {FILES} files are byte-identical to what cp wrote before the kill, "
                 "and verified")  # fmt: skip


def _verified(path: Path) -> str:
    """The CRC-64 of `path`'s cache entry, which must be verified."""
    state = os.getxattr(path, "user.ossmount.state").decode()
    if state != "verified":
        raise DemoFailed(f"{path}: cache state {state}, not verified")
    return os.getxattr(path, "user.ossmount.crc64").decode()


def main(argv: list[str]) -> int:
    if argv:
        print("usage: ossmount demo", file=sys.stderr)
        return 2
    if shutil.which("fusermount3") is None or not os.path.exists("/dev/fuse"):
        print(
            "ossmount demo: FUSE is not available (install fuse3; /dev/fuse must exist)",
            file=sys.stderr,
        )
        return 9
    key_id, secret = "demo-key", secrets.token_hex(16)
    work = Path(tempfile.mkdtemp(prefix="ossmount-demo-"))
    (work / "mnt").mkdir()
    (work / "out").mkdir()
    env = {**os.environ, "OSS_ACCESS_KEY_ID": key_id, "OSS_ACCESS_KEY_SECRET": secret}
    emulator, endpoint = _start_emulator(env)
    try:
        _say(f"emulator at {endpoint} (pid {emulator.pid}), bucket '{BUCKET}'")
        demo = _Demo(work, endpoint, env)
        copy = work / "out" / "copy.bin"
        demo.read(copy)
        demo.write(copy)
    except (DemoFailed, subprocess.CalledProcessError) as exc:
        _say(f"FAILED: {exc}; its files are kept in {work}")
        return 1
    finally:
        emulator.send_signal(signal.SIGTERM)
        emulator.wait(timeout=10)
        if emulator.stdout is not None:
            emulator.stdout.close()
    shutil.rmtree(work, ignore_errors=True)
    _say("done: emulator stopped, mounts gone, temporary files removed")
    return 0
