"""Writes through a real `-o rw` mount, checked on the server side: the official SDK
(alibabacloud_oss_v2) reads the objects back from the emulator, never the mount."""

from __future__ import annotations

import errno
import os
import subprocess
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote

import alibabacloud_oss_v2 as oss
import pytest

from ossmount.crc64 import crc64
from ossmount.emulator import Emulator
from ossmount.emulator.faults import FaultRule
from tests.mount.conftest import MountFactory
from tests.mount.harness import AK, BUCKET, SK, Mount
from tests.mount.test_metrics import metrics_url, scrape

MiB = 1024 * 1024
RW = ("--rw", "--part-size-mb", "1")


def sdk(emu: Emulator) -> oss.Client:
    cfg = oss.config.load_default()
    cfg.credentials_provider = oss.credentials.StaticCredentialsProvider(AK, SK)
    cfg.region = "cn-hangzhou"
    cfg.endpoint = emu.endpoint
    return oss.Client(cfg)


def server_bytes(emu: Emulator, key: str) -> bytes:
    got = sdk(emu).get_object(oss.GetObjectRequest(bucket=BUCKET, key=key))
    assert got.body is not None
    data = bytes(got.body.read())
    if got.hash_crc64 is not None:  # the emulator's CopyObject results carry none
        assert int(got.hash_crc64) == crc64(data), f"server CRC-64 of {key} disagrees"
    return data


def server_keys(emu: Emulator, prefix: str = "") -> set[str]:
    page = sdk(emu).list_objects_v2(
        oss.ListObjectsV2Request(bucket=BUCKET, prefix=prefix, max_keys=1000)
    )
    return {o.key for o in page.contents or [] if o.key is not None}


def errno_of(attempt: Callable[[], object]) -> int | None:
    try:
        attempt()
    except OSError as exc:
        return exc.errno
    return None


def tree(root: Path) -> dict[str, bytes]:
    out = {}
    for path in root.rglob("*"):
        if path.is_file():
            out[path.relative_to(root).as_posix()] = path.read_bytes()
    return out


def source_tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    for i in range(12):
        sub = src / f"d{i % 3}" / ("deep" if i % 2 else "")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i}.bin").write_bytes(os.urandom(i * 37_001))
    (src / "empty.txt").write_bytes(b"")
    (src / "big.bin").write_bytes(os.urandom(3 * MiB + 12345))  # multipart with 1 MiB parts
    return src


def test_cp_small_and_multipart_files_are_byte_identical_on_the_server(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    mount = make_mount(args=RW).start()
    small, big = os.urandom(1000), os.urandom(5 * MiB + 7)
    (tmp_path / "small").write_bytes(small)
    (tmp_path / "big").write_bytes(big)
    subprocess.run(["cp", str(tmp_path / "small"), str(mount.path / "small")], check=True)
    subprocess.run(["cp", str(tmp_path / "big"), str(mount.path / "big")], check=True)
    assert server_bytes(emulator, "small") == small
    fd = os.open(mount.path / "private", os.O_WRONLY | os.O_CREAT, 0o640)
    os.write(fd, b"p")
    os.close(fd)
    head = sdk(emulator).head_object(oss.HeadObjectRequest(bucket=BUCKET, key="private"))
    assert head.metadata is not None
    assert int(head.metadata["mode"]) == 0o100640, "x-oss-meta-mode, as ossfs stores it"
    assert server_bytes(emulator, "big") == big
    uploads = [r.op for r in emulator.requests if r.key == "big"]
    assert "UploadPart" in uploads, "a 5 MiB file with 1 MiB parts goes multipart"
    # the namespace shows what was written at once, size and bytes
    assert (mount.path / "big").stat().st_size == len(big)
    assert sorted(os.listdir(mount.path)) == ["big", "private", "small"]
    assert (mount.path / "small").read_bytes() == small


def test_cp_r_rsync_and_tar_into_the_mount(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    mount = make_mount(args=RW).start()
    src = source_tree(tmp_path)
    expected = tree(src)
    subprocess.run(["cp", "-r", str(src), str(mount.path / "cp")], check=True)
    subprocess.run(["rsync", "-a", f"{src}/", str(mount.path / "rs")], check=True)
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(src, arcname="t")
    subprocess.run(["tar", "xf", str(archive), "-C", str(mount.path)], check=True)
    for top in ("cp", "rs", "t"):
        keys = [k for k in server_keys(emulator, top + "/") if not k.endswith("/")]
        got = {k[len(top) + 1 :]: server_bytes(emulator, k) for k in keys}
        assert got == expected, f"{top}: the server's copy differs"
        assert tree(mount.path / top) == expected
    assert not any(".f" in k and "~" in k for k in server_keys(emulator)), "rsync temp left"


def test_overwrite_append_patch_and_truncate(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    emulator.put_object(BUCKET, "f", b"0123456789")
    mount = make_mount(args=RW).start()
    path = mount.path / "f"
    with open(path, "ab") as f:
        f.write(b"AB")
    assert server_bytes(emulator, "f") == b"0123456789AB"
    with open(path, "r+b") as f:
        f.seek(3)
        f.write(b"xyz")
    assert server_bytes(emulator, "f") == b"012xyz6789AB"
    os.truncate(path, 4)
    assert server_bytes(emulator, "f") == b"012x"
    path.write_bytes(b"new")
    assert server_bytes(emulator, "f") == b"new"
    assert path.read_bytes() == b"new"


def test_reads_and_stat_of_a_file_being_written_see_the_staged_bytes(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    mount = make_mount(args=RW).start()
    path = mount.path / "w"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"hello world")
        assert os.fstat(fd).st_size == 11
        assert os.pread(fd, 5, 6) == b"world"
        assert "w" not in server_keys(emulator), "nothing is committed before close/fsync"
        os.fsync(fd)
        assert server_bytes(emulator, "w") == b"hello world"
    finally:
        os.close(fd)


def test_unlink_mkdir_rmdir_and_rename(emulator: Emulator, make_mount: MountFactory) -> None:
    emulator.put_object(BUCKET, "implicit/child", b"c")
    emulator.put_object(BUCKET, "gone", b"g")
    mount = make_mount(args=RW).start()
    os.unlink(mount.path / "gone")
    assert "gone" not in server_keys(emulator)
    assert not (mount.path / "gone").exists()
    os.mkdir(mount.path / "d")
    assert "d/" in server_keys(emulator)
    with pytest.raises(FileExistsError):
        os.mkdir(mount.path / "d")
    (mount.path / "d" / "x").write_bytes(b"x")
    assert errno_of(lambda: os.rmdir(mount.path / "d")) == errno.ENOTEMPTY
    assert errno_of(lambda: os.rmdir(mount.path / "implicit")) == errno.ENOTEMPTY
    os.rename(mount.path / "d" / "x", mount.path / "y")
    assert server_bytes(emulator, "y") == b"x"
    assert "d/x" not in server_keys(emulator)
    assert (mount.path / "y").read_bytes() == b"x"
    os.rmdir(mount.path / "d")
    assert "d/" not in server_keys(emulator)
    assert not (mount.path / "d").exists()
    with pytest.raises(IsADirectoryError):
        os.unlink(mount.path / "implicit")


def test_a_read_only_mount_refuses_every_write_with_erofs(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    emulator.put_object(BUCKET, "f", b"data")
    emulator.put_object(BUCKET, "d/g", b"data")
    mount = make_mount().start()
    attempts = {
        "create": lambda: os.close(os.open(mount.path / "new", os.O_WRONLY | os.O_CREAT)),
        "open for write": lambda: os.close(os.open(mount.path / "f", os.O_RDWR)),
        "truncate": lambda: os.truncate(mount.path / "f", 0),
        "unlink": lambda: os.unlink(mount.path / "f"),
        "mkdir": lambda: os.mkdir(mount.path / "nd"),
        "rmdir": lambda: os.rmdir(mount.path / "d"),
        "rename": lambda: os.rename(mount.path / "f", mount.path / "f2"),
        "symlink": lambda: os.symlink("f", mount.path / "l"),
        "mkfifo": lambda: os.mkfifo(mount.path / "fifo"),
    }
    for what, attempt in attempts.items():
        assert errno_of(attempt) == errno.EROFS, what
    assert server_keys(emulator) == {"f", "d/g"}


def test_df_shows_room_on_a_rw_mount_and_none_on_a_read_only_one(make_mount: MountFactory) -> None:
    """File managers, Samba and installers check df before copying; a writable mount that
    said 0 bytes free made them refuse (fs/attrs.py FsStats)."""

    def df_avail(path: Path) -> int:
        out = subprocess.run(["df", "-B1", "--output=avail", str(path)],
                             capture_output=True, text=True, check=True)  # fmt: skip
        return int(out.stdout.split()[-1])

    writable = make_mount(args=RW).start()
    assert df_avail(writable.path) >= 1 << 40
    assert os.statvfs(writable.path).f_favail > 0
    writable.stop()
    assert df_avail(make_mount().start().path) == 0


def test_a_commit_that_keeps_failing_makes_cp_fail_and_leaves_no_object(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    mount = make_mount(args=(*RW, "--max-attempts", "2", "--metrics-addr", "127.0.0.1:0")).start()
    emulator.faults.add(FaultRule("error", op="PutObject", key="fail", times=None, status=503,
                                  code="ServiceUnavailable"))  # fmt: skip
    (tmp_path / "src").write_bytes(b"payload")
    cp = subprocess.run(["cp", str(tmp_path / "src"), str(mount.path / "fail")], check=False,
                        capture_output=True)  # fmt: skip
    assert cp.returncode != 0, "close must fail when the commit failed"
    assert b"Input/output error" in cp.stderr
    assert "fail" not in server_keys(emulator)
    emulator.faults.clear()
    subprocess.run(["cp", str(tmp_path / "src"), str(mount.path / "fail")], check=True)
    assert server_bytes(emulator, "fail") == b"payload"
    _, samples = scrape(metrics_url(mount))
    assert samples[("ossmount_commits_total", (("outcome", "failed"),))] >= 1
    assert samples[("ossmount_commits_total", (("outcome", "committed"),))] == 1


def kill_9_while_the_last_part_is_sent(
    emulator: Emulator, make_mount: MountFactory, src: Path, key: str, *, parts: int
) -> tuple[Mount, int]:
    """`cp src` to `key` through a --rw mount (1 MiB parts, `parts` of them) and kill -9 the
    daemon once the last part's UploadPart started (held there by a stall): the file is
    sealed and half uploaded. Returns the dead mount, detached, and cp's exit status."""
    stall = FaultRule("stall", op="UploadPart", key=key, nth=parts, seconds=8.0)
    emulator.faults.add(stall)
    mount = make_mount(args=RW).start()
    cp = subprocess.Popen(["cp", str(src), str(mount.path / key)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while stall.fired == 0:
            assert time.monotonic() < deadline, "the last part never started"
            time.sleep(0.02)
        mount.kill()
    finally:
        cp.wait()
    # the dead connection answers ENOTCONN, which the harness's ismount check reads as "not
    # mounted": detach it here
    subprocess.run(["fusermount3", "-u", "-z", str(mount.path)], check=False)
    return mount, cp.returncode


def test_kill_9_mid_commit_then_remount_completes_the_upload_before_ready(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    data = os.urandom(6 * MiB + 4321)
    (tmp_path / "src").write_bytes(data)
    # Parts 1-6 go while cp writes (a sequential writer); the last, short part goes at close:
    # hold it there, so the file is sealed and half uploaded when the daemon dies.
    kill_9_while_the_last_part_is_sent(emulator, make_mount, tmp_path / "src", "big", parts=7)
    assert "big" not in server_keys(emulator)
    before = len([r for r in emulator.requests if r.op == "UploadPart" and r.key == "big"])
    make_mount(args=RW).start()  # ready only once the staged file is committed
    assert server_bytes(emulator, "big") == data
    after = [r for r in emulator.requests if r.op == "UploadPart" and r.key == "big"][before:]
    assert len(after) == 1, "the parts recorded before the crash are not sent again"


def test_symlink_is_a_put_symlink_that_reads_back_as_a_link(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    mount = make_mount(args=RW).start()
    os.mkdir(mount.path / "d")
    (mount.path / "d" / "t").write_bytes(b"target")
    os.symlink("d/t", mount.path / "l")
    os.symlink("../d/t", mount.path / "d" / "l2")
    head = sdk(emulator).get_symlink(oss.GetSymlinkRequest(bucket=BUCKET, key="l"))
    assert head.target is not None
    assert unquote(head.target) == "d/t"  # OSS sends the target URL-encoded
    assert os.readlink(mount.path / "l") == "d/t"
    assert (mount.path / "d" / "l2").read_bytes() == b"target"
    assert errno_of(lambda: os.symlink("/etc/passwd", mount.path / "abs")) == errno.EPERM
    assert errno_of(lambda: os.symlink("../out", mount.path / "up")) == errno.EPERM


def test_enospc_in_the_staging_dir_fails_the_copy_and_replaces_nothing(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    emulator.put_object(BUCKET, "f", b"old")
    cache = tmp_path / "cache"
    cache.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(cache)], check=True)
    try:
        mount = make_mount(args=(*RW, "--min-free-mb", "0")).start()
        (tmp_path / "src").write_bytes(os.urandom(6 * MiB))
        cp = subprocess.run(["cp", str(tmp_path / "src"), str(mount.path / "f")], check=False,
                            capture_output=True)  # fmt: skip
        assert cp.returncode != 0
        assert b"No space left on device" in cp.stderr
        assert server_bytes(emulator, "f") == b"old", "a half-staged file is never committed"
        mount.stop()
    finally:
        subprocess.run(["umount", "-l", str(cache)], check=False)


def test_writeback_close_returns_before_the_upload_and_a_crash_loses_nothing(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    # Every PutObject of "wb*" is held for a while: close must return anyway.
    held = FaultRule("stall", op="PutObject", key="wb*", times=None, seconds=4.0)
    emulator.faults.add(held)
    mount = make_mount(args=(*RW, "--writeback", "--writeback-delay", "0")).start()
    data = {f"wb{i}": os.urandom(1000 + i) for i in range(3)}
    for name, body in data.items():
        (tmp_path / name).write_bytes(body)
        subprocess.run(["cp", str(tmp_path / name), str(mount.path / name)], check=True)
    assert held.seen >= 1, "the uploads started in the background"
    assert not server_keys(emulator) & set(data), "cp returned before any upload finished"
    assert (mount.path / "wb1").read_bytes() == data["wb1"], "read your writes meanwhile"
    assert os.getxattr(mount.path / "wb1", "user.ossmount.state") == b"uploading"
    mount.kill()  # acknowledged, not uploaded: the staged files and journals are on disk
    subprocess.run(["fusermount3", "-u", "-z", str(mount.path)], check=False)
    emulator.faults.clear()
    make_mount(args=(*RW, "--writeback")).start()  # ready only once they are uploaded
    for name, body in data.items():
        assert server_bytes(emulator, name) == body


def test_writeback_uploads_finish_by_unmount(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    mount = make_mount(args=(*RW, "--writeback")).start()
    src = source_tree(tmp_path)
    subprocess.run(["cp", "-r", str(src), str(mount.path / "t")], check=True)
    mount.stop()  # waits for the background uploads
    keys = [k for k in server_keys(emulator, "t/") if not k.endswith("/")]
    assert {k[2:]: server_bytes(emulator, k) for k in keys} == tree(src)


def test_cp_r_of_more_than_the_cache_holds_under_writeback_waits_for_its_uploads(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    """Closed files waiting for their upload hold their room: with uploads slower than `cp`
    (a 0.3 s delay on each PutObject) and a 5 MiB cache, a `cp -r` of 16 MiB waits for them
    instead of failing with ENOSPC. Files of 2 MiB under 8 MiB parts: one PutObject each,
    nothing of them shed early."""
    emulator.faults.add(FaultRule("latency", op="PutObject", seconds=0.3, times=None))
    args = ("--rw", "--writeback", "--part-size-mb", "8", "--max-cache-size-mb", "5",
            "--min-free-mb", "0")  # fmt: skip
    mount = make_mount(args=args).start()
    src = tmp_path / "src"
    src.mkdir()
    files = {f"f{i}": os.urandom(2 * MiB) for i in range(8)}
    for name, data in files.items():
        (src / name).write_bytes(data)
    subprocess.run(["cp", "-r", str(src), str(mount.path / "t")], check=True)
    mount.stop()  # waits for the background uploads
    assert {name: server_bytes(emulator, f"t/{name}") for name in files} == files


def test_concurrent_writers_of_one_path_see_what_a_local_file_would(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    """Two handles on one path share one staged file, as two handles share a local file;
    each close commits the bytes as they are then."""
    mount = make_mount(args=RW).start()

    def scenario(path: Path) -> list[bytes]:
        seen = []
        a = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        b = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        os.pwrite(a, b"a" * 10, 0)
        os.pwrite(b, b"b" * 4, 3)
        os.close(a)
        seen.append(path.read_bytes())
        os.pwrite(b, b"c" * 3, 12)
        os.close(b)
        seen.append(path.read_bytes())
        return seen

    local = scenario(tmp_path / "local")
    assert scenario(mount.path / "shared") == local
    assert server_bytes(emulator, "shared") == local[-1]


def test_rename_of_a_directory_moves_every_key_under_it(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    emulator.put_object(BUCKET, "d/a", b"A")
    emulator.put_object(BUCKET, "d/sub/b", b"B")  # d/sub is implicit (no marker)
    emulator.put_object(BUCKET, "full/x", b"X")
    mount = make_mount(args=RW).start()
    os.mkdir(mount.path / "d" / "empty")
    sub = mount.path / "d" / "sub"
    assert (sub / "b").read_bytes() == b"B"  # the kernel now holds these inodes
    os.rename(mount.path / "d", mount.path / "e")
    assert server_keys(emulator) == {"e/a", "e/sub/b", "e/empty/", "full/x"}
    assert server_bytes(emulator, "e/sub/b") == b"B"
    assert (mount.path / "e" / "sub" / "b").read_bytes() == b"B"
    assert sorted(os.listdir(mount.path)) == ["e", "full"]
    assert sorted(os.listdir(mount.path / "e")) == ["a", "empty", "sub"]
    assert errno_of(lambda: os.rename(mount.path / "e", mount.path / "full")) == errno.ENOTEMPTY
    subprocess.run(["mv", str(mount.path / "e"), str(mount.path / "f")], check=True)
    assert server_keys(emulator) == {"f/a", "f/sub/b", "f/empty/", "full/x"}


def test_a_full_cache_disk_gives_room_to_writes_by_evicting_idle_read_cache_entries(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    emulator.put_object(BUCKET, "read", os.urandom(2 * MiB))
    cache = tmp_path / "cache"
    cache.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(cache)], check=True)
    try:
        mount = make_mount(args=(*RW, "--min-free-mb", "0")).start()
        assert len((mount.path / "read").read_bytes()) == 2 * MiB  # now a cache entry
        data = os.urandom(2 * MiB)
        (tmp_path / "src").write_bytes(data)
        subprocess.run(["cp", str(tmp_path / "src"), str(mount.path / "w")], check=True)
        assert server_bytes(emulator, "w") == data
        assert "evicted" in mount.log()
        mount.stop()
    finally:
        subprocess.run(["umount", "-l", str(cache)], check=False)
