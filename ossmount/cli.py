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
from pathlib import Path
from typing import TextIO

import trio

from ossmount import __version__
from ossmount.config import OPTIONS, Option, build_config, parse_o_options
from ossmount.errors import EXIT_CODE_HELP, ExitCode, StartupError

__all__ = ["main"]

log = logging.getLogger("ossmount")

SUBCOMMANDS = ("emulator", "demo", "mount")


def _o_help(option: Option) -> str:
    names = "/".join(option.all_o_names)
    if option.switch:
        return f"-o {names}"
    return f"-o {names}=…"


def _default_text(option: Option) -> str:
    if option.default is None or option.default is False:
        return ""
    if option.name == "umask":
        return f" (default: {option.default:03o})"
    return f" (default: {option.default})"


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
        help_text = f"{option.help}{_default_text(option)}; {_o_help(option)}"
        if option.switch:
            parser.add_argument(
                option.long_flag,
                dest=option.name,
                action="store_const",
                const="1",
                default=None,
                help=help_text,
            )
        else:
            parser.add_argument(
                option.long_flag,
                dest=option.name,
                default=None,
                metavar=option.metavar or option.name.upper(),
                help=help_text,
            )
    return parser


def _mount_main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        raw, ignored = parse_o_options(args.o_options)
        for option in OPTIONS:
            value = getattr(args, option.name)
            if value is not None:
                raw[option.name] = value
        config = build_config(
            args.source, args.mountpoint, raw, foreground=args.foreground, ignored=ignored
        )
    except StartupError as exc:
        parser.exit(exc.code, f"ossmount: {exc}\n")
    from ossmount.daemon import Readiness, daemonize
    from ossmount.log import has_syslog, setup_logging
    from ossmount.mount import run_mount

    def child(readiness: Readiness) -> int:
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

    if config.foreground:
        return child(Readiness(None))
    return daemonize(child)


def _register_stack_dump(log_file: Path | None) -> TextIO | None:
    """`kill -USR1 PID` writes every thread's stack to the log file (or stderr: the journal).

    For the 3 a.m. question "where is it stuck?" without attaching a debugger.
    """
    target: TextIO = open(log_file, "a") if log_file is not None else sys.stderr  # noqa: SIM115
    faulthandler.register(signal.SIGUSR1, file=target, all_threads=True)
    return target if log_file is not None else None


def _is_subcommand(argv: list[str]) -> bool:
    """`ossmount demo /mnt` mounts a bucket named demo; `ossmount demo` runs the demo.

    Subcommands take options (and the demo a size in MiB), never a path, so a second word
    that is neither marks the mount form.
    """
    return argv[0] == "mount" or len(argv) == 1 or argv[1].startswith("-") or argv[1].isdigit()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from ossmount.cachecmd.main import is_ours

    if is_ours(argv):
        from ossmount.cachecmd.main import main as cachecmd_main

        return cachecmd_main(argv)
    if argv and argv[0] in SUBCOMMANDS and _is_subcommand(argv):
        command, rest = argv[0], argv[1:]
        if command == "emulator":
            from ossmount.emulator.cli import main as emulator_main

            return emulator_main(rest)
        if command == "demo":
            from ossmount.demo import main as demo_main

            return demo_main(rest)
        argv = rest
    return _mount_main(argv)
