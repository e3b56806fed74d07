"""`ossmount cache status|verify|clear` and `ossmount warmup`, through the real CLI, on cache
dirs made by real mounts of the emulator (issue 14, "Cache commands people expect")."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ossmount.cache.ranges import PartLayout
from ossmount.cache.store import key_hash
from ossmount.emulator import Emulator
from ossmount.emulator.faults import FaultRule
from tests.mount.conftest import MountFactory
from tests.mount.harness import BUCKET, Mount

MiB = 1024 * 1024
SMALL_PARTS = ("--part-size-mb", "1")
FAILED, TOO_BIG, CACHE_IN_USE, NOT_A_MOUNT = 11, 12, 8, 7


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ossmount", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _status(mount: Mount) -> dict[str, Any]:
    result = _cli("cache", "status", "--cache-dir", str(mount.cache), "--json")
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def _data_file(mount: Mount, key: str) -> Path:
    h = key_hash(key)
    return mount.cache / BUCKET / h[:2] / f"{h}.data"


def _flip(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x40]))


def _gets(emu: Emulator, key: str) -> list[tuple[int, int]]:
    return [
        (r.range[0], r.range[1])
        for r in emu.requests
        if r.op == "GetObject"
        and r.key == key
        and r.completed
        and r.status in (200, 206)
        and r.range is not None
    ]


def _xattr(path: Path) -> str:
    return os.getxattr(path, "user.ossmount.state").decode()


def _peek(path: Path) -> None:
    subprocess.run(["head", "-c", "1", str(path)], capture_output=True, check=True)


def test_status_counts_states_and_names_the_mount_holding_the_cache(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    emulator.put_object(BUCKET, "a.bin", os.urandom(2 * MiB))
    emulator.put_object(BUCKET, "nocrc.bin", os.urandom(MiB), crc64=False)
    emulator.put_synthetic(BUCKET, "big.bin", 8 * MiB, seed=1)
    args = (*SMALL_PARTS, "--max-cache-size-mb", "100", "--min-free-mb", "3")
    mount = make_mount(args=args).start()
    (mount.path / "a.bin").read_bytes()
    (mount.path / "nocrc.bin").read_bytes()
    _peek(mount.path / "big.bin")

    live = _status(mount)
    assert live["in_use"] is True
    assert mount.proc is not None
    assert live["holder_pid"] == mount.proc.pid
    assert str(mount.path) in live["holder"]
    refused = _cli("cache", "status", "--cache-dir", str(mount.cache))
    assert f"in use by the mount of {BUCKET} at {mount.path}" in refused.stdout
    mount.stop()

    report = _status(mount)
    assert report["in_use"] is False
    assert report["entries"] == 3
    assert report["states"] == {
        "verified": 1,
        "unverifiable": 1,
        "partial": 1,
        "damaged": 0,
        "dirty": 0,
    }
    head = PartLayout(8 * MiB, MiB).span(0)[1]
    assert report["cached_bytes"] == 3 * MiB + head
    assert report["cap_bytes"] == 100 * MiB
    assert report["floor_bytes"] == 3 * MiB
    assert report["free_bytes"] > 0
    assert report["oldest"]["object"].startswith(f"oss://{BUCKET}/")
    text = _cli("cache", "status", "--cache-dir", str(mount.cache)).stdout
    assert "1 verified, 1 unverifiable, 1 partial" in text
    assert "100.0 MiB (--max-cache-size-mb)" in text
    assert "not in use" in text


def test_status_of_a_bucket_never_mounted_says_nothing_is_cached() -> None:
    """A fresh machine: the default cache dir does not exist yet, and status must not make it."""
    bucket = f"never-mounted-{os.getpid()}"
    result = _cli("cache", "status", bucket, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["exists"] is False
    assert report["entries"] == 0
    assert not Path(report["cache_dir"]).exists()
    assert bucket in report["cache_dir"]


def test_verify_drops_a_flipped_byte_in_a_verified_and_in_a_partial_entry(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    data = os.urandom(3 * MiB + 5)
    emulator.put_object(BUCKET, "whole.bin", data)
    emulator.put_synthetic(BUCKET, "peek.bin", 8 * MiB, seed=2)
    emulator.put_object(BUCKET, "good.bin", os.urandom(MiB))
    mount = make_mount(args=SMALL_PARTS).start()
    assert (mount.path / "whole.bin").read_bytes() == data
    assert (mount.path / "good.bin").read_bytes()
    _peek(mount.path / "peek.bin")
    assert _xattr(mount.path / "whole.bin") == "verified"
    assert _xattr(mount.path / "peek.bin") == "partial"
    mount.stop()

    layout = PartLayout(len(data), MiB)
    bad_part = layout.index_of(2 * MiB)
    _flip(_data_file(mount, "whole.bin"), 2 * MiB)
    _flip(_data_file(mount, "peek.bin"), 100)  # inside its only cached part, the head

    result = _cli("cache", "verify", "--cache-dir", str(mount.cache))
    assert result.returncode == FAILED, result.stdout + result.stderr
    assert f"oss://{BUCKET}/whole.bin: part {bad_part} " in result.stdout
    assert "dropped 1 of 4 parts" in result.stdout
    assert f"oss://{BUCKET}/peek.bin: part 0 " in result.stdout
    assert "good.bin" not in result.stdout
    again = _cli("cache", "verify", "--cache-dir", str(mount.cache))
    assert again.returncode == 0, again.stdout  # what failed is gone, the rest is good
    states = _status(mount)["states"]
    assert (states["verified"], states["partial"]) == (1, 1)  # good.bin; whole.bin lost a part

    emulator.requests.clear()
    mount = make_mount(args=SMALL_PARTS).start()
    assert (mount.path / "whole.bin").read_bytes() == data
    start, length = layout.span(bad_part)
    assert _gets(emulator, "whole.bin") == [(start, start + length - 1)]  # only the bad part
    _peek(mount.path / "peek.bin")
    assert _gets(emulator, "peek.bin") == [(0, PartLayout(8 * MiB, MiB).span(0)[1] - 1)]
    assert (mount.path / "peek.bin").read_bytes() == emulator.get_bytes(BUCKET, "peek.bin")
    assert _xattr(mount.path / "whole.bin") == "verified"


def test_clear_and_verify_refuse_while_mounted_then_clear_empties_the_cache(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    emulator.put_object(BUCKET, "a.bin", os.urandom(MiB))
    mount = make_mount().start()
    (mount.path / "a.bin").read_bytes()
    assert mount.proc is not None
    pid = mount.proc.pid
    for action in ("clear", "verify"):
        result = _cli("cache", action, "--cache-dir", str(mount.cache))
        assert result.returncode == CACHE_IN_USE, result.stderr
        assert f"process {pid}" in result.stderr
        assert str(mount.path) in result.stderr
    assert _status(mount)["entries"] == 1  # nothing was touched
    mount.stop()

    result = _cli("cache", "clear", "--cache-dir", str(mount.cache))
    assert result.returncode == 0, result.stderr
    assert "cleared 1 entries" in result.stdout
    assert _status(mount)["entries"] == 0
    emulator.requests.clear()
    mount = make_mount().start()  # the cleared dir is still a good cache dir
    (mount.path / "a.bin").read_bytes()
    assert len(_gets(emulator, "a.bin")) == PartLayout(MiB, 8 * MiB).count  # all fetched again


def _tree(emulator: Emulator, count: int, size: int) -> list[str]:
    keys = [f"tree/{i:02d}.bin" if i % 2 else f"tree/sub/{i:02d}.bin" for i in range(count)]
    for i, key in enumerate(keys):
        emulator.put_synthetic(BUCKET, key, size, seed=100 + i)
    return keys


def test_warmup_caches_a_tree_and_reports_each_state(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    keys = _tree(emulator, 5, 2 * MiB)
    emulator.put_object(BUCKET, "tree/nocrc.bin", os.urandom(MiB), crc64=False)
    emulator.put_object(BUCKET, "tree/sub/empty", b"")  # verified: the CRC-64 of no bytes is 0
    emulator.put_object(BUCKET, "outside.bin", b"x")
    mount = make_mount(args=SMALL_PARTS).start()
    result = _cli("warmup", str(mount.path / "tree"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 verified, 1 unverifiable, 0 failed" in result.stdout
    assert "\r" not in result.stdout  # not a terminal: plain lines, no redrawn bar
    assert "warmup" in result.stdout.splitlines()[0]
    for key in keys:
        assert _xattr(mount.path / key) == "verified"
    assert not _gets(emulator, "outside.bin")

    emulator.requests.clear()
    again = _cli("warmup", str(mount.path / "tree"))
    assert again.returncode == 0
    assert "0 read now" in again.stdout
    assert "7 already cached" in again.stdout
    assert not [r for r in emulator.requests if r.op == "GetObject"]


def test_warmup_resumes_after_being_killed_fetching_only_what_was_missing(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    size = 2 * MiB
    keys = sorted(_tree(emulator, 6, size), key=lambda k: (k.count("/"), k))
    mount = make_mount(args=SMALL_PARTS).start()
    emulator.shaping.set(total_bps=3 * MiB)  # ~4 s for the tree: time to kill it mid-way
    first = subprocess.Popen(
        [sys.executable, "-m", "ossmount", "warmup", "--jobs", "1", str(mount.path / "tree")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while len({k for k in keys if _gets(emulator, k)}) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    emulator.shaping.set(total_bps=0)
    states = {k: _xattr(mount.path / k) for k in keys}
    done_before = {k for k, s in states.items() if s == "verified"}
    assert 1 <= len(done_before) < len(keys), states  # killed mid-way, really
    fetched_before = {k: set(_gets(emulator, k)) for k in keys}

    emulator.requests.clear()
    result = _cli("warmup", "--jobs", "1", str(mount.path / "tree"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 verified, 0 unverifiable, 0 failed" in result.stdout
    # Parts in flight at the kill go on in the mount, so the file being read then may have
    # become verified since `states` was taken: at least the files verified then are skipped.
    match = re.search(r"(\d+) read now .*, (\d+) already cached", result.stdout)
    assert match is not None, result.stdout
    read_now, skipped = int(match[1]), int(match[2])
    assert skipped >= len(done_before)
    assert read_now >= 1
    layout = PartLayout(size, MiB)
    all_parts = {(s, s + n - 1) for s, n in (layout.span(i) for i in range(layout.count))}
    for key in keys:
        again = _gets(emulator, key)
        if key in done_before:
            assert again == [], key
        else:
            assert not set(again) & fetched_before[key], key  # no part fetched twice
            assert set(again) | fetched_before[key] >= all_parts, key
        assert _xattr(mount.path / key) == "verified"


def test_warmup_refuses_a_tree_bigger_than_the_cache_cap_before_fetching(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    _tree(emulator, 3, MiB)
    mount = make_mount(args=("--max-cache-size-mb", "2")).start()
    emulator.requests.clear()
    result = _cli("warmup", str(mount.path / "tree"))
    assert result.returncode == TOO_BIG, result.stderr
    assert "3.0 MiB" in result.stderr
    assert "cache cap" in result.stderr
    assert "2.0 MiB" in result.stderr
    assert not [r for r in emulator.requests if r.op == "GetObject"]


def test_warmup_counts_a_file_that_cannot_be_read_as_failed(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    _tree(emulator, 2, MiB)
    emulator.put_object(BUCKET, "tree/rotten.bin", os.urandom(MiB))
    emulator.faults.add(FaultRule(action="flip", op="GetObject", key="tree/rotten.bin", times=None))
    mount = make_mount(args=("--max-attempts", "1")).start()
    result = _cli("warmup", str(mount.path / "tree"))
    assert result.returncode == FAILED, result.stdout + result.stderr
    assert "2 verified, 0 unverifiable, 1 failed" in result.stdout
    assert f"failed: {mount.path / 'tree' / 'rotten.bin'}: Input/output error" in result.stderr


def test_warmup_outside_a_mount_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    result = _cli("warmup", str(tmp_path))
    assert result.returncode == NOT_A_MOUNT
    assert f"{tmp_path} is not on an ossmount mount" in result.stderr


def _reread(path: Path) -> bytes:
    """The file's bytes through the mount with the kernel's pages of it dropped first, so the
    read reaches the daemon (keep_cache would serve it from the page cache)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return path.read_bytes()
    finally:
        os.close(fd)


def test_clear_through_the_mount_drops_idle_entries_and_keeps_an_open_file(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    blobs = {f"f{i}.bin": os.urandom(MiB + i) for i in range(3)}
    for key, data in blobs.items():
        emulator.put_object(BUCKET, key, data)
    mount = make_mount().start()
    for key in blobs:
        assert (mount.path / key).read_bytes() == blobs[key]
    sock = mount.cache / "control.sock"
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    with (mount.path / "f0.bin").open("rb") as held:
        assert held.read(10) == blobs["f0.bin"][:10]
        mount.settle(in_use=1)
        refused = _cli("cache", "clear", "--cache-dir", str(mount.cache))
        assert refused.returncode == CACHE_IN_USE
        assert "--through-mount" in refused.stderr

        result = _cli("cache", "clear", "--through-mount", "--cache-dir", str(mount.cache))
        assert result.returncode == 0, result.stderr
        assert "cleared 2 entries" in result.stdout
        assert "kept 1 in use" in result.stdout
        assert _data_file(mount, "f0.bin").exists()
        assert not _data_file(mount, "f1.bin").exists()
        assert not _data_file(mount, "f2.bin").exists()
        assert _status(mount)["entries"] == 1

        emulator.requests.clear()
        for key in ("f1.bin", "f2.bin"):
            assert _reread(mount.path / key) == blobs[key]
            assert _gets(emulator, key), f"{key} was not fetched again"
        assert held.read() == blobs["f0.bin"][10:]
    assert not _gets(emulator, "f0.bin")  # the open one stayed cached
    mount.stop()
    assert not sock.exists()  # removed at unmount


def test_the_control_socket_survives_hostile_clients_and_a_stale_one_is_replaced(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    data = os.urandom(MiB)
    emulator.put_object(BUCKET, "a.bin", data)
    mount = make_mount().start()
    assert (mount.path / "a.bin").read_bytes() == data
    mount.settle()  # its checkpoint is on disk
    mount.kill()  # kill -9: its socket file stays behind, nobody listening
    sock = mount.cache / "control.sock"
    assert sock.exists()

    # No mount answers: --through-mount clears the dir directly.
    result = _cli("cache", "clear", "--through-mount", "--cache-dir", str(mount.cache))
    assert result.returncode == 0, result.stderr
    assert "no mount answers" in result.stdout
    assert "cleared 1 entries" in result.stdout

    mount = make_mount().start()  # replaces the stale socket
    assert (mount.path / "a.bin").read_bytes() == data
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.connect(str(sock))  # says nothing: must not hold anything up
    try:
        for hostile in (b"\x00\xff garbage\n", b"clear" * 100_000, b"rm -rf /\n"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.settimeout(20)
                client.connect(str(sock))
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    client.sendall(hostile)
                reply = client.recv(4096)
                assert json.loads(reply)["ok"] is False
        assert _reread(mount.path / "a.bin") == data  # the mount serves on
        mount.settle()
        assert _data_file(mount, "a.bin").exists()  # no hostile request cleared anything
        result = _cli("cache", "clear", "--through-mount", "--cache-dir", str(mount.cache))
        assert result.returncode == 0, result.stderr
        assert "cleared 1 entries" in result.stdout
        silent.settimeout(30)
        assert "no whole request line" in json.loads(silent.recv(4096))["error"]
    finally:
        silent.close()
    mount.stop()
