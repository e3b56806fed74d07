"""Mount options: one declaration per option drives argparse, `-o`, validation, defaults,
`--help`, the README's option table and the `MountConfig` field that holds the value.

Each option is a field of `MountConfig` declared with `option(...)`: its help text, default,
converter (which validates) and ossfs spellings sit next to the field's name and type. `OPTIONS`
is read off those fields, so no option is written twice and no hand mapping can drift. Values in
MB are stored as given; the byte counts the mount needs are properties (`part_size`, ...).

An ossfs fstab line keeps working with the type changed to `fuse.ossmount`, so every ossfs
spelling we support is declared next to our own name (`use_cache` is `--cache-dir`,
`multipart_size` is in MB as in ossfs). Generic mount options that `mount(8)` and systemd pass
through (`_netdev`, `nofail`, `x-systemd.*`, `ro`, ...) are accepted and ignored, never rejected:
a boot must not fail because fstab carried a flag meant for someone else. The mount is read-only
unless `-o rw` / `--rw` asks for writes (issue 15); through mount(8), which passes `rw` on every
mount (mount.fuse3 then adds dev/suid), only `-o read_write` does.

Parsing is two steps: `parse_o_options` turns `-o a=b,c` into (name, value) pairs resolved
against the table, then `build_config` converts, validates and derives the defaults that depend
on other values (region, endpoint, cache dir, owner) into a frozen `MountConfig`. The bucket,
endpoint and region rules are the oss layer's (`ossmount.oss.addressing`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

from ossmount.errors import ExitCode, StartupError
from ossmount.options import (
    OPTION_KEY,
    Option,
    choice,
    command,
    host_port,
    http_url,
    log_level,
    non_negative_int,
    octal,
    option,
    positive_float,
    positive_int,
    seconds,
)
from ossmount.oss.addressing import (
    BUCKET_NAME_RULE,
    DEFAULT_REGION,
    Addressing,
    default_endpoint,
    normalize_endpoint,
    region_from_endpoint,
    valid_bucket_name,
)

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

Signing = Literal["v4", "v1"]


@dataclass(frozen=True, slots=True, kw_only=True)
class MountConfig:
    """Everything a mount needs, validated, with derived defaults filled in.

    The first fields come from the command line's positional words; every field declared with
    `option(...)` is a mount option, in `--help` order.
    """

    bucket: str
    prefix: str  # "" or a key prefix ending in "/"
    mountpoint: Path
    foreground: bool
    ignored_options: tuple[str, ...] = ()

    endpoint: str = option(
        "OSS endpoint URL (https://oss-REGION.aliyuncs.com, a CNAME domain, or "
        "http://127.0.0.1:PORT for the emulator); default: derived from --region",
        o_names=("url",),
        metavar="URL",
    )
    region: str = option(
        "region ID used for V4 signing (cn-hangzhou, not oss-cn-hangzhou); "
        f"default: derived from an oss-REGION endpoint, else {DEFAULT_REGION}",
        metavar="REGION",
    )
    addressing: Addressing = option(
        "how the bucket is addressed: auto (path for IP endpoints, else virtual), virtual "
        "(bucket.host), path (host/bucket) or cname (a custom domain bound to the bucket)",
        "auto",
        choice(Addressing),
    )
    signature_version: Signing = option(
        "request signing: v4 (OSS4-HMAC-SHA256) or v1", "v4", choice(Signing)
    )
    anonymous: bool = option(
        "send unsigned requests (public-read buckets only)",
        False,
        switch=True,
        o_names=("public_bucket",),
    )
    passwd_file: Path | None = option(
        "ossfs-style credentials file (bucket:id:secret or id:secret lines, mode 600)",
        convert=Path,
        metavar="FILE",
    )
    credential_process: str | None = option(
        "command printing credentials as JSON (AccessKeyId, AccessKeySecret, and for "
        "temporary keys SecurityToken and Expiration), run without a shell and again "
        "before Expiration (in fstab, name a script that takes no arguments)",
        convert=command,
        metavar="CMD",
    )
    ram_role: str | None = option(
        "ECS RAM role whose temporary keys the instance metadata service hands out "
        "(IMDSv2 first), refreshed before they expire; a role name, ossfs's "
        ".../security-credentials/NAME URL, or empty for the instance's role",
        metavar="NAME",
    )
    ecs_metadata_endpoint: str = option(
        "the ECS instance metadata service that ram_role= asks (change it only for tests)",
        "http://100.100.100.200",
        http_url,
        metavar="URL",
    )
    cache_dir: Path = option(
        "where cache files and checkpoints live (one mount per dir); default "
        "/var/cache/ossmount/BUCKET for root, $XDG_CACHE_HOME/ossmount/BUCKET otherwise "
        "(BUCKET-HASH when a prefix is mounted)",
        convert=Path,
        o_names=("use_cache",),
        metavar="DIR",
    )
    max_cache_size_mb: int = option(
        "evict closed, least recently used cache files when the cached bytes exceed this many"
        " MB (0: no limit); files in use then drop parts already read. With --rw, files being"
        " written count too, a new file written in order drops its parts already on OSS, and"
        " with --writeback a write waits for pending uploads to give their room back",
        20480,
        int,
        metavar="MB",
    )
    min_free_mb: int = option(
        "keep this many MB free on the cache filesystem: below it closed cache files are"
        " evicted, files in use drop parts already read, and read-ahead waits (0: off)",
        1024,
        non_negative_int,
        o_names=("ensure_diskfree",),
        metavar="MB",
    )
    part_size_mb: int = option(
        "size of one ranged GET (a part), in MB",
        8,
        positive_int,
        o_names=("multipart_size",),
        metavar="MB",
    )
    parallel_count: int = option(
        "ranged GETs in flight for one object at first (see --max-parallel-count)",
        16,
        positive_int,
        metavar="N",
    )
    max_parallel_count: int = option(
        "ranged GETs one object may grow to from --parallel-count while each added GET"
        " raises its download rate (a per-connection limit); not above --max-gets; at or"
        " below --parallel-count the count stays fixed",
        32,
        positive_int,
        metavar="N",
    )
    max_gets: int = option(
        "ranged GETs in flight for the whole mount (bounds memory and sockets: one 1 MiB"
        " receive window each)",
        64,
        positive_int,
        metavar="N",
    )
    readahead_mb: int = option(
        "how far ahead of a sequential reader parts are fetched, in MB",
        128,
        positive_int,
        metavar="MB",
    )
    random_read_kb: int = option(
        "a random read (a jump, not from the start) GETs this many KB around it into memory"
        " instead of whole parts, until reads turn sequential; 0: whole parts",
        16,
        non_negative_int,
        metavar="KB",
    )
    dir_prefetch: int = option(
        "small files (up to one part each) fetched ahead of a reader that walks a directory "
        "file by file, as cp -r, rsync and tar do; 0 turns it off",
        8,
        non_negative_int,
        metavar="N",
    )
    kernel_readahead_kb: int = option(
        "the mount's read_ahead_kb (the kernel's read size and depth)",
        4096,
        positive_int,
        metavar="KB",
    )
    stat_cache_expire: float = seconds(
        "seconds directory listings and file metadata stay cached", 60.0
    )
    max_stat_cache_size: int = option(
        "how many metadata entries are cached", 100_000, positive_int, metavar="N"
    )
    allow_other: bool = option(
        "let users other than the mounter see the files (needs "
        "user_allow_other in /etc/fuse.conf for non-root)",
        False,
        switch=True,
    )
    uid: int = option("owner of every file (default: the mounting user)", convert=int)
    gid: int = option("group of every file (default: the mounting group)", convert=int)
    umask: int = option(
        "permission bits to remove (octal); files are 0444 and dirs 0555 before it (0666 and"
        " 0777 with --rw; a file's --file-mode)",
        0o022,
        octal,
        shown_default="022",
    )
    file_mode: int | None = option(
        "mode bits (octal) of files whose own mode this mount does not know: every listed"
        " object it did not store, as no HEAD is sent for x-oss-meta-mode (see --own-attrs);"
        " e.g. 755 to run scripts and venvs stored on the bucket (default: 444, or 666 with"
        " --rw), less --umask",
        convert=octal,
        metavar="OCTAL",
    )
    own_attrs: bool = option(
        "show each file's and directory's own mode, owner and times from its x-oss-meta-*"
        " (as ossfs 1.x stores them; a directory's on its dir/ marker), learnt by one HEAD"
        " per object version or marker the first time it is listed or looked up, and kept"
        " in the cache dir, so a remount sends none again (default: what this mount did not"
        " store shows the defaults, files their Last-Modified)",
        False,
        switch=True,
    )
    max_attr_entries: int = option(
        "how many objects' stored modes, owners and times the mount remembers and keeps in"
        " the cache dir (~230 bytes of memory each with a 50-byte key); past it the oldest"
        " show the defaults again, or are HEADed again with --own-attrs",
        100_000,
        positive_int,
        metavar="N",
    )
    log_level: str = option("debug, info, warning, error", "INFO", log_level, o_names=("dbglevel",))
    log_file: Path | None = option(
        "append logs to this file, created mode 600 as it names objects (default: stderr "
        "in the foreground, syslog when daemonized)",
        convert=Path,
        metavar="FILE",
    )
    ca_file: Path | None = option(
        "trust this PEM CA bundle for the endpoint's TLS certificate instead of the system's "
        "(a private endpoint or proxy with its own CA)",
        convert=Path,
        metavar="FILE",
    )
    connect_timeout: float = seconds("seconds to wait for a TCP/TLS connection", 10.0)
    stall_timeout: float = seconds(
        "seconds without a byte (reply head or body) before a GET try fails", 30.0
    )
    max_attempts: int = option(
        "tries per request, counting the first; resuming a download that was cut short "
        "counts as a try",
        5,
        positive_int,
        metavar="N",
    )
    fetch_timeout: float | None = option(
        "total seconds for one part fetch, tries and waits included; default: "
        "max-attempts x (connect-timeout + stall-timeout) + backoff, 203 s with the "
        "defaults",
        None,
        positive_float,
        metavar="SECONDS",
    )
    metrics_addr: tuple[str, int] | None = option(
        "serve Prometheus metrics at http://HOST:PORT/metrics (unauthenticated: keep it on "
        "127.0.0.1); default: off",
        convert=host_port,
        metavar="HOST:PORT",
    )
    rw: bool = option(
        "mount read-write: create, write, truncate, unlink, mkdir, rmdir and rename of "
        "files, each close and fsync returning once the object is on OSS and its CRC-64 "
        "verified (see README, Writing); default: read-only. In fstab spell it "
        "read_write: mount(8) passes rw on every mount, so there rw means nothing",
        False,
        switch=True,
        o_names=("read_write",),
    )
    writeback: bool = option(
        "with --rw: close returns once the file and its journal are durable on local "
        "disk, and the upload runs in the background (from --writeback-delay after the "
        "close, up to 16 at once; fsync still waits for it; after a crash the next mount "
        "uploads it before it is ready; an upload that fails is retried in the background, "
        "the file shown as upload-failed meanwhile); a file larger than one part is sealed "
        "with the parts it sent while written, and the rest go in the background",
        False,
        switch=True,
    )
    writeback_delay: float = seconds(
        "with --writeback: a closed file's upload starts this many seconds after its close,"
        " so what follows goes in that one upload: a rename of a file that is not on OSS yet"
        " (rsync's temporary file, then one request per file, not three) and a chmod or"
        " utimens; fsync, a write or truncate of the file and unmount start it at once. 0:"
        " at once",
        0.5,
    )
    attr_delay: float = seconds(
        "with --rw: a chmod, chown or utimens of a file or directory this mount just wrote"
        " is shown at once and stored on OSS this many seconds later, in one copy with those"
        " that follow it, or in the copy of a rename that comes first (rsync -a then costs"
        " three requests per file, not five); fsync and unmount store it at once; after a"
        " crash the next --rw mount of the cache dir stores it before it is ready. 0: each"
        " is stored before it returns",
        1.0,
    )

    @property
    def max_cache_bytes(self) -> int | None:
        return self.max_cache_size_mb * MiB if self.max_cache_size_mb > 0 else None

    @property
    def min_free_bytes(self) -> int:
        return self.min_free_mb * MiB

    @property
    def part_size(self) -> int:
        return self.part_size_mb * MiB

    @property
    def readahead_bytes(self) -> int:
        return self.readahead_mb * MiB


OPTIONS: tuple[Option, ...] = tuple(
    replace(f.metadata[OPTION_KEY], name=f.name)
    for f in fields(MountConfig)
    if OPTION_KEY in f.metadata
)
OPTIONS_BY_O_NAME: dict[str, Option] = {n: o for o in OPTIONS for n in o.all_o_names}

# Passed by mount(8), fstab and systemd; meaningless or already true for a FUSE mount. `ro` is
# the default anyway; `rw` is an option of ours (MountConfig.rw).
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
_FROM_MOUNT_FUSE = frozenset({"dev", "suid", "nodev", "nosuid"})
_IGNORED_PREFIXES = ("x-systemd.", "x-initrd.", "comment=", "x-")


def options_markdown() -> str:
    """The README's option table, generated from OPTIONS (a test keeps the README in sync)."""
    rows = ["| option | -o spelling | default | meaning |", "|---|---|---|---|"]
    for opt in OPTIONS:
        spellings = ", ".join(
            f"`{name}`" if opt.switch else f"`{name}=`" for name in opt.all_o_names
        )
        default = "" if opt.default_text is None else f"`{opt.default_text}`"
        rows.append(f"| `{opt.long_flag}` | {spellings} | {default} | {opt.help} |")
    return "\n".join(rows) + "\n"


def parse_o_options(chunks: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """Resolve `-o` strings against the table: returns ({field: raw value}, ignored names).

    Unknown names are an error naming the option, because a typo in a tuning option silently
    ignored is worse than a mount that refuses to start.
    """
    values: dict[str, str] = {}
    ignored: list[str] = []
    seen: set[str] = set()
    for chunk in chunks:
        for item in chunk.split(","):
            item = item.strip()
            if not item:
                continue
            name, sep, value = item.partition("=")
            opt = OPTIONS_BY_O_NAME.get(name)
            seen.add(name)
            if opt is None:
                if name in IGNORED_MOUNT_OPTIONS or name.startswith(_IGNORED_PREFIXES):
                    ignored.append(name)
                    continue
                raise StartupError(f"unknown mount option -o {name}", ExitCode.USAGE)
            if opt.switch:
                if sep and value not in ("", "1", "true", "yes"):
                    raise StartupError(f"-o {name} takes no value", ExitCode.USAGE)
                values[opt.name] = "1"
            else:
                if not sep:
                    raise StartupError(f"-o {name} needs a value: -o {name}=...", ExitCode.USAGE)
                values[opt.name] = value
    if "rw" in seen and "read_write" not in seen and seen & _FROM_MOUNT_FUSE:
        # mount(8) adds `rw` to every mount it does not make `ro`, and mount.fuse3 then adds
        # its dev/suid flags: that `rw` is a default, not a request to write.
        del values["rw"]
        ignored.append("rw")
    return values, ignored


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
    if not valid_bucket_name(bucket):
        raise StartupError(f"invalid bucket name {bucket!r}: {BUCKET_NAME_RULE}", ExitCode.USAGE)
    prefix = prefix.strip("/")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise StartupError(f"invalid prefix {prefix!r} in {source!r}", ExitCode.USAGE)
    return bucket, (prefix + "/" if prefix else "")


def _convert(raw: Mapping[str, str]) -> dict[str, Any]:
    """Every option's value: converted from `raw` (validated), else its declared default."""
    values: dict[str, Any] = {}
    for opt in OPTIONS:
        if opt.name not in raw:
            values[opt.name] = opt.default
            continue
        text = raw[opt.name]
        if opt.switch:
            values[opt.name] = True
            continue
        try:
            values[opt.name] = opt.convert(text)
        except ValueError as exc:
            spelling = f"{opt.long_flag} / -o {opt.name}"
            raise StartupError(f"bad value {text!r} for {spelling}: {exc}", ExitCode.USAGE) from exc
    return values


def _derived(values: Mapping[str, Any], bucket: str, prefix: str) -> dict[str, Any]:
    """The defaults that depend on other values: region ↔ endpoint, cache dir, owner."""
    endpoint: str | None = values["endpoint"]
    region = values["region"] or (endpoint and region_from_endpoint(endpoint)) or DEFAULT_REGION
    try:
        endpoint = normalize_endpoint(endpoint or default_endpoint(region))
    except ValueError as exc:
        raise StartupError(str(exc), ExitCode.USAGE) from None
    return {
        "region": region,
        "endpoint": endpoint,
        "cache_dir": values["cache_dir"] or default_cache_dir(bucket, prefix),
        "uid": os.getuid() if values["uid"] is None else values["uid"],
        "gid": os.getgid() if values["gid"] is None else values["gid"],
    }


def build_config(
    source: str, mountpoint: str, raw: Mapping[str, str], *, foreground: bool, ignored: list[str]
) -> MountConfig:
    """Convert and validate raw option strings; fill derived defaults (region, endpoint, ...)."""
    values = _convert(raw)
    bucket, prefix = _split_source(source)
    values.update(_derived(values, bucket, prefix))
    return MountConfig(
        bucket=bucket,
        prefix=prefix,
        mountpoint=Path(mountpoint),
        foreground=foreground,
        ignored_options=tuple(ignored),
        **values,
    )
