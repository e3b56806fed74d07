"""Faults while `cp` writes into a `--rw` mount: every transient fault OSS can throw at an upload
is retried, and the object on the server is whole and byte-identical (read back with the SDK,
not through the mount). The retry budget running out is test_write.py's
`test_a_commit_that_keeps_failing_makes_cp_fail_and_leaves_no_object`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ossmount.emulator import Emulator
from ossmount.emulator.faults import FaultRule
from tests.mount.conftest import MountFactory
from tests.mount.harness import MiB
from tests.mount.test_write import RW, server_bytes

# (operation, rule): each fires once, on the second part of a multipart upload (parts are 1 MiB
# here, so mid-file) or on the first PutObject / CompleteMultipartUpload.
FAULTS: dict[str, tuple[str, dict[str, Any]]] = {
    "reset mid-part": ("UploadPart", {"action": "reset", "after": 300_000}),
    "503 on a part": (
        "UploadPart",
        {"action": "error", "status": 503, "code": "ServiceUnavailable"},
    ),
    "wrong CRC on a part": ("UploadPart", {"action": "wrong-crc"}),
    "no CRC on a part": ("UploadPart", {"action": "missing-crc"}),
    "truncated part body": ("UploadPart", {"action": "truncate", "after": 100_000}),
    "wrong CRC on a PutObject": ("PutObject", {"action": "wrong-crc"}),
    "reset mid-PutObject": ("PutObject", {"action": "reset", "after": 10_000}),
    "500 on Complete": (
        "CompleteMultipartUpload",
        {"action": "error", "status": 500, "code": "InternalError"},
    ),
}


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_a_transient_upload_fault_is_retried_and_the_object_is_whole(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path, name: str
) -> None:
    op, action = FAULTS[name]
    size = 100_000 if op == "PutObject" else 5 * MiB + 12345
    data = os.urandom(size)
    (tmp_path / "src").write_bytes(data)
    nth = 1 if op in ("PutObject", "CompleteMultipartUpload") else 2
    rule = FaultRule(op=op, key="f.bin", nth=nth, times=1, **action)
    emulator.faults.add(rule)
    mount = make_mount(args=RW).start()
    subprocess.run(["cp", str(tmp_path / "src"), str(mount.path / "f.bin")], check=True)
    assert rule.fired == 1, f"the fault {name!r} never fired"
    assert server_bytes(emulator, "f.bin") == data
    sent = [r for r in emulator.requests if r.op == op and r.key == "f.bin"]
    assert len(sent) >= 2, "the failed request was sent again"
    assert (mount.path / "f.bin").read_bytes() == data
