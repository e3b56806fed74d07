#!/usr/bin/env python3
"""What an UploadPart body read back from the staging file (`FileRange`, what the mount does)
costs the client. (Sending from the buffers the FUSE writes arrived in, `Chunks`, was measured
here until session 8: the mount kept those for its parts until session 7, write/hotparts.py,
dropped: through the mount it cost more CPU and ~30 MiB of RSS once bodies went out in one
thread; the figures are kept below.)

Two senders: httpx/httpcore (a trio task per piece, what every body went through before
oss/_upload_wire.py; `_upload_wire.ENABLED` off) and the thread path (in one worker thread a
CRC pass over the range, then the head and the range with blocking send and sendfile, the
reply read there too). `floor`: what a
sender cannot go below: a signed head, then one blocking sendmsg of head + pieces and one recv
per part in a worker thread, no CRC, no checks.

Runs the package emulator in a separate process (objects on disk under a temp dir, so the
client's CPU is the client's alone) and sends `--parts` 8 MiB parts, 4 in flight, per mode;
the modes take turns, `--repeat` rounds. Prints client CPU s/GiB (user + system, getrusage),
median [min..max], its user part and minor page faults, and the emulator's CPU s/GiB (from
/proc, 10 ms ticks): a change that only moves work to the receiver shows there.

    PYTHONPATH=. .venv/bin/python bench/bench_part_source.py [--mode ...]

Measured (2 vCPU VM shared with other work, `--parts 64 --repeat 3`, 2026-12-06, session 7):

    mode                     before: httpcore      thread path      thread path, trio's
                                                                    TCP_NOTSENT_LOWAT kept
    file (pread)             0.82-0.90 (user .30)  0.36-0.38 (.10)  0.46-0.52 (.14-.16)
    memory (1 MiB pieces)    0.52-0.60 (user .26)  0.30-0.34 (.12)  0.42-0.44 (.16)
    floor (memory)           0.22-0.34 (user .06); with a CRC pass added 0.28 (.12)

trio's 16 KiB TCP_NOTSENT_LOWAT cost ~0.12 s/GiB of system time (a blocked sendmsg woke per
16 KiB taken), hence lifted while a body goes.

Session 8: the thread path sends the staged range with sendfile after a CRC pass (preadv into
a 1 MiB buffer) instead of sendmsg from that buffer: one copy of each byte fewer. Same
machine, loaded (load 5-8 from other work), `--parts 128` (1 GiB), medians [min..max]:

    "file, thread path", base vs sendfile, 3 pairs of processes taking turns (--repeat 3):
      base  0.440 [0.410..0.520]  0.450 [0.390..0.470]  0.450 [0.420..0.460]
      ours  0.418 [0.323..0.422]  0.433 [0.365..0.467]  0.394 [0.368..0.409]
      floor (memory, both) 0.28-0.36
    both senders as modes of one process (--repeat 7, 11, 7): preadv+sendmsg 0.479, 0.491,
      0.409; sendfile 0.423, 0.428, 0.476 (that last run at load 8-12); emulator CPU the same
      for both (2.44/2.43, 2.61/2.62 s/GiB)

By `perf record` of the sender (a throwaway parts loop to a plain recv_into sink): the
preadv out of the page cache is the dearest step (~22 % of cycles, more than the sendmsg
copy's ~7 %: it is the first touch of the bytes); the CRC itself is ~3 %. Hence also measured
and not kept: CRC-pass pieces of 256 KiB / 512 KiB / 2 MiB (0.424 / 0.387 / 0.454 against
0.394 for 1 MiB, 9 rounds); a CRC pass over the whole part before one sendfile (the same as
per piece); and, against the plain sink, mmap of the range (CRC and sendmsg from the mapping:
-0.03..0.06 s/GiB; with sendfile -0.07..0.09, but the sink then paid +0.1..0.14) -- mmap is
out anyway: a staged file may be truncated under a part in flight, and a mapped page past the
new end is SIGBUS (oss/_upload_wire.py). Against that plain sink sendfile itself saved the
sender little and cost the sink ~0.14 s/GiB (page-by-page skbs); against the emulator that
cost does not show (above), so sendfile is kept on the figures of the real receiver.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

import trio

from ossmount.oss import Credentials, OssClient, OssConfig, StaticCredentialsProvider, _upload_wire
from ossmount.oss._wire import request_head
from ossmount.oss._writes import FileRange, OssWrites

MiB = 1 << 20
PS = 8 * MiB


MODES = ("file (pread)", "file, thread path", "floor (memory)")


async def floor_part(
    client: OssClient, key: str, upload_id: str, number: int, bufs: Pieces
) -> None:
    """The floor: a signed head, then one blocking sendmsg of head + pieces and one recv of
    the reply in a worker thread, on a new connection; no CRC, no checks, no pool."""
    query = [("partNumber", str(number)), ("uploadId", upload_id)]
    signed = await client._signer.sign("PUT", key, query, {"Content-Length": str(PS)})
    head = request_head("PUT", client._target(key, query), client._authority, signed, key)
    host, port = client._authority.rsplit(":", 1)

    def send() -> None:
        with socket.create_connection((host, int(port))) as sock:
            sock.sendmsg([head, *bufs])
            reply = sock.recv(65536)
        assert reply.startswith(b"HTTP/1.1 200"), reply[:200]

    await trio.to_thread.run_sync(send)


Pieces = tuple[bytes, ...]


class Figures(NamedTuple):
    """Per GiB sent: client user and system CPU s, client minor page faults, emulator CPU s."""

    user: float
    system: float
    faults: float
    server: float


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (clock ticks: 10 ms steps)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(
    endpoint: str, emu_pid: int, fd: int, parts: int, repeat: int, modes: list[str]
) -> dict[str, list[Figures]]:
    bufs = tuple(os.urandom(MiB) for _ in range(PS // MiB))
    out: dict[str, list[Figures]] = {mode: [] for mode in modes}
    creds = StaticCredentialsProvider(Credentials("ak", "sk"))
    async with OssClient(OssConfig(endpoint, "bkt", region="cn-hangzhou"), creds) as client:
        writes = OssWrites(client)
        for rnd in range(repeat):
            for mode, figures in out.items():
                key = f"k{rnd}-{list(out).index(mode)}"
                upload_id = await writes.initiate_multipart(key)
                limiter = trio.CapacityLimiter(4)
                _upload_wire.ENABLED = "thread" in mode

                async def one(
                    i: int,
                    key: str = key,
                    upload_id: str = upload_id,
                    mode: str = mode,
                    limiter: trio.CapacityLimiter = limiter,
                ) -> None:
                    body = FileRange(fd, i * PS, PS)
                    async with limiter:
                        if mode.startswith("floor"):
                            await floor_part(client, key, upload_id, i + 1, bufs)
                        else:
                            await writes.upload_part(key, upload_id, i + 1, body)

                e0, t0 = process_cpu(emu_pid), resource.getrusage(resource.RUSAGE_SELF)
                async with trio.open_nursery() as nursery:
                    for i in range(parts):
                        nursery.start_soon(one, i)
                t1, gib = resource.getrusage(resource.RUSAGE_SELF), parts * PS / (1 << 30)
                await trio.sleep(0.05)  # the emulator's last part is on disk before it is read
                figures.append(
                    Figures(
                        (t1.ru_utime - t0.ru_utime) / gib,
                        (t1.ru_stime - t0.ru_stime) / gib,
                        (t1.ru_minflt - t0.ru_minflt) / gib,
                        (process_cpu(emu_pid) - e0) / gib,
                    )
                )
                await writes.abort_multipart(key, upload_id)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", type=int, default=64)
    p.add_argument("--repeat", type=int, default=4)
    p.add_argument("--mode", action="append", choices=MODES, help="only these (repeatable)")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bps-", dir="/var/tmp"))
    env = dict(os.environ, OSS_ACCESS_KEY_ID="ak", OSS_ACCESS_KEY_SECRET="sk")
    emu = subprocess.Popen(
        [sys.executable, "-m", "ossmount.emulator.cli", "--port", "0", "--bucket", "bkt",
         "--data-dir", str(work / "data")],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert emu.stdout is not None
        endpoint = emu.stdout.readline().strip()
        staged = work / "staged"
        with open(staged, "wb") as f:
            for _ in range(args.parts * PS // MiB):
                f.write(os.urandom(MiB))
        fd = os.open(staged, os.O_RDONLY)
        try:
            modes = args.mode or list(MODES)
            out = trio.run(run, endpoint, emu.pid, fd, args.parts, args.repeat, modes)
        finally:
            os.close(fd)
        for mode, v in out.items():
            cpu = [f.user + f.system for f in v]
            med = statistics.median
            print(
                f"{mode:24} client CPU s/GiB {med(cpu):.3f} [{min(cpu):.3f}..{max(cpu):.3f}], "
                f"user {med(f.user for f in v):.3f}, faults/GiB {med(f.faults for f in v):.0f}"
                f"; emulator CPU s/GiB {med(f.server for f in v):.2f}"
            )
    finally:
        emu.terminate()
        emu.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
