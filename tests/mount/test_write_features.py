"""Read-write features beyond the basics (issue 15's second round), through a real `-o rw`
mount against the emulator; objects are read back with the official SDK, requests counted in
the emulator's log."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import alibabacloud_oss_v2 as oss

from ossmount.emulator import Emulator
from tests.mount.conftest import MountFactory
from tests.mount.harness import BUCKET, fsynced
from tests.mount.test_metrics import metrics_url, scrape
from tests.mount.test_write import RW, MiB, sdk, server_bytes, server_keys

__all__ = ["wait_until"]


def wait_until(what: str, condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll a condition the daemon makes true on its own (a FUSE release is not awaited by
    close), failing with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


def gets(emu: Emulator, key: str) -> int:
    return sum(1 for r in emu.requests if r.op == "GetObject" and r.key == key)


def staged_files(cache: Path) -> list[Path]:
    return list((cache / "staging").glob("*.data"))


def test_a_committed_file_is_read_back_from_the_cache_without_a_get(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    mount = make_mount(args=RW).start()
    files = {"small": os.urandom(70_001), "big": os.urandom(3 * MiB + 5), "empty": b""}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        subprocess.run(["cp", str(tmp_path / name), str(mount.path / name)], check=True)
    wait_until("every staged file is released", lambda: not staged_files(mount.cache))
    for name, data in files.items():
        assert (mount.path / name).read_bytes() == data
        state = os.getxattr(mount.path / name, "user.ossmount.state")
        assert state == b"verified", f"{name}: {state!r}"
        assert server_bytes(emulator, name) == data
    before = {name: gets(emulator, name) for name in files}
    assert before == dict.fromkeys(files, 1), "only the SDK's read-back GETs"
    # After a remount the adopted entry is on disk like any verified one: no GET either.
    mount.stop()
    mount = make_mount(args=RW).start()
    for name, data in files.items():
        assert (mount.path / name).read_bytes() == data
    assert {name: gets(emulator, name) for name in files} == before


def test_a_file_being_created_is_listed_before_its_first_commit(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    emulator.put_object(BUCKET, "d/old", b"o")
    mount = make_mount(args=RW).start()
    fd = os.open(mount.path / "d" / "new", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"12345")
        assert sorted(os.listdir(mount.path / "d")) == ["new", "old"]
        assert "d/new" not in server_keys(emulator), "nothing committed yet"
        sizes = {e.name: e.stat().st_size for e in os.scandir(mount.path / "d")}
        assert sizes == {"new": 5, "old": 1}
        assert os.listdir(mount.path) == ["d"]
    finally:
        os.close(fd)
    assert sorted(os.listdir(mount.path / "d")) == ["new", "old"]
    assert server_bytes(emulator, "d/new") == b"12345"


def test_chmod_chown_utimens_of_a_closed_file_are_stored_as_ossfs_stores_them(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    client = sdk(emulator)
    client.put_object(oss.PutObjectRequest(
        bucket=BUCKET, key="f", body=b"data", content_type="text/x-kept",
        metadata={"other": "kept"},
    ))  # fmt: skip
    mount = make_mount(args=RW).start()
    path = mount.path / "f"
    os.chmod(path, 0o640)
    os.chown(path, 1234, 5678)
    os.utime(path, ns=(1_700_000_000_000_000_000, 1_600_000_000_250_000_000))
    fsynced(path)
    head = client.head_object(oss.HeadObjectRequest(bucket=BUCKET, key="f"))
    assert head.metadata == {
        "other": "kept",
        "mode": str(0o100640),
        "uid": "1234",
        "gid": "5678",
        "mtime": "1600000000.250000000",
        "atime": "1700000000",  # ossfs's utimens: atime and ctime the atime given
        "ctime": "1700000000",
    }
    assert head.content_type == "text/x-kept"
    assert server_bytes(emulator, "f") == b"data"
    copies = [r for r in emulator.requests if r.op == "CopyObject" and r.key == "f"]
    # The chmod at once (HEAD, copy: not this mount's object); the metadata is known from
    # then on, so the chown and utimens are owed and sent in one copy (fs/owedattrs.py).
    assert len(copies) == 2
    os.chmod(path, 0o640)  # already stored: no copy
    fsynced(path)
    assert len([r for r in emulator.requests if r.op == "CopyObject" and r.key == "f"]) == 2
    assert path.read_bytes() == b"data"


def test_rename_above_the_copyobject_limit_copies_by_parts(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    emulator.store.copy_object_limit = 1 * MiB  # OSS: 1 GB; no test writes that much
    data = os.urandom(3 * MiB + 11)
    emulator.put_object(BUCKET, "d/big", data, content_type="text/x-kept", meta={"m": "v"})
    emulator.put_object(BUCKET, "d/small", b"s")
    inner = os.urandom(2 * MiB)
    emulator.put_object(BUCKET, "d/inner", inner)
    mount = make_mount(args=RW).start()
    os.rename(mount.path / "d" / "big", mount.path / "moved")
    assert server_bytes(emulator, "moved") == data  # the SDK checks the server's CRC-64 too
    head = sdk(emulator).head_object(oss.HeadObjectRequest(bucket=BUCKET, key="moved"))
    assert head.metadata == {"m": "v"}
    assert head.content_type == "text/x-kept"
    assert server_keys(emulator) == {"moved", "d/small", "d/inner"}
    assert any(r.op == "UploadPartCopy" and r.key == "moved" for r in emulator.requests)
    assert (mount.path / "moved").read_bytes() == data
    os.rename(mount.path / "d", mount.path / "e")  # a directory rename copies the same way
    assert server_keys(emulator) == {"moved", "e/small", "e/inner"}
    assert server_bytes(emulator, "e/inner") == inner


def test_patching_a_large_object_copies_its_unchanged_parts_server_side(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    data = bytearray(os.urandom(5 * MiB + 100))  # 6 parts of 1 MiB (the last one short)
    emulator.put_object(BUCKET, "big", bytes(data))
    mount = make_mount(args=RW).start()
    with open(mount.path / "big", "r+b") as f:
        f.seek(2 * MiB + 12345)
        f.write(b"X")
    data[2 * MiB + 12345] = ord("X")
    assert server_bytes(emulator, "big") == bytes(data)  # the SDK checks the CRC-64 too
    ops = [r.op for r in emulator.requests if r.key == "big"]
    assert ops.count("UploadPartCopy") == 5, ops
    assert ops.count("UploadPart") == 1, ops
    # patched again in the same mount: the source is now the object just committed
    with open(mount.path / "big", "ab") as f:
        f.write(b"tail")
    data += b"tail"
    assert server_bytes(emulator, "big") == bytes(data)
    ops = [r.op for r in emulator.requests if r.key == "big"]
    assert ops.count("UploadPartCopy") == 10, "parts 1-5 copied again, the grown last sent"
    assert ops.count("UploadPart") == 2, ops


def test_a_patched_object_changed_on_the_server_meanwhile_is_sent_whole(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    data = bytearray(os.urandom(3 * MiB + 1))
    emulator.put_object(BUCKET, "big", bytes(data))
    mount = make_mount(args=RW).start()
    with open(mount.path / "big", "r+b") as f:  # staged from the first version
        emulator.put_object(BUCKET, "big", b"someone else's")  # last writer wins: ours
        f.write(b"Y")
    data[0] = ord("Y")
    assert server_bytes(emulator, "big") == bytes(data)
    done = [(r.op, r.status) for r in emulator.requests if r.key == "big" and r.method == "PUT"]
    assert ("UploadPartCopy", 200) not in done, "no part of the other version is copied"
    assert done.count(("UploadPart", 200)) == 4


def test_staged_bytes_count_against_the_cache_cap(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    emulator.put_object(BUCKET, "read", os.urandom(3 * MiB))
    old = os.urandom(3 * MiB)
    emulator.put_object(BUCKET, "big", old)
    args = (*RW, "--max-cache-size-mb", "5", "--min-free-mb", "0", "--metrics-addr",
            "127.0.0.1:0")  # fmt: skip
    mount = make_mount(args=args).start()
    assert len((mount.path / "read").read_bytes()) == 3 * MiB  # an idle cache entry now
    data = os.urandom(4 * MiB)
    (tmp_path / "w").write_bytes(data)
    subprocess.run(["cp", str(tmp_path / "w"), str(mount.path / "w")], check=True)
    assert server_bytes(emulator, "w") == data
    assert "evicted" in mount.log(), "the idle read entry made room for the staged bytes"
    # An existing object patched is staged whole (its parts may be copied server-side): past
    # the cap, the write fails.
    more = os.urandom(3 * MiB)
    (tmp_path / "more").write_bytes(more)
    dd = _write_at_end(tmp_path / "more", mount.path / "big")
    assert dd.returncode != 0
    assert b"No space left on device" in dd.stderr, dd.stderr
    assert server_bytes(emulator, "big") == old, "a file that hit the cap replaces nothing"
    assert "cache cap" in mount.log()
    # An append (O_APPEND) leaves its start unread, so the same bytes fit.
    with open(mount.path / "big", "ab") as f:
        f.write(more)
    assert server_bytes(emulator, "big") == old + more
    # A new file written in order goes past the cap: its parts on OSS leave the disk.
    huge = os.urandom(12 * MiB)
    (tmp_path / "huge").write_bytes(huge)
    subprocess.run(["cp", str(tmp_path / "huge"), str(mount.path / "huge")], check=True)
    assert server_bytes(emulator, "huge") == huge
    assert "left the staging disk to make room" in mount.log()
    _, samples = scrape(metrics_url(mount))
    assert samples[("ossmount_staged_shed_bytes_total", ())] >= 7 * MiB  # 12 MiB, a 5 MiB cap
    assert (mount.path / "huge").read_bytes() == huge, "read back from OSS, verified"


def _write_at_end(src: Path, dst: Path) -> subprocess.CompletedProcess[bytes]:
    """dd `src` onto the end of `dst`, an existing object of whole 64 KiB blocks, as a
    patch (no O_APPEND: staged whole, its start read at open)."""
    blocks = dst.stat().st_size // (64 * 1024)
    return subprocess.run(["dd", f"if={src}", f"of={dst}", "bs=64K", f"seek={blocks}",
                           "conv=notrunc"], check=False, capture_output=True)  # fmt: skip


def test_staged_bytes_keep_the_free_space_floor(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(cache)], check=True)
    try:
        mount = make_mount(args=(*RW, "--min-free-mb", "12")).start()
        (tmp_path / "ok").write_bytes(os.urandom(4 * MiB))
        subprocess.run(["cp", str(tmp_path / "ok"), str(mount.path / "ok")], check=True)
        (tmp_path / "more").write_bytes(os.urandom(14 * MiB))
        dd = _write_at_end(tmp_path / "more", mount.path / "ok")  # staged whole: no room
        assert dd.returncode != 0
        assert b"No space left on device" in dd.stderr
        assert server_bytes(emulator, "ok") == (tmp_path / "ok").read_bytes()
        assert "keep less than 12 MiB free" in mount.log()
        # A new file written in order: its parts on OSS leave the disk to make room.
        subprocess.run(["cp", str(tmp_path / "more"), str(mount.path / "new")], check=True)
        assert server_bytes(emulator, "new") == (tmp_path / "more").read_bytes()
        mount.stop()
    finally:
        subprocess.run(["umount", "-l", str(cache)], check=False)


def test_overwriting_an_object_keeps_its_metadata_as_ossfs_does(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    """The user metadata and content headers of the version a write replaces stay on the new
    one, by `cp` over it (one PutObject) and by an append to a large one (multipart); the old
    x-oss-meta-mtime does not (the bytes are new). No extra request for the PutObject: the
    commit's conflict HEAD is the one that learns them."""
    client = sdk(emulator)
    for key, body in (("doc", b"old"), ("big", os.urandom(3 * MiB + 1))):
        client.put_object(
            oss.PutObjectRequest(
                bucket=BUCKET, key=key, body=body, content_type="text/x-kept",
                cache_control="no-cache", metadata={"owner": "alice", "mtime": "1000"},
            )
        )  # fmt: skip
    mount = make_mount(args=RW).start()
    new = tmp_path / "new"
    new.write_bytes(b"new contents")
    subprocess.run(["cp", str(new), str(mount.path / "doc")], check=True)
    with open(mount.path / "big", "ab") as f:
        f.write(b"tail")
    heads = [r.op for r in emulator.requests if r.key == "doc" and r.method == "HEAD"]
    assert len(heads) == 1, heads
    for key in ("doc", "big"):
        head = client.head_object(oss.HeadObjectRequest(bucket=BUCKET, key=key))
        meta = {k.lower(): v for k, v in (head.metadata or {}).items()}
        assert meta.get("owner") == "alice", (key, meta)
        assert meta.get("mtime") != "1000", (key, meta)
        assert (head.content_type, head.cache_control) == ("text/x-kept", "no-cache"), key
    assert server_bytes(emulator, "doc") == b"new contents"


def test_spare_staging_files_are_removed_at_unmount_and_after_a_kill(
    make_mount: MountFactory, tmp_path: Path
) -> None:
    """Empty `*.spare` files made ahead for new files (fs/staging.py `keep_spares`): a
    clean unmount removes them; after a kill -9 the next --rw mount does."""

    def spares(cache: Path) -> set[str]:
        return {p.name for p in (cache / "staging").glob("*.spare")}

    mount = make_mount(args=RW).start()
    (mount.path / "f").write_bytes(b"spare")
    wait_until("spares are made in an idle moment", lambda: len(spares(mount.cache)) == 8)
    mount.stop()
    assert spares(mount.cache) == set()
    mount = make_mount(args=RW).start()
    wait_until("spares are made again", lambda: len(spares(mount.cache)) == 8)
    left = spares(mount.cache)
    mount.kill()
    assert spares(mount.cache) == left, "a killed mount leaves them"
    mount = make_mount(args=RW).start()
    assert not spares(mount.cache) & left, "the next mount's start removed them"
    assert (mount.path / "f").read_bytes() == b"spare"
