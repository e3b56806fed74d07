"""A write stress: several workers at once on one `--rw` mount with a small cache cap, each
doing seeded random writes, appends, patches, truncates, renames, unlinks, utimes, chmods and
reads in its own directory, and reads through up to two descriptors it keeps open across
those calls; every call mirrored on a local directory and its outcome compared; then,
optionally, `kill -9` right after the last close and a remount (recovery); then a check
through a fresh `--own-attrs` mount and the server itself: every name, byte, size, mode and
mtime must be the local directory's.

The walks (test_write_walk.py and its crash and fault forms) drive one process through one
directory, one call at a time; this drives many at once, with staged bytes competing for a cap
below what they need, which is where the faults the walks could not find were (sessions
21-22: an ENOSPC where room was coming, an ESTALE while a commit's reply was on its way, a lost
mtime; session 23: reads through descriptors held across an rm or mv failing). Four seeds
run in the suite (test_write_stress.py); run more by hand:

    .venv/bin/python -m tests.mount.stress --seeds 100-110 --writeback --kill

A failing seed prints what differed, the calls of its worker before it and the run's
directory, which is kept with the mount's log and every worker's calls; a passing one's is
removed.
"""

from __future__ import annotations

import argparse
import errno
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ossmount.emulator import Emulator
from tests.mount.harness import AK, BUCKET, SK, Mount

MiB = 1 << 20
NAMES = ("f0", "f1", "f2", "f3", "f4")
SIZES = (0, 1, 100, 4096, 300_000, MiB + 7, 2 * MiB + 3)
# A write's mtime is taken on each side a moment apart: this, plus the longest call on the
# mount (a close may wait seconds for its upload on a loaded machine, and the local call
# only starts after it).
MTIME_SLACK_S = 5


@dataclass
class Worker:
    """One worker's directory on both sides and what it did (for the report)."""

    number: int
    mnt: Path
    ref: Path
    rnd: random.Random
    log: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    # Descriptors opened for reading and kept across calls (the mount's, the local one, the
    # name opened): they must read what a local file's would, through every write, rename
    # and unlink of their file meanwhile.
    held: list[tuple[int, int, str]] = field(default_factory=list)
    slowest: float = 0.0  # the longest call on the mount, in seconds

    def both(self, what: str, call: Callable[[Path], object]) -> None:
        """`call` on the mount's directory, then on the local one; a differing outcome (an
        errno on one side only, or another one; different bytes read) is a failure."""
        started = time.monotonic()
        on_mount = _outcome(lambda: call(self.mnt))
        self.slowest = max(self.slowest, time.monotonic() - started)
        self._compare(what, on_mount, _outcome(lambda: call(self.ref)))

    def _compare(self, what: str, mount: tuple[str, object], local: tuple[str, object]) -> None:
        self.log.append(f"{what}: {_show(mount)}")
        if mount != local:
            self.failures.append(f"{self.mnt.name}: {what}: mount {_show(mount)}, "
                                 f"local {_show(local)}; after {self.log[-13:-1]}")  # fmt: skip

    def hold(self, name: str) -> None:
        fds = [_open_for_reading(self.mnt / name), _open_for_reading(self.ref / name)]
        self.log.append(f"hold {name}: " + ("ok" if isinstance(fds[0], int) else f"error {fds[0]}"))
        if isinstance(fds[0], int) and isinstance(fds[1], int):
            self.held.append((fds[0], fds[1], name))
            return
        for fd in fds:
            if isinstance(fd, int):
                os.close(fd)
        if fds[0] != fds[1]:
            self.failures.append(f"{self.mnt.name}: hold {name}: mount {fds[0]}, local {fds[1]}")

    def read_held(self) -> None:
        mfd, lfd, name = self.rnd.choice(self.held)
        size, at = self.rnd.choice((1, 4096, MiB + 3)), self.rnd.randrange(3 * MiB)
        what = f"pread {size} at {at} of {name} held"
        self._compare(what, _outcome(lambda: os.pread(mfd, size, at)),
                      _outcome(lambda: os.pread(lfd, size, at)))  # fmt: skip

    def drop_held(self) -> None:
        mfd, lfd, name = self.held.pop(self.rnd.randrange(len(self.held)))
        self._compare(f"close {name} held", _outcome(lambda: os.close(mfd)),
                      _outcome(lambda: os.close(lfd)))  # fmt: skip

    def step(self) -> None:
        rnd = self.rnd
        name = rnd.choice(NAMES)
        op = rnd.choice(("write", "write", "write", "append", "append", "patch", "patch",
                         "truncate", "rename", "rename", "unlink", "utime", "chmod", "read",
                         "read", "fsync", "hold", "held", "held"))  # fmt: skip
        if op == "hold" and len(self.held) < 2:
            self.hold(name)
        elif op in ("hold", "held") and self.held:
            (self.read_held if op == "held" and rnd.random() < 0.8 else self.drop_held)()
        elif op in ("hold", "held"):
            return
        elif op == "write":
            data = rnd.randbytes(rnd.choice(SIZES))
            self.both(f"write {name} {len(data)}", lambda d: _write(d / name, "wb", data))
        elif op == "append":
            data = rnd.randbytes(rnd.choice(SIZES[:5]))
            self.both(f"append {name} {len(data)}", lambda d: _write(d / name, "ab", data))
        elif op == "patch":
            data, at = rnd.randbytes(rnd.choice(SIZES[:5])), rnd.randrange(3 * MiB)
            self.both(f"patch {name} {len(data)} at {at}", lambda d: _patch(d / name, at, data))
        elif op == "truncate":
            size = rnd.randrange(3 * MiB)
            self.both(f"truncate {name} {size}", lambda d: os.truncate(d / name, size))
        elif op == "rename":
            to = rnd.choice(NAMES)
            self.both(f"rename {name} {to}", lambda d: os.rename(d / name, d / to))
        elif op == "unlink":
            self.both(f"unlink {name}", lambda d: os.unlink(d / name))
        elif op == "utime":
            when = rnd.randrange(1_580_000_000, 1_790_000_000)
            self.both(f"utime {name} {when}", lambda d: os.utime(d / name, (when, when)))
        elif op == "chmod":
            mode = rnd.choice((0o600, 0o640, 0o644, 0o755))
            self.both(f"chmod {name} {mode:o}", lambda d: os.chmod(d / name, mode))
        elif op == "read":
            self.both(f"read {name}", lambda d: (d / name).read_bytes())
        else:
            data, at = rnd.randbytes(rnd.choice(SIZES[:5])), rnd.randrange(MiB)
            self.both(f"fsync {name} {len(data)} at {at}",
                      lambda d: _patch(d / name, at, data, fsync=True))  # fmt: skip


def _write(path: Path, mode: str, data: bytes) -> None:
    with open(path, mode) as f:
        f.write(data)


def _patch(path: Path, at: int, data: bytes, *, fsync: bool = False) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())


def _open_for_reading(path: Path) -> int | str:
    try:
        return os.open(path, os.O_RDONLY)
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc.errno))


def _outcome(call: Callable[[], object]) -> tuple[str, object]:
    try:
        result = call()
    except OSError as exc:
        return "error", errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return "ok", result if isinstance(result, bytes) else None


def _show(outcome: tuple[str, object]) -> str:
    kind, value = outcome
    if isinstance(value, bytes):
        return f"{kind} ({len(value)} bytes)"
    return kind if value is None else f"{kind} {value}"


def run(seed: int, root: Path, *, workers: int = 6, ops: int = 60, cache_mb: int = 48,
        writeback: bool = False, kill: bool = False) -> tuple[list[str], str]:  # fmt: skip
    """One stress run under `root`: what differed (empty: the run passed), and how many
    calls succeeded and failed (alike on both sides), by kind."""
    args = ("--rw", "--part-size-mb", "1", "--max-cache-size-mb", str(cache_mb),
            "--min-free-mb", "0", *(("--writeback",) if writeback else ()))  # fmt: skip
    with Emulator(buckets=[BUCKET], access_key_id=AK, access_key_secret=SK) as emu:
        mounts = [Mount(emu, root, args=args).start()]
        try:
            crew = _crew(seed, workers, mounts[0].path, root / "ref")
            threads = [threading.Thread(target=_walk, args=(w, ops)) for w in crew]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            failures = [f for w in crew for f in w.failures]
            if kill:
                mounts[0].kill()  # right after the last close
                mounts.append(Mount(emu, root, args=args).start())  # recovers before ready
            mounts[-1].stop()
        finally:
            for mount in mounts:  # after a failure (a stopped one is left alone)
                mount.kill()
        left = [p.name for p in (root / "cache" / "staging").glob("*.data")]
        if left:
            failures.append(f"staged files left after a clean unmount: {left}")
        failures += _check(emu, root, crew)
    for worker in crew:
        if any(f.startswith(f"{worker.mnt.name}/") for f in failures):  # the check's
            failures.append(f"{worker.mnt.name}: its last calls: {worker.log[-12:]}")
        if failures:  # every call, for the post-mortem beside the mount's log
            (root / f"calls-{worker.mnt.name}.txt").write_text("\n".join(worker.log) + "\n")
    return failures, _tally(crew)


def _crew(seed: int, workers: int, mnt: Path, ref: Path) -> list[Worker]:
    crew = []
    for number in range(workers):
        name = f"w{seed:03d}{number:02d}"
        (mnt / name).mkdir()
        (ref / name).mkdir(parents=True)
        crew.append(Worker(number, mnt / name, ref / name, random.Random(seed * 1000 + number)))
    return crew


def _tally(crew: list[Worker]) -> str:
    counts: dict[str, list[int]] = {}
    for line in (line for w in crew for line in w.log):
        kind, outcome = line.split(" ", 1)[0], line.rsplit(": ", 1)[1]
        counts.setdefault(kind, [0, 0])[0 if outcome.startswith("ok") else 1] += 1
    return ", ".join(f"{k} {ok}/{ok + bad}" for k, (ok, bad) in sorted(counts.items()))


def _walk(worker: Worker, ops: int) -> None:
    try:
        for _ in range(ops):
            worker.step()
        while worker.held:
            worker.drop_held()
    except Exception as exc:  # reported, not raised in a thread
        worker.failures.append(f"{worker.mnt.name}: {exc!r}")


def _check(emu: Emulator, root: Path, crew: list[Worker]) -> list[str]:
    """Through a fresh mount (own cache, `--own-attrs` for the stored modes) and on the
    server: each worker's directory is its local one."""
    failures: list[str] = []
    slack = MTIME_SLACK_S + max(w.slowest for w in crew)
    check_root = root / "check"
    check_root.mkdir()
    mount = Mount(emu, check_root, args=("--own-attrs",)).start()
    try:
        objects = emu.store.bucket(BUCKET).objects  # type: ignore[union-attr]
        for worker in crew:
            where = worker.mnt.name
            local = {p.name: p for p in worker.ref.iterdir()}
            shown = {p.name: p for p in (mount.path / where).iterdir()}
            if set(shown) != set(local):
                failures.append(f"{where}: names {sorted(shown)} vs local {sorted(local)}")
            for name in sorted(set(shown) & set(local)):
                failures += _compare(f"{where}/{name}", shown[name], local[name],
                                     objects.get(f"{where}/{name}"), slack)  # fmt: skip
    finally:
        mount.stop()
    return failures


def _compare(what: str, shown: Path, local: Path, obj: object, slack: float) -> list[str]:
    want = local.read_bytes()
    failures = []
    if obj is None or obj.body.read(0, obj.size) != want:  # type: ignore[attr-defined]
        failures.append(f"{what}: the server's bytes are not the local file's")
    if shown.read_bytes() != want:
        failures.append(f"{what}: bytes through a fresh mount are not the local file's")
    got, ref = shown.stat(), local.stat()
    if got.st_mode & 0o777 != ref.st_mode & 0o777:
        failures.append(f"{what}: mode {got.st_mode & 0o777:o} vs {ref.st_mode & 0o777:o}")
    if abs(int(got.st_mtime) - int(ref.st_mtime)) > slack:
        failures.append(f"{what}: mtime {int(got.st_mtime)} vs {int(ref.st_mtime)} "
                        f"(slack {slack:.1f} s)")  # fmt: skip
    return failures


def _seeds(spec: str) -> list[int]:
    if "-" in spec:
        first, end = spec.split("-")
        return list(range(int(first), int(end)))
    return [int(s) for s in spec.split(",")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="1", help="5, 5,7 or 100-110 (end excluded)")
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--ops", type=int, default=60, help="calls per worker")
    parser.add_argument("--cache-mb", type=int, default=48)
    parser.add_argument("--writeback", action="store_true")
    parser.add_argument("--kill", action="store_true", help="kill -9 after the last close")
    args = parser.parse_args()
    failed = 0
    for seed in _seeds(args.seeds):
        root = Path(tempfile.mkdtemp(prefix=f"ossmount-stress-{seed}-", dir="/var/tmp"))
        started = time.monotonic()
        failures, tally = run(
            seed,
            root,
            workers=args.workers,
            ops=args.ops,
            cache_mb=args.cache_mb,
            writeback=args.writeback,
            kill=args.kill,
        )
        took = time.monotonic() - started
        if failures:
            failed += 1
            print(f"seed {seed}: FAILED in {took:.0f} s; kept {root}", flush=True)
            for failure in failures:
                print(f"  {failure}", flush=True)
        else:
            print(f"seed {seed}: OK in {took:.0f} s; calls ok/made: {tally}", flush=True)
            shutil.rmtree(root)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
