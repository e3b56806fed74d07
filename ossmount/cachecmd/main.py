"""Argument parsing for `ossmount cache ...` and `ossmount warmup ...`, and which argv is ours.

`cache` and `warmup` are also valid bucket names, and `ossmount BUCKET MOUNTPOINT` is the
top-level form (fstab runs it), so `is_ours` claims an argv only when it cannot be a mount:
`cache` followed by one of its actions (or an option); `warmup` followed by an option, a path on
an ossmount mount, or a path that no mount could use (a file, a directory that is not empty):
what is left, an empty directory off any mount, is a mountpoint for a bucket named warmup.
`ossmount mount cache DIR` always mounts.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from ossmount.cachecmd.codes import EXIT_HELP, CommandError, Exit
from ossmount.cachecmd.findmount import mount_of

__all__ = ["is_ours", "main"]

ACTIONS = ("status", "verify", "clear")


def is_ours(argv: list[str]) -> bool:
    if not argv or argv[0] not in ("cache", "warmup"):
        return False
    if len(argv) == 1 or argv[1].startswith("-"):
        return True
    if argv[0] == "cache":
        return argv[1] in ACTIONS
    path = Path(argv[1])
    try:
        if mount_of(path) is not None or (path.exists() and not path.is_dir()):
            return True
        return path.is_dir() and any(path.iterdir())
    except OSError:
        return False


def _which_cache(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        nargs="?",
        metavar="BUCKET[:/PREFIX]",
        help="the cache of a mount of this bucket (and prefix) made with the default cache dir",
    )
    parser.add_argument(
        "--cache-dir", metavar="DIR", help="the cache dir (the mount's --cache-dir / use_cache=)"
    )


def _cache_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ossmount cache",
        description="See and manage an ossmount cache directory without reading its files.",
        epilog=EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = actions.add_parser(
        "status", help="entries, bytes, states, oldest/newest, free space vs cap and floor"
    )
    _which_cache(status)
    status.add_argument("--json", action="store_true", help="one JSON document, for scripts")
    verify = actions.add_parser(
        "verify",
        help="re-hash every cached part against its CRC-64 and drop what fails "
        "(refused while mounted)",
    )
    _which_cache(verify)
    clear = actions.add_parser(
        "clear",
        help="delete every cached object (refused while mounted, unless --through-mount)",
    )
    _which_cache(clear)
    clear.add_argument(
        "--through-mount",
        action="store_true",
        help="ask the mount holding the cache to drop every entry no reader is using "
        "(open files stay cached); without a mount, clear directly",
    )
    return parser


def _warmup_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ossmount warmup",
        description=textwrap.fill(
            "Download every file under PATH through its ossmount mount, so later reads come "
            "from the cache. Interrupted, it resumes where it stopped when run again. Refuses "
            "a tree bigger than the mount's cache.",
            width=78,
        ),
        epilog=EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="a file or directory on the mount")
    parser.add_argument("-j", "--jobs", type=int, default=4, help="files read at once (default: 4)")
    parser.add_argument(
        "--no-size-check",
        action="store_true",
        help="warm up even a tree bigger than the mount's cache (its start gets evicted)",
    )
    return parser


def _run(argv: list[str]) -> int:
    from ossmount.cachecmd.layout import resolve_cache_dir

    if argv[0] == "warmup":
        args = _warmup_parser().parse_args(argv[1:])
        if args.jobs < 1:
            raise CommandError("--jobs must be at least 1", Exit.USAGE)
        from ossmount.cachecmd.warmup import run_warmup

        return run_warmup(args.paths, jobs=args.jobs, check_size=not args.no_size_check)
    args = _cache_parser().parse_args(argv[1:])
    root = resolve_cache_dir(args.cache_dir, args.source)
    if args.action == "status":
        from ossmount.cachecmd.status import run_status

        return run_status(root, as_json=args.json)
    if args.action == "verify":
        from ossmount.cachecmd.verify import run_verify

        return run_verify(root)
    from ossmount.cachecmd.clear import run_clear

    return run_clear(root, through_mount=args.through_mount)


def main(argv: list[str]) -> int:
    """Run `ossmount cache ...` / `ossmount warmup ...` (argv starts with the command word)."""
    try:
        return _run(argv)
    except CommandError as exc:
        print(f"ossmount {argv[0]}: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print(f"ossmount {argv[0]}: interrupted", file=sys.stderr)
        return Exit.INTERRUPTED
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        print(f"ossmount {argv[0]}:{where}: {exc.strerror or exc}", file=sys.stderr)
        return Exit.CACHE
