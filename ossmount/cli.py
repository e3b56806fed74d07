"""Command line: `ossmount BUCKET[:/PREFIX] MOUNTPOINT [-o opts] [-f]`, plus subcommands.

The mount form is what `mount.fuse3` runs for an fstab line of type `fuse.ossmount`
(`ossmount SOURCE MOUNTPOINT -o opts`), so it is the top-level form. Subcommands are recognised
only as the first word, followed by options: `emulator` (the built-in OSS emulator), `demo`,
and `mount` (the explicit spelling). `ossmount demo /mnt` still mounts a bucket named demo.
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import signal
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import trio

from ossmount import __version__
from ossmount.config import OPTIONS, MountConfig, build_config, parse_o_options
from ossmount.daemon import Readiness, daemonize
from ossmount.errors import EXIT_CODE_HELP, ExitCode, StartupError
from ossmount.log import has_syslog, open_private, setup_logging

__all__ = ["main"]

log = logging.getLogger("ossmount")

DESCRIPTION = textwrap.fill(
    "Mount an Alibaba Cloud OSS bucket (or a prefix of it) read-only at MOUNTPOINT. Reads "
    "fetch parallel ranged GETs into a local cache file per object, resume after a crash, "
    "and are verified against the object's CRC-64. Other commands: `ossmount emulator "
    "--help` (a local OSS emulator), `ossmount demo`, `ossmount cache --help` (status, "
    "verify, clear), `ossmount warmup --help`.",
    width=78,
)

EPILOG = "\n".join(
    [
        textwrap.fill(
            "Credentials, first found wins: OSS_ACCESS_KEY_ID / OSS_ACCESS_KEY_SECRET "
            "(/ OSS_SESSION_TOKEN); ALIBABA_CLOUD_ACCESS_KEY_ID / _SECRET (/ _SECURITY_TOKEN); "
            "-o passwd_file=FILE (ossfs format, mode 600); -o credential_process=CMD; "
            "-o ram_role=NAME (ECS instance metadata); the ~/.aliyun/config.json profile "
            "(aliyun configure); the ~/.alibabacloud/credentials.ini profile; ~/.passwd-ossfs; "
            "/etc/passwd-ossfs. --anonymous for public buckets. "
            "Secrets are never taken on the command line.",
            width=78,
        ),
        "",
        "Unmount with: fusermount3 -u MOUNTPOINT",
    ]
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ossmount",
        description=DESCRIPTION,
        epilog=EPILOG + "\n\n" + EXIT_CODE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "source",
        metavar="BUCKET[:/PREFIX]",
        help="bucket, optionally with a key prefix to mount instead of the whole bucket",
    )
    parser.add_argument("mountpoint", metavar="MOUNTPOINT", help="an empty directory")
    parser.add_argument(
        "-o",
        dest="o_options",
        action="append",
        default=[],
        metavar="OPT[,OPT]",
        help="mount options, ossfs spellings accepted (see each option below); "
        "generic ones such as _netdev, nofail, x-systemd.* are ignored",
    )
    parser.add_argument(
        "-f",
        "--foreground",
        action="store_true",
        help="stay in the foreground (default: detach once the mount answers)",
    )
    parser.add_argument("--version", action="version", version=f"ossmount {__version__}")
    for option in OPTIONS:
        # Values stay strings here: build_config converts flags and -o values the same way.
        if option.switch:
            parser.add_argument(
                option.long_flag,
                dest=option.name,
                action="store_const",
                const="1",
                default=None,
                help=option.help_line,
            )
        else:
            parser.add_argument(
                option.long_flag,
                dest=option.name,
                default=None,
                metavar=option.metavar or option.name.upper(),
                help=option.help_line,
            )
    return parser


def _parse_mount_args(parser: argparse.ArgumentParser, argv: list[str]) -> MountConfig:
    """argv → MountConfig; a long flag wins over the same option given in `-o`."""
    args = parser.parse_args(argv)
    try:
        raw, ignored = parse_o_options(args.o_options)
        for option in OPTIONS:
            value = getattr(args, option.name)
            if value is not None:
                raw[option.name] = value
        return build_config(
            args.source, args.mountpoint, raw, foreground=args.foreground, ignored=ignored
        )
    except StartupError as exc:
        parser.exit(exc.code, f"ossmount: {exc}\n")


def _mount_main(argv: list[str]) -> int:
    config = _parse_mount_args(build_parser(), argv)
    if config.foreground:
        return _serve_mount(config, Readiness(None))
    return daemonize(lambda readiness: _serve_mount(config, readiness))


def _serve_mount(config: MountConfig, readiness: Readiness) -> int:
    """The mount's process (the daemon's child, or this one in the foreground): exit code."""
    from ossmount.mount import run_mount  # pyfuse3: loaded only to mount, not for --help

    setup_logging(config.log_level, foreground=config.foreground, log_file=config.log_file)
    stacks = _register_stack_dump(config.log_file)
    try:
        trio.run(run_mount, config, readiness)
    except StartupError as exc:
        # One line for the operator: printed by the parent (daemon) or here (foreground);
        # also in the log only where the log is not that same terminal.
        if config.log_file is not None or (not config.foreground and has_syslog()):
            log.error("%s", exc)
        if config.foreground:
            print(f"ossmount: {exc}", file=sys.stderr)
        readiness.failed(exc.code, exc.message)
        return exc.code
    except KeyboardInterrupt:
        return ExitCode.OK
    except Exception:
        log.exception("ossmount failed")
        readiness.failed(ExitCode.INTERNAL, "internal error; see the log for the traceback")
        return ExitCode.INTERNAL
    finally:
        faulthandler.unregister(signal.SIGUSR1)
        if stacks is not None:
            stacks.close()
    return ExitCode.OK


def _register_stack_dump(log_file: Path | None) -> TextIO | None:
    """`kill -USR1 PID` writes every thread's stack to the log file (or stderr: the journal).

    For the 3 a.m. question "where is it stuck?" without attaching a debugger.
    """
    target = open_private(log_file) if log_file is not None else sys.stderr
    faulthandler.register(signal.SIGUSR1, file=target, all_threads=True)
    return target if log_file is not None else None


def _is_subcommand(argv: list[str]) -> bool:
    """`ossmount demo /mnt` mounts a bucket named demo; `ossmount demo` runs the demo.

    Subcommands take options (and the demo a size in MiB), never a path, so a second word
    that is neither marks the mount form.
    """
    return argv[0] == "mount" or len(argv) == 1 or argv[1].startswith("-") or argv[1].isdigit()


def _emulator(argv: list[str]) -> int:
    from ossmount.emulator.cli import main as emulator_main

    return emulator_main(argv)


def _demo(argv: list[str]) -> int:
    from ossmount.demo import main as demo_main

    return demo_main(argv)


# First word → the command's main(rest). Each is imported only when run: `--help` and a mount
# do not load the emulator. A new subcommand is one function and one entry here.
SUBCOMMANDS: dict[str, Callable[[list[str]], int]] = {
    "emulator": _emulator,
    "demo": _demo,
    "mount": _mount_main,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from ossmount.cachecmd.main import is_ours

    if is_ours(argv):
        from ossmount.cachecmd.main import main as cachecmd_main

        return cachecmd_main(argv)
    if argv and argv[0] in SUBCOMMANDS and _is_subcommand(argv):
        return SUBCOMMANDS[argv[0]](argv[1:])
    return _mount_main(argv)
