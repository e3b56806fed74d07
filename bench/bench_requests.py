#!/usr/bin/env python3
"""Python cost per request and per listing entry: what a small file and a `find` pay.

Issue 13 W7 measured ~3.5 ms of daemon CPU per small file, about half of it building, signing
and sending each GET; W6 a cold `find` of 10k objects at 0.77 s. This bench isolates both
costs in the client alone:

* `gets`: `--objects` objects of `--size-kib` each are served by the package emulator in a
  *separate process* (signatures verified, so the client really signs V4), and one task GETs
  each of them (`get_into` a scratch buffer, offset 0, if_match unset) in turn. Printed: wall
  µs per GET and the client process's CPU µs per GET, median [min..max] over `--repeat` runs.
  The first pass (connection set-up, `--pooled` connections opened by as many parallel
  loops: a mount's pool after parallel reads) is not timed.
* `floor`: the emulator's own time per ranged GET (see `bench_floor`).
* `list`: `_xml.parse_list_v2` of a 1,000-key ListObjectsV2 page as the emulator writes it
  (URL-encoded keys), µs per entry, median [min..max]; also the same through `list_page`
  against the emulator (HTTP + parse), µs per entry.

    .venv/bin/python bench/bench_requests.py                     # both, 2,000 x 8 KiB, 5 runs
    .venv/bin/python bench/bench_requests.py --what gets --profile /tmp/gets.prof
    .venv/bin/python bench/bench_requests.py --what heads --objects 2000 --pooled 32

`heads` (session 13, what `--own-attrs` pays per listed file): 32 HEADs in flight through
httpcore cost 790 us of client CPU each, its pool scanning every connection per request; on
our own connections (`OssClient.head_headers`) 83 us.

`--profile FILE` writes a cProfile of one extra `gets` run (read with `python -m pstats`).

Before/after the client branch of session 5 (3 interleaved invocation pairs, `--repeat 3`,
median of the invocations' medians; 2 vCPU VM shared with other work, so ±20 %):

    figure                                   before   after
    gets CPU us/GET (2,000 x 8 KiB)            751      593
    gets wall us/GET                          1586     1213
    parse_list_v2 CPU us/entry                18.2      8.9
    list_page over HTTP CPU us/entry          21.0     14.5

Session 6 (issue 13, W8), ranged GETs on the client's own connections (oss/_wire.py) and the
emulator's hand-parsed GET heads; `--what floor,gets --size-kib 64 --objects 2000 --repeat 3`,
3 interleaved invocation pairs, medians (a loaded machine: walls are not comparable):

    figure                                   before   after
    gets CPU us/GET (2,000 x 64 KiB)           829      278
    Python calls per GET (cProfile)          2,170     ~700

`floor` sends one pre-built signed request again and again on a raw blocking socket: its wall
time is the emulator's own cost per GET (~250-300 us quiet), which no client can go under; it
also prints the emulator process's CPU per GET.

Session 7 (issue 13, W8): syscalls before trio's socket methods on both ends (oss/_wire.py,
emulator/sendfast.py); 3 interleaved invocation pairs, `--what gets,floor --size-kib 64
--repeat 3`, each checkout run from its own tree (the emulator child imports from the bench
file's checkout), medians of the three:

    figure                                   before   after
    gets CPU us/GET (2,000 x 64 KiB)           207      175
    floor emulator CPU us/GET                  155       95
    floor wall us/GET                          205      149
    Python calls per GET, client (cProfile)    556      410

Session 8 (issue 13, W8): `spots` is W8's GETs without the mount (2,000 random 64 KiB ranges
of one 64 MiB object, If-Match pinned, so one key is signed again and again). Each checkout
run with its own bench file (main: this file copied in), 3 interleaved invocation pairs,
`--what spots --size-kib 64 --repeat 3`, medians (load ~6 on 2 cores):

    figure                                   before   after
    spots CPU us/GET                           187      144
    Python calls per GET, client (cProfile)     417      154

What went: signing (the signed lines are reused within a second: oss/_gethead.py), the two
cancel scopes per GET (oss/_wire.py, _client.get: ~11-13 us each), re-parsing the same
Last-Modified and header lines (oss/_reply.py, oss/_wire.py), a poll object per reuse.

Session 5: Python calls per GET (cProfile, deterministic): 2,603 -> 2,170. Of what is left (cProfile
self time): trio 19 %, h11 17 %, httpcore 17 %, httpx 3 %, builtins and stdlib called
mostly from those 31 %, the client's own modules 11 % (request and response heads through
h11, the pool's bookkeeping, five cancel scopes per request inside httpcore).
Figures on the 2 vCPU VMs move ±15 % between runs (shared/measurements.md): compare runs
made side by side.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import random
import re
import resource
import socket
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_client import BUCKET, bench_client, spawn_emulator  # a sibling script, not a package

from ossmount.oss import BufferSink, OssClient, OssWrites, signing
from ossmount.oss._xml import parse_list_v2

EMULATOR_CHILD = textwrap.dedent(
    """
    import sys
    from ossmount.emulator import Emulator
    emu = Emulator(buckets=[%(bucket)r], access_key_id="ak", access_key_secret="sk")
    emu.start()
    data = bytes(range(256)) * (%(size)d // 256 + 1)
    for i in range(%(objects)d):
        emu.put_object(%(bucket)r, "d/%%06d" %% i, data[: %(size)d])
    if %(spots)r:
        emu.put_object(%(bucket)r, "big", bytes(range(256)) * (%(big)d // 256))
    print(emu.endpoint, flush=True)
    try:
        sys.stdin.read()
    finally:
        emu.stop()
    """
)


def cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):8.1f} [{min(values):.1f}..{max(values):.1f}]"


async def get_loop(client: OssClient, keys: list[str], size: int) -> None:
    sink = BufferSink(bytearray(size))
    for key in keys:
        res = await client.get(key, 0, size, sink)
        if res.length != size:
            raise SystemExit(f"short GET of {key}: {res.length}")


async def bench_gets(endpoint: str, args: argparse.Namespace) -> None:
    size = args.size_kib * 1024
    keys = [f"d/{i:06d}" for i in range(args.objects)]
    walls: list[float] = []
    cpus: list[float] = []
    async with bench_client(endpoint) as client:
        # Warm up: imports, caches and `--pooled` idle connections in the pool, as a mount
        # has after parallel reads (httpcore checks each idle one on every request).
        async with trio.open_nursery() as nursery:
            for n in range(args.pooled):
                nursery.start_soon(get_loop, client, keys[n :: args.pooled], size)
        await get_loop(client, keys, size)
        for _ in range(args.repeat):
            t0, c0 = time.perf_counter(), cpu_s()
            await get_loop(client, keys, size)
            walls.append((time.perf_counter() - t0) / len(keys) * 1e6)
            cpus.append((cpu_s() - c0) / len(keys) * 1e6)
        if args.profile:
            profiler = cProfile.Profile(time.thread_time)  # CPU, not wall
            profiler.enable()
            await get_loop(client, keys, size)
            profiler.disable()
            profiler.dump_stats(args.profile)
    what = f"gets  {args.objects} x {args.size_kib} KiB, {args.pooled} pooled"
    print(f"{what}  wall us/GET {fmt(walls)}")
    print(f"{what}  CPU  us/GET {fmt(cpus)}")


SPOT_OBJECT = 64 * 1024 * 1024


async def bench_spots(endpoint: str, args: argparse.Namespace) -> None:
    """W8's GETs without the mount: `--objects` ranged GETs of `--size-kib` at random aligned
    offsets of one 64 MiB object, pinned with If-Match as a spot read pins them."""
    size = args.size_kib * 1024
    rng = random.Random(42)
    offsets = [rng.randrange(SPOT_OBJECT // size) * size for _ in range(args.objects)]
    sink = BufferSink(bytearray(size))
    walls: list[float] = []
    cpus: list[float] = []
    async with bench_client(endpoint) as client:
        etag = (await client.head("big")).etag

        async def loop() -> None:
            for offset in offsets:
                res = await client.get("big", offset, size, sink, if_match=etag)
                if res.length != size:
                    raise SystemExit(f"short GET at {offset}: {res.length}")

        await loop()  # warm up
        for _ in range(args.repeat):
            t0, c0 = time.perf_counter(), cpu_s()
            await loop()
            walls.append((time.perf_counter() - t0) / len(offsets) * 1e6)
            cpus.append((cpu_s() - c0) / len(offsets) * 1e6)
        if args.profile:
            profiler = cProfile.Profile(time.thread_time)  # CPU, not wall
            profiler.enable()
            await loop()
            profiler.disable()
            profiler.dump_stats(args.profile)
    what = f"spots {args.objects} x {args.size_kib} KiB of one object"
    print(f"{what}  wall us/GET {fmt(walls)}")
    print(f"{what}  CPU  us/GET {fmt(cpus)}")


def floor_request(client: OssClient, key: str, size: int) -> bytes:
    """One signed ranged GET of `key` as the client would send it, as raw bytes."""
    headers = {
        "User-Agent": "ossmount/0.1",
        "Accept-Encoding": "identity",
        "Range": f"bytes=0-{size - 1}",
        "x-oss-range-behavior": "standard",
    }
    host = client.config.base_url().split("://", 1)[1]
    signed = signing.sign_v4_headers(
        "GET",
        BUCKET,
        key,
        [],
        headers,
        access_key_id="ak",
        secret="sk",
        region="cn-hangzhou",
        now=time.time(),
    )
    lines = [f"GET {client._target(key, [])} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in signed.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def proc_cpu_s(pid: int) -> float:
    """user+sys CPU seconds of process `pid` (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_floor(endpoint: str, args: argparse.Namespace, emulator_pid: int) -> None:
    """The emulator's own cost per ranged GET: one pre-built signed request sent again and
    again on one keep-alive connection by a blocking socket, head found by hand, body read by
    Content-Length with recv_into. What is left of the wall time is the server's (plus two
    syscalls of ours): no client can go below it against this server."""
    size = args.size_kib * 1024
    client = bench_client(endpoint)
    request = floor_request(client, "d/000000", size)
    host, port = endpoint.split("://", 1)[1].rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray(size + 65536)
    view = memoryview(buf)

    def one() -> None:
        sock.sendall(request)
        got = 0
        while True:
            got += sock.recv_into(view[got:])
            end = buf.find(b"\r\n\r\n", 0, got)
            if end >= 0:
                break
        m = re.search(rb"(?i)content-length: *(\d+)", buf[:end])
        if m is None or not buf.startswith(b"HTTP/1.1 206"):
            raise SystemExit(f"floor: unexpected reply {bytes(buf[:200])!r}")
        total = end + 4 + int(m.group(1))
        while got < total:
            got += sock.recv_into(view[got:total])

    n = args.objects
    for _ in range(50):
        one()
    walls: list[float] = []
    cpus: list[float] = []
    emus: list[float] = []
    for _ in range(args.repeat):
        t0, c0, e0 = time.perf_counter(), cpu_s(), proc_cpu_s(emulator_pid)
        for _ in range(n):
            one()
        walls.append((time.perf_counter() - t0) / n * 1e6)
        cpus.append((cpu_s() - c0) / n * 1e6)
        emus.append((proc_cpu_s(emulator_pid) - e0) / n * 1e6)
    sock.close()
    what = f"floor {n} x {args.size_kib} KiB, raw socket"
    print(f"{what}  wall us/GET {fmt(walls)}")
    print(f"{what}  CPU  us/GET {fmt(cpus)}  (this client's own)")
    print(f"{what}  CPU  us/GET {fmt(emus)}  (the emulator's)")


def list_page_xml(n: int) -> bytes:
    """A 1,000-key page shaped like the emulator's (and OSS's) ListObjectsV2 reply."""
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult><Name>bench</Name>'
        "<Prefix>dir%2F</Prefix><MaxKeys>1000</MaxKeys><Delimiter>%2F</Delimiter>"
        "<EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>"
    ]
    for i in range(n):
        parts.append(
            f"<Contents><Key>dir%2Fsub%20dir%2Ffile-{i:06d}.dat</Key>"
            "<LastModified>2026-01-02T03:04:05.000Z</LastModified>"
            f'<ETag>"5B3C1A2E4F6D8B7A9C0E1F2A3B4C{i:04X}"</ETag><Type>Normal</Type>'
            f"<Size>{i * 37}</Size><StorageClass>Standard</StorageClass></Contents>"
        )
    parts.append("<CommonPrefixes><Prefix>dir%2Fz%2F</Prefix></CommonPrefixes>")
    parts.append(
        "<NextContinuationToken>dir%2Fsub%20dir%2Ffile-000999.dat</NextContinuationToken>"
        f"<KeyCount>{n + 1}</KeyCount></ListBucketResult>"
    )
    return "".join(parts).encode()


def bench_parse(args: argparse.Namespace) -> None:
    body = list_page_xml(1000)
    per_entry: list[float] = []
    for _ in range(args.repeat):
        rounds = 20
        c0 = time.process_time()
        for _ in range(rounds):
            result = parse_list_v2(body)
        per_entry.append((time.process_time() - c0) / rounds / len(result.objects) * 1e6)
    print(f"list  parse_list_v2 of 1,000-key pages    CPU us/entry {fmt(per_entry)}")


async def bench_list_http(endpoint: str, args: argparse.Namespace) -> None:
    per_entry: list[float] = []
    async with bench_client(endpoint) as client:
        await client.list_page("d/", "/", None, 1000)
        for _ in range(args.repeat):
            entries = 0
            c0 = time.process_time()
            token: str | None = None
            while True:
                page = await client.list_page("d/", "/", token, 1000)
                entries += len(page.objects)
                token = page.next_token
                if token is None:
                    break
            per_entry.append((time.process_time() - c0) / entries * 1e6)
    print(f"list  list_page over HTTP, {args.objects} keys   CPU us/entry {fmt(per_entry)}")


async def bench_heads(endpoint: str, args: argparse.Namespace) -> None:
    """What `--own-attrs` pays per listed file (fs/ownattrs.py): `--objects` HEADs for the
    user metadata (`OssWrites.object_headers`), `--pooled` at a time as an opendir sends
    them. Printed: wall and client CPU us per HEAD, median [min..max] of `--repeat` runs."""
    keys = [f"d/{i:06d}" for i in range(args.objects)]
    walls: list[float] = []
    cpus: list[float] = []

    async def loop(writes: OssWrites, part: list[str]) -> None:
        for key in part:
            await writes.object_headers(key)

    async def run(writes: OssWrites) -> None:
        async with trio.open_nursery() as nursery:
            for n in range(args.pooled):
                nursery.start_soon(loop, writes, keys[n :: args.pooled])

    async with bench_client(endpoint) as client:
        writes = OssWrites(client)
        await run(writes)
        for _ in range(args.repeat):
            t0, c0 = time.perf_counter(), cpu_s()
            await run(writes)
            walls.append((time.perf_counter() - t0) / len(keys) * 1e6)
            cpus.append((cpu_s() - c0) / len(keys) * 1e6)
        if args.profile:
            profiler = cProfile.Profile(time.thread_time)
            profiler.enable()
            await run(writes)
            profiler.disable()
            profiler.dump_stats(args.profile)
    what = f"heads {args.objects}, {args.pooled} at a time"
    print(f"{what}  wall us/HEAD {fmt(walls)}")
    print(f"{what}  CPU  us/HEAD {fmt(cpus)}")


async def bench_puts(endpoint: str, args: argparse.Namespace, emulator_pid: int) -> None:
    """What a small file's commit pays in the client and in the emulator (W15's shape):
    `--objects` PutObjects of `--size-kib` each, one at a time, new keys each run, the
    CRC-64 checked as a mount checks it. Printed per PUT: wall, this client's CPU and the
    emulator process's CPU, median [min..max] of `--repeat` runs."""
    body = os.urandom(args.size_kib * 1024)
    walls: list[float] = []
    cpus: list[float] = []
    emus: list[float] = []
    async with bench_client(endpoint) as client:
        writes = OssWrites(client)
        for run in range(args.repeat + 1):
            t0, c0, e0 = time.perf_counter(), cpu_s(), proc_cpu_s(emulator_pid)
            for i in range(args.objects):
                await writes.put_object(f"p{run}/{i:06d}", body)
            if run:  # the first warms up
                walls.append((time.perf_counter() - t0) / args.objects * 1e6)
                cpus.append((cpu_s() - c0) / args.objects * 1e6)
                emus.append((proc_cpu_s(emulator_pid) - e0) / args.objects * 1e6)
    what = f"puts  {args.objects} x {args.size_kib} KiB, one at a time"
    print(f"{what}  wall us/PUT {fmt(walls)}")
    print(f"{what}  CPU  us/PUT {fmt(cpus)}  (this client's own)")
    print(f"{what}  CPU  us/PUT {fmt(emus)}  (the emulator's)")


def start_emulator(args: argparse.Namespace) -> tuple[subprocess.Popen[str], str]:
    code = EMULATOR_CHILD % {
        "bucket": BUCKET,
        "size": args.size_kib * 1024,
        "objects": args.objects,
        "spots": "spots" in args.what,
        "big": SPOT_OBJECT,
    }
    return spawn_emulator(code)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--what",
        default="gets,list",
        help="comma list of: gets, spots, heads, puts, list, floor",
    )
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--size-kib", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--pooled", type=int, default=16, help="idle pooled connections")
    parser.add_argument("--profile", default="", help="cProfile one extra gets run into FILE")
    args = parser.parse_args()
    what = set(args.what.split(","))
    if "list" in what:
        bench_parse(args)
    if not what & {"gets", "spots", "heads", "puts", "list", "floor"}:
        return
    proc, endpoint = start_emulator(args)
    try:
        if "floor" in what:
            bench_floor(endpoint, args, proc.pid)
        if "gets" in what:
            trio.run(bench_gets, endpoint, args)
        if "spots" in what:
            trio.run(bench_spots, endpoint, args)
        if "heads" in what:
            trio.run(bench_heads, endpoint, args)
        if "puts" in what:
            trio.run(bench_puts, endpoint, args, proc.pid)
        if "list" in what:
            trio.run(bench_list_http, endpoint, args)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
