#!/usr/bin/env python3
"""Writes through a real `-o rw` mount, side by side for one or more checkouts.

The referee's write rows in small, for before/after figures of a change (`--src` may be given
several times; the checkouts take turns, round after round, so a noisy machine hits them alike):

* `big`: `cp` of one `--size-mib` file (default 1024) from /dev/shm into the mount (the W13
  shape): MB/s until cp exits (its close returns once the object is committed and verified),
  the daemon's and the emulator's CPU s/GiB, the daemon's peak RSS, cp's close() time (under
  `strace --seccomp-bpf -e trace=close`, which stops cp only at close) and the MB the disk
  wrote meanwhile (the whole device: a rough figure on a shared machine); then the time from
  cp's end until the file is the read cache's verified entry (`user.ossmount.state`, polled
  every 10 ms) and the MB the daemon read from disk meanwhile (/proc/PID/io read_bytes: the
  adoption's second pass over the file, if it makes one);
  With `--big-args` (mount options, e.g. "-o writeback" or "--max-cache-size-mb 64
  --min-free-mb 0"), also the seconds from cp's start until the object is on the server,
  and with `--lo-mbit` the loopback is held to that rate meanwhile (`tc qdisc ... tbf` on
  lo, removed after each run: every 127.0.0.1 connection shares it; needs root and tc), so
  the upload cannot keep up with cp;
* `append`: `echo ... >>` a `--size-mib` object that is not in the cache (cp'ed in, then
  the daemon restarted on an empty cache): the append's wall s (its close commits it), the
  daemon's CPU s, and the ranged GETs it made (counted in its debug log); `--big-args`
  apply to that second daemon (e.g. "-o writeback": the append's close then returns sealed);
* `small`: `cp -r` of `--files` (default 200) x 64 KiB into the mount with `--latency` (default
  20 ms per response) and `--conn-bps` (default 50 MB/s per connection) on the emulator (the
  W14 shape), without and with `-o writeback`: files/s (with write-back, until every object
  is on the server).

Each checkout runs its own emulator (with `--data-dir` on disk, as the referee's) and its own
daemon, both from that checkout (PYTHONPATH). Prints median [min..max] per figure; nothing is
asserted. Every process started is stopped by its PID; temp dirs are removed.

    .venv/bin/python bench/bench_write_mount.py --src /work/wt-base --src . --repeat 3
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from bench_mount import cpu_seconds, stop  # a sibling script, not a package

MiB = 1 << 20


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Rig:
    """One emulator and one mounted daemon, both from checkout `src`."""

    def __init__(self, src: Path, work: Path, emulator_args: list[str], mount_args: list[str]):
        self.work = work
        self.src = src
        self.mnt = work / "mnt"
        for d in (self.mnt, work / "data", work / "cache"):
            d.mkdir(parents=True)
        self.env = dict(os.environ, PYTHONPATH=str(src), OSS_ACCESS_KEY_ID="ak")
        self.env["OSS_ACCESS_KEY_SECRET"] = "sk"
        self.emu = subprocess.Popen(
            [sys.executable, "-m", "ossmount.emulator.cli", "--port", "0", "--bucket", "bench",
             "--data-dir", str(work / "data"), *emulator_args],
            stdout=subprocess.PIPE, text=True, env=self.env, cwd=src,
        )  # fmt: skip
        assert self.emu.stdout is not None
        self.endpoint = self.emu.stdout.readline().strip()
        self.mount(mount_args)

    def mount(self, mount_args: list[str]) -> None:
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "ossmount", "bench", str(self.mnt), "--endpoint",
             self.endpoint, "--cache-dir", str(self.work / "cache"), "--log-file",
             str(self.work / "mount.log"), "-o", "rw", "-f", *mount_args],
            env=self.env, text=True, cwd=self.src,  # python -m puts the cwd first on sys.path
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not os.path.ismount(self.mnt):
            if self.daemon.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise SystemExit(f"the mount from {self.src} did not come up (see "
                                 f"{self.work}/mount.log)")  # fmt: skip
            time.sleep(0.05)
        os.listdir(self.mnt)

    def cpu(self) -> tuple[float, float]:
        return cpu_seconds(self.daemon.pid), cpu_seconds(self.emu.pid)

    def objects(self) -> int:
        """Objects the emulator holds on disk (meta files), to wait for write-back uploads."""
        return sum(1 for _ in (self.work / "data" / "bench").glob("*.json"))

    def unmount(self) -> None:
        if os.path.ismount(self.mnt):
            subprocess.run(["fusermount3", "-u", str(self.mnt)], check=False)
        stop(self.daemon)

    def close(self) -> None:
        self.unmount()
        self.emu.terminate()
        stop(self.emu, 10)


def read_bytes(pid: int) -> int:
    """Bytes process `pid` (all its threads) made the block layer read (/proc/PID/io)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("read_bytes:"):
            return int(line.split()[1])
    return 0


def verified_after(path: Path, timeout: float = 120) -> float | None:
    """Seconds until `path` reads `verified` in user.ossmount.state (None: not in time)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        try:
            if os.getxattr(path, "user.ossmount.state") == b"verified":
                return time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(0.01)
    return None


def sectors_written(path: Path) -> int:
    """Sectors (512 B) the block device holding `path` has written since boot (0: unknown)."""
    dev = os.stat(path).st_dev
    for line in Path("/proc/diskstats").read_text().splitlines():
        f = line.split()
        if (int(f[0]), int(f[1])) == (os.major(dev), os.minor(dev)):
            return int(f[9])
    return 0


def cp_timed(source: Path, dest: Path, trace: Path) -> float | None:
    """`cp`, under strace when there is one (only close() is stopped for, via seccomp): the
    longest close() cp made (the destination's, whose flush commits the object), in s."""
    if shutil.which("strace") is None:
        subprocess.run(["cp", str(source), str(dest)], check=True)
        return None
    cmd = ["strace", "-qq", "--seccomp-bpf", "-f", "-T", "-e", "trace=close", "-o", str(trace)]
    subprocess.run([*cmd, "cp", str(source), str(dest)], check=True)
    times = [float(t) for t in re.findall(r"<([0-9.]+)>\s*$", trace.read_text(), re.M)]
    return max(times, default=None)


@contextlib.contextmanager
def loopback_held_to(mbit: float | None) -> Iterator[None]:
    """Hold the loopback to `mbit` Mbit/s meanwhile (a token bucket on lo; None: as it is)."""
    if mbit is None:
        yield
        return
    subprocess.run(["tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate", f"{mbit}mbit",
                    "burst", "4mb", "latency", "100ms"], check=True)  # fmt: skip
    try:
        yield
    finally:
        subprocess.run(["tc", "qdisc", "del", "dev", "lo", "root"], check=False)


def big(src: Path, source: Path, size: int, args: argparse.Namespace,
        out: dict[str, list[float]]) -> None:  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="bwm-big-", dir="/var/tmp"))
    rig = Rig(src, work, [], shlex.split(args.big_args))
    try:
        d0, e0 = rig.cpu()
        s0 = sectors_written(work)
        before = rig.objects()
        with loopback_held_to(args.lo_mbit):
            t0 = time.perf_counter()
            close_s = cp_timed(source, rig.mnt / "big.bin", work / "strace.out")
            wall = time.perf_counter() - t0
            deadline = time.monotonic() + 600
            while args.big_args and rig.objects() == before and time.monotonic() < deadline:
                time.sleep(0.01)  # write-back: until the server has it
            on_server = time.perf_counter() - t0
        if args.big_args:
            out["big on server after s"].append(on_server)
        r0, s1 = read_bytes(rig.daemon.pid), sectors_written(work)
        d1, e1 = rig.cpu()
        gib = size / (1 << 30)
        adopted = verified_after(rig.mnt / "big.bin")
        if adopted is not None:
            out["big verified after cp s"].append(adopted)
            out["big daemon disk MB read then"].append((read_bytes(rig.daemon.pid) - r0) / 1e6)
            out["big daemon CPU s then"].append(rig.cpu()[0] - d1)
        out["big MB/s"].append(size / wall / 1e6)
        if close_s is not None:
            out["big cp close() s"].append(close_s)
        # The whole device, other processes' writes included: a rough figure.
        out["big disk MB written in cp"].append((s1 - s0) * 512 / 1e6)
        out["big daemon CPU s/GiB"].append((d1 - d0) / gib)
        out["big emulator CPU s/GiB"].append((e1 - e0) / gib)
        out["big daemon peak RSS MiB"].append(peak_rss_mib(rig.daemon.pid))
    finally:
        rig.close()
        shutil.rmtree(work, ignore_errors=True)


def append(src: Path, source: Path, args: argparse.Namespace,
           out: dict[str, list[float]]) -> None:  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="bwm-append-", dir="/var/tmp"))
    rig = Rig(src, work, [], [])
    try:
        subprocess.run(["cp", str(source), str(rig.mnt / "log.bin")], check=True)
        rig.unmount()  # then a daemon on an empty cache: the object is cold
        shutil.rmtree(work / "cache")
        (work / "cache").mkdir()
        (work / "mount.log").unlink()
        rig.mount(["--log-level", "debug", *shlex.split(args.big_args)])
        d0 = rig.cpu()[0]
        t0 = time.perf_counter()
        subprocess.run(["sh", "-c", f"echo one more line >> {rig.mnt / 'log.bin'}"], check=True)
        out["append s"].append(time.perf_counter() - t0)
        out["append daemon CPU s"].append(rig.cpu()[0] - d0)
        log = (work / "mount.log").read_text()
        out["append ranged GETs"].append(len(re.findall(r"GET oss://\S+ -> 206", log)))
    finally:
        rig.close()
        shutil.rmtree(work, ignore_errors=True)


def small(src: Path, tree: Path, files: int, args: argparse.Namespace, mode: str,
          out: dict[str, list[float]]) -> None:  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="bwm-small-", dir="/var/tmp"))
    shaping = ["--latency", str(args.latency), "--conn-bps", str(args.conn_bps)]
    rig = Rig(src, work, shaping, ["-o", "writeback"] if mode == "writeback" else [])
    try:
        before = rig.objects()
        t0 = time.perf_counter()
        subprocess.run(["cp", "-r", str(tree), str(rig.mnt / "small")], check=True)
        deadline = time.monotonic() + 300
        while rig.objects() < before + files + 1 and time.monotonic() < deadline:
            time.sleep(0.01)  # write-back: until the server has every object (+ the dir marker)
        out[f"small {mode} files/s"].append(files / (time.perf_counter() - t0))
    finally:
        rig.close()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", type=Path, action="append", help="checkout to run (repeatable)")
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--files", type=int, default=200)
    p.add_argument("--latency", type=float, default=0.02)
    p.add_argument("--conn-bps", type=float, default=50e6)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--only", choices=("big", "small", "append"))
    p.add_argument("--big-args", default="",
                   help="mount options for `big` and `append` (shell words)")  # fmt: skip
    p.add_argument("--lo-mbit", type=float, help="hold the loopback to this rate in `big`")
    args = p.parse_args()
    srcs = [s.resolve() for s in (args.src or [Path(__file__).resolve().parent.parent])]
    scratch = Path(tempfile.mkdtemp(prefix="bwm-src-", dir="/dev/shm"))
    try:
        source = scratch / "big.bin"
        with open(source, "wb") as f:
            for _ in range(args.size_mib):
                f.write(os.urandom(MiB))
        tree = scratch / "tree"
        tree.mkdir()
        for i in range(args.files):
            (tree / f"f{i:04d}").write_bytes(os.urandom(64 * 1024))
        results: dict[Path, dict[str, list[float]]] = {s: defaultdict(list) for s in srcs}
        for _ in range(args.repeat):
            for src in srcs:
                if args.only in (None, "big"):
                    big(src, source, args.size_mib * MiB, args, results[src])
                if args.only in (None, "append"):
                    append(src, source, args, results[src])
                if args.only in (None, "small"):
                    for mode in ("sync", "writeback"):
                        small(src, tree, args.files, args, mode, results[src])
        for src, figures in results.items():
            print(f"# {src} ({args.repeat} rounds)")
            for name, values in figures.items():
                print(f"{name:28} {statistics.median(values):8.2f} "
                      f"[{min(values):.2f}..{max(values):.2f}]")  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
