"""Per-file cost of writing many small files into an `-o rw` mount (issue 15, W14/W15 shape).

Runs `tar x`, `cp -r` and `rsync -a` of N files of K KiB into a real mount of the emulator,
one mount per (source tree, run), the trees interleaved run by run so load drifts hit them
alike, and prints per workload: wall time, the daemon's CPU (utime + stime from /proc), and
the requests the emulator saw per file (a fresh emulator and cache per run), as median
[min..max] over the runs.

    PY=/work/main/.venv/bin/python
    PYTHONPATH=$PWD $PY bench/bench_write_files.py --src $PWD --src /work/wt-base \\
        --files 1000 --kib 8 --runs 3

`--src` is a source tree whose `ossmount` the daemon runs (PYTHONPATH); the emulator and this
harness are always this tree's, so only the daemon differs. `--log-level` defaults to INFO
(the mount tests' DEBUG log costs CPU per request). `--read-back` also times reading the tar
tree back through a second mount of the same cache dir (so not from the kernel's page cache)
and counts its GETs, with those the writing mount made after the workloads (its directory
read-ahead may fetch what was just written): what adoption saves.
"""

from __future__ import annotations

import argparse
import collections
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ossmount.cachecmd.codes import CommandError
from ossmount.emulator import Emulator
from tests.mount.harness import AK, BUCKET, SK, Mount

WORKLOADS = ("tar", "cp", "rsync")


def daemon_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_sources(root: Path, files: int, kib: int) -> tuple[Path, Path]:
    """A tar archive and the same tree as a directory (20 subdirectories, fixed mtimes)."""
    archive, tree = root / "a.tar", root / "tree"
    with tarfile.open(archive, "w") as tar:
        for i in range(files):
            data = os.urandom(kib * 1024)
            info = tarfile.TarInfo(f"t/d{i % 20}/f{i}")
            info.size, info.mtime, info.mode = len(data), 1_600_000_000 + i, 0o644
            tar.addfile(info, io.BytesIO(data))
            path = tree / f"d{i % 20}" / f"f{i}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            os.utime(path, (1_600_000_000 + i, 1_600_000_000 + i))
    return archive, tree


def command(workload: str, archive: Path, tree: Path, mnt: Path) -> list[str]:
    if workload == "tar":
        return ["tar", "xf", str(archive), "-C", str(mnt)]
    if workload == "cp":
        return ["cp", "-r", str(tree), str(mnt / "c")]
    return ["rsync", "-a", f"{tree}/", str(mnt / "r")]


def one_run(
    src: str, root: Path, archive: Path, tree: Path, args: argparse.Namespace
) -> dict[str, tuple[float, float, dict[str, int]]]:
    """A fresh emulator, cache and mount: every run writes new keys into an empty bucket."""
    work = Path(tempfile.mkdtemp(dir=root))
    extra = ("--rw", "--min-free-mb", "0", "--log-level", args.log_level, *args.mount_arg)
    out: dict[str, tuple[float, float, dict[str, int]]] = {}
    with Emulator(buckets=[BUCKET], access_key_id=AK, access_key_secret=SK) as emu:
        mount = Mount(emu, work, args=extra, env={"PYTHONPATH": src}).start()
        try:
            assert mount.proc is not None
            pid = mount.proc.pid
            assert Path(f"/proc/{pid}/cwd").resolve() == root.resolve()
            for workload in args.workloads:
                settle(mount)
                seen = len(emu.requests)
                c0, t0 = daemon_cpu(pid), time.perf_counter()
                subprocess.run(command(workload, archive, tree, mount.path), check=True)
                wall, cpu = time.perf_counter() - t0, daemon_cpu(pid) - c0
                ops = collections.Counter(r.op for r in list(emu.requests)[seen:])
                out[workload] = (wall, cpu, dict(ops))
            seen = len(emu.requests)  # what the mount fetches from here on counts as read-back
        finally:
            mount.stop()
        if args.read_back:  # a new mount of the same cache dir: no kernel page cache
            mount = Mount(emu, work, args=extra, env={"PYTHONPATH": src}).start()
            try:
                t0 = time.perf_counter()
                subprocess.run(f"find {mount.path}/t -type f -print0 | xargs -0 cat > /dev/null",
                               shell=True, check=True)  # fmt: skip
                ops = collections.Counter(r.op for r in list(emu.requests)[seen:])
                out["read-back"] = (time.perf_counter() - t0, 0.0, dict(ops))
            finally:
                mount.stop()
    shutil.rmtree(work, ignore_errors=True)
    return out


def settle(mount: Mount) -> None:
    """Background work of the previous workload done (a daemon older than the control
    socket's `idle` request gets a pause instead)."""
    try:
        mount.wait_idle()
    except CommandError:
        time.sleep(1.0)


def spread(values: list[float], fmt: str) -> str:
    return (f"{format(statistics.median(values), fmt)} "
            f"[{format(min(values), fmt)}..{format(max(values), fmt)}]")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", action="append", required=True, help="source tree (repeat)")
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--kib", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--read-back", action="store_true")
    parser.add_argument("--mount-arg", action="append", default=[], help="extra mount option")
    parser.add_argument(
        "--root", default="/var/tmp", help="where sources, caches and mounts go; /dev/shm "
        "leaves out the disk (on these VMs' ext4 a create after many deletes costs up to "
        "0.4 ms of system time, varying run to run: the session-24 note)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.read_back and "tar" not in args.workloads:
        parser.error("--read-back reads the tar tree")
    root = Path(tempfile.mkdtemp(dir=args.root, prefix="bench-wf-"))
    results: dict[str, list[dict[str, tuple[float, float, dict[str, int]]]]] = {
        src: [] for src in args.src
    }
    # `python -m ossmount` puts its working directory first on sys.path, before PYTHONPATH:
    # run from one without an `ossmount` package, or every --src runs the same tree.
    os.chdir(root)
    try:
        archive, tree = make_sources(root, args.files, args.kib)
        for run in range(args.runs):
            for src in args.src:
                results[src].append(one_run(src, root, archive, tree, args))
                print(f"run {run + 1} {src}: done", file=sys.stderr)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    n = args.files
    print(f"{n} files x {args.kib} KiB, {args.runs} runs, median [min..max]")
    for src, runs in results.items():
        for workload in [*args.workloads, *(["read-back"] if args.read_back else [])]:
            walls = [r[workload][0] for r in runs]
            cpus = [r[workload][1] * 1e3 / n for r in runs]
            ops: collections.Counter[str] = collections.Counter()
            for r in runs:
                ops.update(r[workload][2])
            per_file = ", ".join(
                f"{op} {count / len(runs) / n:.2f}" for op, count in sorted(ops.items())
            )
            cpu = "" if workload == "read-back" else f"; daemon CPU {spread(cpus, '.2f')} ms/file"
            print(f"{src} {workload}: {spread(walls, '.2f')} s ({n / statistics.median(walls):.0f}"
                  f" files/s){cpu}; requests/file: {per_file}")  # fmt: skip


if __name__ == "__main__":
    main()
