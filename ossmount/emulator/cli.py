"""``ossmount emulator``: run the OSS emulator in the foreground.

Prints exactly one line, the endpoint URL, and flushes it, so scripts can read it
(``read -r url < <(ossmount emulator --port 0 &)``). SIGINT/SIGTERM stop it cleanly (trio turns
SIGINT into KeyboardInterrupt; SIGTERM is caught with ``trio.open_signal_receiver``).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import trio

from . import Emulator
from .faults import parse_rule

__all__ = ["build_parser", "main", "populate_demo"]

DEMO_FILES: dict[str, bytes] = {
    "README.txt": b"Demo bucket served by the ossmount OSS emulator.\n",
    "docs/guide.md": b"# Guide\n\nMount me with ossmount.\n",
    "docs/notes with space.txt": b"A key with spaces in its name.\n",
    "photos/2024/cat.jpg": bytes(range(256)) * 64,
    "photos/2024/dog.jpg": bytes(reversed(range(256))) * 48,
    "photos/2025/": b"",
    "data/numbers.csv": b"".join(b"%d,%d\n" % (i, i * i) for i in range(1000)),
    "empty/": b"",
}
DEMO_BIG_KEY = "big/synthetic-1GiB.bin"
DEMO_SEED = 1  # the demo command recomputes the expected bytes from it


def populate_demo(emu: Emulator, bucket: str) -> None:
    """A small tree (dirs, a key with a space, ``dir/`` markers) plus one 1 GiB synthetic."""
    for key, data in DEMO_FILES.items():
        if emu.head(bucket, key) is None:
            emu.put_object(bucket, key, data)
    if emu.head(bucket, DEMO_BIG_KEY) is None:
        emu.put_synthetic(bucket, DEMO_BIG_KEY, 1 << 30, seed=DEMO_SEED)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ossmount emulator",
        description="Run a local Alibaba Cloud OSS emulator (for tests, demos and benchmarks).",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port (0 = pick a free one)")
    p.add_argument("--data-dir", help="persist objects as files here (default: in memory)")
    p.add_argument(
        "--bucket", action="append", default=[], help="bucket to create (repeatable; default demo)"
    )
    p.add_argument("--access-key-id", default=os.environ.get("OSS_ACCESS_KEY_ID", "ak"))
    p.add_argument("--access-key-secret", default=os.environ.get("OSS_ACCESS_KEY_SECRET", "sk"))
    p.add_argument("--region", default="cn-hangzhou")
    p.add_argument(
        "--public-read", action="store_true", help="allow anonymous GET/HEAD/LIST requests"
    )
    p.add_argument("--no-verify", action="store_true", help="accept any signature (debugging only)")
    p.add_argument(
        "--path-style",
        choices=("auto", "on", "off"),
        default="auto",
        help="path-style addressing: auto = only for IP/localhost endpoints (as SDKs do)",
    )
    p.add_argument("--populate", choices=("demo",), help="fill the first bucket with a demo tree")
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        help="fault rule, e.g. action=reset,op=GetObject,key=big/*,after=1048576,times=1",
    )
    p.add_argument("--latency", type=float, default=0.0, help="added seconds per response")
    p.add_argument("--conn-bps", type=float, default=0.0, help="bytes/s cap per connection")
    p.add_argument("--total-bps", type=float, default=0.0, help="bytes/s cap in total")
    p.add_argument("--no-admin", action="store_true", help="disable the /_emulator/ endpoint")
    p.add_argument(
        "--fast-etag",
        action="store_true",
        help="uploads without Content-MD5 get a CRC-64 based ETag instead of the MD5 that "
        "real OSS gives (MD5 caps one upload at ~0.75 GB/s; for write benchmarks only)",
    )
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    buckets = args.bucket or ["demo"]
    try:
        rules = [parse_rule(spec) for spec in args.fault]
        emu = Emulator(
            buckets=buckets,
            access_key_id=args.access_key_id,
            access_key_secret=args.access_key_secret,
            region=args.region,
            data_dir=args.data_dir,
            public_read=args.public_read,
            host=args.host,
            port=args.port,
            verify_signatures=not args.no_verify,
            path_style={"auto": None, "on": True, "off": False}[args.path_style],
            admin=not args.no_admin,
            fast_etag=args.fast_etag,
        )
    except (ValueError, OSError) as exc:
        print(f"ossmount emulator: {exc}", file=sys.stderr)
        return 2
    for rule in rules:
        emu.faults.add(rule)
    emu.shaping.set(latency_s=args.latency, conn_bps=args.conn_bps, total_bps=args.total_bps)
    if args.populate == "demo":
        populate_demo(emu, buckets[0])

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(emu.serve)
            print(emu.endpoint, flush=True)
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

    try:
        trio.run(run)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"ossmount emulator: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
