"""A seeded random walk of open/write/truncate/fsync/close/rename/unlink/read over five names,
done on a --rw mount and on a local directory side by side: every call must answer the same
(result or errno) on both, and at the end the bucket must hold what the local directory
holds. It found the races in test_write_races.py; it keeps looking for others."""

from __future__ import annotations

import errno
import functools
import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from ossmount.emulator import Emulator
from tests.mount.conftest import MountFactory
from tests.mount.test_write import RW, server_bytes, server_keys

NAMES = ("a", "b", "c", "d/e", "d/f")
MiB = 1 << 20
OPEN_FLAGS = (
    os.O_RDWR | os.O_CREAT,
    os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
    os.O_RDWR | os.O_CREAT | os.O_APPEND,
    os.O_WRONLY | os.O_CREAT,
)


def _outcome(call: Callable[[], object]) -> tuple[str, object]:
    try:
        return "ok", call()
    except OSError as exc:
        return "errno", errno.errorcode.get(exc.errno or 0, exc.errno)


class Walk:
    def __init__(self, mnt: Path, ref: Path, seed: int) -> None:
        self.roots = (mnt, ref)
        self.rnd = random.Random(seed)
        self.fds: list[tuple[int, int]] = []
        self.log: list[str] = []
        for root in self.roots:
            (root / "d").mkdir(exist_ok=True)

    def same(self, what: str, call: Callable[[Path], object]) -> None:
        """`call` on the mount's path and on the local one must answer alike."""
        self._alike(what, [_outcome(functools.partial(call, root)) for root in self.roots])

    def same_fd(self, what: str, call: Callable[[int], object]) -> None:
        """`call` on one open file's two descriptors must answer alike."""
        pair = self.rnd.choice(self.fds)
        self._alike(what, [_outcome(functools.partial(call, fd)) for fd in pair])

    def _alike(self, what: str, got: list[tuple[str, object]]) -> None:
        self.log.append(what)
        assert got[0] == got[1], (got, self.log[-12:])

    def step(self) -> None:
        rnd = self.rnd
        op = rnd.choice(("open", "open", "write", "write", "write", "truncate", "ftruncate",
                         "fsync", "close", "rename", "unlink", "read"))  # fmt: skip
        name = rnd.choice(NAMES)
        if op == "open":
            flags = rnd.choice(OPEN_FLAGS)
            fds = [os.open(root / name, flags, 0o644) for root in self.roots]
            self.log.append(f"open {name} {flags:#x}")
            self.fds.append((fds[0], fds[1]))
        elif op in ("write", "ftruncate", "fsync", "close") and self.fds:
            if op == "write":
                data = rnd.randbytes(rnd.choice((1, 100, 4096, MiB + 7, 2 * MiB + 3)))
                offset = rnd.choice((0, rnd.randrange(3 * MiB)))
                self.same_fd(
                    f"pwrite {len(data)} at {offset}", lambda fd: os.pwrite(fd, data, offset)
                )
            elif op == "ftruncate":
                size = rnd.randrange(4 * MiB)
                self.same_fd(f"ftruncate {size}", lambda fd: os.ftruncate(fd, size))
            elif op == "fsync":
                self.same_fd("fsync", os.fsync)
            else:
                pair = self.fds.pop(rnd.randrange(len(self.fds)))
                self.log.append(f"close {pair}")
                for fd in pair:
                    os.close(fd)
        elif op == "truncate":
            size = rnd.randrange(4 * MiB)
            self.same(f"truncate {name} {size}", lambda r: os.truncate(r / name, size))
        elif op == "rename":
            to = rnd.choice(NAMES)
            self.same(f"rename {name} {to}", lambda r: os.rename(r / name, r / to))
        elif op == "unlink":
            self.same(f"unlink {name}", lambda r: os.unlink(r / name))
        elif op == "read":
            self.same(f"read {name}", lambda r: (r / name).read_bytes())

    def close_all(self) -> None:
        for pair in self.fds:
            for fd in pair:
                os.close(fd)
        self.fds.clear()


@pytest.mark.parametrize(
    ("seed", "writeback"), [(1, False), (2, False), (3, False), (4, True), (5, True), (6, True)]
)
def test_a_random_walk_answers_as_a_local_directory_and_leaves_its_files_in_the_bucket(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path, seed: int, writeback: bool
) -> None:
    mount = make_mount(args=(*RW, "--writeback") if writeback else RW).start()
    ref = tmp_path / "ref"
    ref.mkdir()
    walk = Walk(mount.path, ref, seed)
    try:
        for _ in range(300):
            walk.step()
    finally:
        walk.close_all()
    mount.stop()  # write-back: waits for the uploads
    local = {n: (ref / n).read_bytes() for n in NAMES if (ref / n).exists()}
    assert server_keys(emulator) - {"d/"} == set(local)
    for name, body in local.items():
        assert server_bytes(emulator, name) == body, name
