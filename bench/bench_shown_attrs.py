#!/usr/bin/env python3
"""What the shown-attributes table (fs/shown.py `ShownAttrs`) costs: memory per object and
the time of a lookup, the one it adds to every readdir entry and stat of a `--rw` mount.

Fills the table the way a big `rsync -a` into the mount does (keys of realistic length, a
fresh ETag string, mode, owner and an mtime with nanoseconds per object, as a commit learns
them, and the atime and ctime: `--times equal` as rsync's utimensat stores them, atime and
ctime one value; `distinct`, as after a chmod; `none`, as before they were kept), measured
with tracemalloc and as the process's RSS growth.

    PYTHONPATH=. .venv/bin/python bench/bench_shown_attrs.py [--objects 100000]
                                                             [--times equal|distinct|none]
"""

from __future__ import annotations

import argparse
import gc
import resource
import time
import tracemalloc

from ossmount.fs.shown import ShownAttrs, posix_of
from ossmount.oss._write_types import posix_meta


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--times", choices=("equal", "distinct", "none"), default="equal")
    args = parser.parse_args()
    n = args.objects
    keys = [f"backup/2026/12/06/project-{i // 1000:03d}/file-{i:07d}.dat" for i in range(n)]
    etags = [f'"{i:032X}"' for i in range(n)]
    gc.collect()
    rss_before = _rss_mib()
    tracemalloc.start()
    table = ShownAttrs(capacity=n)
    for i, (key, etag) in enumerate(zip(keys, etags, strict=True)):
        atime = None if args.times == "none" else 1_700_000_000_000_000_000 + i
        ctime = atime if args.times != "distinct" else 1_750_000_000_000_000_000 + i
        headers = posix_meta(mtime_ns=1_600_000_000_123_456_789 + i, mode=0o100644 + (i % 8),
                             uid=1000, gid=1000, atime_ns=atime, ctime_ns=ctime)  # fmt: skip
        table.learn(key, etag, posix_of(headers))
    current, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_after = _rss_mib()
    grown = rss_after - rss_before
    print(f"{n} objects, atime/ctime {args.times}: {current / n:.0f} bytes each beyond their "
          f"key and ETag strings (tracemalloc), {current / 2**20:.1f} MiB; peak RSS +{grown:.1f} "
          "MiB (with tracemalloc's own overhead)")  # fmt: skip
    start = time.perf_counter()
    rounds = 5
    for _ in range(rounds):
        for key, etag in zip(keys, etags, strict=True):
            table.get(key, etag)
    per = (time.perf_counter() - start) / (rounds * n)
    print(f"lookup: {per * 1e9:.0f} ns per entry (readdir and stat add one each)")


if __name__ == "__main__":
    main()
