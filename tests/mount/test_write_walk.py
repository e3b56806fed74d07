"""A seeded random walk of open/write/truncate/fsync/close/rename/unlink/read over five names
(and, in the directory walk, mkdir/rmdir/rename of directories, symlinks, chmod, utime and
O_EXCL creates), done on a --rw mount and on
a local directory side by side: every call must answer the same (result or errno) on both,
and at the end the bucket must hold what the local directory holds. The one answer allowed
to differ is the documented one: a directory holding a file being written is not renamed
(EXDEV, so `mv` copies); the local directory is then left as it is. It found the races in
test_write_races.py; it keeps looking for others."""

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
from tests.mount.harness import BUCKET
from tests.mount.test_write import RW, server_bytes, server_keys

NAMES = ("a", "b", "c", "d/e", "d/f")
DIR_NAMES = ("a", "d1/b", "d1/c", "d2/b", "d1/s/e")
DIRS = ("d1", "d2", "d1/s")
MiB = 1 << 20
OPEN_FLAGS = (
    os.O_RDWR | os.O_CREAT,
    os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
    os.O_RDWR | os.O_CREAT | os.O_APPEND,
    os.O_WRONLY | os.O_CREAT,
)

APPEND_FLAGS = (os.O_WRONLY | os.O_APPEND, os.O_RDWR | os.O_APPEND)  # existing files only


def _outcome(call: Callable[[], object]) -> tuple[str, object]:
    try:
        return "ok", call()
    except OSError as exc:
        return "errno", errno.errorcode.get(exc.errno or 0, exc.errno)


def _chmod(path: Path, mode: int) -> int:
    os.chmod(path, mode)  # follows a link, as chmod(1) does
    return os.stat(path).st_mode


def _utime(path: Path, when: int) -> int:
    os.utime(path, (when, when))
    return os.stat(path).st_mtime_ns // 1_000_000_000


def _create_excl(path: Path) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))


class Walk:
    def __init__(
        self, mnt: Path, ref: Path, seed: int, *, dirs: bool = False, appends: bool = False
    ) -> None:
        self.roots = (mnt, ref)
        self.rnd = random.Random(seed)
        self.fds: list[tuple[int, int]] = []
        self.log: list[str] = []
        self.dirs = dirs
        self.appends = appends
        self.names = DIR_NAMES if dirs else NAMES
        for root in self.roots:
            (root / "d").mkdir(exist_ok=True)
        if appends:  # objects of a few parts, so appends leave their start unread
            for name in [n for n in self.names if (ref / n).parent.is_dir()]:
                data = self.rnd.randbytes(self.rnd.randrange(MiB, 5 * MiB))
                for root in self.roots:
                    (root / name).write_bytes(data)

    def same(self, what: str, call: Callable[[Path], object]) -> None:
        """`call` on the mount's path and on the local one must answer alike (the mount's
        first: its EXDEV for a directory rename leaves the local one undone)."""
        on_mount = _outcome(functools.partial(call, self.roots[0]))
        if on_mount == ("errno", "EXDEV") and what.startswith("rename dir"):
            self.log.append(f"{what}: EXDEV")
            return
        self._alike(what, [on_mount, _outcome(functools.partial(call, self.roots[1]))])

    def same_fd(self, what: str, call: Callable[[int], object]) -> None:
        """`call` on one open file's two descriptors must answer alike."""
        pair = self.rnd.choice(self.fds)
        self._alike(what, [_outcome(functools.partial(call, fd)) for fd in pair])

    def _alike(self, what: str, got: list[tuple[str, object]]) -> None:
        self.log.append(what)
        assert got[0] == got[1], (got, self.log[-12:])

    def step(self) -> None:
        rnd = self.rnd
        ops = ["open", "open", "write", "write", "write", "truncate", "ftruncate", "fsync",
               "close", "rename", "unlink", "read"]  # fmt: skip
        if self.appends:  # opens to append, and reads through them (fs/staging.py `fill`)
            ops += ["append", "append", "pread", "pread"]
        if self.dirs:
            ops += ["mkdir", "rmdir", "rename dir", "symlink", "readlink", "chmod", "utime",
                    "excl"]  # fmt: skip
        op = rnd.choice(ops)
        name = rnd.choice(self.names)
        if op == "open":
            self._open(f"open {name}", name, rnd.choice(OPEN_FLAGS))
        elif op == "append":
            self._open(f"append {name}", name, rnd.choice(APPEND_FLAGS))
        elif op == "pread" and self.fds:
            size, offset = rnd.choice((1, 4096, MiB + 3)), rnd.randrange(5 * MiB)
            self.same_fd(f"pread {size} at {offset}", lambda fd: os.pread(fd, size, offset))
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
            to = rnd.choice(self.names)
            self.same(f"rename {name} {to}", lambda r: os.rename(r / name, r / to))
        elif op == "unlink":
            self.same(f"unlink {name}", lambda r: os.unlink(r / name))
        elif op == "read":
            self.same(f"read {name}", lambda r: (r / name).read_bytes())
        elif op == "mkdir":
            path = rnd.choice(DIRS)
            self.same(f"mkdir {path}", lambda r: (r / path).mkdir())
        elif op == "rmdir":
            path = rnd.choice(DIRS)
            self.same(f"rmdir {path}", lambda r: (r / path).rmdir())
        elif op == "symlink":  # a target in the link's own directory never leaves the mount
            to = rnd.choice(("b", "c", "e"))
            self.same(f"symlink {name} -> {to}", lambda r: os.symlink(to, r / name))
        elif op == "readlink":
            self.same(f"readlink {name}", lambda r: os.readlink(r / name))
        elif op == "chmod":
            mode = rnd.choice((0o600, 0o640, 0o755))
            self.same(f"chmod {name} {mode:o}", lambda r: _chmod(r / name, mode))
        elif op == "utime":
            when = rnd.randrange(1_000_000_000, 1_700_000_000)
            self.same(f"utime {name} {when}", lambda r: _utime(r / name, when))
        elif op == "excl":
            self.same(f"O_EXCL {name}", lambda r: _create_excl(r / name))
        elif op == "rename dir":
            path, to = rnd.choice(DIRS), rnd.choice(DIRS)
            self.same(f"rename dir {path} {to}", lambda r: os.rename(r / path, r / to))

    def _open(self, what: str, name: str, flags: int) -> None:
        """Open `name` in both roots: a pair of descriptors, or the same error in both."""
        got = [_outcome(functools.partial(os.open, r / name, flags, 0o644)) for r in self.roots]
        opened = [fd for kind, fd in got if kind == "ok" and isinstance(fd, int)]
        if len(opened) == 2:
            self.fds.append((opened[0], opened[1]))
        for fd in opened if len(opened) == 1 else ():
            os.close(fd)
        self._alike(f"{what} {flags:#x}", got if len(opened) != 2 else [("ok", 0)] * 2)

    def close_all(self) -> None:
        for pair in self.fds:
            for fd in pair:
                os.close(fd)
        self.fds.clear()


def _seeds() -> list[tuple[int, bool, bool, bool]]:
    """Twelve walks in the suite, two of them the write-back seeds that found bugs in session 15
    (35: an unlink of a file re-keyed over a landed upload left it; 64: a lingering unlinked
    file took a new file's name). OSSMOUNT_WALK_SEEDS=50-110 runs seeds 50..109 in both
    modes, with and without directories, with and without appends to objects of a few parts
    (seeds 9 and 10 here), instead: the way to look wider after a change to
    the write path (about 1 s a walk)."""
    wide = os.environ.get("OSSMOUNT_WALK_SEEDS")
    if not wide:
        return [(1, False, False, False), (2, False, False, False), (3, False, False, False),
                (4, True, False, False), (5, True, False, False), (6, True, False, False),
                (7, False, True, False), (8, True, True, False), (35, True, False, False),
                (64, True, False, False), (9, False, False, True),
                (10, True, False, True)]  # fmt: skip
    first, _, last = wide.partition("-")
    return [(s, wb, dirs, appends) for s in range(int(first), int(last))
            for wb in (False, True) for dirs in (False, True)
            for appends in (False, True)]  # fmt: skip


@pytest.mark.parametrize(("seed", "writeback", "dirs", "appends"), _seeds())
def test_a_random_walk_answers_as_a_local_directory_and_leaves_its_files_in_the_bucket(
    emulator: Emulator,
    make_mount: MountFactory,
    tmp_path: Path,
    seed: int,
    writeback: bool,
    dirs: bool,
    appends: bool,
) -> None:
    mount = make_mount(args=(*RW, "--writeback") if writeback else RW).start()
    ref = tmp_path / "ref"
    ref.mkdir()
    walk = Walk(mount.path, ref, seed, dirs=dirs, appends=appends)
    try:
        for _ in range(300):
            walk.step()
    finally:
        walk.close_all()
    mount.stop()  # write-back: waits for the uploads
    entries = {p.relative_to(ref).as_posix(): p for p in ref.rglob("*") if not p.is_dir()}
    keys = {k for k in server_keys(emulator) if not k.endswith("/")}
    assert keys == set(entries)
    for name, path in entries.items():
        if path.is_symlink():
            assert emulator.head(BUCKET, name).object_type == "Symlink", name  # type: ignore[union-attr]
        else:
            assert server_bytes(emulator, name) == path.read_bytes(), name
