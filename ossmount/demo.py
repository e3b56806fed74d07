"""`ossmount demo`: the whole product in one minute, with no cloud account.

Starts the built-in emulator on 127.0.0.1 with a demo bucket, mounts it with the real CLI (as a
daemon, as a user would), lists it, copies a large object out with `cp`, shows that the copy
is byte-identical and that the cached object is CRC-64 *verified*, then unmounts and stops
everything it started.
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
from pathlib import Path

from ossmount.emulator.cli import DEMO_BIG_KEY, DEMO_SEED
from ossmount.emulator.store import SyntheticBody

__all__ = ["main"]

BUCKET = "demo-bucket"
MiB = 1024 * 1024


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
    mnt, cache, out = work / "mnt", work / "cache", work / "out"
    mnt.mkdir()
    out.mkdir()
    env = {**os.environ, "OSS_ACCESS_KEY_ID": key_id, "OSS_ACCESS_KEY_SECRET": secret}
    emulator, endpoint = _start_emulator(env)
    try:
        _say(f"emulator at {endpoint} (pid {emulator.pid}), bucket '{BUCKET}'")
        command = [
            sys.executable,
            "-m",
            "ossmount",
            "mount",
            BUCKET,
            str(mnt),
            "-o",
            f"url={endpoint},use_cache={cache}",
            "--log-file",
            str(work / "log"),
        ]
        _say("mount: " + " ".join(command[3:]))
        result = subprocess.run(command, env=env)
        if result.returncode != 0:
            return result.returncode
        try:
            _say("ls -lR (listings only, no object is downloaded)")
            subprocess.run(["ls", "-lR", str(mnt)], check=True)
            target = out / "copy.bin"
            size = (mnt / DEMO_BIG_KEY).stat().st_size
            _say(f"cp {DEMO_BIG_KEY} ({size // MiB} MiB) out of the mount")
            start = time.monotonic()
            subprocess.run(["cp", str(mnt / DEMO_BIG_KEY), str(target)], check=True)
            elapsed = time.monotonic() - start
            print(f"    {size / elapsed / 1e6:,.0f} MB/s ({elapsed:.2f} s)")
            state = os.getxattr(mnt / DEMO_BIG_KEY, "user.ossmount.state").decode()
            crc = os.getxattr(mnt / DEMO_BIG_KEY, "user.ossmount.crc64").decode()
            _say(f"cache state: {state} (CRC-64 {crc} matches the server's)")
            same = _sha256_file(target) == _expected_sha256(size)
            _say("copy is byte-identical to the object" if same else "COPY DIFFERS")
            if not same or state != "verified":
                return 1
        finally:
            _say("unmount")
            subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
            for _ in range(200):
                if not os.path.ismount(mnt):
                    break
                time.sleep(0.05)
    finally:
        emulator.send_signal(signal.SIGTERM)
        emulator.wait(timeout=10)
        if emulator.stdout is not None:
            emulator.stdout.close()
    shutil.rmtree(work, ignore_errors=True)
    _say("done: emulator stopped, mount gone, temporary files removed")
    return 0
