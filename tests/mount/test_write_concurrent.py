"""Concurrent writers on one `--rw` mount, each in its own directory: creates of sizes from
0 to 9 MiB (one PutObject to ten parts), appends, patches, truncates, renames and unlinks,
done on the mount and on a local mirror alike. The cache cap (64 MiB) holds every file the
writers have open at once, not those waiting for their write-back upload too. Then (with
`kill`) `kill -9` right after every writer's last close returned and a remount, which
uploads what was acknowledged; and the bucket, read back with the SDK, must hold exactly
the mirror. Threads, not processes: each call releases the GIL.

A smaller form of the stress that found three bugs (notes of session 19), each with its own
test: a write that got ENOSPC while write-back uploads were pending (this test fails
without that fix in most runs; tests/fs/test_writeback_room.py always does), a lookup
answered before the mount's own commit bringing the old version back
(tests/unit/test_namespace_learned.py), and a copy storing a replaced version's owed
attributes landing over the new version (tests/fs/test_write_attrs.py)."""

from __future__ import annotations

import concurrent.futures
import os
import random
from pathlib import Path

import pytest

from ossmount.emulator import Emulator
from tests.mount.conftest import MountFactory
from tests.mount.test_write import server_bytes, server_keys

MiB = 1 << 20
WORKERS = 6
OPS = 60
SIZES = (0, 1, 4096, 300_000, 3 * MiB + 17, 9 * MiB + 5)


def _worker(n: int, roots: tuple[Path, Path]) -> None:
    """OPS seeded operations in directory `w<n>`, each done on both roots."""
    rnd = random.Random(n * 7919)
    names = [f"w{n}/f{i}" for i in range(6)]
    for root in roots:
        (root / f"w{n}").mkdir(exist_ok=True)
    for _ in range(OPS):
        name = rnd.choice(names)
        op = rnd.choice(["create", "create", "append", "patch", "truncate", "rename", "unlink"])
        size = rnd.choice(SIZES)
        data = rnd.randbytes(size)
        for root in roots:
            path = root / name
            try:
                if op == "create":
                    path.write_bytes(data)
                elif op == "append":
                    with path.open("ab") as f:
                        f.write(data[:300_000])
                elif op == "patch":
                    with path.open("r+b") as f:
                        f.seek(size % (4 * MiB))
                        f.write(data[:70_000])
                elif op == "truncate":
                    os.truncate(path, size // 2)
                elif op == "rename":
                    path.rename(root / names[size % 6])
                else:
                    path.unlink()
            except FileNotFoundError:
                pass


@pytest.mark.parametrize(("writeback", "kill"), [(False, False), (True, False), (True, True)])
def test_concurrent_writers_leave_the_bucket_as_a_local_mirror(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path, writeback: bool, kill: bool
) -> None:
    args = ("--rw", "--part-size-mb", "1", "--max-cache-size-mb", "64", "--min-free-mb", "0",
            *(("--writeback",) if writeback else ()))  # fmt: skip
    mount = make_mount(args=args).start()
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        for done in [pool.submit(_worker, n, (mount.path, mirror)) for n in range(WORKERS)]:
            done.result()  # a call that failed on the mount fails the test here
    if kill:
        mount.kill()
        mount = make_mount(args=args).start()  # ready once what was acknowledged is uploaded
    mount.stop()
    want = {str(p.relative_to(mirror)): p.read_bytes() for p in mirror.rglob("*") if p.is_file()}
    keys = [k for k in server_keys(emulator, "") if not k.endswith("/")]
    assert sorted(keys) == sorted(want)
    for key in keys:
        assert server_bytes(emulator, key) == want[key], key
