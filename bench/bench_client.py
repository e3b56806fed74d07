#!/usr/bin/env python3
"""Client throughput benchmark: is the OSS client the ceiling of the mount?

Serves a >= 1 GiB object from a local server on 127.0.0.1 in a *separate process* (so the
client's CPU figure is the client's alone) and prints, for each server, in one run:

* curl's single-GET MB/s (the yardstick);
* the client's MB/s and CPU s/GiB for 1 stream and for 4 and 8 parallel 8 MiB ranged parts,
  CRC-64 computed on the fly, into memory and into a file (a sink that pwrites each window);
* the floor under the 4-part file figure: its into-memory CPU plus the CPU of pwriting the
  same bytes into a new file with no network at all (what any client pays for the page cache).

Servers: the package emulator (`ossmount.emulator.Emulator`, signature checks off, synthetic
object) and, where /usr/sbin/nginx exists, nginx with sendfile on and `tcp_nopush off`
(measurements.md §1: `on` caps one stream near 1.8 GB/s).

Each figure is the median of `--repeat` runs (spread shown); differences under ~20 % are noise
on these VMs (measurements.md). `--body-path httpx` forces httpx's own body iterator for a
side-by-side comparison with the default recv_into path. Output: one line per figure,
`server workload parallel target MB/s CPU-s/GiB`, plus the target check.

    .venv/bin/python bench/bench_client.py                     # everything, 1 GiB, 3 repeats
    .venv/bin/python bench/bench_client.py --size-mib 2048 --repeat 5 --servers emulator

Why the body path (ossmount/oss/_body.py) is what it is: the measurement log
-------------------------------------------------------------------------------
Measured on this VM kind (2 vCPU; receiver thread CPU for 1 GiB over a socketpair, 1 MiB
windows, CRC on): recv_into a scratch buffer + one pwrite per window 0.23-0.26 s/GiB at
~3.1 GB/s; recv_into straight into an mmap of the (new) cache file 2.3 s/GiB (a page fault
per 4 KiB), 0.37 with MAP_POPULATE; splice socket→pipe→file plus CRC over an mmap of the
written range 0.5-0.7 s/GiB. So the file path is "recv_into scratch, CRC, pwrite": its two
copies are the floor (a pwrite of 1 MiB into a fresh file alone costs ~0.18 s/GiB here).
In the client, with the per-part HTTP round trip, signing and trio scheduling, profiles show
>85 % of the CPU in the recv_into and pwrite syscalls and ~7 % in fastcrc. SO_RCVLOWAT
(256 KiB, to get fewer and larger wakeups with parallel parts) made no difference beyond
noise (0.49 vs 0.51 CPU s/GiB), so it is not used. A 1 MiB window beat 256 KiB and 4 MiB.
Also tried (session 2, `bench_client.py --targets file --repeat 5`, 4x8MiB): writing through
a shared mapping with MADV_POPULATE_WRITE per window costs 0.30-0.35 s/GiB against pwrite's
0.18 (ext4 page_mkwrite per page); a lock around the pwrites (4 threads on one file spin on
its inode lock: 0.30 vs 0.20 s/GiB in a pwrite-only test) changed nothing here (0.52 either
way). The floor for 4 parts into a file is into-memory (0.28) + pwrite (0.18) ≈ 0.46.

Small bodies stay on the trio thread. Measured (/tmp script, emulator in its own process,
get_to_fd, 5 interleaved repeats, µs per GET: wall / trio-thread CPU):

    body    1 stream loop  thread        4 parallel loop  thread
    64 KiB  907/791   1194/848          711/708    1151/889
    256 KiB 993/879   1272/828          793/792    1234/906
    1 MiB   1437/1300 1536/826          1284/1279  1406/911
    2 MiB   1916/1754 2078/907          1781/1780  1665/958
    8 MiB   4962/4793 5451/1049         4709/4613  3785/1147

The hop has a fixed cost (~60-180 µs of trio-thread CPU, ~100-400 µs of latency); from one
window (1 MiB) up it saves a third or more of the trio thread's time, below it it saves
nothing, hence THREAD_MIN_BYTES = 1 MiB. TLS bodies (the SSL object belongs to trio's stream)
and the httpx fallback always stay on the trio thread.

Before/after (HEAD vs this, 3 interleaved invocation pairs, median of the invocations'
medians; 2 vCPU VM, noisy ±30 %):
* `bench/bench_client.py --repeat 3 --targets file`, 4x8MiB file row: emulator 1982 → 2252
  MB/s at 0.53 → 0.58 CPU s/GiB; nginx 1549 → 1943 MB/s at 0.67 → 0.69 CPU s/GiB (1 stream:
  emulator 2414 → 2773 MB/s, 0.44 → 0.39 CPU s/GiB: MSG_WAITALL means fewer, larger reads).
* `bench/bench_mount.py --only cold_cp --repeat 3 --src <checkout>`: cold cp 745 → 767 MB/s,
  daemon 1.09 → 1.20 CPU s/GiB. Within noise here: with `cp`, the emulator and the daemon on
  2 vCPUs there is little idle second core to move the body work to (a colleague's scratch
  experiment on a quieter machine measured 459 → 938 MB/s).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ossmount.oss import (
    Credentials,
    OssClient,
    OssConfig,
    RetryPolicy,
    StaticCredentialsProvider,
    _body,
)

MiB = 1024 * 1024
GiB = 1024 * MiB
PART = 8 * MiB
BUCKET = "bench"
KEY = "big.bin"

EMULATOR_CHILD = textwrap.dedent(
    """
    import sys, time
    from ossmount.emulator import Emulator
    emu = Emulator(buckets=[%(bucket)r], verify_signatures=False)
    emu.start()
    emu.put_synthetic(%(bucket)r, %(key)r, %(size)d, seed=1)
    print(emu.endpoint, flush=True)
    try:
        sys.stdin.read()
    finally:
        emu.stop()
    """
)

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush off;
    keepalive_requests 100000;
    client_body_temp_path {root}/tmp;
    proxy_temp_path {root}/tmp;
    fastcgi_temp_path {root}/tmp;
    uwsgi_temp_path {root}/tmp;
    scgi_temp_path {root}/tmp;
    server {{
        listen 127.0.0.1:{port};
        root {root}/www;
    }}
}}
"""


def cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, name: str, endpoint: str, proc: subprocess.Popen[str], cleanup: Path | None):
        self.name = name
        self.endpoint = endpoint
        self.proc = proc
        self.cleanup = cleanup

    def stop(self) -> None:
        if self.proc.poll() is None:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.name == "nginx":
            # nginx's workers are in the master's process group (started as a new session)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        if self.cleanup is not None:
            shutil.rmtree(self.cleanup, ignore_errors=True)


def spawn_emulator(code: str) -> tuple[subprocess.Popen[str], str]:
    """Run `code` (an emulator that prints its endpoint, then serves until its stdin closes)
    in a separate Python process from the checkout root, so its CPU is not the client's;
    return the process and the endpoint. bench_requests.py starts its emulator this way too."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert proc.stdout is not None
    endpoint = proc.stdout.readline().strip()
    if not endpoint.startswith("http://"):
        proc.kill()
        proc.wait()
        raise SystemExit("emulator did not start")
    return proc, endpoint


def start_emulator(size: int) -> Server:
    code = EMULATOR_CHILD % {"bucket": BUCKET, "key": KEY, "size": size}
    proc, endpoint = spawn_emulator(code)
    return Server("emulator", endpoint, proc, None)


def start_nginx(size: int, data_dir: str) -> Server | None:
    if not os.path.exists("/usr/sbin/nginx"):
        return None
    root = Path(tempfile.mkdtemp(prefix="bench-nginx-", dir=data_dir))
    root.chmod(0o755)  # nginx workers run as nobody
    (root / "tmp").mkdir()
    (root / "www" / BUCKET).mkdir(parents=True)
    with open(root / "www" / BUCKET / KEY, "wb") as fh:
        chunk = os.urandom(16 * MiB)
        for _ in range(size // len(chunk)):
            fh.write(chunk)
        fh.write(chunk[: size % len(chunk)])
    port = free_port()
    (root / "nginx.conf").write_text(NGINX_CONF.format(root=root, port=port))
    proc = subprocess.Popen(
        ["/usr/sbin/nginx", "-c", str(root / "nginx.conf"), "-p", str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # its own process group, so stop() can end the workers too
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            subprocess.run(
                ["curl", "-sf", "-o", "/dev/null", "-r", "0-0", f"{endpoint}/{BUCKET}/{KEY}"],
                check=True,
                timeout=5,
            )
            break
        except subprocess.CalledProcessError:
            time.sleep(0.05)
    else:
        Server("nginx", endpoint, proc, root).stop()
        return None
    # warm the page cache (the first read of a new file is 2-5x slower: measurements.md)
    subprocess.run(["cat", str(root / "www" / BUCKET / KEY)], stdout=subprocess.DEVNULL)
    return Server("nginx", endpoint, proc, root)


class BenchSink:
    """The bench's destinations: straight into `dest` (memory: no copy at all on the
    plain-HTTP path), or, with an `fd`, a scratch window pwritten at `file_offset` + pos (the
    cache's part sink, ossmount.cache.sink, without the cache around it)."""

    def __init__(self, dest: memoryview, fd: int = -1, file_offset: int = 0) -> None:
        self._dest, self._fd, self._base = dest, fd, file_offset

    def window(self, pos: int, limit: int) -> memoryview:
        if self._fd < 0:
            return self._dest[pos : pos + limit]
        return self._dest[: min(limit, len(self._dest))]

    def commit(self, view: memoryview, pos: int) -> None:
        at = self._base + pos
        while self._fd >= 0 and view:
            n = os.pwrite(self._fd, view, at)
            view, at = view[n:], at + n


def curl_mbps(url: str) -> float:
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{speed_download}", url],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout) / 1e6


CHUNK = 1024 * 1024  # --chunk-kib: the scratch window of the file sink


def bench_client(endpoint: str, **config: Any) -> OssClient:
    """A client of bucket BUCKET on a local server, path-style, credentials ak/sk, no retry (a
    failure must show, not be absorbed in a figure), generous timeouts; `config` sets or
    overrides other `OssConfig` fields. bench_requests.py builds its client here too."""
    fields: dict[str, Any] = {
        "endpoint": endpoint,
        "bucket": BUCKET,
        "region": "cn-hangzhou",
        "addressing": "path",
        "read_timeout_s": 60,
        "stall_timeout_s": 60,
        **config,
    }
    return OssClient(
        OssConfig(**fields),
        StaticCredentialsProvider(Credentials("ak", "sk")),
        retry=RetryPolicy(max_attempts=1),
    )


def make_client(endpoint: str, signed: bool, parallel: int) -> OssClient:
    return bench_client(
        endpoint,
        chunk_size=CHUNK,
        signature_version="v4" if signed else "anonymous",
        pool_size=max(8, parallel),
    )


async def run_parts(
    client: OssClient, size: int, parallel: int, fetch: Callable[[int, int, int], Awaitable[int]]
) -> int:
    """`parallel` workers pull 8 MiB parts in order; returns bytes fetched."""
    next_part = 0
    total = 0

    async def worker(slot: int) -> None:
        nonlocal next_part, total
        while next_part * PART < size:
            index = next_part
            next_part += 1  # no await between read and increment: parts are handed out once
            offset = index * PART
            got = await fetch(slot, offset, min(PART, size - offset))
            total += got  # not `total += await ...`: that reads `total` before the await

    async with trio.open_nursery() as nursery:
        for slot in range(parallel):
            nursery.start_soon(worker, slot)
    return total


async def one_run(
    endpoint: str, signed: bool, size: int, parallel: int, target: str, path: Path
) -> tuple[float, float, str]:
    async with make_client(endpoint, signed, parallel) as client:
        await client.head(KEY)  # opens the first connection outside the timed part
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600) if target == "file" else -1
        try:
            if parallel == 1:
                buf = bytearray(size) if target == "memory" else None
                scratch = memoryview(bytearray(CHUNK))  # the file target's receive window
                t0, c0 = time.perf_counter(), cpu_s()
                if buf is not None:
                    res = await client.get(KEY, 0, size, BenchSink(memoryview(buf)))
                else:
                    res = await client.get(KEY, 0, size, BenchSink(scratch, fd))
                got = res.length
            else:
                bufs = [bytearray(PART) for _ in range(parallel)]
                scratches = [bytearray(CHUNK) for _ in range(parallel)]

                async def fetch(slot: int, offset: int, length: int) -> int:
                    if target == "memory":
                        view = memoryview(bufs[slot])[:length]
                        return (await client.get(KEY, offset, length, BenchSink(view))).length
                    sink = BenchSink(memoryview(scratches[slot]), fd, offset)
                    return (await client.get(KEY, offset, length, sink)).length

                t0, c0 = time.perf_counter(), cpu_s()
                got = await run_parts(client, size, parallel, fetch)
            elapsed, cpu = time.perf_counter() - t0, cpu_s() - c0
        finally:
            if fd >= 0:
                os.close(fd)
        if got != size:
            raise SystemExit(f"short transfer: {got} of {size}")
        paths = ",".join(sorted(client.statistics()))
    return got / elapsed / 1e6, cpu / (got / GiB), paths


def pwrite_cpu(path: Path, size: int, chunk: int) -> float:
    """CPU s/GiB of pwriting `size` bytes in `chunk`-byte calls into a new file: the part of
    the file target that no HTTP client can avoid (copying into fresh page cache)."""
    buf = memoryview(bytearray(os.urandom(chunk)))
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        c0 = cpu_s()
        for offset in range(0, size, chunk):
            os.pwrite(fd, buf[: min(chunk, size - offset)], offset)
        return (cpu_s() - c0) / (size / GiB)
    finally:
        os.close(fd)
        path.unlink()


def fmt(values: list[float]) -> str:
    med = statistics.median(values)
    return f"{med:8.0f} ({min(values):.0f}-{max(values):.0f})"


async def bench_server(server: Server, args: argparse.Namespace, size: int) -> None:
    signed = server.name == "emulator"
    url = f"{server.endpoint}/{BUCKET}/{KEY}"
    curl = [curl_mbps(url) for _ in range(args.repeat)]
    curl_med = statistics.median(curl)
    print(f"{server.name:9} curl      single-GET   {'/dev/null':7} MB/s {fmt(curl)}")
    file_path = Path(args.dir) / f"bench-client-{os.getpid()}.bin"
    results: dict[tuple[str, int], float] = {}
    cpu_at: dict[tuple[str, int], float] = {}
    try:
        for target in args.targets.split(","):
            for parallel in (1, 4, 8):
                speeds, cpus = [], []
                paths = ""
                for _ in range(args.repeat):
                    mbps, cpu, paths = await one_run(
                        server.endpoint, signed, size, parallel, target, file_path
                    )
                    speeds.append(mbps)
                    cpus.append(cpu)
                label = "1 stream" if parallel == 1 else f"{parallel}x8MiB"
                results[(target, parallel)] = statistics.median(speeds)
                cpu_at[(target, parallel)] = statistics.median(cpus)
                print(
                    f"{server.name:9} client    {label:12} {target:7} MB/s {fmt(speeds)}"
                    f"  CPU s/GiB {statistics.median(cpus):.2f}  crc=on body={paths}"
                )
    finally:
        file_path.unlink(missing_ok=True)
    if ("file", 4) not in results:
        return
    ratio = results[("file", 4)] / curl_med
    cpu4 = cpu_at[("file", 4)]
    ok = ratio >= 0.8 and cpu4 <= 0.4
    if ("memory", 4) in results:
        # The file target is the memory target plus copying into new page cache.
        pwrite = statistics.median(pwrite_cpu(file_path, size, CHUNK) for _ in range(args.repeat))
        floor = cpu_at[("memory", 4)] + pwrite
        print(
            f"{server.name:9} floor     4x8MiB file: into memory {cpu_at[('memory', 4)]:.2f} + "
            f"pwrite alone {pwrite:.2f} = {floor:.2f} CPU s/GiB"
        )
    print(
        f"{server.name:9} target    4x8MiB file: {ratio:.2f} x curl (>= 0.8), "
        f"{cpu4:.2f} CPU s/GiB (<= 0.4): {'MET' if ok else 'NOT MET'}"
    )


async def main_async(args: argparse.Namespace) -> None:
    size = args.size_mib * MiB
    if args.body_path == "httpx":
        _body.FAST_PATH_ENABLED = False
    print(
        f"# bench_client: object {args.size_mib} MiB, median of {args.repeat}, "
        f"body path {args.body_path}, python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    for name in args.servers.split(","):
        server = start_emulator(size) if name == "emulator" else start_nginx(size, args.dir)
        if server is None:
            print(f"{name:9} skipped (not available)")
            continue
        try:
            await bench_server(server, args, size)
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--servers", default="emulator,nginx")
    parser.add_argument("--body-path", choices=["recv_into", "httpx"], default="recv_into")
    parser.add_argument(
        "--chunk-kib", type=int, default=1024, help="the file sink's scratch window"
    )
    parser.add_argument("--targets", default="memory,file")
    parser.add_argument("--dir", default="/var/tmp", help="where the file target and nginx data go")
    args = parser.parse_args()
    global CHUNK
    CHUNK = args.chunk_kib * 1024
    trio.run(main_async, args)


if __name__ == "__main__":
    main()
