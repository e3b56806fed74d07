"""The long tail of what real programs do on a `--rw` mount, each compared with what a local
directory does: editors' save patterns, git, sqlite3, patching tools, rsync variants, odd names.

Every test runs the tool on the mount (and, where the outcome is not obvious, the same steps in
a local directory under tmp_path), then unmounts, mounts the same bucket afresh and checks what
that fresh mount and the server hold, and that nothing is left behind: no staged file or
journal in `<cache>/staging`, no multipart upload open. A tool the machine lacks fails the test
(never a skip): these are the programs users run daily.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import alibabacloud_oss_v2 as oss
import pytest

from ossmount.emulator import Emulator
from ossmount.emulator.faults import FaultRule
from tests.mount.conftest import MountFactory
from tests.mount.harness import BUCKET, Mount
from tests.mount.test_write import RW, errno_of, sdk, server_bytes, server_keys

Snapshot = dict[str, tuple[str, bytes]]
MiB = 1024 * 1024
WB = (*RW, "--writeback")
# Editors, git and sqlite run on both kinds of mount: close waiting for the upload, and
# write-back (close returns first; what stat shows must not change when the upload lands).
BOTH = pytest.mark.parametrize("args", [RW, WB], ids=["sync", "writeback"])


def need(tool: str) -> str:
    found = shutil.which(tool)
    if found is None:
        pytest.fail(f"{tool} is not installed on this machine: install it to run this test")
    return found


def run(args: list[str], cwd: Path | None = None, **kw: object) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{args} exited {done.returncode}: {done.stderr}{done.stdout}"
    return str(done.stdout)


def snapshot(root: Path) -> Snapshot:
    """Every entry under root: its type and bytes (a link: its target)."""
    out: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                out[rel] = ("link", os.readlink(path).encode())
            elif stat.S_ISDIR(mode):
                out[rel] = ("dir", b"")
            else:
                out[rel] = ("file", path.read_bytes())
    return out


def open_uploads(emu: Emulator) -> list[tuple[str, str]]:
    got = sdk(emu).list_multipart_uploads(oss.ListMultipartUploadsRequest(bucket=BUCKET))
    return [(u.key or "", u.upload_id or "") for u in got.uploads or []]


def meta(emu: Emulator, key: str) -> dict[str, str]:
    head = sdk(emu).head_object(oss.HeadObjectRequest(bucket=BUCKET, key=key))
    return dict(head.metadata or {})


def write_fsynced(path: Path, text: str) -> None:
    """What an editor's or an atomic save's write is: the bytes, then fsync, then close."""
    with open(path, "w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())


def fresh(make_mount: MountFactory, mount: Mount, args: tuple[str, ...] = RW) -> Mount:
    """Unmount, check nothing was left behind, and mount the same bucket (same cache) again."""
    mount.stop()
    staging = mount.cache / "staging"
    left = sorted(p.name for p in staging.iterdir() if p.suffix in (".data", ".journal"))
    assert not left, f"staged files left after unmount: {left}"
    assert not open_uploads(mount.emulator), "multipart uploads left open"
    again = make_mount(args=args).start()
    left = sorted(p.name for p in staging.iterdir() if p.suffix in (".data", ".journal"))
    assert not left, f"staged files left after remount: {left}"
    return again


def both(tmp_path: Path, mount: Mount, steps: Callable[[Path], None]) -> Snapshot:
    """Run steps in a local directory and in the mount; return the local result."""
    local = tmp_path / "local"
    local.mkdir()
    steps(local)
    steps(mount.path)
    return snapshot(local)


# --- editors ------------------------------------------------------------------------------


@BOTH
def test_vim_saves_with_swap_and_backup_by_rename(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path, args: tuple[str, ...]
) -> None:
    """Under write-back, vim used to refuse its save ("The file has been changed since
    reading it!!!"; in -es mode it then exits 0 having written nothing): the file it had
    read was closed moments before, and its mtime became the Last-Modified when the upload
    landed."""
    vim = need("vim")
    mount = make_mount(args=args).start()

    def steps(root: Path) -> None:
        (root / "notes.txt").write_text("alpha\nbeta\n")
        # writebackup by rename (backupcopy=no): notes.txt -> notes.txt~, write anew, fsync,
        # delete the backup; the swap file .notes.txt.swp lives beside it meanwhile.
        keep = "writebackup swapfile directory=. backupskip="  # default: skip /tmp/*
        for opts, edit in (
            (f"set nobackup backupcopy=no {keep}", "%s/alpha/ALPHA/"),
            (f"set nobackup backupcopy=yes {keep}", "$put ='gamma'"),
            (f"set backup backupcopy=no {keep}", "%s/beta/BETA/"),
        ):  # the last keeps its backup notes.txt~
            cmd = [vim, "-Nu", "NONE", "-i", "NONE", "-es", "-c", opts, "-c", edit, "-c", "wq"]
            run([*cmd, "notes.txt"], cwd=root)

    expected = both(tmp_path, mount, steps)
    assert expected["notes.txt"] == ("file", b"ALPHA\nBETA\ngamma\n")
    assert expected["notes.txt~"] == ("file", b"ALPHA\nbeta\ngamma\n")
    mount = fresh(make_mount, mount, args)
    assert snapshot(mount.path) == expected
    assert server_keys(emulator) == {"notes.txt", "notes.txt~"}  # no swap file left
    renames = [r.key for r in emulator.requests if r.op == "CopyObject"]
    # Under write-back the first save renames a file whose upload is still held back: its
    # journal is re-sealed under the new name, no copy (fs/writeback.py `rekey`).
    copies = 1 if "--writeback" in args else 2
    assert renames.count("notes.txt~") >= copies, "backupcopy=no saves rename the file away"


@BOTH
def test_sed_i_and_an_emacs_style_save(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path, args: tuple[str, ...]
) -> None:
    mount = make_mount(args=args).start()

    def steps(root: Path) -> None:
        (root / "conf").write_text("a=1\nb=2\n")
        run(["sed", "-i", "s/a=1/a=10/", "conf"], cwd=root)
        run(["sed", "-i.bak", "s/b=2/b=20/", "conf"], cwd=root)
        # emacs: lock symlink .#f -> user@host.pid, autosave #f#, backup f~ by rename,
        # write the new file, drop the autosave and the lock
        (root / "f").write_text("old\n")
        os.symlink("root@host.1234:1700000000", root / ".#f")
        (root / "#f#").write_text("autosave\n")
        os.rename(root / "f", root / "f~")
        write_fsynced(root / "f", "new\n")
        os.unlink(root / "#f#")
        os.unlink(root / ".#f")

    expected = both(tmp_path, mount, steps)
    assert expected["conf"] == ("file", b"a=10\nb=20\n")
    mount = fresh(make_mount, mount, args)
    assert snapshot(mount.path) == expected
    assert server_bytes(emulator, "conf.bak") == b"a=10\nb=2\n"


@BOTH
def test_atomic_save_with_os_replace_and_directory_fsync(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path, args: tuple[str, ...]
) -> None:
    mount = make_mount(args=args).start()

    def steps(root: Path) -> None:
        (root / "state.json").write_text('{"v": 0}')
        for v in range(1, 4):
            tmp = root / f".state.json.tmp{v}"
            write_fsynced(tmp, f'{{"v": {v}}}')
            os.replace(tmp, root / "state.json")
            dfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    expected = both(tmp_path, mount, steps)
    mount = fresh(make_mount, mount, args)
    assert snapshot(mount.path) == expected
    assert server_bytes(emulator, "state.json") == b'{"v": 3}'


def test_install_m_and_cp_backup_numbered(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    mount = make_mount(args=RW).start()
    src = tmp_path / "tool.sh"
    src.write_text("#!/bin/sh\necho hi\n")

    def steps(root: Path) -> None:
        run(["install", "-m", "0755", str(src), str(root / "tool")])
        run(["install", "-d", "-m", "0750", str(root / "bin")])
        for i in range(3):
            src.write_text(f"v{i}\n")
            run(["cp", "--backup=numbered", str(src), str(root / "cfg")])
        src.write_text("#!/bin/sh\necho hi\n")

    expected = both(tmp_path, mount, steps)
    assert {k for k in expected if k.startswith("cfg")} == {"cfg", "cfg.~1~", "cfg.~2~"}
    assert stat.S_IMODE((mount.path / "tool").stat().st_mode) == 0o755
    assert run([str(mount.path / "tool")]) == "hi\n"
    mount = fresh(make_mount, mount)
    assert snapshot(mount.path) == expected
    assert int(meta(emulator, "tool")["mode"]) == 0o100755
    assert run([str(mount.path / "tool")]) == "hi\n", "the cache dir kept what it stored"
    mount.stop()
    # the mode is on the server, but a mount with another cache dir (another machine) shows
    # the default, 0666 less umask (SEMANTICS.md: Attributes; a HEAD per listed file would
    # cost too much): the script does not run there
    elsewhere = ("--cache-dir", str(tmp_path / "elsewhere"))
    mount = make_mount(args=(*RW, *elsewhere)).start()
    assert errno_of(lambda: subprocess.run([str(mount.path / "tool")])) == errno.EACCES
    assert int(meta(emulator, "bin/")["mode"]) & 0o7777 == 0o750
    # --file-mode 755 shows listed files executable: the script runs again
    mount = fresh(make_mount, mount, (*RW, *elsewhere, "--file-mode", "755"))
    assert stat.S_IMODE((mount.path / "tool").stat().st_mode) == 0o755
    assert run([str(mount.path / "tool")]) == "hi\n"
    mount.stop()
    ro = make_mount(args=(*elsewhere, "--file-mode", "775")).start()
    assert stat.S_IMODE((ro.path / "cfg").stat().st_mode) == 0o555, "no write bit, less umask"


# --- git ------------------------------------------------------------------------------------


def git(root: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
        "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(root.parent),
    }
    return run([need("git"), "-c", "init.defaultBranch=main", *args], cwd=root, env=env)


@BOTH
def test_git_init_commit_checkout_gc_and_a_stable_status(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path, args: tuple[str, ...]
) -> None:
    need("git")
    mount = make_mount(args=args).start()
    repo = mount.path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    for i in range(20):
        (repo / f"src{i % 4}").mkdir(exist_ok=True)
        (repo / f"src{i % 4}" / f"m{i}.py").write_text(f"x = {i}\n" * (i + 1))
    (repo / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(repo / "run.sh", 0o755)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "first")
    git(repo, "checkout", "-qb", "topic")
    (repo / "src0" / "m0.py").write_text("changed\n")
    git(repo, "mv", "src1", "lib")
    git(repo, "commit", "-qam", "second")
    git(repo, "checkout", "-q", "main")
    assert (repo / "src0" / "m0.py").read_text() == "x = 0\n"
    assert (repo / "src1").is_dir()
    assert not (repo / "lib").exists()
    git(repo, "gc", "-q")
    assert git(repo, "status", "--porcelain") == ""
    assert git(repo, "status", "--porcelain") == ""
    head = git(repo, "rev-parse", "HEAD", "topic")
    mount = fresh(make_mount, mount, args)
    repo = mount.path / "repo"
    assert git(repo, "rev-parse", "HEAD", "topic") == head
    git(repo, "fsck", "--strict")
    git(repo, "checkout", "-q", "topic")
    assert (repo / "src0" / "m0.py").read_text() == "changed\n"
    assert (repo / "lib" / "m1.py").read_text() == "x = 1\n" * 2
    # the cache dir kept every mode and time the mount stored: git sees nothing changed
    assert git(repo, "status", "--porcelain") == ""
    mount.stop()
    # a mount with another cache dir (another machine) shows the default modes (SEMANTICS:
    # Attributes), so git sees run.sh's mode change unless core.fileMode is off; the bytes
    # are all the same
    mount = make_mount(args=(*args, "--cache-dir", str(tmp_path / "elsewhere"))).start()
    repo = mount.path / "repo"
    assert git(repo, "status", "--porcelain") == " M run.sh\n"
    assert git(repo, "-c", "core.fileMode=false", "status", "--porcelain") == ""
    assert not [k for k in server_keys(emulator) if k.endswith(".lock")]


# --- sqlite ---------------------------------------------------------------------------------


def _fill(db: Path, journal: str) -> None:
    con = sqlite3.connect(db)
    try:
        con.execute(f"PRAGMA journal_mode={journal}")
        con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        for batch in range(10):
            with con:
                con.executemany(
                    "INSERT INTO t (v) VALUES (?)", [(f"row {batch}-{i}" * 5,) for i in range(100)]
                )
    finally:
        con.close()


def _count(db: Path) -> tuple[int, str]:
    con = sqlite3.connect(db)
    try:
        (n,) = con.execute("SELECT count(*) FROM t").fetchone()
        (ok,) = con.execute("PRAGMA integrity_check").fetchone()
        return n, ok
    finally:
        con.close()


@BOTH
@pytest.mark.parametrize("journal", ["DELETE", "WAL"])
def test_sqlite_with_each_journal_mode(
    emulator: Emulator, make_mount: MountFactory, args: tuple[str, ...], journal: str
) -> None:
    mount = make_mount(args=args).start()
    _fill(mount.path / "a.db", journal)
    assert _count(mount.path / "a.db") == (1000, "ok")
    mount = fresh(make_mount, mount, args)
    assert _count(mount.path / "a.db") == (1000, "ok")
    assert server_keys(emulator) == {"a.db"}, "the journal or WAL is gone with its last close"


_SQL_WRITER = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], timeout=30)
for i in range(50):
    with con:
        con.execute("INSERT INTO t (who, n) VALUES (?, ?)", (sys.argv[2], i))
con.close()
"""


def test_sqlite_with_two_writing_processes(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    """Two processes writing one database take turns through its fcntl locks (the kernel's,
    on this mount) and both write into the one staged file."""
    mount = make_mount(args=RW).start()
    db = mount.path / "two.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (who TEXT, n INT)")
    con.commit()
    con.close()
    writers = [subprocess.Popen([sys.executable, "-c", _SQL_WRITER, str(db), w]) for w in "AB"]
    assert [w.wait() for w in writers] == [0, 0]
    mount = fresh(make_mount, mount)
    con = sqlite3.connect(mount.path / "two.db")
    try:
        rows = con.execute("SELECT who, count(*) FROM t GROUP BY who ORDER BY who").fetchall()
        assert rows == [("A", 50), ("B", 50)]
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        con.close()


# --- patching, sizes, appends, locks --------------------------------------------------------


def test_dd_notrunc_truncate_and_fallocate(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    mount = make_mount(args=RW).start()
    blob = os.urandom(300_000)

    def steps(root: Path) -> None:
        (root / "img").write_bytes(blob)
        patch = tmp_path / "patch"
        patch.write_bytes(b"P" * 1000)
        run(["dd", f"if={patch}", f"of={root / 'img'}", "bs=1000", "seek=7", "conv=notrunc",
             "status=none"])  # fmt: skip
        run(["truncate", "-s", "400K", str(root / "img")])
        run(["truncate", "-s", "-100K", str(root / "img")])
        run(["truncate", "-s", "10", str(root / "small")])
        fd = os.open(root / "pre", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.posix_fallocate(fd, 0, 64 * 1024)  # glibc writes zeros where fallocate fails
        finally:
            os.close(fd)

    expected = both(tmp_path, mount, steps)
    # fallocate(2) itself: pyfuse3 (3.5) has no FALLOCATE operation, so the kernel answers
    # EOPNOTSUPP (SEMANTICS.md: Writes); `fallocate -l` says so and creates an empty file.
    fallocate = subprocess.run(["fallocate", "-l", "64K", str(mount.path / "fa")],
                               capture_output=True, text=True)  # fmt: skip
    assert fallocate.returncode == 1
    assert "Operation not supported" in fallocate.stderr
    assert (mount.path / "fa").stat().st_size == 0
    expected["fa"] = ("file", b"")
    mount = fresh(make_mount, mount)
    assert snapshot(mount.path) == expected
    assert len(server_bytes(emulator, "img")) == 300 * 1024


@BOTH
def test_appends_from_two_processes_and_o_append(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path, args: tuple[str, ...]
) -> None:
    mount = make_mount(args=args).start()
    log = mount.path / "log"
    log.write_text("start\n")
    code = (
        "import sys\n"
        "with open(sys.argv[1], 'a+') as f:\n"
        "    for i in range(50):\n"
        "        f.write(f'{sys.argv[2]} {i}\\n'); f.flush()\n"
    )
    procs = [
        subprocess.Popen([shutil.which("python3") or "python3", "-c", code, str(log), tag])
        for tag in ("A", "B")
    ]
    assert [p.wait() for p in procs] == [0, 0]
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"end\n")
    os.close(fd)
    lines = log.read_text().splitlines()
    mount = fresh(make_mount, mount, args)
    got = (mount.path / "log").read_text().splitlines()
    assert got == lines
    assert got[0] == "start"
    assert got[-1] == "end"
    assert sorted(got[1:-1]) == sorted(f"{t} {i}" for t in "AB" for i in range(50))


APPEND = "import sys\nwith open(sys.argv[1], 'a+') as f:\n    f.write(sys.argv[2])\n"


def test_an_append_opened_while_another_open_stages_the_object_lands_after_its_bytes(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    """The second `open('a+')` of an object used to join the staged file while the first
    open was still copying the object into it: its stat showed 0 bytes, its append went to
    offset 0 and the copy then overwrote it (the 'start' line or an append lost)."""
    emulator.put_object(BUCKET, "log", b"start\n")
    mount = make_mount(args=RW).start()
    slow = FaultRule("stall", op="GetObject", key="log", seconds=1.0)
    emulator.faults.add(slow)
    python = sys.executable
    first = subprocess.Popen([python, "-c", APPEND, str(mount.path / "log"), "A\n"])
    deadline = time.monotonic() + 20
    while not slow.seen:  # the first open is staging the object, its GET held back
        assert first.poll() is None, "the first append ended before its GET came"
        assert time.monotonic() < deadline, "no GET of log came"
        time.sleep(0.01)
    second = subprocess.Popen([python, "-c", APPEND, str(mount.path / "log"), "B\n"])
    assert (first.wait(), second.wait()) == (0, 0)
    mount = fresh(make_mount, mount)
    assert (mount.path / "log").read_bytes() in (b"start\nA\nB\n", b"start\nB\nA\n")


def _close(fd: int, start: threading.Barrier, failures: list[OSError]) -> None:
    start.wait()
    try:
        os.close(fd)
    except OSError as exc:
        failures.append(exc)


def test_two_closes_of_one_file_at_once_under_writeback_both_succeed(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    """Two descriptors of one file closed at the same moment (two appenders ending) each
    sealed the file under write-back, in two threads writing the same temporary journal: one
    rename failed and that close answered EIO (1 run in ~15 of the two appenders above)."""
    mount = make_mount(args=WB).start()
    failures: list[OSError] = []
    for n in range(20):
        path = mount.path / f"f{n}"
        fds = [os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) for _ in range(2)]
        for i, fd in enumerate(fds):
            os.write(fd, b"%d\n" % i)
        start = threading.Barrier(2)
        threads = [threading.Thread(target=_close, args=(fd, start, failures)) for fd in fds]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not failures
    mount = fresh(make_mount, mount, WB)
    for n in range(20):
        assert (mount.path / f"f{n}").read_bytes() == b"0\n1\n"


def test_flock_and_fcntl_locks(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    mount = make_mount(args=RW).start()
    target = mount.path / "locked"
    target.write_text("x")
    run(["flock", str(target), "true"])
    with open(target, "r+") as first, open(target, "r+") as second:
        fcntl.flock(first, fcntl.LOCK_EX)
        assert errno_of(lambda: fcntl.flock(second, fcntl.LOCK_EX | fcntl.LOCK_NB)) in (
            errno.EWOULDBLOCK,
        )
        fcntl.flock(first, fcntl.LOCK_UN)
        fcntl.flock(second, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(second, fcntl.LOCK_UN)
        fcntl.lockf(first, fcntl.LOCK_EX)
        fcntl.lockf(first, fcntl.LOCK_UN)
    # flock(1) holding the lock while `cat` waits on a pipe the test closes (no sleep)
    held = subprocess.Popen(["flock", str(target), "sh", "-c", "echo locked; cat"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    assert held.stdin is not None
    assert held.stdout is not None
    try:
        assert held.stdout.readline() == b"locked\n"
        busy = subprocess.run(["flock", "-n", str(target), "true"])
        assert busy.returncode == 1, "a second flock -n must see the first one's lock"
    finally:
        held.stdin.close()
        held.stdout.close()
        assert held.wait() == 0
    mount = fresh(make_mount, mount)
    assert (mount.path / "locked").read_text() == "x"


# --- rsync, cp -a, touch, mkdir -p, find -delete, rm -rf, mv --------------------------------


def _tree(src: Path) -> None:
    for d in ("a/b", "a/empty", "c", "c/d/e"):
        (src / d).mkdir(parents=True, exist_ok=True)
    for i, rel in enumerate(("a/x", "a/b/y", "c/z", "top")):
        (src / rel).write_bytes(os.urandom(100 + i * 1000))
    os.symlink("x", src / "a" / "lx")
    os.symlink("../c/z", src / "a" / "b" / "lz")
    os.chmod(src / "a" / "x", 0o600)
    os.utime(src / "top", (1_600_000_000, 1_600_000_000))


def test_rsync_delete_inplace_symlinks_and_empty_dirs(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    mount = make_mount(args=RW).start()
    src = tmp_path / "src"
    src.mkdir()
    _tree(src)
    run(["rsync", "-a", f"{src}/", str(mount.path / "r")])
    (src / "top").unlink()
    shutil.rmtree(src / "c" / "d")
    (src / "a" / "new").write_text("new")
    run(["rsync", "-a", "--delete", f"{src}/", str(mount.path / "r")])
    (src / "a" / "b" / "y").write_bytes(b"rewritten in place")
    run(["rsync", "-a", "--inplace", f"{src}/", str(mount.path / "r")])
    mount = fresh(make_mount, mount)
    assert snapshot(mount.path / "r") == snapshot(src)


def test_cp_a_keeps_mode_and_mtime_on_the_server(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    mount = make_mount(args=RW).start()
    src = tmp_path / "src"
    src.mkdir()
    _tree(src)
    run(["cp", "-a", str(src), str(mount.path / "c")])
    run(["touch", "-d", "2020-02-02 02:02:02", str(mount.path / "c" / "c" / "z")])
    assert (mount.path / "c" / "top").stat().st_mtime == 1_600_000_000
    assert stat.S_IMODE((mount.path / "c" / "a" / "x").stat().st_mode) == 0o600
    mount = fresh(make_mount, mount)
    assert snapshot(mount.path / "c") == snapshot(src)
    assert float(meta(emulator, "c/top")["mtime"]) == 1_600_000_000
    assert int(meta(emulator, "c/a/x")["mode"]) == 0o100600
    touched = float(meta(emulator, "c/c/z")["mtime"])
    local = tmp_path / "t"
    local.touch()
    run(["touch", "-d", "2020-02-02 02:02:02", str(local)])
    assert touched == local.stat().st_mtime


def test_mkdir_p_find_delete_rm_rf_and_mv_into_a_dir(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    mount = make_mount(args=RW).start()

    def steps(root: Path) -> None:
        run(["mkdir", "-p", str(root / "a/b/c/d")])
        run(["mkdir", "-p", str(root / "a/b/c/d")])
        for i in range(5):
            (root / "a" / "b" / f"f{i}").write_text(str(i))
        run(["find", "a/b", "-name", "f*", "-delete"], cwd=root)
        run(["mkdir", "-p", "big/x", "dest"], cwd=root)
        for i in range(500):
            (root / "big" / "x" / f"n{i:03}").write_bytes(b"%d" % i)
        run(["mv", "a", "dest/"], cwd=root)
        run(["rm", "-rf", "big"], cwd=root)
        run(["mkdir", "-p", "gone/y/z"], cwd=root)
        run(["find", "gone", "-delete"], cwd=root)

    expected = both(tmp_path, mount, steps)
    mount = fresh(make_mount, mount)
    assert snapshot(mount.path) == expected
    assert server_keys(emulator) == {"dest/", "dest/a/", "dest/a/b/", "dest/a/b/c/",
                                     "dest/a/b/c/d/"}  # fmt: skip


def _renameat2(old: Path, new: Path, flags: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    done = libc.renameat2(-100, os.fsencode(old), -100, os.fsencode(new), flags)  # AT_FDCWD
    return 0 if done == 0 else ctypes.get_errno()


def test_what_objects_cannot_be_fails_with_the_documented_errno(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    """Hard links, FIFOs, RENAME_EXCHANGE: no object can be them (SEMANTICS.md: Writes).
    Programs that try a hard link first fall back (git clone of a local repository copies
    its objects); `tar x` of an archive holding hard links reports those members."""
    mount = make_mount(args=RW).start()
    (mount.path / "a").write_text("a")
    (mount.path / "b").write_text("b")
    assert errno_of(lambda: os.link(mount.path / "a", mount.path / "hard")) == errno.EPERM
    assert errno_of(lambda: os.mkfifo(mount.path / "fifo")) == errno.EPERM  # was ENOSYS
    assert _renameat2(mount.path / "a", mount.path / "b", 2) == errno.EXDEV  # EXCHANGE
    assert _renameat2(mount.path / "a", mount.path / "b", 1) == errno.EEXIST  # NOREPLACE
    assert _renameat2(mount.path / "a", mount.path / "c", 1) == 0
    src = tmp_path / "src"
    src.mkdir()
    git(src, "init", "-q")
    (src / "f").write_text("tracked\n")
    git(src, "add", "f")
    git(src, "commit", "-qm", "one")
    git(tmp_path, "clone", "-q", str(src), str(mount.path / "clone"))  # links fail: copies
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "one").write_text("same inode")
    os.link(tmp_path / "t" / "one", tmp_path / "t" / "two")
    run(["tar", "cf", str(tmp_path / "t.tar"), "-C", str(tmp_path), "t"])
    tar = subprocess.run(["tar", "xf", str(tmp_path / "t.tar"), "-C", str(mount.path)],
                         capture_output=True, text=True)  # fmt: skip
    assert tar.returncode == 2
    assert "Cannot hard link" in tar.stderr
    mount = fresh(make_mount, mount)
    assert git(mount.path / "clone", "log", "--format=%s") == "one\n"
    git(mount.path / "clone", "fsck", "--strict")
    assert (mount.path / "clone" / "f").read_text() == "tracked\n"
    assert (mount.path / "t" / "one").read_text() == "same inode"
    assert sorted(os.listdir(mount.path)) == ["b", "c", "clone", "t"]


def test_sparse_writes_tempfiles_ln_sf_rsync_inplace_sort_o_and_split(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    mount = make_mount(args=RW).start()
    big = bytes(range(256)) * (3 * 4096) + b"tail5"  # 3 MiB + 5: multipart with 1 MiB parts
    patched = bytearray(big)
    patched[MiB + 3 : MiB + 10] = b"PATCHED"
    (tmp_path / "patched").write_bytes(bytes(patched))

    def steps(root: Path) -> None:
        fd = os.open(root / "sparse", os.O_WRONLY | os.O_CREAT, 0o644)
        os.pwrite(fd, b"END", 5 * MiB + 7)  # a hole of 5 MiB, then one written in the middle
        os.pwrite(fd, b"MID", 2 * MiB)
        os.close(fd)
        with tempfile.NamedTemporaryFile(dir=root) as temp:  # unlinked while open
            temp.write(b"temp")
            temp.flush()
        os.symlink("sparse", root / "ln")
        run(["ln", "-sf", "other", str(root / "ln")])
        (root / "big").write_bytes(big)
        run(
            [
                "rsync",
                "-I",
                "--inplace",
                "--no-whole-file",
                str(tmp_path / "patched"),
                str(root / "big"),
            ]
        )
        (root / "lines").write_text("b\nc\na\n")
        run(["sort", "-o", str(root / "lines"), str(root / "lines")])
        run(["split", "-b", "700000", str(root / "big"), str(root / "part.")])

    expected = both(tmp_path, mount, steps)
    mount = fresh(make_mount, mount)
    assert snapshot(mount.path) == expected
    assert server_bytes(emulator, "big") == bytes(patched)


def test_mv_of_a_dir_holding_a_file_being_written_copies_it_as_it_was(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    """A documented limit (SEMANTICS.md: rename of a directory): such a rename is EXDEV, so
    `mv` copies the tree and deletes the old one; the copy has the file's bytes of that
    moment, and what the still-open descriptor writes afterwards goes nowhere (a local
    rename would keep the inode: it would have them)."""
    mount = make_mount(args=RW).start()
    (mount.path / "dir").mkdir()
    with open(mount.path / "dir" / "open", "w") as out:
        out.write("being written")
        out.flush()
        renamed = errno_of(lambda: os.rename(mount.path / "dir", mount.path / "moved"))
        assert renamed == errno.EXDEV
        run(["mv", str(mount.path / "dir"), str(mount.path / "moved")])
        out.write(" and more")
    mount = fresh(make_mount, mount)
    assert snapshot(mount.path) == {
        "moved": ("dir", b""),
        "moved/open": ("file", b"being written"),
    }


# --- names ----------------------------------------------------------------------------------

NAMES = [
    "with space",
    "unicodé 名前 🙂",
    "100%",
    "a+b",
    "#hash#",
    "what?",
    "amp&eq=",
    "x" * 255,
    "é" * 127,  # 254 bytes
]


def test_odd_names_round_trip(emulator: Emulator, make_mount: MountFactory, tmp_path: Path) -> None:
    mount = make_mount(args=RW).start()

    def steps(root: Path) -> None:
        (root / "d").mkdir()
        for i, name in enumerate(NAMES):
            (root / "d" / name).write_bytes(name.encode() * 3)
            (root / name).mkdir()
            (root / name / "in").write_text(str(i))
        os.rename(root / "d" / "100%", root / "d" / "100%%")
        os.rename(root / "#hash#", root / "d" / "?moved?")

    expected = both(tmp_path, mount, steps)
    assert errno_of(lambda: (mount.path / ("y" * 256)).write_text("n")) == errno.ENAMETOOLONG
    mount = fresh(make_mount, mount)
    assert snapshot(mount.path) == expected
    keys = server_keys(emulator)
    assert "d/?moved?/in" in keys
    assert "what?/in" in keys


def test_a_file_and_a_dir_differing_by_a_trailing_slash_on_the_server(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    emulator.put_object(BUCKET, "same", b"object bytes")
    emulator.put_object(BUCKET, "same/", b"")
    emulator.put_object(BUCKET, "same/inner", b"inner")
    mount = make_mount(args=RW).start()
    assert sorted(os.listdir(mount.path)) == ["same", "same.ossfile"]
    assert (mount.path / "same.ossfile").read_bytes() == b"object bytes"
    (mount.path / "same.ossfile").write_bytes(b"rewritten")
    (mount.path / "same" / "more").write_bytes(b"more")
    mount = fresh(make_mount, mount)
    assert server_bytes(emulator, "same") == b"rewritten"
    assert snapshot(mount.path) == {
        "same": ("dir", b""),
        "same/inner": ("file", b"inner"),
        "same/more": ("file", b"more"),
        "same.ossfile": ("file", b"rewritten"),
    }


def test_a_file_moved_over_a_symlink_under_writeback_stays_a_file_until_it_lands(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    """`mv file link` under write-back re-keys the held-back file onto the link's name, and
    OSS lists the link there until the upload lands: `ls -l` (a fresh listing, with the
    metadata cache off) must not make the inode a link, which the kernel, holding it as a
    regular file, took for a bad inode: `chmod` failed with EIO (the random walk, seed 370)."""
    args = (*WB, "--writeback-delay", "600", "--stat-cache-expire", "0")
    mount = make_mount(args=args).start()
    (mount.path / "target").write_bytes(b"t")
    os.symlink("target", mount.path / "link")
    (mount.path / "file").write_bytes(b"a file")
    os.rename(mount.path / "file", mount.path / "link")
    run(["ls", "-l", str(mount.path)])
    assert stat.S_ISREG((mount.path / "link").lstat().st_mode)
    os.chmod(mount.path / "link", 0o640)
    assert (mount.path / "link").lstat().st_mode == stat.S_IFREG | 0o640
    assert (mount.path / "link").read_bytes() == b"a file"
    mount.stop()  # the held-back uploads land
    assert server_bytes(emulator, "link") == b"a file"
