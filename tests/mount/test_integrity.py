"""A cache that never lies (issue 14): bytes damaged at rest are caught, fetched again and
never served; the checks, crashes and faults as SEMANTICS.md states them, through a real mount."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

from ossmount.cache.checkpoint import load
from ossmount.cache.ranges import PartLayout
from ossmount.emulator import Emulator
from ossmount.emulator.faults import FaultRule
from tests.mount.conftest import MountFactory
from tests.mount.harness import BUCKET, Mount

MiB = 1024 * 1024
ARGS = ("--part-size-mb", "1")


def _data_file(cache: Path) -> Path:
    (found,) = list(cache.rglob("*.data"))
    return found


def _gets(emu: Emulator) -> list[tuple[int, int]]:
    return sorted(r.range for r in emu.requests if r.op == "GetObject" and r.range is not None)


def _spans(size: int, offset: int, length: int) -> list[tuple[int, int]]:
    """(first, last) byte of each part that [offset, +length) touches (1 MiB parts)."""
    layout = PartLayout(size, MiB)
    spans = (layout.span(i) for i in layout.parts_for(offset, length))
    return [(start, start + n - 1) for start, n in spans]


def _damage(path: Path, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def test_a_verified_file_damaged_at_rest_is_fetched_again_after_remount(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    data = os.urandom(6 * MiB)
    emulator.put_object(BUCKET, "v.bin", data)
    mount = make_mount(args=ARGS).start()
    assert (mount.path / "v.bin").read_bytes() == data
    assert os.getxattr(mount.path / "v.bin", "user.ossmount.state") == b"verified"
    mount.stop()

    path = _data_file(mount.cache)
    flipped = data[MiB + MiB // 2] ^ 0x40
    _damage(path, MiB + MiB // 2, bytes([flipped]))  # one bit in part 1
    _damage(path, 3 * MiB, bytes(MiB))  # part 3 zeroed
    mount = make_mount(args=ARGS).start()
    emulator.requests.clear()
    out = tmp_path / "out"
    with out.open("wb") as sink:
        subprocess.run(["cat", str(mount.path / "v.bin")], stdout=sink, check=True)
    assert out.read_bytes() == data
    damaged = _spans(len(data), MiB + MiB // 2, 1) + _spans(len(data), 3 * MiB, MiB)
    assert len(damaged) == 3
    assert _gets(emulator) == damaged  # exactly the damaged parts, once each
    log = mount.log()
    assert log.count("is damaged at rest") == 3
    assert f"oss://{BUCKET}/v.bin: cached part " in log
    assert os.getxattr(mount.path / "v.bin", "user.ossmount.state") == b"verified"
    emulator.requests.clear()
    assert (mount.path / "v.bin").read_bytes() == data  # and the damage stays repaired
    assert _gets(emulator) == []
    mount.stop()


def test_a_peeked_part_damaged_at_rest_never_becomes_verified(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    data = os.urandom(4 * MiB)
    emulator.put_object(BUCKET, "p.bin", data)
    mount = make_mount(args=ARGS).start()
    with (mount.path / "p.bin").open("rb") as f:
        assert f.read(4096) == data[:4096]  # a peek: the head part only
    mount.stop()
    path = _data_file(mount.cache)
    _damage(path, 100, bytes([data[100] ^ 0x01]))
    mount = make_mount(args=ARGS).start()
    emulator.requests.clear()
    assert (mount.path / "p.bin").read_bytes() == data
    assert _spans(len(data), 0, 1)[0] in _gets(emulator)  # the damaged head part, again
    log = mount.log()
    assert f"oss://{BUCKET}/p.bin: cached part 0 (bytes 0-" in log
    assert "is damaged at rest" in log
    assert os.getxattr(mount.path / "p.bin", "user.ossmount.state") == b"verified"
    mount.stop()


def test_one_reply_with_a_wrong_crc_header_is_retried_not_estale(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    """Finding 5: the ETag and If-Match show the same version, so a wrong CRC-64 header on
    one response is a bad reply: the part is fetched again and `cat` succeeds."""
    data = os.urandom(3 * MiB)
    emulator.put_object(BUCKET, "c.bin", data)
    mount = make_mount(args=ARGS).start()
    os.stat(mount.path / "c.bin")
    emulator.faults.add(FaultRule("wrong-crc", op="GetObject", times=1))
    emulator.requests.clear()
    out = tmp_path / "out"
    with out.open("wb") as sink:
        subprocess.run(["cat", str(mount.path / "c.bin")], stdout=sink, check=True)
    assert out.read_bytes() == data
    assert "fetching the part again" in mount.log()
    assert os.getxattr(mount.path / "c.bin", "user.ossmount.state") == b"verified"
    mount.stop()


def test_kill_9_mid_download_loses_at_most_the_parts_in_flight_plus_one(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    """Finding 3: the checkpoint lists every part fetched but those in flight (4 here) and
    at most one more. The copy is slowed by the emulator (16 MiB/s in all) so the kill lands
    mid-way; the test waits on the emulator's request log, not on a clock."""
    emulator.put_synthetic(BUCKET, "slow.bin", 64 * MiB, seed=7)
    mount = make_mount(args=(*ARGS, "--parallel-count", "4")).start()
    os.stat(mount.path / "slow.bin")
    emulator.shaping.set(total_bps=16 * MiB)
    emulator.requests.clear()

    def fetched() -> list[tuple[int, int]]:
        return [
            r.range
            for r in list(emulator.requests)
            if r.op == "GetObject" and r.completed and r.status == 206 and r.range is not None
        ]

    reader = subprocess.Popen(
        ["cat", str(mount.path / "slow.bin")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while len(fetched()) < 24:  # event: the request log grows as bodies are sent
            assert reader.poll() is None, "cat ended before the kill"
            time.sleep(0.01)
        mount.kill()
    finally:
        reader.wait(timeout=30)
        emulator.shaping.set(total_bps=0)
    done = fetched()
    (ckpt,) = list(mount.cache.rglob("*.ckpt"))
    cp = load(ckpt, bucket=BUCKET, key="slow.bin")
    assert cp is not None
    layout = PartLayout(64 * MiB, MiB)
    listed = {layout.span(i)[0] for i in cp.part_crcs}
    lost = {start for start, _ in done} - listed
    assert len(done) >= 20  # mid-way: enough fetched for the bound to mean something
    assert len(lost) <= 4 + 1, (len(done), len(listed), sorted(lost))


def _copy_watching(mount: Mount, cache: Path, disk: Path, out: Path) -> tuple[int, int]:
    """cp the big object out of `mount`; (lowest free bytes on `disk`, highest bytes held by
    cache files under `cache`), sampled by a watcher thread meanwhile."""
    lowest_free, highest_used = [shutil.disk_usage(disk).free], [0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            lowest_free[0] = min(lowest_free[0], shutil.disk_usage(disk).free)
            used = sum(f.stat().st_blocks * 512 for f in cache.rglob("*.data"))
            highest_used[0] = max(highest_used[0], used)
            done.wait(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        subprocess.run(["cp", str(mount.path / "big.bin"), str(out)], check=True)
    finally:
        done.set()
        watcher.join()
    return lowest_free[0], highest_used[0]


def test_min_free_is_a_floor_and_the_cap_holds_while_one_object_streams(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    """Finding 6: --min-free-mb 32 on a 64 MiB cache filesystem, then --max-cache-size-mb 16
    on it: a 96 MiB copy streams through, and neither bound is passed by more than one part
    (2 MiB). Free space and cache bytes are sampled by a watcher thread while it runs."""
    emulator.put_synthetic(BUCKET, "big.bin", 96 * MiB, seed=11)
    expected = emulator.get_bytes(BUCKET, "big.bin")
    small = tmp_path / "small"
    small.mkdir()
    out = tmp_path / "out"
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(small)], check=True)
    try:
        cache = small / "floor"
        args = ("--cache-dir", str(cache), "--part-size-mb", "2", "--min-free-mb", "32")
        mount = make_mount(args=args).start()
        lowest_free, _ = _copy_watching(mount, cache, small, out)
        mount.stop()
        assert out.read_bytes() == expected
        out.unlink()
        assert lowest_free >= 32 * MiB - 2 * MiB, lowest_free / MiB

        cache = small / "cap"
        args = ("--cache-dir", str(cache), "--part-size-mb", "2", "--min-free-mb", "0")
        mount = make_mount(args=(*args, "--max-cache-size-mb", "16")).start()
        _, highest_used = _copy_watching(mount, cache, small, out)
        mount.stop()
        assert out.read_bytes() == expected
        assert highest_used <= 16 * MiB + 2 * MiB, highest_used / MiB
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)
