"""A real mount whose key comes from `credential_process=` (the emulator checks signatures)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from ossmount.emulator import Emulator
from ossmount.errors import ExitCode
from tests.mount.conftest import MountFactory
from tests.mount.harness import AK, BUCKET, SK

# The OSS_* variables the harness sets would win over credential_process=: emptied.
NO_ENV_KEYS = {
    "OSS_ACCESS_KEY_ID": "",
    "OSS_ACCESS_KEY_SECRET": "",
    "ALIBABA_CLOUD_ACCESS_KEY_ID": "",
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "",
}
TOKEN = "sts-token-from-the-process-0123456789"


def _credential_process(tmp_path: Path, *, fail: bool = False) -> tuple[str, Path]:
    """A command printing the emulator's key as temporary credentials; counts its runs."""
    tmp_path = tmp_path / "bin"
    tmp_path.mkdir(exist_ok=True)
    counter = tmp_path / "runs"
    script = tmp_path / "get-credentials.py"
    script.write_text(
        "import json, pathlib, sys, time\n"
        f"p = pathlib.Path({str(counter)!r})\n"
        "p.write_text(str(int(p.read_text()) + 1 if p.exists() else 1))\n"
        + ("sys.exit('login expired')\n" if fail else "")
        + "print(json.dumps({'AccessKeyId': "
        f"{AK!r}, 'AccessKeySecret': {SK!r}, 'SecurityToken': {TOKEN!r}, "
        "'Expiration': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(time.time() + 3600))}))\n"
    )
    return shlex.join([sys.executable, str(script)]), counter


def _wait_for(predicate: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_read_through_a_mount_keyed_by_credential_process(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    data = os.urandom(300_000)
    emulator.put_object(BUCKET, "dir/secret-data.bin", data)
    command, runs = _credential_process(tmp_path)
    mount = make_mount(args=("-o", f"credential_process={command}"), env=NO_ENV_KEYS).start()

    assert (mount.path / "dir" / "secret-data.bin").read_bytes() == data
    assert runs.read_text() == "1"  # fetched once, cached for the hour it is valid
    log = mount.log()
    assert f"using OSS credentials from credential_process {sys.executable}" in log
    assert SK not in log
    assert TOKEN not in log

    # SIGHUP runs the command again (a refreshing source refreshes rather than re-resolving).
    assert mount.proc is not None
    mount.proc.send_signal(signal.SIGHUP)
    assert _wait_for(lambda: "credentials re-read from credential_process" in mount.log())
    assert runs.read_text() == "2"
    assert (mount.path / "dir" / "secret-data.bin").read_bytes() == data


def test_a_failing_credential_process_stops_the_mount_with_exit_code_3(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    command, runs = _credential_process(tmp_path, fail=True)
    mount = make_mount(args=("-o", f"credential_process={command}"), env=NO_ENV_KEYS)
    result = subprocess.run(
        mount.command(), env=mount.environment(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == ExitCode.CREDENTIALS, (result.stdout, result.stderr)
    assert runs.read_text() == "1"
    assert "exited with status 1: login expired" in mount.log()
    assert not os.path.ismount(mount.path)
