"""Our own CPU per small file written, without the kernel: W15's FUSE requests replayed on
`Operations` (the pyfuse3 adapter and everything under it) in one process, the emulator in
another, so what is timed is ours alone: the handlers, their trio waits and the HTTP client.

The sequence per file is the one a real mount logged for GNU tar's extraction of a file into
an existing directory (session 24): LOOKUP of the new name (ENOENT), CREATE, two WRITEs (a
tar block and the rest), GETATTR of the parent directory (the kernel's after its change),
GETATTR, SETATTR (owner), GETXATTR security.capability, GETATTR, SETATTR (mode), SETATTR
(times), FLUSH, RELEASE. What the kernel and pyfuse3's loop add per request is not here:
compare with `perf trace -s tar ...` on a mount for that.

Prints per file: wall and this process's CPU (median [min..max] over `--runs` runs of
`--files` files each, a new directory per run), and, per handler, the CPU of its calls.
`--src DIR` runs another checkout's `ossmount` (PYTHONPATH-like; this harness's own modules
come from this tree); `--profile FILE` writes a cProfile of one extra run.

    PYTHONPATH=. .venv/bin/python bench/bench_fs_writes.py --files 2000 --runs 5
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import cProfile
import errno
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import trio

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--kib", type=int, default=8)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--src", default=str(HERE.parent), help="checkout whose ossmount runs")
    parser.add_argument("--profile", default="", help="cProfile one extra run into FILE")
    parser.add_argument(
        "--dir", default="/var/tmp", help="where the cache and staging dirs go (/dev/shm: "
        "no disk, so the ext4 cost of a create is left out)",
    )  # fmt: skip
    args = parser.parse_args()
    sys.path.insert(0, args.src)
    sys.path.insert(1, str(HERE))
    trio.run(run_all, args)


async def run_all(args: argparse.Namespace) -> None:
    import pyfuse3
    from bench_client import spawn_emulator

    from ossmount.fs.ops import Operations
    from tests.fs.test_writes import BUCKET, write_rig

    code = (
        "import sys\nfrom ossmount.emulator import Emulator\n"
        f"emu = Emulator(buckets=[{BUCKET!r}], access_key_id='ak', access_key_secret='sk')\n"
        "emu.start()\nprint(emu.endpoint, flush=True)\n"
        "try:\n    sys.stdin.read()\nfinally:\n    emu.stop()\n"
    )
    proc, endpoint = spawn_emulator(code)
    tmp = Path(tempfile.mkdtemp(dir=args.dir, prefix="bench-fsw-"))
    try:
        rig_of = contextlib.asynccontextmanager(write_rig)
        async with rig_of(SimpleNamespace(endpoint=endpoint), tmp, rw=True) as rig:  # type: ignore[arg-type]
            ops = Operations(rig.fs)
            ctx = SimpleNamespace(uid=os.getuid(), gid=os.getgid(), pid=os.getpid(), umask=0o022)
            data = os.urandom(args.kib * 1024)
            cut = min(len(data), 10240 - 512)  # tar's first block holds the header too
            walls: list[float] = []
            cpus: list[float] = []
            per_op: dict[str, list[float]] = collections.defaultdict(list)
            for run in range(args.runs + 1 + bool(args.profile)):
                profiler = None
                if args.profile and run == args.runs + 1:
                    profiler = cProfile.Profile()
                    profiler.enable()
                times: dict[str, float] = collections.defaultdict(float)
                t0, c0 = time.perf_counter(), time.process_time()
                await one_run(ops, pyfuse3, ctx, f"r{run}", data, cut, args.files, times)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                if profiler is not None:
                    profiler.disable()
                    profiler.dump_stats(args.profile)
                elif run:  # the first warms up
                    walls.append(wall / args.files * 1e6)
                    cpus.append(cpu / args.files * 1e6)
                    for op, spent in times.items():
                        per_op[op].append(spent / args.files * 1e6)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{args.files} files x {args.kib} KiB, {args.runs} runs, median [min..max], us/file")
    print(f"wall {fmt(walls)}   CPU {fmt(cpus)}")
    for op, values in sorted(per_op.items(), key=lambda kv: -statistics.median(kv[1])):
        print(f"  {op:10s} CPU {fmt(values)}")


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):7.1f} [{min(values):.1f}..{max(values):.1f}]"


async def one_run(
    ops: Any, pyfuse3: Any, ctx: Any, name: str, data: bytes, cut: int, files: int,
    times: dict[str, float],
) -> None:  # fmt: skip
    async def timed(op: str, call: Any) -> Any:
        c0 = time.process_time()
        try:
            return await call
        finally:
            times[op] += time.process_time() - c0

    root = pyfuse3.ROOT_INODE
    folder = await ops.mkdir(root, name.encode(), 0o755, ctx)
    parent = folder.st_ino
    for i in range(files):
        leaf = f"f{i:05d}".encode()
        try:
            await timed("lookup", ops.lookup(parent, leaf, ctx))
            raise SystemExit(f"{leaf!r}: a new name was found")
        except pyfuse3.FUSEError as exc:
            if exc.errno != errno.ENOENT:
                raise
        info, entry = await timed(
            "create", ops.create(parent, leaf, 0o100644, os.O_WRONLY | os.O_CREAT | os.O_EXCL, ctx)
        )
        fh, inode = info.fh, entry.st_ino
        await timed("write", ops.write(fh, 0, data[:cut]))
        if cut < len(data):
            await timed("write", ops.write(fh, cut, data[cut:]))
        await timed("getattr", ops.getattr(parent, ctx))
        await timed("getattr", ops.getattr(inode, ctx))
        await timed("setattr", setattr_(ops, pyfuse3, inode, fh, ctx, uid=ctx.uid, gid=ctx.gid))
        with contextlib.suppress(pyfuse3.FUSEError):  # ENODATA
            await timed("getxattr", ops.getxattr(inode, b"security.capability", ctx))
        await timed("getattr", ops.getattr(inode, ctx))
        await timed("setattr", setattr_(ops, pyfuse3, inode, fh, ctx, mode=0o100644))
        now = time.time_ns() - 86400 * 10**9
        await timed("setattr", setattr_(ops, pyfuse3, inode, None, ctx, times=now))
        await timed("flush", ops.flush(fh))
        await timed("release", ops.release(fh))


async def setattr_(
    ops: Any, pyfuse3: Any, inode: int, fh: int | None, ctx: Any, *, uid: int | None = None,
    gid: int | None = None, mode: int | None = None, times: int | None = None,
) -> Any:  # fmt: skip
    attr = pyfuse3.EntryAttributes()
    fields = SimpleNamespace(
        update_size=False, update_mtime=times is not None, update_atime=times is not None,
        update_mode=mode is not None, update_uid=uid is not None, update_gid=gid is not None,
    )  # fmt: skip
    if uid is not None and gid is not None:
        attr.st_uid, attr.st_gid = uid, gid
    if mode is not None:
        attr.st_mode = mode
    if times is not None:
        attr.st_mtime_ns = attr.st_atime_ns = times
    return await ops.setattr(inode, attr, fields, fh, ctx)


if __name__ == "__main__":
    main()
