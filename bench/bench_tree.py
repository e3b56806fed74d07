"""Benchmark: per-entry cost of the tree and FUSE layers (issue 13, W6): cold `ls -lR` and cold
`find` over N objects under one prefix, on a real mount against the emulator on 127.0.0.1.

Each run mounts afresh (new cache dir: nothing listed yet), times one command, records the
daemon's CPU seconds (user + sys, /proc) for it, and unmounts. With --repeat R each figure is
the median of R runs followed by [min..max]. The emulator runs in its own process, so its CPU
is not the daemon's.

    .venv/bin/python bench/bench_tree.py [--objects 10000] [--repeat 5] [--src /other/checkout]
        [--only ls_lR,find] [--mount-arg=--dir-prefetch=0 ...] [--in-process]

`--src` runs the daemon from another checkout (PYTHONPATH), to compare before and after in
one run. On a busy machine the mount figures move by ±50 %; `--in-process` measures only the
tree and fs layers, with no HTTP, kernel or emulator: `Namespace.opendir` of one directory of
N files from prebuilt listing pages (a fresh namespace each run: every entry is new), then a
readdir of it through `FileSystem.readdir` into pyfuse3 `EntryAttributes` (all the adapter
does but `readdir_reply`), then its releasedir. It prints µs per entry, min of --repeat x 3 runs.

Every process it starts it stops by PID; every mount is unmounted; the temp dir is removed.
Nothing is asserted: figures are printed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_mount  # a sibling script, not a package
from bench_mount import AK, BUCKET, ROOT, SK, stop

PREFIX = "list"
WORKLOADS = {
    "ls_lR": lambda d: ["ls", "-lR", str(d)],
    "find": lambda d: ["find", str(d)],
}


def serve_emulator(count: int) -> None:
    """Child process: bench_mount's emulator holding `count` 1 KiB objects under PREFIX/."""
    bench_mount.serve_emulator([(f"{PREFIX}/f{i:05d}", 1024, 1 + i % 8) for i in range(count)])


def in_process(count: int, runs: int) -> None:
    """Per-entry cost of Namespace.opendir and FileSystem.readdir (see the module doc)."""
    sys.path.insert(0, str(ROOT))
    import trio

    from ossmount.fs.attrs import Attr, Presentation
    from ossmount.fs.filesystem import FileSystem
    from ossmount.fs.ops import entry_attributes
    from ossmount.oss.models import ListPage, ObjectMeta
    from ossmount.tree.inodes import ROOT_INODE
    from ossmount.tree.listing import Namespace

    metas = [
        ObjectMeta(f"{PREFIX}/f{i:05d}", 1024, f'"e{i}"', 1_700_000_000_000_000_000)
        for i in range(count)
    ]
    pages = [
        ListPage(tuple(metas[i : i + 1000]), (), str(i + 1000) if i + 1000 < count else None)
        for i in range(0, count, 1000)
    ]

    class Lister:
        async def list_page(
            self,
            prefix: str,
            delimiter: str = "/",
            continuation: str | None = None,
            max_keys: int = 1000,
            start_after: str | None = None,
        ) -> ListPage:
            if prefix != f"{PREFIX}/":
                return ListPage((), (f"{PREFIX}/",), None)
            return pages[int(continuation or 0) // 1000]

    class NoPrefetch:
        warm_limit = 0

        def warm(self, meta: object) -> bool:
            return False

    def reply(name: str, attr: Attr, next_id: int) -> bool:
        name.encode()
        entry_attributes(attr)
        return True

    async def once() -> tuple[float, float, float]:
        ns = Namespace(Lister())
        fs = FileSystem(ns, NoPrefetch(), Presentation(0, 0, 0o22, 60.0),  # type: ignore[arg-type]
                        symlinks=None, kernel=None, bucket=BUCKET)  # type: ignore[arg-type]  # fmt: skip
        d = await fs.lookup(ROOT_INODE, PREFIX)
        t0 = time.perf_counter()
        fh = await fs.opendir(d.inode)
        t1 = time.perf_counter()
        fs.readdir(fh, 0, reply)
        t2 = time.perf_counter()
        fs.releasedir(fh)
        return t1 - t0, t2 - t1, time.perf_counter() - t2

    results = [trio.run(once) for _ in range(runs)]
    print(f"# in-process, {count} files in one directory, min of {runs} runs")
    print(f"opendir_us_per_entry     {min(r[0] for r in results) / count * 1e6:7.2f}")
    print(f"readdir_us_per_entry     {min(r[1] for r in results) / count * 1e6:7.2f}")
    print(f"releasedir_us_per_entry  {min(r[2] for r in results) / count * 1e6:7.2f}")


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="bench_tree."))
        self.env = dict(os.environ, OSS_ACCESS_KEY_ID=AK, OSS_ACCESS_KEY_SECRET=SK)
        self.env["PYTHONPATH"] = str(Path(args.src).resolve()) if args.src else str(ROOT)
        self.endpoint = ""
        self.emulator: subprocess.Popen[bytes] | None = None
        self.seq = 0

    def start_emulator(self) -> None:
        self.emulator = subprocess.Popen(
            [sys.executable, __file__, "--serve-emulator", str(self.args.objects)],
            stdout=subprocess.PIPE,
        )
        assert self.emulator.stdout is not None
        self.endpoint = self.emulator.stdout.readline().decode().strip()
        if not self.endpoint.startswith("http://"):
            raise RuntimeError("the emulator did not start")

    @contextlib.contextmanager
    def mount(self) -> Iterator[tuple[int, Path]]:
        self.seq += 1
        mnt = self.tmp / f"mnt-{self.seq}"
        mnt.mkdir()
        cmd = [
            sys.executable, "-m", "ossmount", BUCKET, str(mnt),
            "--endpoint", self.endpoint,
            "--cache-dir", str(self.tmp / f"cache-{self.seq}"),
            "--log-file", str(self.tmp / "ossmount.log"),
            "-f", *self.args.mount_arg,
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, env=self.env, cwd=self.tmp, stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while not os.path.ismount(mnt):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"ossmount did not mount {mnt}")
                time.sleep(0.05)
            os.stat(mnt)
            time.sleep(0.2)  # let the post-mount setup (readahead knob) finish
            yield proc.pid, mnt
        finally:
            subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True, check=False)
            if os.path.ismount(mnt):
                subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
            stop(proc, timeout=0)

    def run(self) -> None:
        self.start_emulator()
        wanted = self.args.only.split(",") if self.args.only else list(WORKLOADS)
        figures: dict[str, list[float]] = {}
        for _ in range(self.args.repeat):
            for name in wanted:
                with self.mount() as (pid, mnt):
                    cpu0 = cpu_seconds(pid)
                    t0 = time.perf_counter()
                    subprocess.run(WORKLOADS[name](mnt / PREFIX), stdout=subprocess.DEVNULL,
                                   check=True)  # fmt: skip
                    elapsed = time.perf_counter() - t0
                    figures.setdefault(f"{name}_s", []).append(elapsed)
                    figures.setdefault(f"{name}_daemon_cpu_s", []).append(cpu_seconds(pid) - cpu0)
        src = self.args.src or str(ROOT)
        print(f"# {self.args.objects} objects under {PREFIX}/, {self.args.repeat} runs, src {src}")
        for name, values in figures.items():
            print(
                f"{name:24s} {statistics.median(values):7.3f} "
                f"[{min(values):.3f}..{max(values):.3f}]"
            )

    def cleanup(self) -> None:
        if self.emulator is not None:
            stop(self.emulator, timeout=0)
        shutil.rmtree(self.tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve-emulator", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", default="")
    parser.add_argument("--src", default="")
    parser.add_argument("--mount-arg", action="append", default=[])
    parser.add_argument("--in-process", action="store_true")
    args = parser.parse_args()
    if args.in_process:
        in_process(args.objects, 3 * args.repeat)
        return
    if args.serve_emulator is not None:
        serve_emulator(args.serve_emulator)
        return
    bench = Bench(args)
    try:
        bench.run()
    finally:
        bench.cleanup()


if __name__ == "__main__":
    main()
