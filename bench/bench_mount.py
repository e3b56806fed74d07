"""Benchmark: the ossmount FUSE mount against the OSS emulator on 127.0.0.1 (issue 5, "Speed").

In one run, against the emulator running in its own process (so the daemon's and the emulator's
CPU are measured apart), it prints one line per figure, `workload figure unit target verdict`
followed by `# details`:

  1. curl_get      curl's single GET of the 1 GiB object to /dev/null
  2. cold_cp       `cp` out of a fresh mount with a fresh cache dir; daemon CPU s/GiB
                   (target >= 0.5 x curl_get)
  3. reread        `cat` of the same file again in the same mount (target >= 0.8 x `cat` of
                   the cache file itself, page cache; also shown: the same first re-read
                   through bench/ref_fs.py, the kernel's FUSE page cache without us, and a
                   second re-read: see "First re-read" below)
  4. remount_cp    first `cp` of the verified object after a remount (target >= 0.8 x `cp`
                   through bench/ref_fs.py serving the cache file with the same mount settings;
                   each run copies ours, ref, ref, ours, and both medians take all of them)
  5. ttfb          open + read(1 byte) from a fresh mount and cache dir, cold (target <= 1.5 x
                   curl's ranged GET of one part, 8 MiB)
  6. rss           daemon VmRSS sampled every 100 ms during `cat` of a --big-gib synthetic
                   object (target: max <= 150 MiB and flat)
  7. shaped_cp     cold `cp` of a --shaped-mib object with the emulator adding 20 ms per
                   response and capping each connection at 50 MB/s (target >= 0.8 x
                   parallel x 50 MB/s)
  8. small_cp      cold `cp -r` of a directory of --small-files objects of --small-kib each,
                   same shaping: files/s with directory read-ahead (the default) and with
                   --dir-prefetch 0 (no target: per-file round trips, see prefetch/siblings.py);
                   then unshaped, with the daemon's CPU per file

    .venv/bin/python bench/bench_mount.py [--repeat 1] [--big-gib 10] [--only cold_cp,...]
        [--mount-arg=--part-size-mb=16 ...] [--src /path/to/other/checkout]
        [--profile-daemon FILE] [--profile-emulator FILE]   (cProfile stats, slowed figures)

`--src` runs the daemon from that checkout; the emulator child always imports from this bench
file's checkout, so for a before/after of emulator changes run each checkout's own bench file.

Fresh memory. These VMs hand freed memory back to their host (free page reporting: see
/sys/module/page_reporting); the first touch of such a page costs ~1.7 s/GiB of guest CPU
instead of ~0.2 (the `env` line measures both). A cold cp allocates ~3 GiB of new page cache
(the cache file, the FUSE file's pages, cp's output) and curl to /dev/null none, so which
phase happens to get recycled memory decides the result more than the code under test does
(runs varied 300..1000 MB/s). So each timed copy runs right after a --ballast-gib file is
written and deleted: its pages are then free but still backed, for ours and the references
alike (--ballast-gib 0 turns this off). It is a plain file next to the mounts: a tmpfs ballast
helped less (measured; the kernel's free lists reuse page-cache pages sooner). It narrows the
spread; it does not remove it (free pages can still be reported mid-phase).

First re-read. The kernel (6.18 here) keeps a FUSE file in 4 KiB folios and an ext4 file in
large ones (read /proc/kpageflags through /proc/self/pagemap to see it). A page read twice
moves to the active LRU list, one folio at a time: the first re-read through FUSE pays that
for 262,144 folios per GiB (perf: folio_batch_move_lru + workingset_activation ~16 % of cat's
time), the cache file's pages were already activated by the daemon's own pread and are large.
So the first re-read through any FUSE filesystem (ref_fs too) lands at ~0.7 x, the second at
~0.8 x; no daemon can change it (it is not called), FUSE passthrough (libfuse >= 3.16) could.

The emulator's synthetic object is GET once, untimed, before curl_get: the first read of it in
a fresh emulator is slower. curl_get itself stays bimodal on these VMs (~1.8 GB/s with rare
runs at ~9 GB/s), so take its median over --repeat >= 3.

MB = 10^6 bytes. With --repeat > 1 each figure is the median, followed by [min..max]. Every
process it starts it stops by PID, every mount it makes it unmounts (fusermount3 -u, lazily as
a fallback), and its temp dir is removed. Nothing is asserted: verdicts are printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REF_FS = Path(__file__).resolve().parent / "ref_fs.py"
CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
MiB = 1 << 20
GiB = 1 << 30
MB = 1e6

AK = "bench-key-id"
SK = "bench-secret-0123456789"
BUCKET = "bench"
KEY_MAIN = "obj/1GiB.bin"
KEY_SHAPED = "obj/shaped.bin"
KEY_BIG = "obj/big.bin"
PART = 8 * MiB
WORKLOADS = (
    "curl_get", "cold_cp", "reread", "remount_cp", "ttfb", "rss", "shaped_cp", "small_cp",
    "randread",
)  # fmt: skip
SMALL_DIR = "small"


# -- the emulator child ------------------------------------------------------------------------


def serve_emulator(objects: list[tuple[str, int, int]]) -> None:
    """Child process: an Emulator with synthetic (key, size, seed) objects; prints its
    endpoint, runs until SIGTERM/SIGINT."""
    sys.path.insert(0, str(ROOT))
    import trio

    from ossmount.emulator import Emulator

    emu = Emulator(
        buckets=[BUCKET], access_key_id=AK, access_key_secret=SK, public_read=True, port=0
    )
    for key, size, seed in objects:
        emu.put_synthetic(BUCKET, key, size, seed=seed)

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(emu.serve)
            print(emu.endpoint, flush=True)
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

    with contextlib.suppress(KeyboardInterrupt):
        trio.run(run)


# -- /proc helpers ---------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of `pid` (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK


def sys_seconds(pid: int) -> float:
    """stime alone of every thread of `pid`: the kernel's share of `cpu_seconds`."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return int(fields[12]) / CLK


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


# -- results ---------------------------------------------------------------------------------


@dataclass
class Figures:
    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.values.setdefault(name, []).append(value)

    def med(self, name: str) -> float:
        return statistics.median(self.values[name])

    def has(self, name: str) -> bool:
        return bool(self.values.get(name))

    def fmt(self, name: str, digits: int = 0) -> str:
        vals = self.values.get(name)
        if not vals:
            return "n/a"
        text = f"{statistics.median(vals):.{digits}f}"
        if len(vals) > 1:
            text += f" [{min(vals):.{digits}f}..{max(vals):.{digits}f}]"
        return text


def write_zeros(path: Path, size: int) -> None:
    """A new file of `size` bytes (whole MiB), written through the page cache."""
    chunk = bytes(MiB)
    with open(path, "wb", buffering=0) as fh:
        for _ in range(size // MiB):
            fh.write(chunk)


class Ballast:
    """Backed-but-free memory for the next timed phase (module docstring, "Fresh memory")."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size

    def prime(self) -> None:
        """Call right before a timed phase: write the ballast file, then free its pages."""
        if self.size > 0:
            write_zeros(self.path, self.size)
        self.release()

    def release(self) -> None:
        self.path.unlink(missing_ok=True)


def fresh_page_tax(dir_: Path) -> tuple[float, float]:
    """CPU s/GiB of writing a new 1 GiB file: 5 s after 1 GiB was freed, and right after.

    A smaller file does not show it: the first few hundred MiB come from pages not yet
    reported."""
    path = dir_ / "tax.bin"
    one_gib = Ballast(dir_ / "tax-ballast.bin", GiB)

    def write() -> float:
        t0 = time.process_time()
        write_zeros(path, GiB)
        spent = time.process_time() - t0
        path.unlink()
        return spent

    one_gib.prime()
    time.sleep(5)  # long enough for the freed pages to be reported to the host
    cold = write()
    one_gib.prime()
    warm = write()
    return cold, warm


# -- the run ---------------------------------------------------------------------------------


def stop(proc: subprocess.Popen[Any], timeout: float = 20) -> None:
    """Give `proc` `timeout` s to exit by itself (a daemon after its unmount), then SIGTERM,
    then SIGKILL after 5 s more; close its stdout. bench_tree.py and bench_write_mount.py stop
    their processes here too (bench_tree with timeout 0: straight to SIGTERM)."""
    if proc.poll() is None:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="bench_mount.", dir=args.dir))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.mounts: list[Path] = []
        self.fig = Figures()
        self.endpoint = ""
        self.emu_pid = 0
        self.env = dict(os.environ)
        self.env.update({"OSS_ACCESS_KEY_ID": AK, "OSS_ACCESS_KEY_SECRET": SK})
        if args.src:
            self.env["PYTHONPATH"] = str(Path(args.src).resolve())
        self.seq = 0
        self.ballast = Ballast(self.tmp / "ballast.bin", int(args.ballast_gib * GiB))

    # processes and mounts -----------------------------------------------------------------

    def start_emulator(self) -> None:
        objects = [
            (KEY_MAIN, self.args.size_mib * MiB, 1),
            (KEY_SHAPED, self.args.shaped_mib * MiB, 2),
            (KEY_BIG, int(self.args.big_gib * GiB), 3),
        ]
        if self.want("small_cp"):
            # Eight seeds between them: the emulator precomputes ~3 ms and a memfd per seed.
            objects += [
                (f"{SMALL_DIR}/f{i:05d}", self.args.small_kib * 1024, 4 + i % 8)
                for i in range(self.args.small_files)
            ]
        listing = self.tmp / "objects.json"  # a file: thousands of small_cp keys outgrow argv
        listing.write_text(json.dumps(objects))
        prof = ["-m", "cProfile", "-o", self.args.profile_emulator]
        if not self.args.profile_emulator:
            prof = []
        proc = subprocess.Popen(
            [sys.executable, *prof, __file__, "--serve-emulator", str(listing)],
            stdout=subprocess.PIPE,
            stderr=open(self.tmp / "emulator.err", "wb"),  # noqa: SIM115 - closed with proc
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline().decode().strip()
        if not line.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"emulator did not start: {(self.tmp / 'emulator.err').read_text()}")
        self.endpoint = line
        self.emu_pid = proc.pid

    def url(self, key: str) -> str:
        return f"{self.endpoint}/{BUCKET}/{key}"

    def shaping(self, latency_s: float, conn_bps: float) -> None:
        req = urllib.request.Request(
            f"{self.endpoint}/_emulator/shaping?latency_s={latency_s}&conn_bps={conn_bps}",
            method="POST",
            data=b"",
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()

    def _wait_mounted(self, proc: subprocess.Popen[bytes], mnt: Path, what: str) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited {proc.returncode} before mounting")
            if os.path.ismount(mnt):
                os.stat(mnt)
                time.sleep(0.2)  # read_ahead_kb is raised just after the first stat answers
                return
            time.sleep(0.05)
        raise RuntimeError(f"{what} did not mount {mnt} within 30 s")

    def _new_dir(self, name: str) -> Path:
        self.seq += 1
        path = self.tmp / f"{name}-{self.seq}"
        path.mkdir()
        return path

    @contextlib.contextmanager
    def ossmount(self, cache: Path, *extra: str) -> Iterator[tuple[int, Path]]:
        mnt = self._new_dir("mnt")
        # --profile-daemon: the daemon under cProfile (deterministic call counts per read;
        # its figures are slowed by the profiler, the stats are written at unmount).
        prof = ["-m", "cProfile", "-o", self.args.profile_daemon]
        if not self.args.profile_daemon:
            prof = []
        cmd = [
            sys.executable, *prof, "-m", "ossmount", BUCKET, str(mnt),
            "--endpoint", self.endpoint,
            "--cache-dir", str(cache),
            "--log-file", str(self.tmp / "ossmount.log"),
            "--parallel-count", str(self.args.parallel),
            "-f",
            *self.args.mount_arg,
            *extra,
        ]  # fmt: skip
        with self._fuse(cmd, mnt, "ossmount") as pid:
            yield pid, mnt

    @contextlib.contextmanager
    def ref_fs(self, file: Path) -> Iterator[tuple[int, Path]]:
        mnt = self._new_dir("ref")
        cmd = [sys.executable, str(REF_FS), str(file), str(mnt), "--read-ahead-kb",
               str(self.args.kernel_readahead_kb)]  # fmt: skip
        with self._fuse(cmd, mnt, "ref_fs") as pid:
            yield pid, mnt / "data"

    @contextlib.contextmanager
    def _fuse(self, cmd: list[str], mnt: Path, what: str) -> Iterator[int]:
        proc = subprocess.Popen(
            cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.tmp
        )
        self.procs.append(proc)
        self.mounts.append(mnt)
        try:
            self._wait_mounted(proc, mnt, what)
            yield proc.pid
        finally:
            self._unmount(mnt)
            self._stop(proc)
            self.mounts.remove(mnt)
            self.procs.remove(proc)
            with contextlib.suppress(OSError):
                mnt.rmdir()

    def _unmount(self, mnt: Path) -> None:
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True, check=False)
        if os.path.ismount(mnt):
            time.sleep(0.5)
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True, check=False)

    _stop = staticmethod(stop)

    def cleanup(self) -> None:
        self.ballast.release()
        for mnt in list(self.mounts):
            self._unmount(mnt)
        for proc in list(self.procs):
            if proc.poll() is None:
                proc.terminate()
            self._stop(proc, timeout=10)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # measuring ----------------------------------------------------------------------------

    @staticmethod
    def timed(cmd: Sequence[str], stdout: int | None = subprocess.DEVNULL) -> float:
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=stdout)
        return time.perf_counter() - t0

    def cp(self, src: Path, size: int, pid: int) -> tuple[float, float]:
        """(MB/s, daemon CPU s/GiB) of `cp src` into the temp dir; the copy is removed."""
        out = self.tmp / "out.bin"
        self.ballast.prime()
        c0 = cpu_seconds(pid)
        secs = self.timed(["cp", str(src), str(out)])
        cpu = cpu_seconds(pid) - c0
        if out.stat().st_size != size:
            raise RuntimeError(f"cp of {src} produced {out.stat().st_size} bytes, not {size}")
        out.unlink()
        return size / secs / MB, cpu / (size / GiB)

    def cat(self, src: Path, size: int) -> float:
        return size / self.timed(["cat", str(src)]) / MB

    def curl(self, key: str, rng: str | None = None) -> tuple[float, int]:
        """(seconds, bytes) of one curl GET to /dev/null."""
        cmd = ["curl", "-sS", "-f", "-o", "/dev/null", "-w", "%{time_total} %{size_download}"]
        if rng:
            cmd += ["-r", rng]
        out = subprocess.run([*cmd, self.url(key)], check=True, capture_output=True, text=True)
        secs, size = out.stdout.split()
        return float(secs), int(size)

    @staticmethod
    def wait_verified(path: Path, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                state = os.getxattr(path, "user.ossmount.state").decode()
            if state in ("verified", "unverifiable", "corrupt"):
                return state
            time.sleep(0.05)
        return state

    @staticmethod
    def settle() -> float:
        """Flush dirty pages (the cache file's last fdatasync, cp's output) between phases."""
        t0 = time.perf_counter()
        os.sync()
        return time.perf_counter() - t0

    @staticmethod
    def cache_file(cache: Path) -> Path:
        files = sorted(cache.rglob("*.data"), key=lambda p: p.stat().st_size)
        if not files:
            raise RuntimeError(f"no cache file in {cache}")
        return files[-1]

    def want(self, name: str) -> bool:
        return not self.args.only or name in self.args.only

    # workloads ----------------------------------------------------------------------------

    def run_once(self) -> None:
        size = self.args.size_mib * MiB
        if self.want("curl_get"):
            if not self.fig.has("curl_get"):
                self.curl(KEY_MAIN)  # untimed: the emulator's first read of it is slow
            c0 = cpu_seconds(self.emu_pid)
            secs, got = self.curl(KEY_MAIN)
            self.fig.add("curl_get", got / secs / MB)
            self.fig.add("curl_get.emu_cpu", (cpu_seconds(self.emu_pid) - c0) / (got / GiB))
        main_path = Path(KEY_MAIN)
        if self.want("cold_cp") or self.want("reread") or self.want("remount_cp"):
            cache = self._new_dir("cache")
            with self.ossmount(cache) as (pid, mnt):
                src = mnt / main_path
                os.stat(src)  # the lookup (a listing) is not part of the byte path
                c0 = cpu_seconds(self.emu_pid)
                mbps, cpu = self.cp(src, size, pid)
                self.fig.add("cold_cp", mbps)
                self.fig.add("cold_cp.cpu", cpu)
                self.fig.add("cold_cp.emu_cpu", (cpu_seconds(self.emu_pid) - c0) / (size / GiB))
                state = self.wait_verified(src)
                if state != "verified":
                    raise RuntimeError(f"after the cold cp the object is {state!r}")
                self.fig.add("cold_cp.sync_s", self.settle())
                if self.want("reread"):
                    c0 = cpu_seconds(pid)
                    self.fig.add("reread", self.cat(src, size))
                    self.fig.add("reread.cpu", (cpu_seconds(pid) - c0) / (size / GiB))
                    self.fig.add("reread.second", self.cat(src, size))
                    self.fig.add("reread.ref", self.cat(self.cache_file(cache), size))
            if self.want("remount_cp"):
                # A, B, B, A: whichever copy runs first after the cold phase was ~20 % slower
                # (measured both ways round), so each side gets one early and one late turn.
                for turn, ours in enumerate((True, False, False, True)):
                    if ours:
                        self.remount_cp_ours(cache, main_path, size)
                    else:
                        self.remount_cp_ref(cache, size, reread=turn == 1)
                    self.settle()
            shutil.rmtree(cache)
        if self.want("ttfb"):
            cache = self._new_dir("cache")
            with self.ossmount(cache) as (_pid, mnt):
                src = mnt / main_path
                os.stat(src)
                t0 = time.perf_counter()
                fd = os.open(src, os.O_RDONLY)
                try:
                    first = os.read(fd, 1)
                finally:
                    os.close(fd)
                self.fig.add("ttfb", (time.perf_counter() - t0) * 1000)
                if len(first) != 1:
                    raise RuntimeError("ttfb: read returned no byte")
            shutil.rmtree(cache)
            secs, got = self.curl(KEY_MAIN, f"0-{PART - 1}")
            self.fig.add("ttfb.ref", secs * 1000)
        if self.want("rss"):
            self.rss()
        if self.want("shaped_cp"):
            shaped = self.args.shaped_mib * MiB
            cache = self._new_dir("cache")
            self.shaping(0.020, 50e6)
            try:
                with self.ossmount(cache) as (pid, mnt):
                    src = mnt / KEY_SHAPED
                    os.stat(src)
                    mbps, _cpu = self.cp(src, shaped, pid)
                    self.fig.add("shaped_cp", mbps)
            finally:
                self.shaping(0.0, 0.0)
            shutil.rmtree(cache)
            self.settle()
        if self.want("small_cp"):
            self.small_cp()
        if self.want("randread"):
            self.randread()

    def remount_cp_ours(self, cache: Path, key: Path, size: int) -> None:
        with self.ossmount(cache) as (pid, mnt):
            src = mnt / key
            os.stat(src)
            mbps, cpu = self.cp(src, size, pid)
            self.fig.add("remount_cp", mbps)
            self.fig.add("remount_cp.cpu", cpu)

    def remount_cp_ref(self, cache: Path, size: int, *, reread: bool) -> None:
        with self.ref_fs(self.cache_file(cache)) as (pid, src):
            os.stat(src)
            mbps, cpu = self.cp(src, size, pid)
            self.fig.add("remount_cp.ref", mbps)
            self.fig.add("remount_cp.ref_cpu", cpu)
            if reread and self.want("reread"):
                self.fig.add("reread.fuse_ref", self.cat(src, size))

    def small_cp(self) -> None:
        self.shaping(0.020, 50e6)
        try:
            self.small_cp_once("small_cp")
            self.small_cp_once("small_cp.off", "--dir-prefetch", "0")
        finally:
            self.shaping(0.0, 0.0)
        self.small_cp_once("small_cp.local")  # no latency: what the daemon costs per file

    def small_cp_once(self, figure: str, *extra: str) -> None:
        cache = self._new_dir("cache")
        out = self._new_dir("out") / SMALL_DIR
        with self.ossmount(cache, *extra) as (pid, mnt):
            c0 = cpu_seconds(pid)
            secs = self.timed(["cp", "-r", str(mnt / SMALL_DIR), str(out)])
            self.fig.add(figure, self.args.small_files / secs)
            self.fig.add(figure + ".cpu_ms", (cpu_seconds(pid) - c0) / self.args.small_files * 1e3)
        shutil.rmtree(cache)
        shutil.rmtree(out.parent)

    def emulator_requests(self, method: str) -> list[dict[str, object]]:
        req = urllib.request.Request(f"{self.endpoint}/_emulator/requests", method=method)
        with urllib.request.urlopen(req, timeout=30) as resp:
            out: list[dict[str, object]] = json.loads(resp.read())
        return out

    def randread(self, n: int = 2000, seed: int = 42) -> None:
        """The referee's W8 (shared/peers/randread.py): n random 4 KiB-aligned preads of the cold
        main object in one process; seconds, daemon and emulator CPU per read, bytes GET."""
        cache = self._new_dir("cache")
        with self.ossmount(cache) as (pid, mnt):
            src = mnt / KEY_MAIN
            size = os.stat(src).st_size
            rng = random.Random(seed)
            offsets = [rng.randrange(0, size // 4096) * 4096 for _ in range(n)]
            self.emulator_requests("DELETE")
            c0, e0 = cpu_seconds(pid), cpu_seconds(self.emu_pid)
            s0, es0 = sys_seconds(pid), sys_seconds(self.emu_pid)
            fd = os.open(src, os.O_RDONLY)
            try:
                t0 = time.perf_counter()
                for off in offsets:
                    if len(os.pread(fd, 4096, off)) != 4096:
                        raise RuntimeError(f"randread: short read at {off}")
                secs = time.perf_counter() - t0
            finally:
                os.close(fd)
            cpu, emu = cpu_seconds(pid) - c0, cpu_seconds(self.emu_pid) - e0
            kern, ekern = sys_seconds(pid) - s0, sys_seconds(self.emu_pid) - es0
            got = sum(
                int(str(r["bytes_sent"]))
                for r in self.emulator_requests("GET")
                if r["op"] == "GetObject"
            )
        self.fig.add("randread", secs)
        self.fig.add("randread.cpu_ms", cpu / n * 1e3)
        self.fig.add("randread.emu_ms", emu / n * 1e3)
        self.fig.add("randread.sys_ms", kern / n * 1e3)
        self.fig.add("randread.emu_sys_ms", ekern / n * 1e3)
        self.fig.add("randread.mib", got / MiB)
        shutil.rmtree(cache)

    def rss(self) -> None:
        big = int(self.args.big_gib * GiB)
        cache = self._new_dir("cache")
        with self.ossmount(cache) as (pid, mnt):
            src = mnt / KEY_BIG
            os.stat(src)
            samples: list[tuple[float, float]] = []
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    value = rss_mib(pid)
                    if value is not None:
                        samples.append((time.perf_counter(), value))
                    stop.wait(0.1)

            thread = threading.Thread(target=sample, daemon=True)
            before = rss_mib(pid) or 0.0
            thread.start()
            try:
                t0 = time.perf_counter()
                self.fig.add("rss.mbps", self.cat(src, big))
                t1 = time.perf_counter()
            finally:
                stop.set()
                thread.join()
        shutil.rmtree(cache)
        self.settle()
        values = [v for _, v in samples]
        # "flat": RSS at the end vs RSS a quarter of the way through the read.
        quarter = [v for t, v in samples if t >= t0 + (t1 - t0) / 4]
        self.fig.add("rss", max(values))
        self.fig.add("rss.last", values[-1])
        self.fig.add("rss.start", before)
        self.fig.add("rss.growth", values[-1] - (quarter[0] if quarter else values[0]))

    # report -------------------------------------------------------------------------------

    def report(self) -> list[str]:
        f = self.fig
        lines: list[str] = []

        def line(name: str, value: str, unit: str, target: str, ok: bool | None, note: str) -> None:
            verdict = "info" if ok is None else ("PASS" if ok else "FAIL")
            lines.append(f"{name} {value} {unit} {target} {verdict}  # {note}")

        if f.has("curl_get"):
            line(
                "curl_get", f.fmt("curl_get"), "MB/s", "-", None,
                f"{self.args.size_mib} MiB single GET to /dev/null (object warmed); emulator CPU "
                f"{f.fmt('curl_get.emu_cpu', 2)} s/GiB",
            )  # fmt: skip
        if f.has("cold_cp"):
            ref = f.med("curl_get") if f.has("curl_get") else None
            target = f">={0.5 * ref:.0f}(0.5xcurl)" if ref else "0.5xcurl"
            line(
                "cold_cp", f.fmt("cold_cp"), "MB/s", target,
                None if ref is None else f.med("cold_cp") >= 0.5 * ref,
                f"daemon CPU {f.fmt('cold_cp.cpu', 2)} s/GiB; emulator CPU "
                f"{f.fmt('cold_cp.emu_cpu', 2)} s/GiB; sync after {f.fmt('cold_cp.sync_s', 2)} s",
            )  # fmt: skip
        if f.has("reread"):
            ref = f.med("reread.ref")
            line(
                "reread", f.fmt("reread"), "MB/s", f">={0.8 * ref:.0f}(0.8xcat_cache_file)",
                f.med("reread") >= 0.8 * ref,
                f"cat of the cache file {f.fmt('reread.ref')} MB/s; second re-read "
                f"{f.fmt('reread.second')} MB/s; first re-read through "
                f"ref_fs {f.fmt('reread.fuse_ref')} MB/s; daemon CPU "
                f"{f.fmt('reread.cpu', 2)} s/GiB",
            )  # fmt: skip
        if f.has("remount_cp"):
            ref = f.med("remount_cp.ref")
            line(
                "remount_cp", f.fmt("remount_cp"), "MB/s", f">={0.8 * ref:.0f}(0.8xref_fs)",
                f.med("remount_cp") >= 0.8 * ref,
                f"daemon CPU {f.fmt('remount_cp.cpu', 2)} s/GiB; ref_fs cp "
                f"{f.fmt('remount_cp.ref')} MB/s at {f.fmt('remount_cp.ref_cpu', 2)} s/GiB",
            )  # fmt: skip
        if f.has("ttfb"):
            ref = f.med("ttfb.ref")
            line(
                "ttfb", f.fmt("ttfb", 1), "ms", f"<={1.5 * ref:.1f}(1.5xpart_GET)",
                f.med("ttfb") <= 1.5 * ref,
                f"open+read(1) cold; curl ranged GET of one 8 MiB part {f.fmt('ttfb.ref', 1)} ms",
            )  # fmt: skip
        if f.has("rss"):
            flat = f.med("rss.growth") <= 10
            line(
                "rss", f.fmt("rss", 1), "MiB", "<=150,flat",
                f.med("rss") <= 150 and flat,
                f"{self.args.big_gib:g} GiB cat at {f.fmt('rss.mbps')} MB/s; last "
                f"{f.fmt('rss.last', 1)} MiB, at mount {f.fmt('rss.start', 1)} MiB, growth over "
                f"the last 3/4 {f.fmt('rss.growth', 1)} MiB",
            )  # fmt: skip
        if f.has("shaped_cp"):
            par = self.args.parallel
            target = 0.8 * par * 50
            line(
                "shaped_cp", f.fmt("shaped_cp"), "MB/s", f">={target:.0f}(0.8x{par}x50)",
                f.med("shaped_cp") >= target,
                f"{self.args.shaped_mib} MiB cold cp, emulator latency 20 ms + 50 MB/s per conn",
            )  # fmt: skip
        if f.has("small_cp"):
            line(
                "small_cp", f.fmt("small_cp"), "files/s", "-", None,
                f"{self.args.small_files} x {self.args.small_kib} KiB cold cp -r, emulator "
                f"latency 20 ms + 50 MB/s per conn; with --dir-prefetch 0: "
                f"{f.fmt('small_cp.off')} files/s; no latency: {f.fmt('small_cp.local')} "
                f"files/s at {f.fmt('small_cp.local.cpu_ms', 2)} ms daemon CPU per file",
            )  # fmt: skip
        if f.has("randread"):
            line(
                "randread", f.fmt("randread", 2), "s", "-", None,
                f"2000 random 4 KiB preads of the cold {self.args.size_mib} MiB object (W8); "
                f"{f.fmt('randread.mib')} MiB GET; daemon CPU {f.fmt('randread.cpu_ms', 2)} ms "
                f"(sys {f.fmt('randread.sys_ms', 2)}), emulator CPU "
                f"{f.fmt('randread.emu_ms', 2)} ms (sys {f.fmt('randread.emu_sys_ms', 2)}) "
                "per read",
            )  # fmt: skip
        return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--serve-emulator", help=argparse.SUPPRESS)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--profile-daemon", default="", help="cProfile the daemon into FILE")
    ap.add_argument("--profile-emulator", default="", help="cProfile the emulator into FILE")
    ap.add_argument("--size-mib", type=int, default=1024, help="main object (default 1024)")
    ap.add_argument("--big-gib", type=float, default=10, help="RSS workload object (default 10)")
    ap.add_argument("--shaped-mib", type=int, default=512, help="shaped workload (default 512)")
    ap.add_argument("--small-files", type=int, default=500, help="small_cp (default 500)")
    ap.add_argument("--small-kib", type=int, default=16, help="small_cp object size (default 16)")
    ap.add_argument("--parallel", type=int, default=4, help="the mount's --parallel-count")
    ap.add_argument("--kernel-readahead-kb", type=int, default=4096, help="for ref_fs")
    ap.add_argument("--only", type=lambda s: s.split(","), default=[], help=",".join(WORKLOADS))
    ap.add_argument("--mount-arg", action="append", default=[], help="extra ossmount argument")
    ap.add_argument("--src", help="run ossmount from this checkout (PYTHONPATH)")
    ap.add_argument("--dir", default="/var/tmp", help="where mounts, caches and copies go")
    ap.add_argument(
        "--ballast-gib", type=float, default=3,
        help="written and deleted before each timed copy (default 3; 0: off; see 'Fresh memory')",
    )  # fmt: skip
    args = ap.parse_args()
    if args.serve_emulator:
        objects = json.loads(Path(args.serve_emulator).read_text())
        serve_emulator([(k, int(size), int(seed)) for k, size, seed in objects])
        return 0
    for name in args.only:
        if name not in WORKLOADS:
            ap.error(f"unknown workload {name!r}; choose from {','.join(WORKLOADS)}")
    if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
        print("bench_mount: needs /dev/fuse and fusermount3", file=sys.stderr)
        return 2

    def on_term(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    bench = Bench(args)
    try:
        bench.start_emulator()
        print(
            f"# bench_mount: emulator {bench.endpoint} (pid {bench.emu_pid}), {args.size_mib} MiB "
            f"object, parallel {args.parallel}, mount args {args.mount_arg or '-'}, "
            f"repeat {args.repeat}",
            flush=True,
        )
        cold, warm = fresh_page_tax(bench.tmp)
        print(
            f"env fresh_pages {cold:.2f} s/GiB 5 s after freeing, {warm:.2f} s/GiB right after  "
            f"# CPU to write a new file; page reporting "
            f"{'on' if Path('/sys/module/page_reporting').exists() else 'off'}; ballast "
            f"{args.ballast_gib:g} GiB before each timed copy",
            flush=True,
        )
        for _ in range(args.repeat):
            bench.run_once()
        for text in bench.report():
            print(text, flush=True)
    finally:
        bench.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
