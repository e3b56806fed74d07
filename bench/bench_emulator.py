"""Benchmark: curl against the OSS emulator (on-disk and synthetic 1 GiB objects) and nginx.

Prints, in one run, curl's single-GET MB/s and 4x/8x parallel-range MB/s, each with the
server's CPU seconds per GiB served (utime+stime of the server processes from /proc), for:
  * the emulator serving a 1 GiB file from ``--data-dir`` (os.sendfile),
  * the emulator serving a 1 GiB synthetic object (memoryview slices),
  * nginx (``sendfile on; tcp_nopush off;``, one worker) serving the same file,
so the emulator's figures are compared with nginx's on the same machine in the same run.
Targets (issue 4): single GET >= 1.0x nginx at <= 0.3 server CPU s/GiB.

    .venv/bin/python bench/bench_emulator.py [--size-mib 1024] [--reps 3]

With ``--upload`` it measures the write path instead: one PUT of the object with
``curl --upload-file`` from a tmpfs file into ``--data-dir`` on disk, then one GET of it back
(the download path in the same conditions), each printed as median [min..max] MB/s with the
server's CPU s/GiB; ``--fast-etag`` passes the emulator's flag of that name, ``--src DIR``
runs the emulator of another checkout (for before/after figures).

    .venv/bin/python bench/bench_emulator.py --upload [--fast-etag] [--reps 5] [--src DIR]

``--multipart`` (with ``--upload``): one multipart upload by this tree's ``Uploader`` (8 MiB
parts, 4 in flight, the W13 shape) instead of the PUT. Server CPU is split user/system and
by kind of thread (``ThreadCpu``: the event loop, trio's worker threads, the upload stages).

    PYTHONPATH=. .venv/bin/python bench/bench_emulator.py --upload [--multipart] \\
        --src /path/to/base --src . --reps 7

``--where`` (a checkout per ``--src``, taking turns): where a faithful PUT's time goes,
from an in-process emulator whose MD5 stage is timed (``bench_where``).

Measured 2026-12-06 (2 vCPU VM, load average 4-8 from other work throughout, so every
figure is low and wide; base = main at 37cb67a, after = the upload pump, pump.py),
median [min..max] MB/s and emulator CPU s/GiB (user + system):

                                        base                   after
    faithful PUT (ETag = MD5), 7 each   400 [350..444]  2.31   343 [280..642]   2.15
    the same, in-process, 10 each       363 [327..535]  2.36   419 [277..563]   2.04
    --fast-etag PUT, 7 each             639 [554..1039] 0.69   1123 [619..1286] 0.42
    multipart 8 MiB x4 (ours), 5 each   326 [298..345]  2.47   367 [322..376]   2.27
      of which the event-loop thread                    0.71                    0.20
    MD5 alone: openssl speed -evp md5 1 MiB = 748 MB/s (1.43 s/GiB); the MD5 stage uses
    1.44-1.55 CPU s per GiB PUT in both trees.

Where a faithful PUT's time goes (``--where``; "in-process" above): in both
trees the MD5 thread is the bound, waiting for data only 0.0-0.2 s per GiB; the rest of the
wall time is the MD5 thread runnable but not running (run-queue wait 0.4-2.3 s per GiB on
this loaded VM), so the wall time is MD5's 1.45-1.5 CPU s plus what the other work on the
two cores takes from it; lower emulator CPU per GiB (after: ~2.0 against ~2.35) leaves more.
In a quiet minute an earlier variant of the pump (reused buffers) ran 1 GiB in 1.49-1.52 s
(705-720 MB/s, run-queue wait 0.01-0.04 s): the MD5 bound.

Every server it starts it stops (by PID); temp dirs are removed. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ossmount.crc64 import crc64  # noqa: E402
from ossmount.emulator.store import (  # noqa: E402
    FileBody,
    ObjectVersion,
    Store,
    SyntheticBody,
    md5_etag,
    segment_bytes,
)

CLK = os.sysconf("SC_CLK_TCK")
NGINX = "/usr/sbin/nginx"


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLK
    return total


def children(pid: int) -> list[int]:
    out = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids = (task / "children").read_text().split()
        out += [int(k) for k in kids]
    return out


def curl_get(url: str, rng: str | None = None) -> subprocess.Popen[bytes]:
    cmd = ["curl", "-s", "--fail", "-o", "/dev/null", "-H", "Accept-Encoding: identity"]
    if rng:
        cmd += ["-r", rng]
    return subprocess.Popen([*cmd, url])


def measure(
    url: str, size: int, parallel: int, pids: Callable[[], list[int]]
) -> tuple[float, float]:
    """(MB/s, server CPU s/GiB) for one transfer of the whole object in ``parallel`` ranges."""
    procs = pids()
    c0 = cpu_seconds(procs)
    t0 = time.perf_counter()
    if parallel == 1:
        jobs = [curl_get(url)]
    else:
        step = -(-size // parallel)
        jobs = [
            curl_get(url, f"{i * step}-{min(size, (i + 1) * step) - 1}") for i in range(parallel)
        ]
    for j in jobs:
        if j.wait() != 0:
            raise RuntimeError(f"curl failed for {url}")
    wall = time.perf_counter() - t0
    cpu = cpu_seconds(procs) - c0
    return size / wall / 1e6, cpu / (size / (1 << 30))


def make_disk_object(data_dir: Path, size: int) -> Path:
    """A real file in the emulator's data dir (bytes from the synthetic generator)."""
    store = Store(data_dir)
    store.create_bucket("demo")
    tmp = data_dir / ".tmp" / "bench-object"
    syn = SyntheticBody(42, size)
    md5 = hashlib.md5()
    crc = 0
    with open(tmp, "wb") as f:
        for seg in syn.segments(0, size):
            chunk = segment_bytes(seg)
            f.write(chunk)
            md5.update(chunk)
            crc = crc64(chunk, crc)
    obj = ObjectVersion(
        key="disk-1GiB.bin",
        body=FileBody(tmp, size),
        etag=md5_etag(md5.digest()),
        mtime=time.time(),
        crc64=crc,
        content_type="application/octet-stream",
    )
    published = store.publish("demo", obj)
    assert isinstance(published.body, FileBody)
    return published.body.path


def start_emulator(
    data_dir: Path, extra: tuple[str, ...] = (), src: Path = ROOT
) -> tuple[subprocess.Popen[str], str]:
    env = dict(os.environ, PYTHONPATH=str(src))
    proc = subprocess.Popen(
        [sys.executable, "-m", "ossmount.emulator.cli", "--port", "0", "--data-dir",
         str(data_dir), "--bucket", "demo", "--public-read", *extra],
        stdout=subprocess.PIPE, text=True, env=env, cwd=src,  # -m puts the cwd first
    )  # fmt: skip
    assert proc.stdout is not None
    endpoint = proc.stdout.readline().strip()
    if not endpoint.startswith("http://"):
        proc.kill()
        raise RuntimeError("emulator did not start")
    return proc, endpoint


def start_nginx(prefix: Path, file: Path) -> tuple[int, str] | None:
    if not os.access(NGINX, os.X_OK):
        return None
    www = prefix / "www"
    www.mkdir(parents=True)
    os.link(file, www / "big.bin")
    file.chmod(0o644)
    for d in (file.parent, file.parent.parent):
        d.chmod(0o755)
    (prefix / "logs").mkdir()
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""
worker_processes 1;
daemon on;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush off;
    client_body_temp_path {prefix}/tmp_body;
    proxy_temp_path {prefix}/tmp_proxy;
    fastcgi_temp_path {prefix}/tmp_fcgi;
    uwsgi_temp_path {prefix}/tmp_uwsgi;
    scgi_temp_path {prefix}/tmp_scgi;
    server {{
        listen 127.0.0.1:{port};
        root {www};
    }}
}}
"""
    )
    subprocess.run([NGINX, "-p", str(prefix), "-c", str(conf)], check=True)
    pidfile = prefix / "nginx.pid"
    for _ in range(100):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        time.sleep(0.05)
    return int(pidfile.read_text()), f"http://127.0.0.1:{port}/big.bin"


class ThreadCpu:
    """A server process's CPU over one transfer by kind of thread, user and system seconds
    from /proc/PID/task: ``loop`` (the main thread: trio's event loop), ``workers`` (trio's
    ``to_thread`` threads, named "Trio thread N", kept alive between jobs: the upload pump)
    and ``stages`` (the process's total, which keeps ended threads' time, less those two:
    the writer's per-upload MD5 / write stage threads, which end with their upload)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.base = self._sample()
        self.base_process = self._process()

    def _sample(self) -> dict[int, tuple[str, int, int]]:
        out: dict[int, tuple[str, int, int]] = {}
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            try:
                comm = (task / "comm").read_text().strip()
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            out[int(task.name)] = (comm, int(fields[11]), int(fields[12]))
        return out

    def stop(self) -> dict[str, tuple[float, float]]:
        """{kind: (user s, system s)} since the start."""
        tot_u, tot_s = self._process()
        out: dict[str, tuple[float, float]] = {"loop": (0.0, 0.0), "workers": (0.0, 0.0)}
        for tid, (comm, ut, st) in self._sample().items():
            _, ut0, st0 = self.base.get(tid, (comm, 0, 0))
            if tid == self.pid or comm.startswith("Trio"):
                kind = "loop" if tid == self.pid else "workers"
                u, s = out[kind]
                out[kind] = (u + (ut - ut0) / CLK, s + (st - st0) / CLK)
        u = tot_u - self.base_process[0] - out["loop"][0] - out["workers"][0]
        s = tot_s - self.base_process[1] - out["loop"][1] - out["workers"][1]
        out["stages"] = (max(u, 0.0), max(s, 0.0))
        return out

    def _process(self) -> tuple[float, float]:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) / CLK, int(fields[12]) / CLK


Run = tuple[float, dict[str, tuple[float, float]]]  # (MB/s, per-kind CPU s per GiB)


def _timed(fn: Callable[[], object], pid: int, size: int) -> Run:
    """(MB/s, per-thread-kind server CPU s/GiB) of ``fn`` moving ``size`` bytes."""
    cpu = ThreadCpu(pid)
    t0 = time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    gib = size / (1 << 30)
    kinds = {k: (u / gib, s / gib) for k, (u, s) in cpu.stop().items()}
    return size / wall / 1e6, kinds


def _curl(cmd: list[str]) -> Callable[[], object]:
    return lambda: subprocess.run(["curl", "-sS", "--fail", "-o", "/dev/null", *cmd], check=True)


def _summary(runs: list[Run]) -> str:
    """MB/s median [min..max]; server CPU s/GiB (user+sys) median [min..max], the user and
    system medians, and the median per kind of thread."""
    mbps = [r[0] for r in runs]
    tot = [sum(u + s for u, s in r[1].values()) for r in runs]
    user = statistics.median(sum(u for u, _ in r[1].values()) for r in runs)
    sys_ = statistics.median(sum(s for _, s in r[1].values()) for r in runs)
    kinds = sorted({k for r in runs for k in r[1]})
    per = ", ".join(
        f"{k} {statistics.median(sum(r[1].get(k, (0.0, 0.0))) for r in runs):.2f}" for k in kinds
    )
    return (
        f"{statistics.median(mbps):>5.0f} [{min(mbps):.0f}..{max(mbps):.0f}] MB/s, server"
        f" {statistics.median(tot):.2f} [{min(tot):.2f}..{max(tot):.2f}] CPU s/GiB"
        f" (user {user:.2f} sys {sys_:.2f}; {per})"
    )


def bench_upload(size: int, reps: int, fast_etag: bool, srcs: list[Path], parts: bool) -> None:
    """One PUT from tmpfs into the data dir on disk, then one GET back, ``reps`` times per
    checkout, the checkouts taking turns (one emulator each, all started up front); with
    ``parts`` one multipart upload by our client (``Uploader``: 8 MiB parts, 4 in flight,
    from a staged file on tmpfs) instead of the PUT."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-emulator-up-"))
    source = Path(tempfile.mkdtemp(prefix="bench-emulator-src-", dir="/dev/shm")) / "obj.bin"
    procs: list[tuple[subprocess.Popen[str], str]] = []
    try:
        with open(source, "wb") as f:
            for seg in SyntheticBody(11, size).segments(0, size):
                f.write(segment_bytes(seg))
        extra = ("--no-verify",) + (("--fast-etag",) if fast_etag else ())
        for i, src in enumerate(srcs):
            procs.append(start_emulator(tmp / f"data{i}", extra, src))
        ups: list[list[Run]] = [[] for _ in srcs]
        downs: list[list[Run]] = [[] for _ in srcs]
        for rep in range(reps + 1):  # run 0 warms up the page cache and is not counted
            for i, (proc, endpoint) in enumerate(procs):
                # a new key each time, deleted untimed afterwards: a PUT that replaces a 1 GiB
                # object also pays for freeing the old one, which is not the upload path
                url = f"{endpoint}/demo/upload-{rep}.bin"
                if parts:
                    job = functools.partial(_multipart, endpoint, source, rep)
                    up = _timed(job, proc.pid, size)
                else:
                    up = _timed(_curl(["--upload-file", str(source), url]), proc.pid, size)
                down = _timed(_curl(["-H", "Accept-Encoding: identity", url]), proc.pid, size)
                subprocess.run(["curl", "-sS", "--fail", "-X", "DELETE", url], check=True)
                if rep:
                    ups[i].append(up)
                    downs[i].append(down)
        what = "multipart x4 of 8 MiB (our Uploader)" if parts else "PUT (curl --upload-file)"
        print(f"# upload bench, {size >> 20} MiB, fast-etag={'on' if fast_etag else 'off'},"
              f" {reps} runs per checkout, interleaved")  # fmt: skip
        for i, src in enumerate(srcs):
            print(f"{src}\n  {what:<38} {_summary(ups[i])}")
            print(f"  {'GET of the same object':<38} {_summary(downs[i])}", flush=True)
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(source.parent, ignore_errors=True)


def _multipart(endpoint: str, source: Path, rep: int) -> None:
    """Commit ``source`` as object ``upload-<rep>.bin`` with this tree's ``Uploader``."""
    from ossmount.oss import Credentials, OssClient, OssConfig, StaticCredentialsProvider
    from ossmount.oss._writes import OssWrites
    from ossmount.write import StagedFile, Uploader, UploadLedger, UploadSettings

    async def go() -> None:
        config = OssConfig(endpoint, "demo", region="cn-hangzhou", pool_size=16)
        settings = UploadSettings(part_size=8 << 20, single_put_max=8 << 20, parallel=4)
        creds = StaticCredentialsProvider(Credentials("ak", "sk"))
        async with OssClient(config, creds) as client:
            ledger = UploadLedger(source.parent / "uploads.ledger")
            uploader = Uploader(OssWrites(client), ledger, settings)
            staged = StagedFile(source, source.parent / f"journal-{rep}")
            await uploader.commit(staged, uploader.new_record(f"upload-{rep}.bin"))

    trio.run(go)


# The --where child: an in-process emulator of the checkout on sys.path, its MD5 stage timed
# (time inside md5.update, that thread's CPU, and its run-queue wait from schedstat), then
# ``n`` PUTs of ``source`` by curl. Relies on writer._Stage (fn = md5.update) as both trees
# have it; a string, so it imports the checkout under test, not this file's tree.
_WHERE_CHILD = """
import os, subprocess, sys, tempfile, shutil, threading, time
from ossmount.emulator import Emulator
from ossmount.emulator import writer as W
source, n = sys.argv[1], int(sys.argv[2])
S = {}
orig = W._Stage.run
def run(self):
    if getattr(self.fn, "__name__", "") != "update":
        return orig(self)
    st = S["md5"] = {"wait": 0.0, "busy": 0.0, "cpu": 0.0, "rq": 0.0}
    q, fn = self.items, self.fn
    class Q:
        put = q.put
        @staticmethod
        def get():
            t = time.perf_counter(); it = q.get(); st["wait"] += time.perf_counter() - t
            return it
    def timed(d):
        t, c = time.perf_counter(), time.thread_time(); fn(d)
        st["busy"] += time.perf_counter() - t; st["cpu"] += time.thread_time() - c
    self.items, self.fn = Q(), timed
    path = f"/proc/self/task/{threading.get_native_id()}/schedstat"
    rq = lambda: int(open(path).read().split()[1]) / 1e9
    r0 = rq(); orig(self); st["rq"] = rq() - r0
W._Stage.run = run
d = tempfile.mkdtemp(prefix="bench-emulator-where-")
try:
    with Emulator(data_dir=d, verify_signatures=False) as emu:
        for i in range(n + 1):
            url = f"{emu.endpoint}/demo/w{i}.bin"
            S.clear(); t = time.perf_counter(); p0 = os.times()
            subprocess.run(["curl", "-sS", "--fail", "-o", "/dev/null", "--upload-file",
                            source, url], check=True)
            wall = time.perf_counter() - t; p1 = os.times()
            subprocess.run(["curl", "-sS", "--fail", "-X", "DELETE", url], check=True)
            m = S.get("md5", {})
            if i:  # the first warms up
                print(f"{os.path.getsize(source) / wall / 1e6:5.0f} MB/s | emulator user "
                      f"{p1.user - p0.user:.2f} sys {p1.system - p0.system:.2f} | MD5 thread "
                      f"CPU {m.get('cpu', 0):.2f}, in md5.update {m.get('busy', 0):.2f}, "
                      f"run-queue wait {m.get('rq', 0):.2f}, waiting for data "
                      f"{m.get('wait', 0):.2f} (s)", flush=True)
finally:
    shutil.rmtree(d, ignore_errors=True)
"""


def bench_where(size: int, reps: int, srcs: list[Path]) -> None:
    """Where a faithful PUT's time goes: per checkout (taking turns, ``reps`` rounds of two
    PUTs after a warm-up), wall MB/s, the emulator's CPU, and its MD5 thread's CPU, time
    inside md5.update, run-queue wait and wait for data, all in seconds for the PUT (so per
    GiB at the default size). A thread runnable but not running shows as run-queue wait."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-emulator-src-", dir="/dev/shm"))
    try:
        source = tmp / "obj.bin"
        with open(source, "wb") as f:
            for seg in SyntheticBody(11, size).segments(0, size):
                f.write(segment_bytes(seg))
        print(f"# where a faithful PUT of {size >> 20} MiB goes, {reps} rounds of 2 PUTs")
        for _ in range(reps):
            for src in srcs:
                env = dict(os.environ, PYTHONPATH=str(src))
                out = subprocess.run(
                    [sys.executable, "-c", _WHERE_CHILD, str(source), "2"],
                    env=env, cwd=src, check=True, capture_output=True, text=True,
                )  # fmt: skip
                for line in out.stdout.splitlines():
                    print(f"{src}: {line}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--upload", action="store_true", help="measure PUT instead (see above)")
    ap.add_argument("--fast-etag", action="store_true", help="with --upload: emulator flag")
    ap.add_argument(
        "--src",
        type=Path,
        action="append",
        help="with --upload: a checkout to run (repeat it:"
        " the checkouts take turns; default this one)",
    )
    ap.add_argument("--multipart", action="store_true", help="with --upload: see bench_upload")
    ap.add_argument("--where", action="store_true", help="where a PUT's time goes (bench_where)")
    args = ap.parse_args()
    size = args.size_mib << 20
    if args.where:
        bench_where(size, args.reps, [p.resolve() for p in args.src or [ROOT]])
        return 0
    if args.upload:
        srcs = [p.resolve() for p in args.src or [ROOT]]
        bench_upload(size, args.reps, args.fast_etag, srcs, args.multipart)
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="bench-emulator-"))
    tmp.chmod(0o755)  # nginx workers run as an unprivileged user and must reach the file
    emu_proc: subprocess.Popen[str] | None = None
    nginx_pid: int | None = None
    try:
        data_dir = tmp / "data"
        file = make_disk_object(data_dir, size)
        emu_proc, endpoint = start_emulator(data_dir)
        # the synthetic object, added through the admin-free path: a PUT of a marker is not
        # possible, so the CLI's store is reached by restarting with it persisted.
        emu_proc.send_signal(signal.SIGTERM)
        emu_proc.wait(timeout=30)
        store = Store(data_dir)
        syn = SyntheticBody(7, size)
        store.publish(
            "demo",
            ObjectVersion(
                key="synthetic-1GiB.bin", body=syn, etag=md5_etag(b"\x07" * 16),
                mtime=time.time(), crc64=syn.crc(), content_type="application/octet-stream",
            ),
        )  # fmt: skip
        emu_proc, endpoint = start_emulator(data_dir)
        emu_pid = emu_proc.pid
        targets: list[tuple[str, str, Callable[[], list[int]]]] = [
            ("emulator disk", f"{endpoint}/demo/disk-1GiB.bin", lambda: [emu_pid]),
            ("emulator synthetic", f"{endpoint}/demo/synthetic-1GiB.bin", lambda: [emu_pid]),
        ]
        ng = start_nginx(tmp / "nginx", file)
        if ng is not None:
            nginx_pid, url = ng
            master = nginx_pid
            targets.append(("nginx sendfile", url, lambda: children(master)))
        print(f"# {size >> 20} MiB object, median of {args.reps}, server CPU from /proc")
        print(f"{'server':<20} {'mode':<12} {'MB/s':>8} {'CPU s/GiB':>10}")
        results: dict[tuple[str, int], float] = {}
        for name, url, pids in targets:
            measure(url, size, 1, pids)  # warm the page cache and the connection path
            for parallel in (1, 4, 8):
                runs = [measure(url, size, parallel, pids) for _ in range(args.reps)]
                mbps = statistics.median(r[0] for r in runs)
                cpu = statistics.median(r[1] for r in runs)
                results[(name, parallel)] = mbps
                mode = "single GET" if parallel == 1 else f"{parallel}x ranges"
                print(f"{name:<20} {mode:<12} {mbps:>8.0f} {cpu:>10.3f}", flush=True)
        if ng is not None:
            for name in ("emulator disk", "emulator synthetic"):
                ratio = results[(name, 1)] / results[("nginx sendfile", 1)]
                print(f"# {name} single GET = {ratio:.2f} x nginx")
    finally:
        if emu_proc is not None and emu_proc.poll() is None:
            emu_proc.send_signal(signal.SIGTERM)
            emu_proc.wait(timeout=30)
        if nginx_pid is not None:
            os.kill(nginx_pid, signal.SIGQUIT)
            for _ in range(100):
                try:
                    os.kill(nginx_pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
