"""`./dev.sh bench` (or `make bench`): run every benchmark in bench/ in sequence, one after
the other (never at once: on 2 cores a second benchmark would take CPU from the one being measured).

    .venv/bin/python bench/run_all.py [--only client,emulator,mount]

Each benchmark prints its own figures; this prints a header per benchmark and, at the end, each
one's exit status. Exits non-zero if any benchmark failed to run (a failed target is not a
failure here: the benchmarks print verdicts, they do not assert).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = {
    "client": HERE / "bench_client.py",
    "emulator": HERE / "bench_emulator.py",
    "mount": HERE / "bench_mount.py",
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=",".join(BENCHES), help="comma-separated subset")
    args = ap.parse_args()
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        ap.error(f"unknown benchmark(s) {unknown}; choose from {','.join(BENCHES)}")
    status: dict[str, int] = {}
    for name in names:
        script = BENCHES[name]
        print(f"=== {script.name} ===", flush=True)
        t0 = time.monotonic()
        status[name] = subprocess.run([sys.executable, str(script)], check=False).returncode
        print(f"=== {script.name}: exit {status[name]}, {time.monotonic() - t0:.0f} s ===\n")
    for name, code in status.items():
        print(f"{BENCHES[name].name}: {'ok' if code == 0 else f'exit {code}'}")
    return 0 if all(code == 0 for code in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
