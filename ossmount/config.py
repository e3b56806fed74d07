"""Mount options: one declaration per option drives `--help`, the `-o` spelling and validation.

An ossfs fstab line keeps working with the type changed to `fuse.ossmount`, so every ossfs
spelling we support is declared here next to our own name (`use_cache` is `--cache-dir`,
`multipart_size` is in MB as in ossfs). Generic mount options that `mount(8)` and systemd pass
through (`_netdev`, `nofail`, `x-systemd.*`, ...) are accepted and ignored, never rejected: a
boot must not fail because fstab carried a flag meant for someone else.

Parsing is two steps: `parse_o_options` turns `-o a=b,c` into (name, value) pairs resolved
against the table, then `build_config` converts, validates and derives defaults into a frozen
`MountConfig`. `--help` shows the real defaults because they live in the table.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ossmount.errors import ExitCode, StartupError

__all__ = [
    "IGNORED_MOUNT_OPTIONS",
    "OPTIONS",
    "MountConfig",
    "Option",
    "build_config",
    "default_cache_dir",
    "options_markdown",
    "parse_o_options",
]

MiB = 1024 * 1024


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be a positive whole number")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _octal(text: str) -> int:
    value = int(text, 8)
    if not 0 <= value <= 0o777:
        raise ValueError("must be an octal mode such as 022")
    return value


def _choice(*choices: str) -> Callable[[str], str]:
    def convert(text: str) -> str:
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return text

    return convert


def _log_level(text: str) -> str:
    # ossfs's dbglevel names (crit/err/warn/info/debug) and the logging module's.
    aliases = {"crit": "CRITICAL", "err": "ERROR", "warn": "WARNING", "dbg": "DEBUG"}
    level = aliases.get(text.lower(), text.upper())
    if level not in {"CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"}:
        raise ValueError("must be one of debug, info, warning, error, critical")
    return level


def _str(text: str) -> str:
    return text


def _command(text: str) -> str:
    argv = shlex.split(text)  # ValueError (unbalanced quotes) becomes a usage error
    if not argv:
        raise ValueError("must name a command")
    return text


def _http_url(text: str) -> str:
    if not re.match(r"^https?://[^/\s]+/?$", text):
        raise ValueError("must be a URL such as http://100.100.100.200")
    return text.rstrip("/")


def _host_port(text: str) -> tuple[str, int]:
    """`HOST:PORT` (an IP address, `[v6]:PORT` or localhost) → (host, port); port 0: any."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host:
        raise ValueError("must be HOST:PORT, such as 127.0.0.1:9464")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IP address such as 127.0.0.1") from None
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"bad port {port!r}: must be 0-65535")
    return host, int(port)


@dataclass(frozen=True, slots=True)
class Option:
    """One mount option. `name` is the MountConfig field; `flag` the long option (None: only -o).

    `o_names` are the spellings accepted in `-o`; a `switch` takes no value there (`allow_other`).
    """

    name: str
    help: str
    default: Any
    convert: Callable[[str], Any] = _str
    flag: str | None = None
    o_names: tuple[str, ...] = ()
    switch: bool = False
    metavar: str | None = None

    @property
    def all_o_names(self) -> tuple[str, ...]:
        return (self.name, *self.o_names)

    @property
    def long_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")


OPTIONS: tuple[Option, ...] = (
    Option(
        "endpoint",
        "OSS endpoint URL (https://oss-REGION.aliyuncs.com, a CNAME domain, or "
        "http://127.0.0.1:PORT for the emulator); default: derived from --region",
        None,
        o_names=("url",),
        metavar="URL",
    ),
    Option(
        "region",
        "region ID used for V4 signing (cn-hangzhou, not oss-cn-hangzhou); "
        "default: derived from an oss-REGION endpoint, else cn-hangzhou",
        None,
        metavar="REGION",
    ),
    Option(
        "addressing",
        "how the bucket is addressed: virtual (bucket.host), path (host/bucket, "
        "the default for IP endpoints) or cname (a custom domain bound to the bucket)",
        None,
        _choice("virtual", "path", "cname"),
    ),
    Option(
        "signature_version",
        "request signing: v4 (OSS4-HMAC-SHA256) or v1",
        "v4",
        _choice("v4", "v1"),
    ),
    Option(
        "anonymous",
        "send unsigned requests (public-read buckets only)",
        False,
        switch=True,
        o_names=("public_bucket",),
    ),
    Option(
        "passwd_file",
        "ossfs-style credentials file (bucket:id:secret or id:secret lines, mode 600)",
        None,
        Path,
        metavar="FILE",
    ),
    Option(
        "credential_process",
        "command printing credentials as JSON (AccessKeyId, AccessKeySecret, and for "
        "temporary keys SecurityToken and Expiration), run without a shell and again "
        "before Expiration (in fstab, name a script that takes no arguments)",
        None,
        _command,
        metavar="CMD",
    ),
    Option(
        "ram_role",
        "ECS RAM role whose temporary keys the instance metadata service hands out "
        "(IMDSv2 first), refreshed before they expire; a role name, ossfs's "
        ".../security-credentials/NAME URL, or empty for the instance's role",
        None,
        metavar="NAME",
    ),
    Option(
        "ecs_metadata_endpoint",
        "the ECS instance metadata service that ram_role= asks (change it only for tests)",
        "http://100.100.100.200",
        _http_url,
        metavar="URL",
    ),
    Option(
        "cache_dir",
        "where cache files and checkpoints live (one mount per dir); default "
        "/var/cache/ossmount/BUCKET for root, $XDG_CACHE_HOME/ossmount/BUCKET otherwise "
        "(BUCKET-HASH when a prefix is mounted)",
        None,
        Path,
        o_names=("use_cache",),
        metavar="DIR",
    ),
    Option(
        "max_cache_size_mb",
        "evict closed, least recently used cache files when the cached bytes exceed this many"
        " MB (0: no limit); files in use then drop parts already read",
        20480,
        int,
        metavar="MB",
    ),
    Option(
        "min_free_mb",
        "keep this many MB free on the cache filesystem: below it closed cache files are"
        " evicted, files in use drop parts already read, and read-ahead waits (0: off)",
        1024,
        _non_negative_int,
        o_names=("ensure_diskfree",),
        metavar="MB",
    ),
    Option(
        "part_size_mb",
        "size of one ranged GET (a part), in MB",
        8,
        _positive_int,
        o_names=("multipart_size",),
        metavar="MB",
    ),
    Option("parallel_count", "ranged GETs in flight for one object", 4, _positive_int, metavar="N"),
    Option(
        "max_gets",
        "ranged GETs in flight for the whole mount (bounds memory and sockets)",
        16,
        _positive_int,
        metavar="N",
    ),
    Option(
        "readahead_mb",
        "how far ahead of a sequential reader parts are fetched, in MB",
        128,
        _positive_int,
        metavar="MB",
    ),
    Option(
        "dir_prefetch",
        "small files (up to one part each) fetched ahead of a reader that walks a directory "
        "file by file, as cp -r, rsync and tar do; 0 turns it off",
        8,
        _non_negative_int,
        metavar="N",
    ),
    Option(
        "kernel_readahead_kb",
        "the mount's read_ahead_kb (the kernel's read size and depth)",
        4096,
        _positive_int,
        metavar="KB",
    ),
    Option(
        "stat_cache_expire",
        "seconds directory listings and file metadata stay cached",
        60.0,
        _non_negative_float,
        metavar="SECONDS",
    ),
    Option(
        "max_stat_cache_size",
        "how many metadata entries are cached",
        100_000,
        _positive_int,
        metavar="N",
    ),
    Option(
        "allow_other",
        "let users other than the mounter see the files (needs "
        "user_allow_other in /etc/fuse.conf for non-root)",
        False,
        switch=True,
    ),
    Option("uid", "owner of every file (default: the mounting user)", None, int),
    Option("gid", "group of every file (default: the mounting group)", None, int),
    Option(
        "umask",
        "permission bits to remove (octal); files are 0444 and dirs 0555 before it",
        0o022,
        _octal,
    ),
    Option("log_level", "debug, info, warning, error", "INFO", _log_level, o_names=("dbglevel",)),
    Option(
        "log_file",
        "append logs to this file (default: stderr in the foreground, syslog when daemonized)",
        None,
        Path,
        metavar="FILE",
    ),
    Option(
        "ca_file",
        "trust this PEM CA bundle for the endpoint's TLS certificate instead of the system's "
        "(a private endpoint or proxy with its own CA)",
        None,
        Path,
        metavar="FILE",
    ),
    Option(
        "connect_timeout",
        "seconds to wait for a TCP/TLS connection",
        10.0,
        _non_negative_float,
        metavar="SECONDS",
    ),
    Option(
        "stall_timeout",
        "seconds without a byte before a GET counts as failed",
        30.0,
        _non_negative_float,
        metavar="SECONDS",
    ),
    Option("max_attempts", "tries per request, counting the first", 5, _positive_int, metavar="N"),
    Option(
        "metrics_addr",
        "serve Prometheus metrics at http://HOST:PORT/metrics (unauthenticated: keep it on "
        "127.0.0.1); default: off",
        None,
        _host_port,
        metavar="HOST:PORT",
    ),
)

OPTIONS_BY_O_NAME: dict[str, Option] = {n: o for o in OPTIONS for n in o.all_o_names}

# Passed by mount(8), fstab and systemd; meaningless or already true for a read-only FUSE mount.
IGNORED_MOUNT_OPTIONS = frozenset(
    {
        "_netdev",
        "nofail",
        "noauto",
        "auto",
        "defaults",
        "nosuid",
        "suid",
        "nodev",
        "dev",
        "noexec",
        "exec",
        "ro",
        "rw",
        "user",
        "users",
        "nouser",
        "owner",
        "async",
        "sync",
        "atime",
        "noatime",
        "relatime",
        "norelatime",
        "strictatime",
        "lazytime",
        "nodiratime",
        "diratime",
        "nolazytime",
        "noiversion",
        "iversion",
        "comment",
        "x-gvfs-show",
    }
)
_IGNORED_PREFIXES = ("x-systemd.", "x-initrd.", "comment=", "x-")


@dataclass(frozen=True, slots=True)
class MountConfig:
    """Everything a mount needs, validated, with derived defaults filled in."""

    bucket: str
    prefix: str  # "" or a key prefix ending in "/"
    mountpoint: Path
    foreground: bool
    endpoint: str
    region: str
    addressing: str | None
    signature_version: str
    anonymous: bool
    passwd_file: Path | None
    cache_dir: Path
    max_cache_bytes: int | None
    min_free_bytes: int
    part_size: int
    parallel_count: int
    max_gets: int
    readahead_bytes: int
    dir_prefetch: int
    kernel_readahead_kb: int
    stat_cache_expire: float
    max_stat_cache_size: int
    allow_other: bool
    uid: int
    gid: int
    umask: int
    log_level: str
    log_file: Path | None
    ca_file: Path | None
    connect_timeout: float
    stall_timeout: float
    max_attempts: int
    metrics_addr: tuple[str, int] | None = None
    ignored_options: tuple[str, ...] = field(default=())
    credential_process: str | None = None
    ram_role: str | None = None
    ecs_metadata_endpoint: str = "http://100.100.100.200"


def options_markdown() -> str:
    """The README's option table, generated from OPTIONS (a test keeps the README in sync)."""
    rows = ["| option | -o spelling | default | meaning |", "|---|---|---|---|"]
    for option in OPTIONS:
        spellings = ", ".join(
            f"`{name}`" if option.switch else f"`{name}=`" for name in option.all_o_names
        )
        default = "" if option.default in (None, False) else f"`{option.default}`"
        if option.name == "umask":
            default = f"`{option.default:03o}`"
        rows.append(f"| `{option.long_flag}` | {spellings} | {default} | {option.help} |")
    return "\n".join(rows) + "\n"


def parse_o_options(chunks: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """Resolve `-o` strings against the table: returns ({field: raw value}, ignored names).

    Unknown names are an error naming the option, because a typo in a tuning option silently
    ignored is worse than a mount that refuses to start.
    """
    values: dict[str, str] = {}
    ignored: list[str] = []
    for chunk in chunks:
        for item in chunk.split(","):
            item = item.strip()
            if not item:
                continue
            name, sep, value = item.partition("=")
            if name == "rw":
                ignored.append(name)  # read-only by design; said once in the log at start
                continue
            option = OPTIONS_BY_O_NAME.get(name)
            if option is None:
                if name in IGNORED_MOUNT_OPTIONS or name.startswith(_IGNORED_PREFIXES):
                    ignored.append(name)
                    continue
                raise StartupError(f"unknown mount option -o {name}", ExitCode.USAGE)
            if option.switch:
                if sep and value not in ("", "1", "true", "yes"):
                    raise StartupError(f"-o {name} takes no value", ExitCode.USAGE)
                values[option.name] = "1"
            else:
                if not sep:
                    raise StartupError(f"-o {name} needs a value: -o {name}=...", ExitCode.USAGE)
                values[option.name] = value
    return values, ignored


_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_REGION_FROM_HOST = re.compile(r"^oss-([a-z0-9-]+?)(?:-internal)?\.aliyuncs\.com$")


def default_cache_dir(bucket: str, prefix: str = "") -> Path:
    """Per-mount default under /var/cache/ossmount (root) or $XDG_CACHE_HOME/ossmount.

    One directory per bucket (and prefix), because a cache dir is locked by one mount: two
    buckets mounted with defaults must not lock each other out.
    """
    if os.geteuid() == 0:
        root = Path("/var/cache/ossmount")
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")) / "ossmount"
    if not prefix:
        return root / bucket
    digest = hashlib.sha256(prefix.encode()).hexdigest()[:12]
    return root / f"{bucket}-{digest}"


def _split_source(source: str) -> tuple[str, str]:
    """`bucket`, `bucket:/prefix` or `bucket:prefix` → (bucket, "prefix/" or "")."""
    bucket, _, prefix = source.partition(":")
    if not _BUCKET_RE.match(bucket) or "--" in bucket:
        raise StartupError(
            f"invalid bucket name {bucket!r}: 3-63 characters of a-z, 0-9 and '-', "
            "not starting or ending with '-'",
            ExitCode.USAGE,
        )
    prefix = prefix.strip("/")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise StartupError(f"invalid prefix {prefix!r} in {source!r}", ExitCode.USAGE)
    return bucket, (prefix + "/" if prefix else "")


def _derive_region(endpoint: str | None) -> str | None:
    if endpoint is None:
        return None
    host = re.sub(r"^[a-z]+://", "", endpoint).split("/")[0].split(":")[0]
    match = _REGION_FROM_HOST.match(host)
    return match.group(1) if match else None


def build_config(
    source: str, mountpoint: str, raw: dict[str, str], *, foreground: bool, ignored: list[str]
) -> MountConfig:
    """Convert and validate raw option strings; fill derived defaults (region, endpoint, ...)."""
    values: dict[str, Any] = {}
    for option in OPTIONS:
        if option.name not in raw:
            values[option.name] = option.default
            continue
        text = raw[option.name]
        if option.switch:
            values[option.name] = True
            continue
        try:
            values[option.name] = option.convert(text)
        except ValueError as exc:
            spelling = f"{option.long_flag} / -o {option.name}"
            raise StartupError(f"bad value {text!r} for {spelling}: {exc}", ExitCode.USAGE) from exc

    bucket, prefix = _split_source(source)
    region = values["region"] or _derive_region(values["endpoint"]) or "cn-hangzhou"
    endpoint = values["endpoint"] or f"https://oss-{region}.aliyuncs.com"
    if "://" not in endpoint:
        endpoint = "https://" + endpoint
    if not re.match(r"^https?://[^/\s]+/?$", endpoint):
        raise StartupError(
            f"bad endpoint {endpoint!r}: expected a URL such as "
            "https://oss-cn-hangzhou.aliyuncs.com",
            ExitCode.USAGE,
        )
    max_cache_mb = values["max_cache_size_mb"]
    return MountConfig(
        bucket=bucket,
        prefix=prefix,
        mountpoint=Path(mountpoint),
        foreground=foreground,
        endpoint=endpoint.rstrip("/"),
        region=region,
        addressing=values["addressing"],
        signature_version=values["signature_version"],
        anonymous=values["anonymous"],
        passwd_file=values["passwd_file"],
        cache_dir=values["cache_dir"] or default_cache_dir(bucket, prefix),
        max_cache_bytes=max_cache_mb * MiB if max_cache_mb > 0 else None,
        min_free_bytes=values["min_free_mb"] * MiB,
        part_size=values["part_size_mb"] * MiB,
        parallel_count=values["parallel_count"],
        max_gets=values["max_gets"],
        readahead_bytes=values["readahead_mb"] * MiB,
        dir_prefetch=values["dir_prefetch"],
        kernel_readahead_kb=values["kernel_readahead_kb"],
        stat_cache_expire=values["stat_cache_expire"],
        max_stat_cache_size=values["max_stat_cache_size"],
        allow_other=values["allow_other"],
        uid=values["uid"] if values["uid"] is not None else os.getuid(),
        gid=values["gid"] if values["gid"] is not None else os.getgid(),
        umask=values["umask"],
        log_level=values["log_level"],
        log_file=values["log_file"],
        ca_file=values["ca_file"],
        connect_timeout=values["connect_timeout"],
        stall_timeout=values["stall_timeout"],
        max_attempts=values["max_attempts"],
        metrics_addr=values["metrics_addr"],
        ignored_options=tuple(ignored),
        credential_process=values["credential_process"],
        ram_role=values["ram_role"],
        ecs_metadata_endpoint=values["ecs_metadata_endpoint"],
    )
