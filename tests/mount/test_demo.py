"""The README's `./dev.sh demo` runs `ossmount demo`: the whole product through real mounts
(read, verify, write under write-back, kill -9, recover, read back from scratch). It must
succeed and leave nothing behind: no mount, no process, no temporary directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path


def test_the_demo_succeeds_and_leaves_nothing_behind(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # its work directory goes here
    run = subprocess.run([sys.executable, "-m", "ossmount", "demo"], env=env,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    for shown in (
        "cache state: verified",
        "copy is byte-identical to the object",
        "the daemon was killed (kill -9) before any of its uploads ran",
        "the remount uploaded all 16, each verified, before it reported ready",
        "all 16 files are byte-identical to what cp wrote before the kill, and verified",
        "done: emulator stopped, mounts gone, temporary files removed",
    ):
        assert shown in out, out
    assert list(tmp_path.iterdir()) == [], "its temporary directory is removed"
    assert str(tmp_path) not in Path("/proc/mounts").read_text(), "no mount is left"
    pid = re.search(r"\(pid (\d+)\)", out)
    assert pid is not None
    assert not Path(f"/proc/{pid.group(1)}").exists(), "the emulator is stopped"
    assert (
        "ossmount-demo"
        not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    ), "no daemon is left"
