"""A crash walk: the random walk of test_write_walk.py (open/write/truncate/fsync/close/
rename/unlink/read over five names, each call compared with a local directory), on a --rw
mount with 1 MiB parts (multipart and UploadPartCopy paths run), with and without
`-o writeback`; at a seeded step the daemon is killed (`kill -9`), either between two calls
or a few milliseconds into one, and a new mount on the same cache dir must show, once
ready, every acknowledged change and nothing else.

What may the bucket hold under a name after the crash (SEMANTICS.md, "Writes")?
* A file's version is *acknowledged* when a close (FUSE flush), an fsync, or a close of any
  other descriptor of it (the walk's `read` opens and closes one) returned success while it
  had unacknowledged changes: without write-back that close/fsync returned only once the
  object was committed ("close and fsync commit"); with it, once the staged bytes and a sealed
  journal were durable ("-o writeback": "nothing whose close returned is lost"). A rename of
  a file with unacknowledged changes commits them first (fs/filesystem.py `rename`: "the copy
  must carry what was written"), so it acknowledges them too. A `truncate` by name of a file
  with no descriptor open "commits at once".
* The name of a file whose last change was acknowledged holds exactly that version, on the
  server and through the new mount. A file created and never acknowledged is absent.
  Changes made after the last acknowledgement and never closed nor fsynced are dropped
  ("Never closed nor fsynced: nothing is uploaded"): the acknowledged version stays.
* An unlink or a rename that returned success is never undone: the old name is absent (no
  write-back upload still pending for it may bring it back: "nothing deleted is brought
  back by it"), the new name holds the moved file's acknowledged version, never the file it
  replaced (whose pending upload, if any, must not land: "its close uploads nothing").
* The call the kill cut short (it returned an error, or never returned) may have happened
  or not: a cut close/fsync/read leaves the old acknowledged version or the file's bytes
  as they were when the call began ("Sealed and not committed: the upload is resumed"; a
  sync close sealed in this boot is resumed after `kill -9`); a cut unlink leaves the old
  version or nothing; a cut rename leaves, under the old name, its version or nothing, and
  under the new one, its old version or the moved file's ("Not atomic: a crash between the
  two leaves both keys"); a cut truncate leaves either size. Nothing else: no mix of two
  versions, no zeros nobody wrote, no prefix.
* After the new mount is ready: its staging dir holds no staged file or journal (every
  sealed file was committed, every other one dropped), and no multipart upload is still
  open: the sweeper aborted every one the dead daemon recorded in its ledger or had
  recorded the intent of ("An upload whose id never reached our ledger ... is found by the
  intent").
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import alibabacloud_oss_v2 as oss
import pytest

from ossmount.emulator import Emulator
from ossmount.emulator.faults import FaultRule
from tests.mount.conftest import MountFactory
from tests.mount.harness import BUCKET, Mount
from tests.mount.test_write import RW, sdk, server_bytes, server_keys
from tests.mount.test_write_walk import APPEND_FLAGS, NAMES, OPEN_FLAGS, MiB, Walk, _outcome

ABSENT = None
_numbers = itertools.count()
Version = bytes | None
MountMaker = Callable[[tuple[str, ...]], Mount]


@dataclass(eq=False)
class Ino:
    """One file of the walk: what the server may hold for it after a crash (`allowed`), and
    whether it has changes no call acknowledged yet."""

    allowed: set[Version]
    dirty: bool = False
    orphan: bool = False  # unlinked or replaced: nothing of it may reach the server again
    number: int = field(default_factory=lambda: next(_numbers))  # names it in the walk's log


@dataclass
class Kill:
    step: int
    delay: float | None  # None: between two calls; else seconds into the call at `step`


@dataclass
class Report:
    kills: int = 0
    cut: int = 0  # kills that cut a call short
    recovery_kills: int = 0  # mounts killed before they were ready (`recovery`)
    log: list[str] = field(default_factory=list)


class CrashWalk(Walk):
    """The walk of test_write_walk.py plus a model of what each name may hold on the server."""

    def __init__(self, mnt: Path, ref: Path, seed: int, *, appends: bool = False) -> None:
        super().__init__(mnt, ref, seed)
        self.appends = appends  # opens with O_APPEND and preads (objects made beforehand)
        self.at: dict[str, Ino] = {}
        self.ino_of: dict[int, Ino] = {}  # by the local descriptor
        self.cut: dict[str, set[Version]] = {}  # names a call cut by the kill left open
        self.pending: list[Callable[[int], object]] = []  # a descriptor call (`_fd_op`)
        self.pair = (-1, -1)  # the descriptors it is made on: the mount's, the local one

    # -- the model --------------------------------------------------------------------------

    def allowed(self, name: str) -> set[Version]:
        if name in self.cut:
            return self.cut[name]
        ino = self.at.get(name)
        return {ABSENT} if ino is None else ino.allowed

    def _now(self, ino: Ino, fd: int | None = None, name: str | None = None) -> bytes:
        if fd is None:
            assert name is not None
            return (self.roots[1] / name).read_bytes()
        return Path(f"/proc/self/fd/{fd}").read_bytes()  # opened write-only, maybe unlinked

    def _acked(self, ino: Ino, now: bytes) -> None:
        if ino.dirty and not ino.orphan:
            ino.allowed, ino.dirty = {now}, False

    def _maybe(self, ino: Ino, now: bytes) -> None:
        if ino.dirty and not ino.orphan:
            ino.allowed = ino.allowed | {now}

    def _open_fds(self, ino: Ino) -> bool:
        return any(i is ino for i in self.ino_of.values())

    # -- one step ---------------------------------------------------------------------------

    def step_ops(self) -> tuple[str, Callable[[Path], object] | None, Callable[[bool], None]]:
        """The next call: its name, the call on a root (None: on the descriptor pair already
        done), and what its success (True) or being cut short (False) means for the model."""
        rnd = self.rnd
        ops = ["open", "open", "write", "write", "write", "truncate", "ftruncate", "fsync",
               "close", "rename", "unlink", "read"]  # fmt: skip
        if self.appends:
            ops += ["append", "append", "pread"]
        op = rnd.choice(ops)
        name = rnd.choice(self.names)
        if op in ("write", "ftruncate", "fsync", "close", "pread"):
            if not self.fds:
                op = "open"
            else:
                return self._fd_op(op)
        if op in ("open", "append"):
            flags = rnd.choice(OPEN_FLAGS if op == "open" else APPEND_FLAGS)
            return (
                f"open {name} {flags:#x}",
                lambda r: os.open(r / name, flags, 0o644),
                (lambda ok: self._opened(name, flags)),
            )
        if op == "truncate":
            size = rnd.randrange(4 * MiB)

            def truncated(ok: bool) -> None:
                ino = self.at[name]
                ino.dirty = True
                if self._open_fds(ino):
                    return
                (self._acked if ok else self._maybe)(ino, self._now(ino, name=name))

            return f"truncate {name} {size}", lambda r: os.truncate(r / name, size), truncated
        if op == "rename":
            to = rnd.choice(self.names)
            before = self._before_rename(name)
            return (
                f"rename {name} {to}",
                lambda r: os.rename(r / name, r / to),
                (lambda ok: self._renamed(name, to, before, ok)),
            )
        if op == "unlink":

            def unlinked(ok: bool) -> None:
                if not ok:
                    self.cut[name] = self.allowed(name) | {ABSENT}
                self.at.pop(name).orphan = True

            return f"unlink {name}", lambda r: os.unlink(r / name), unlinked

        def read(ok: bool) -> None:
            ino = self.at[name]
            (self._acked if ok else self._maybe)(ino, self._now(ino, name=name))

        return f"read {name}", lambda r: (r / name).read_bytes(), read

    def _fd_op(self, op: str) -> tuple[str, None, Callable[[bool], None]]:
        rnd = self.rnd
        index = rnd.randrange(len(self.fds))
        pair = self.fds[index]
        ino = self.ino_of[pair[1]]
        if op == "write":
            data = rnd.randbytes(rnd.choice((1, 100, 4096, MiB + 7, 2 * MiB + 3)))
            offset = rnd.choice((0, rnd.randrange(3 * MiB)))
            self.pending = [lambda fd: os.pwrite(fd, data, offset)]
            what = f"pwrite {len(data)} at {offset}"
        elif op == "ftruncate":
            size = rnd.randrange(4 * MiB)
            self.pending = [lambda fd: os.ftruncate(fd, size)]
            what = f"ftruncate {size}"
        elif op == "fsync":
            self.pending = [os.fsync]
            what = "fsync"
        elif op == "pread":
            size, offset = rnd.choice((1, 4096, MiB + 3)), rnd.randrange(5 * MiB)
            self.pending = [lambda fd: os.pread(fd, size, offset)]
            what = f"pread {size} at {offset}"
        else:
            self.fds.pop(index)
            del self.ino_of[pair[1]]
            self.pending = [os.close]
            what = f"close {pair}"
        self.pair = pair
        what += f" #{ino.number}"
        now = self._now(ino, pair[1]) if op == "close" else b""

        def done(ok: bool) -> None:
            if op == "pread":
                return
            if op in ("write", "ftruncate"):
                ino.dirty = True
            elif op == "fsync":
                after = self._now(ino, pair[1])
                (self._acked if ok else self._maybe)(ino, after)
            else:
                (self._acked if ok else self._maybe)(ino, now)

        return what, None, done

    def _opened(self, name: str, flags: int) -> None:
        ino = self.at.get(name)
        if ino is None:
            ino = self.at[name] = Ino({ABSENT}, dirty=True)  # a create: dirty until closed
        elif flags & os.O_TRUNC:
            ino.dirty = True
        self.ino_of[self.fds[-1][1]] = ino
        self.log[-1] += f" #{ino.number}"

    def _before_rename(self, name: str) -> bytes | None:
        ino = self.at.get(name)
        return None if ino is None else self._now(ino, name=name)

    def _renamed(self, name: str, to: str, before: bytes | None, ok: bool) -> None:
        ino = self.at[name]
        if name == to:
            return
        if ok:
            if before is not None:
                self._acked(ino, before)  # committed first: the copy carries it
            victim = self.at.get(to)
            if victim is not None and victim is not ino:
                victim.orphan = True
            self.at[to] = self.at.pop(name)
            return
        moved = ino.allowed | ({before} if ino.dirty else set())
        self.cut[name] = moved | {ABSENT}
        self.cut[to] = self.allowed(to) | moved
        victim = self.at.pop(to, None)
        if victim is not None:
            victim.orphan = True
        self.at[to] = self.at.pop(name)
        ino.dirty = False

    def step(self, killer: Callable[[], None] | None = None) -> bool:
        """One call, compared on both roots; with `killer`, started just before the mount's
        call, which may then fail (the crash), and the local one is made anyway. Whether the
        mount's call succeeded."""
        what, call, done = self.step_ops()
        if call is None:
            mount_call = lambda: self.pending[0](self.pair[0])  # noqa: E731
            local_call = lambda: self.pending[0](self.pair[1])  # noqa: E731
        else:
            mount_call = lambda: call(self.roots[0])  # noqa: E731
            local_call = lambda: call(self.roots[1])  # noqa: E731
        if killer is not None:
            killer()
        got = [_outcome(mount_call), _outcome(local_call)]
        opened = self.keep_opened(what, got)
        if killer is None:
            self.compare(what, got)
        else:
            self.log.append(f"{what} (the kill: {got[0]})")
        if got[1][0] == "ok" and (killer is None or got[0][0] == "ok" or not opened):
            done(got[0][0] == "ok")
        return got[0][0] == "ok"

    def keep_opened(self, what: str, got: list[tuple[str, object]]) -> bool:
        """Whether the call was an open: one that opened on both roots keeps its descriptor
        pair; one that opened on a single root closes that descriptor."""
        if not what.startswith("open "):
            return False
        fds = [fd for kind, fd in got if kind == "ok" and isinstance(fd, int)]
        if len(fds) == 2:
            self.fds.append((fds[0], fds[1]))
        else:
            for fd in fds:
                _close_quietly(fd)
        return True

    def compare(self, what: str, got: list[tuple[str, object]]) -> None:
        """The call answered alike on both roots (two opens' descriptors are not compared)."""
        opened_both = what.startswith("open ") and got[0][0] == got[1][0] == "ok"
        self._alike(what, got if not opened_both else [("ok", 0)] * 2)

    def forget_fds(self) -> None:
        for mfd, rfd in self.fds:
            _close_quietly(mfd)
            _close_quietly(rfd)
        self.fds.clear()
        self.ino_of.clear()


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def _open_uploads(emu: Emulator) -> list[tuple[str, str]]:
    got = sdk(emu).list_multipart_uploads(oss.ListMultipartUploadsRequest(bucket=BUCKET))
    return [(u.key or "", u.upload_id or "") for u in got.uploads or []]


def _server(emu: Emulator, name: str, keys: set[str]) -> Version:
    return server_bytes(emu, name) if name in keys else ABSENT


def _show(v: Version) -> str:
    return "absent" if v is None else f"{len(v)} bytes {v[:8]!r}…"


def check_after_crash(emu: Emulator, mount: Mount, walk: CrashWalk, where: str) -> None:
    """The new mount is ready: what it and the bucket hold is what the model allows."""
    staging = mount.cache / "staging"
    left = sorted(p.name for p in staging.iterdir() if p.suffix in (".data", ".journal"))
    assert not left, f"{where}: staged files left after the remount: {left}\n{walk.log[-25:]}"
    assert not _open_uploads(emu), f"{where}: multipart uploads left open"
    keys = server_keys(emu)
    assert keys <= {*NAMES, "d/"}, f"{where}: unexpected keys {keys - {*NAMES, 'd/'}}"
    for name in NAMES:
        got = _server(emu, name, keys)
        allowed = walk.allowed(name)
        assert got in allowed, (
            f"{where}: {name} on the server is {_show(got)}, allowed "
            f"{[_show(v) for v in allowed]}; last calls {walk.log[-25:]}"
        )
        try:
            seen: Version = (mount.path / name).read_bytes()
        except FileNotFoundError:
            seen = ABSENT
        assert seen == got, f"{where}: {name} through the new mount is {_show(seen)}, " \
                            f"on the server {_show(got)}"  # fmt: skip


def _reset(walk: CrashWalk, emu: Emulator) -> None:
    """After a checked crash the walk goes on from what the bucket holds."""
    keys = server_keys(emu)
    ref = walk.roots[1]
    walk.at.clear()
    walk.cut.clear()
    for name in NAMES:
        if name in keys:
            data = server_bytes(emu, name)
            (ref / name).write_bytes(data)
            walk.at[name] = Ino({data})
        else:
            (ref / name).unlink(missing_ok=True)


def crash_walk(
    emu: Emulator, make: MountMaker, ref: Path, seed: int, *, writeback: bool,
    kills: int = 1, steps: int = 60, recovery: bool = False, appends: bool = False,
) -> Report:  # fmt: skip
    """`kills` times: walk up to `steps` calls, kill -9 the daemon at a seeded one, remount on
    the same cache dir and check (module docstring). With `recovery`, half the remounts are
    first killed too, while they resume the uploads (`_kill_in_recovery`): the next must
    still converge to the same state. With `appends`, objects of a few parts are on the
    server first, and the walk also opens them with O_APPEND (their start stays unread:
    fs/staging.py `fill`) and preads. Raises AssertionError naming the seed."""
    args = (*RW, "--writeback") if writeback else RW
    plan = random.Random(seed * 7919 + writeback)
    report = Report()
    made = _objects(emu, ref, random.Random(seed)) if appends else {}
    mount = make(args).start()
    walk = CrashWalk(mount.path, ref, seed, appends=appends)
    walk.at.update((name, Ino({data})) for name, data in made.items())
    try:
        _rounds(emu, make, args, plan, walk, mount, report, seed, kills, steps, recovery)
    except AssertionError as exc:
        exc.add_note("the whole walk:\n  " + "\n  ".join(walk.log))
        raise
    report.log = walk.log
    return report


def _objects(emu: Emulator, ref: Path, rnd: random.Random) -> dict[str, bytes]:
    """An object of 1-5 MiB under each name (not under a directory, which the walk makes),
    and the same file in the local directory."""
    made = {name: rnd.randbytes(rnd.randrange(MiB, 5 * MiB)) for name in NAMES if "/" not in name}
    for name, data in made.items():
        emu.put_object(BUCKET, name, data)
        (ref / name).write_bytes(data)
    return made


def _keep_log(mount: Mount, what: str) -> None:
    """The next mount writes its own log: keep the dead one's."""
    if mount.log_path.exists():
        mount.log_path.rename(mount.log_path.with_suffix(f".{what}.log"))


def _kill_in_recovery(
    emu: Emulator, make: MountMaker, args: tuple[str, ...], plan: random.Random, report: Report
) -> None:
    """Mount with every request slowed down, and kill -9 it at a seeded moment of its
    start, most often while it resumes the uploads the crash left."""
    slow = FaultRule("latency", seconds=0.1, times=None)
    emu.faults.add(slow)
    doomed = make(args)

    def kill() -> None:
        proc = doomed.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)

    timer = threading.Timer(plan.uniform(0.3, 2.0), kill)
    timer.start()
    try:
        doomed.start()
    except AssertionError:
        report.recovery_kills += 1  # before it was ready
    timer.join()
    doomed.kill()
    subprocess.run(["fusermount3", "-u", "-z", str(doomed.path)], check=False,
                   capture_output=True)  # fmt: skip
    emu.faults.clear()


def _rounds(
    emu: Emulator, make: MountMaker, args: tuple[str, ...], plan: random.Random,
    walk: CrashWalk, mount: Mount, report: Report, seed: int, kills: int, steps: int,
    recovery: bool,
) -> None:  # fmt: skip
    writeback = "--writeback" in args
    for round_ in range(kills):
        kill = Kill(plan.randrange(steps), plan.choice((None, plan.uniform(0, 0.04))))
        where = f"seed {seed} {'writeback' if writeback else 'sync'} kill {round_} at {kill}"
        for _ in range(kill.step):
            walk.step()
        if kill.delay is None:
            mount.kill()
        else:
            timer = threading.Timer(kill.delay, mount.kill)
            ok = walk.step(killer=timer.start)
            timer.join()
            report.cut += not ok
        report.kills += 1
        walk.forget_fds()
        subprocess.run(["fusermount3", "-u", "-z", str(mount.path)], check=False,
                       capture_output=True)  # fmt: skip
        _keep_log(mount, f"killed{round_}")
        if recovery and plan.random() < 0.5:
            _kill_in_recovery(emu, make, args, plan, report)
            _keep_log(mount, f"killed{round_}-in-recovery")
        mount = make(args).start()  # ready once the staged files are committed
        walk.roots = (mount.path, walk.roots[1])
        check_after_crash(emu, mount, walk, where)
        _reset(walk, emu)
        walk.log.append(f"-- remounted after kill {round_}")
    mount.stop()


def _seeds() -> list[tuple[int, bool, bool, bool]]:
    """Six walks in the suite, two with appends; OSSMOUNT_CRASHWALK_SEEDS=100-300 runs seeds
    100..299 in both modes instead (every other one with kills in recovery, every third one
    with appends), the way to look wider after a change to the write path (about 7 s a
    walk)."""
    wide = os.environ.get("OSSMOUNT_CRASHWALK_SEEDS")
    if not wide:
        return [(1, False, False, False), (2, False, True, False), (9, True, False, False),
                (18, True, True, False), (3, False, False, True),
                (4, True, True, True)]  # fmt: skip
    first, _, last = wide.partition("-")
    return [(s, wb, s % 2 == 0, s % 3 == 0) for s in range(int(first), int(last))
            for wb in (False, True)]  # fmt: skip


@pytest.mark.parametrize(("seed", "writeback", "recovery", "appends"), _seeds())
def test_a_kill_9_anywhere_in_a_write_walk_loses_nothing_acknowledged_and_undoes_nothing(
    emulator: Emulator,
    make_mount: MountFactory,
    tmp_path: Path,
    seed: int,
    writeback: bool,
    recovery: bool,
    appends: bool,
) -> None:
    ref = tmp_path / "ref"
    ref.mkdir()
    crash_walk(emulator, lambda args: make_mount(args=args), ref, seed, writeback=writeback,
               kills=2, steps=40, recovery=recovery, appends=appends)  # fmt: skip
