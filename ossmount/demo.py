"""`ossmount demo`: the whole product in one minute, with no cloud account.

Starts the built-in emulator on 127.0.0.1 with a demo bucket, mounts it with the real CLI (as a
daemon, as a user would), lists it, copies a large object out with `cp`, shows that the copy
is byte-identical and that the cached object is CRC-64 *verified*, then unmounts and stops
everything it started.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ossmount.emulator import Emulator

__all__ = ["main"]

BUCKET = "demo-bucket"
BIG_KEY = "big/synthetic-1GiB.bin"
MiB = 1024 * 1024


def _say(text: str) -> None:
    print(f"\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"==> {text}", flush=True)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(8 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def main(argv: list[str]) -> int:
    if argv and not argv[0].isdigit():
        print("usage: ossmount demo [SIZE_MIB]", file=sys.stderr)
        return 2
    size_mib = int(argv[0]) if argv else 1024
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
    with Emulator(buckets=[BUCKET], access_key_id=key_id, access_key_secret=secret) as emu:
        emu.put_object(BUCKET, "README.txt", b"Hello from the ossmount demo bucket.\n")
        emu.put_object(BUCKET, "photos/2024/cat.jpg", os.urandom(300_000))
        emu.put_object(BUCKET, "photos/2024/dog.jpg", os.urandom(200_000))
        emu.put_object(BUCKET, "docs/with space.txt", b"names with spaces work\n")
        emu.put_synthetic(BUCKET, BIG_KEY, size_mib * MiB, seed=42)
        _say(f"emulator at {emu.endpoint}, bucket '{BUCKET}'")
        command = [
            sys.executable,
            "-m",
            "ossmount",
            BUCKET,
            str(mnt),
            "-o",
            f"url={emu.endpoint},use_cache={cache}",
            "--log-file",
            str(work / "log"),
        ]
        _say("mount: " + " ".join(command[2:]))
        result = subprocess.run(command, env=env)
        if result.returncode != 0:
            return result.returncode
        try:
            _say("ls -lR (listings only, no object is downloaded)")
            subprocess.run(["ls", "-lR", str(mnt)], check=True)
            target = out / "copy.bin"
            _say(f"cp {BIG_KEY} ({size_mib} MiB) out of the mount")
            start = time.monotonic()
            subprocess.run(["cp", str(mnt / BIG_KEY), str(target)], check=True)
            elapsed = time.monotonic() - start
            print(f"    {size_mib * MiB / elapsed / 1e6:,.0f} MB/s ({elapsed:.2f} s)")
            state = os.getxattr(mnt / BIG_KEY, "user.ossmount.state").decode()
            crc = os.getxattr(mnt / BIG_KEY, "user.ossmount.crc64").decode()
            _say(f"cache state: {state} (CRC-64 {crc} matches the server's)")
            expected = hashlib.sha256()
            for offset in range(0, size_mib * MiB, 16 * MiB):
                expected.update(emu.synthetic_bytes(BUCKET, BIG_KEY, offset, 16 * MiB))
            same = _sha256_file(target) == expected.hexdigest()
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
    shutil.rmtree(work, ignore_errors=True)
    _say("done: emulator stopped, mount gone, temporary files removed")
    return 0
