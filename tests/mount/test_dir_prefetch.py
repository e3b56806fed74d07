"""Directory read-ahead through a real mount: a walk of small files is fetched ahead of the
reader, each object once, bounded by --dir-prefetch, and nothing for a reader that jumps."""

from __future__ import annotations

import os
import random
import subprocess
import time
from pathlib import Path

import pytest

from ossmount.emulator import Emulator
from tests.mount.conftest import MountFactory
from tests.mount.harness import BUCKET

KiB = 1024


def _fetched(emu: Emulator) -> list[str]:
    """Keys of every completed GetObject, in log order."""
    return [
        r.key
        for r in emu.requests
        if r.op == "GetObject" and r.completed and r.status in (200, 206) and r.key
    ]


def _wait_for(emu: Emulator, keys: set[str], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not keys <= set(_fetched(emu)):
        assert time.monotonic() < deadline, f"never fetched: {sorted(keys - set(_fetched(emu)))}"
        time.sleep(0.02)


def _wait_state(path: Path, state: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while os.getxattr(path, "user.ossmount.state").decode() != state:
        assert time.monotonic() < deadline, f"{path} never became {state}"
        time.sleep(0.02)


def _put_dir(emu: Emulator, prefix: str, count: int) -> dict[str, bytes]:
    rnd = random.Random(prefix)
    objects = {f"{prefix}f{i:02d}": rnd.randbytes(rnd.randrange(1, 40 * KiB)) for i in range(count)}
    for key, data in objects.items():
        emu.put_object(BUCKET, key, data)
    return objects


def _cat(path: Path) -> bytes:
    return subprocess.run(["cat", str(path)], capture_output=True, check=True).stdout


def test_cp_r_of_small_files_gets_each_object_once_and_warms_ahead(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    """GNU cp -r walks each directory in inode order, a subdirectory in between."""
    objects = _put_dir(emulator, "tree/", 30) | _put_dir(emulator, "tree/sub/", 12)
    mount = make_mount().start()
    out = tmp_path / "out"
    subprocess.run(["cp", "-r", str(mount.path / "tree"), str(out)], check=True)
    for key, data in objects.items():
        assert (out / key.removeprefix("tree/")).read_bytes() == data, key
    fetched = _fetched(emulator)
    assert sorted(fetched) == sorted(objects), "each object fetched exactly once"
    log = mount.log()
    assert log.count("ahead of a directory walk") > 10, "the walk was not followed"
    assert " ERROR " not in log


@pytest.mark.parametrize("depth", [4, 0])
def test_a_walk_in_name_order_warms_at_most_depth_files(
    emulator: Emulator, make_mount: MountFactory, depth: int
) -> None:
    objects = _put_dir(emulator, "d/", 20)
    keys = sorted(objects)
    mount = make_mount(args=("--dir-prefetch", str(depth))).start()
    os.listdir(mount.path / "d")  # a walker lists the directory first
    for key in keys[:2]:
        assert _cat(mount.path / key) == objects[key]
    expected = set(keys[: 2 + depth])
    _wait_for(emulator, expected)
    mount.settle()  # whatever the reads started has run: anything beyond the limit too
    assert sorted(_fetched(emulator)) == sorted(expected)
    for key in keys[2 : 2 + depth]:
        _wait_state(mount.path / key, "verified")  # a judged warm download frees its slot
    assert _cat(mount.path / keys[2]) == objects[keys[2]]  # the next step tops the window up
    _wait_for(emulator, set(keys[: 3 + depth]))
    mount.settle()
    assert sorted(_fetched(emulator)) == sorted(keys[: 3 + depth]), "each object once"


def test_a_reader_that_jumps_around_warms_nothing(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    objects = _put_dir(emulator, "d/", 20)
    mount = make_mount().start()
    names = sorted(os.listdir(mount.path / "d"))
    by_inode = sorted(names, key=lambda n: os.stat(mount.path / "d" / n).st_ino)

    def follows(a: str, b: str) -> bool:
        return any(order.index(b) == order.index(a) + 1 for order in (names, by_inode))

    picks = ["f07"]
    for candidate in ("f02", "f15", "f11", "f04", "f18", "f09"):
        if not follows(picks[-1], candidate):
            picks.append(candidate)
    assert len(picks) >= 4
    for name in picks:
        assert _cat(mount.path / "d" / name) == objects[f"d/{name}"]
    mount.settle()
    assert sorted(_fetched(emulator)) == sorted(f"d/{n}" for n in picks)


def test_unmount_with_warm_downloads_in_flight_is_clean(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    """Warm downloads belong to no handle: an unmount must stop them without an error and
    leave their entries resumable, like read-ahead of an open file."""
    objects = _put_dir(emulator, "d/", 20)
    keys = sorted(objects)
    mount = make_mount().start()
    os.listdir(mount.path / "d")
    for key in keys[:2]:
        assert _cat(mount.path / key) == objects[key]
    # The first window (keys 2-9) must be in, or its downloads would hold the warm slots
    # through the latency below.
    _wait_for(emulator, set(keys[:10]))
    for key in keys[2:10]:
        _wait_state(mount.path / key, "verified")
    emulator.shaping.set(latency_s=5.0)  # the warm GETs now hang in the emulator
    try:
        later = set(keys[10:])

        def warming_later() -> bool:
            return any(r.key in later and r.op == "GetObject" for r in emulator.requests)

        for key in keys[2:10]:  # cached: no request; each step offers the next window
            _cat(mount.path / key)
            if warming_later():
                break
        deadline = time.monotonic() + 10
        while not warming_later():
            assert time.monotonic() < deadline, "the walk did not warm further"
            time.sleep(0.02)
        started = time.monotonic()
        mount.stop()  # requires exit status 0
        assert time.monotonic() - started < 4, "unmount waited for the warm GETs"
        log = mount.log()
        assert " ERROR " not in log
        assert "Traceback" not in log
    finally:
        emulator.shaping.set(latency_s=0.0)


def test_a_scanner_peeking_at_each_file_warms_nothing(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    """`file *`, a thumbnailer: whole objects fetched ahead of it would multiply its traffic."""
    rnd = random.Random(7)
    keys = [f"p/f{i:02d}" for i in range(8)]
    for key in keys:
        emulator.put_object(BUCKET, key, rnd.randbytes(2 * 1024 * KiB))
    mount = make_mount().start()
    os.listdir(mount.path / "p")
    for key in keys[:6]:
        out = subprocess.run(
            ["head", "-c", "100", str(mount.path / key)], capture_output=True, check=True
        )
        assert len(out.stdout) == 100
    mount.settle()  # any warm GET the reads started has run
    fetched = [
        (r.key, r.range)
        for r in emulator.requests
        if r.op == "GetObject" and r.completed and r.status in (200, 206)
    ]
    assert sorted(fetched) == [(key, (0, 256 * KiB - 1)) for key in keys[:6]]


def test_a_walk_outlasting_the_metadata_ttl_keeps_warming(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    """A cp -r of a big directory outlasts the TTL and lists the directory only once."""
    objects = _put_dir(emulator, "d/", 20)
    keys = sorted(objects)
    mount = make_mount(args=("--stat-cache-expire", "1")).start()
    os.listdir(mount.path / "d")
    for key in keys[:2]:
        assert _cat(mount.path / key) == objects[key]
    _wait_for(emulator, set(keys[:10]))
    time.sleep(1.5)  # the listing is now older than the TTL
    for key in keys[2:4]:
        assert _cat(mount.path / key) == objects[key]
    _wait_for(emulator, set(keys[:12]))
    assert sorted(_fetched(emulator)) == keys[:12], "each object once"
