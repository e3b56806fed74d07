"""Claims of SEMANTICS.md that no other mount test already proves."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ossmount.emulator import Emulator
from ossmount.emulator.faults import FaultRule
from tests.mount.conftest import MountFactory
from tests.mount.harness import BUCKET

MiB = 1024 * 1024


def _ops(emu: Emulator, *ops: str) -> list[str]:
    return [r.op for r in emu.requests if r.op in ops]


def test_verified_object_is_served_from_the_cache_after_remount_without_requests(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    data = os.urandom(3 * MiB)
    emulator.put_object(BUCKET, "v.bin", data)
    mount = make_mount(args=("--part-size-mb", "1")).start()
    assert (mount.path / "v.bin").read_bytes() == data
    emulator.requests.clear()
    assert (mount.path / "v.bin").read_bytes() == data  # same mount: page cache / cache file
    assert _ops(emulator, "GetObject", "HeadObject") == []
    mount.stop()

    mount = make_mount(args=("--part-size-mb", "1")).start()
    emulator.requests.clear()
    assert (mount.path / "v.bin").read_bytes() == data
    assert _ops(emulator, "GetObject", "HeadObject") == []  # the listing is the freshness check
    assert os.getxattr(mount.path / "v.bin", "user.ossmount.state") == b"verified"


def test_a_changed_object_is_seen_after_the_metadata_ttl(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    emulator.put_object(BUCKET, "c.txt", b"first version")
    mount = make_mount(args=("--stat-cache-expire", "1")).start()
    assert (mount.path / "c.txt").read_bytes() == b"first version"
    emulator.put_object(BUCKET, "c.txt", b"second, longer version")
    time.sleep(1.5)
    assert (mount.path / "c.txt").read_bytes() == b"second, longer version"


def test_a_negative_lookup_is_cached_for_the_ttl(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    mount = make_mount(args=("--stat-cache-expire", "1")).start()
    assert not (mount.path / "late.txt").exists()
    emulator.put_object(BUCKET, "late.txt", b"here now")
    time.sleep(1.5)
    assert (mount.path / "late.txt").read_bytes() == b"here now"


def test_an_object_deleted_mid_read_fails_the_read_with_estale(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    key = "gone.bin"
    emulator.put_object(BUCKET, key, os.urandom(4 * MiB))
    # Part 3 stalls long enough for the test to delete the object under the reader.
    emulator.faults.add(
        FaultRule(action="stall", op="GetObject", key=key, skip=2, times=1, after=0, seconds=1.0)
    )
    one_get = ("--parallel-count", "1", "--max-parallel-count", "1")
    mount = make_mount(args=("--part-size-mb", "1", *one_get)).start()
    errors: list[BaseException] = []

    def read() -> None:
        try:
            (mount.path / key).read_bytes()
        except OSError as exc:
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    deadline = time.monotonic() + 10
    while len(_ops(emulator, "GetObject")) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    emulator.delete_object(BUCKET, key)
    reader.join(timeout=30)
    assert len(errors) == 1
    assert isinstance(errors[0], OSError)
    # ESTALE from the read; ENOENT when the kernel re-checked the (deleted) entry first.
    assert errors[0].errno in (errno.ESTALE, errno.ENOENT)


@pytest.mark.parametrize("name", ["a" * 256, ".", ".."])
def test_unrepresentable_names_are_skipped_not_fatal(
    emulator: Emulator, make_mount: MountFactory, name: str
) -> None:
    emulator.put_object(BUCKET, f"dir/{name}", b"hidden")
    emulator.put_object(BUCKET, "dir/ok.txt", b"shown")
    mount = make_mount().start()
    listing = subprocess.run(
        ["ls", "-1", str(mount.path / "dir")], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert listing == ["ok.txt"]
    assert (mount.path / "dir/ok.txt").read_bytes() == b"shown"


def test_an_archived_object_lists_but_reads_fail_with_eacces_naming_restore(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    emulator.put_object(BUCKET, "cold/a.bin", os.urandom(4096), storage_class="Archive")
    mount = make_mount().start()
    assert os.stat(mount.path / "cold/a.bin").st_size == 4096  # listing only: visible
    with pytest.raises(PermissionError):
        (mount.path / "cold/a.bin").read_bytes()
    log = mount.log()
    assert "cold/a.bin" in log
    assert "restore it" in log


def test_oss_symlinks_are_posix_symlinks_to_their_targets(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    emulator.put_object(BUCKET, "data/target.txt", b"hello target\n")
    emulator.put_symlink(BUCKET, "links/to-target", "data/target.txt")
    emulator.put_symlink(BUCKET, "links/dangling", "data/missing.txt")
    mount = make_mount().start()
    link = mount.path / "links/to-target"
    assert link.is_symlink()
    assert os.readlink(link) == "../data/target.txt"
    assert link.read_bytes() == b"hello target\n"  # the kernel follows it to the target
    assert not (mount.path / "links/dangling").exists()
    dest = tmp_path / "copy"
    subprocess.run(["rsync", "-a", f"{mount.path}/", f"{dest}/"], check=True)
    assert os.readlink(dest / "links/to-target") == "../data/target.txt"  # copied as a link


def test_a_symlink_to_an_object_shadowed_by_a_prefix_points_at_its_shown_name(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    emulator.put_object(BUCKET, "d/x", b"the object x\n")
    emulator.put_object(BUCKET, "d/x/inner.txt", b"inside the prefix\n")  # shows x as a dir
    emulator.put_symlink(BUCKET, "links/to-x", "d/x")
    emulator.put_symlink(BUCKET, "d/x/up", "d/x")
    mount = make_mount().start()
    assert (mount.path / "d/x").is_dir()
    assert os.readlink(mount.path / "links/to-x") == "../d/x.ossfile"
    assert (mount.path / "links/to-x").read_bytes() == b"the object x\n"
    assert os.readlink(mount.path / "d/x/up") == "../x.ossfile"
    assert (mount.path / "d/x/up").read_bytes() == b"the object x\n"


def test_a_symlink_pointing_outside_a_prefix_mount_never_leaves_the_mount(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    emulator.put_object(BUCKET, "data/t.txt", b"inside\n")
    emulator.put_object(BUCKET, "other/secret.txt", b"outside\n")
    emulator.put_symlink(BUCKET, "data/links/in", "data/t.txt")
    emulator.put_symlink(BUCKET, "data/links/out", "other/secret.txt")
    emulator.put_symlink(BUCKET, "data/links/climb", "data/a/../../../../etc/passwd")
    mount = make_mount(source=f"{BUCKET}:/data").start()
    links = mount.path / "links"
    assert os.readlink(links / "in") == "../t.txt"
    assert (links / "in").read_bytes() == b"inside\n"
    for name in ("out", "climb"):
        with pytest.raises(OSError, match="Input/output error") as info:
            os.readlink(links / name)
        assert info.value.errno == errno.EIO, name
    log = mount.log()
    assert "'data/links/out' points to 'other/secret.txt'" in log
    assert "has no path under the mount" in log


def test_the_cache_stays_under_its_cap_by_evicting_closed_files(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    blobs = {f"f{i}.bin": os.urandom(2 * MiB) for i in range(4)}
    for key, data in blobs.items():
        emulator.put_object(BUCKET, key, data)
    mount = make_mount(args=("--max-cache-size-mb", "5", "--part-size-mb", "1")).start()
    for key, data in blobs.items():
        assert (mount.path / key).read_bytes() == data
    mount.settle()  # released, flushed, and evicted if over the cap

    def cached_bytes() -> int:
        return sum(p.stat().st_size for p in mount.cache.rglob("*.data"))

    assert 0 < cached_bytes() <= 5 * MiB  # 8 MiB were read; the least recent went first
    assert os.getxattr(mount.path / "f3.bin", "user.ossmount.state") == b"verified"
    assert os.getxattr(mount.path / "f0.bin", "user.ossmount.state") == b"uncached"


@contextlib.contextmanager
def _small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_cache_disk_evicts_closed_files_then_fails_clearly(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    """The cap (default 20 GiB) is far above this 8 MiB disk: when it fills, closed files are
    evicted to make room; a part that cannot fit at all fails with EIO and a log line that
    names the cache dir and the remedy, and the mount goes on serving."""
    first, second = os.urandom(5 * MiB), os.urandom(5 * MiB)
    emulator.put_object(BUCKET, "first.bin", first)
    emulator.put_object(BUCKET, "second.bin", second)
    emulator.put_synthetic(BUCKET, "huge.bin", 32 * MiB, seed=2)
    with _small_tmpfs(tmp_path / "small", "8m") as small:
        mount = make_mount(
            args=("--cache-dir", str(small / "c"), "--part-size-mb", "1", "--min-free-mb", "0")
        )
        mount.start()
        assert (mount.path / "first.bin").read_bytes() == first
        mount.settle()  # released: idle, so evictable
        assert (mount.path / "second.bin").read_bytes() == second  # 5 + 5 MiB > 8 MiB
        assert "is short of space: evicted 1 idle cache entries" in mount.log()
        mount.stop()
        # Parts of 16 MiB: not even one fits, and nothing is left to evict or shed.
        mount = make_mount(
            args=("--cache-dir", str(small / "c"), "--part-size-mb", "16", "--min-free-mb", "0")
        )
        mount.start()
        result = subprocess.run(
            ["cp", str(mount.path / "huge.bin"), str(tmp_path / "out")],
            capture_output=True,
            text=True,
        )
        assert result.returncode != 0
        assert "Input/output error" in result.stderr
        assert f"the cache dir {small / 'c'} is full" in mount.log()
        assert "lower --max-cache-size-mb" in mount.log()
        assert (mount.path / "second.bin").read_bytes() == second  # still serving
        mount.stop()


def test_an_object_bigger_than_the_cache_disk_streams_through_it_verified(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    """cp of 96 MiB through a 24 MiB cache disk (default cap and read-ahead, no free-space
    floor): parts already read are punched out of the cache file as the copy goes on; every
    byte arrives and the object is verified whole."""
    emulator.put_synthetic(BUCKET, "huge.bin", 96 * MiB, seed=3)
    with _small_tmpfs(tmp_path / "small", "24m") as small:
        mount = make_mount(
            args=("--cache-dir", str(small / "c"), "--part-size-mb", "2", "--min-free-mb", "0")
        )
        mount.start()
        subprocess.run(["cp", str(mount.path / "huge.bin"), str(tmp_path / "out")], check=True)
        expected = emulator.get_bytes(BUCKET, "huge.bin")
        assert (tmp_path / "out").read_bytes() == expected
        assert "parts already read are dropped from its cache file" in mount.log()
        assert "huge.bin: verified (100663296 bytes" in mount.log()
        assert "read through a full cache, so only" in mount.log()
        # Closed, it is what its cache file holds: a part of it, which no verdict covers.
        assert os.getxattr(mount.path / "huge.bin", "user.ossmount.state") == b"partial"
        # Read again: the shed parts come back (fetched again, each CRC checked again).
        subprocess.run(["cmp", str(mount.path / "huge.bin"), str(tmp_path / "out")], check=True)
        mount.stop()
        assert "ERROR" not in mount.log()


def test_the_cache_keeps_min_free_mb_free_on_its_disk(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    """ensure_diskfree=40 (ossfs's spelling) on a 64 MiB disk: a closed 10 MiB file is evicted
    and a 96 MiB copy streams through the 24 MiB left, so the disk never fills."""
    small_data = os.urandom(10 * MiB)
    emulator.put_object(BUCKET, "small.bin", small_data)
    emulator.put_synthetic(BUCKET, "huge.bin", 96 * MiB, seed=5)
    with _small_tmpfs(tmp_path / "small", "64m") as small:
        mount = make_mount(
            args=(
                "--cache-dir",
                str(small / "c"),
                "--part-size-mb",
                "2",
                "-o",
                "ensure_diskfree=40",
            )
        )
        mount.start()
        assert (mount.path / "small.bin").read_bytes() == small_data
        mount.settle()  # released: evictable
        lowest = [shutil.disk_usage(small).free]
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                lowest[0] = min(lowest[0], shutil.disk_usage(small).free)
                time.sleep(0.005)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            subprocess.run(["cp", str(mount.path / "huge.bin"), str(tmp_path / "out")], check=True)
        finally:
            done.set()
            watcher.join()
        assert (tmp_path / "out").read_bytes() == emulator.get_bytes(BUCKET, "huge.bin")
        assert "is short of space: evicted 1 idle cache entries" in mount.log()
        assert "huge.bin: verified (100663296 bytes" in mount.log()
        # The floor is kept to within the parts in flight (4 x 2 MiB) and one flush's worth.
        assert lowest[0] >= 40 * MiB - 24 * MiB, lowest[0] >> 20
        mount.stop()


def test_a_footer_read_of_an_object_bigger_than_the_cap_evicts_nothing(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    """The cap counts cached bytes: 64 KiB read from a 64 MiB object under a 5 MB cap leave
    the small verified file cached (counted by size, the big one would evict it)."""
    small = os.urandom(MiB)
    emulator.put_object(BUCKET, "small.bin", small)
    emulator.put_synthetic(BUCKET, "table.parquet", 64 * MiB, seed=4)
    mount = make_mount(args=("--max-cache-size-mb", "5", "--part-size-mb", "1")).start()
    assert (mount.path / "small.bin").read_bytes() == small
    with open(mount.path / "table.parquet", "rb") as fh:
        fh.seek(-64 * 1024, os.SEEK_END)
        assert len(fh.read()) == 64 * 1024
    mount.settle()  # released and flushed; the store evicts after a flush if over the cap
    assert os.getxattr(mount.path / "small.bin", "user.ossmount.state") == b"verified"
    assert os.getxattr(mount.path / "table.parquet", "user.ossmount.state") == b"partial"


def test_ls_l_stops_asking_for_selinux_and_acl_xattrs_while_ours_keep_working(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    """`ls -l` asks each entry for security.selinux and system.posix_acl_access until one
    answer says "not supported" (fs/xattrs.py): one request each per mount (ls remembers the
    device), not one per file. The daemon logs every refused getxattr at DEBUG, which is what
    is counted."""
    for i in range(20):
        emulator.put_object(BUCKET, f"d/f{i:02d}", b"x")
    mount = make_mount().start()
    before = mount.log().count("getxattr:")
    subprocess.run(["ls", "-l", str(mount.path / "d")], capture_output=True, check=True)
    asked = mount.log().count("getxattr:") - before
    assert 0 < asked <= 2, f"{asked} getxattr requests for a directory of 20 files"

    f = mount.path / "d" / "f03"
    for name in ("security.selinux", "system.posix_acl_access", "trusted.x"):
        with pytest.raises(OSError, match="not supported") as caught:
            os.getxattr(f, name)
        assert caught.value.errno == errno.EOPNOTSUPP, name
    with pytest.raises(OSError, match="No data") as caught:
        os.getxattr(f, "user.not-ours")
    assert caught.value.errno == errno.ENODATA
    assert os.getxattr(f, "user.ossmount.key") == b"d/f03"
    assert os.listxattr(f) == []  # read by name only
