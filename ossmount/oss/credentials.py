"""Where the access key comes from, resolved once, reported once, never printed.

Resolution order (the first source that is configured wins; `anonymous=True` is an explicit
option and therefore wins outright):

1. explicit options (`access_key_id` + `access_key_secret` [+ `security_token`]);
2. environment `OSS_ACCESS_KEY_ID` / `OSS_ACCESS_KEY_SECRET` [/ `OSS_SESSION_TOKEN`];
3. environment `ALIBABA_CLOUD_ACCESS_KEY_ID` / `ALIBABA_CLOUD_ACCESS_KEY_SECRET`
   [/ `ALIBABA_CLOUD_SECURITY_TOKEN`] (the Alibaba Cloud SDKs' variables);
4. the `passwd_file` option (an ossfs passwd file; it must have an entry for the bucket);
5. the `credential_process` option: a command printing JSON, run again before `Expiration`;
6. the `ram_role` option: the ECS instance's RAM role from the metadata service (IMDSv2
   token first), refreshed before it expires;
7. the Alibaba Cloud credentials file: `$ALIBABA_CLOUD_CREDENTIALS_FILE`, else
   `~/.alibabacloud/credentials.ini`, profile `$ALIBABA_CLOUD_PROFILE` (default `default`),
   `type = access_key` or `ecs_ram_role`;
8. `~/.passwd-ossfs`, then `/etc/passwd-ossfs`;
9. otherwise `CredentialsError`, naming every place tried.

Why this order: keys handed to this one process (options, then its environment, OSS's own
variables before the generic Alibaba Cloud ones, as the OSS SDKs and ossfs read them) come
before what the mount options point at, and those before files found in well-known places,
which may be shared by other tools or users. Among the mount options, a passwd file (a fixed
key) comes first, as in ossfs. A mount option shadowed by an earlier source is reported with a
WARNING, so a forgotten `OSS_ACCESS_KEY_ID` cannot silently override `ram_role=`. The RAM
role is only asked for when configured (option or INI profile): probing 100.100.100.200 off
ECS would stall every start-up.

Passwd files (ossfs format): lines are `bucket:id:secret` (wins for that bucket) or
`id:secret` (default); `#` comments and blank lines are ignored. Like ossfs, a file that group
or other may read is refused (`/etc/passwd-ossfs` may be group-readable, not group-writable).
The other formats are read in `credentials_sources`; keys that expire are served and
refreshed by `credentials_refresh.RefreshingCredentialsProvider`.

Secrets are registered with `redact` the moment they are read, and `Credentials.__repr__`
shows only the key id, so neither logs nor tracebacks can carry them.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .redact import register_secret

if TYPE_CHECKING:
    from .credentials_refresh import RefreshingCredentialsProvider

__all__ = [
    "ANONYMOUS",
    "Credentials",
    "CredentialsError",
    "CredentialsProvider",
    "StaticCredentialsProvider",
    "load_passwd_file",
    "resolve_credentials",
]

log = logging.getLogger(__name__)

DEFAULT_PASSWD_FILES = (Path("~/.passwd-ossfs"), Path("/etc/passwd-ossfs"))
_SYSTEM_PASSWD_FILE = Path("/etc/passwd-ossfs")


class CredentialsError(Exception):
    """No usable credentials, or a credential source that is unsafe or malformed."""


@dataclass(frozen=True, slots=True, repr=False)
class Credentials:
    """An access key (or none, for anonymous access to public buckets)."""

    access_key_id: str
    access_key_secret: str = field(repr=False)
    security_token: str | None = field(default=None, repr=False)

    @property
    def anonymous(self) -> bool:
        return not self.access_key_id

    def __repr__(self) -> str:
        if self.anonymous:
            return "Credentials(anonymous)"
        token = ", security_token=<set>" if self.security_token else ""
        return f"Credentials(access_key_id={self.access_key_id!r}, secret=<hidden>{token})"

    __str__ = __repr__


ANONYMOUS = Credentials("", "")


class CredentialsProvider(Protocol):
    """Hands the client the key to sign the next request with (asked before every attempt, so
    a refreshing provider for STS/RAM-role keys can slot in later)."""

    async def get_credentials(self) -> Credentials: ...


@dataclass(frozen=True, slots=True)
class StaticCredentialsProvider:
    credentials: Credentials
    source: str = "explicit options"

    async def get_credentials(self) -> Credentials:
        return self.credentials


def _check_passwd_permissions(path: Path, st: os.stat_result) -> None:
    mode = stat.S_IMODE(st.st_mode)
    if not stat.S_ISREG(st.st_mode):
        raise CredentialsError(f"passwd file {path} is not a regular file")
    if mode & 0o007:
        raise CredentialsError(
            f"passwd file {path} is accessible by others (mode {mode:04o}); run chmod 600 {path}"
        )
    # ossfs lets only the system-wide file be group-readable (never group-writable).
    bad_group = mode & (0o030 if path == _SYSTEM_PASSWD_FILE else 0o070)
    if bad_group:
        raise CredentialsError(
            f"passwd file {path} is accessible by its group (mode {mode:04o}); run chmod 600 {path}"
        )
    if mode & 0o100:
        raise CredentialsError(f"passwd file {path} must not be executable (mode {mode:04o})")


def load_passwd_file(path: Path, bucket: str) -> Credentials | None:
    """The key for `bucket` from an ossfs passwd file, or None if it has no usable entry.

    Raises CredentialsError (naming the file and line number, never the line's content) for
    unsafe permissions or malformed lines.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CredentialsError(f"cannot open passwd file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "r", encoding="utf-8") as fh:  # fstat on the opened fd: no TOCTOU race
        _check_passwd_permissions(path, os.fstat(fh.fileno()))
        lines = fh.read().splitlines()
    default: Credentials | None = None
    per_bucket: dict[str, Credentials] = {}
    kv: dict[str, str] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if any(c in line for c in " \t") or line.startswith("["):
            raise CredentialsError(f"passwd file {path} line {number}: spaces or sections")
        if "=" in line and ":" not in line:
            name, _, value = line.partition("=")
            kv[name] = value
            register_secret(value)
            continue
        fields = line.split(":")
        for value in fields[1:]:
            register_secret(value)
        if len(fields) == 2 and all(fields):
            default = Credentials(fields[0], fields[1])
        elif len(fields) == 3 and all(fields):
            if fields[0] in per_bucket:
                raise CredentialsError(f"passwd file {path} line {number}: duplicate bucket")
            per_bucket[fields[0]] = Credentials(fields[1], fields[2])
        else:
            raise CredentialsError(
                f"passwd file {path} line {number}: expected bucket:id:secret or id:secret"
            )
    if bucket in per_bucket:
        return per_bucket[bucket]
    if default is None and kv.get("OSSAccessKeyId") and kv.get("OSSSecretKey"):
        default = Credentials(kv["OSSAccessKeyId"], kv["OSSSecretKey"])
    return default


def resolve_credentials(
    bucket: str,
    *,
    access_key_id: str | None = None,
    access_key_secret: str | None = None,
    security_token: str | None = None,
    passwd_file: str | os.PathLike[str] | None = None,
    credential_process: str | None = None,
    ram_role: str | None = None,
    ecs_metadata_endpoint: str | None = None,
    anonymous: bool = False,
    environ: Mapping[str, str] | None = None,
    default_passwd_files: tuple[Path, ...] = DEFAULT_PASSWD_FILES,
    default_credentials_file: Path | None = None,
    default_cli_config_file: Path | None = None,
) -> StaticCredentialsProvider | RefreshingCredentialsProvider:
    """Resolve credentials for `bucket` in the documented order and log the source once.

    Returns a `StaticCredentialsProvider`, or a `RefreshingCredentialsProvider` for sources
    whose keys expire (`credential_process`, RAM role); those fetch on first use, so their
    errors surface as `CredentialsError` from `get_credentials()`.
    """
    # Imported here: those modules build on this one's types.
    from . import credentials_sources as sources
    from .credentials_refresh import Fetcher, RefreshingCredentialsProvider

    env = os.environ if environ is None else environ
    tried: list[str] = []
    # Options the operator set for this mount that a source earlier in the order may shadow.
    configured = {
        "passwd_file": passwd_file is not None,
        "credential_process": credential_process is not None,
        "ram_role": ram_role is not None,
    }

    def shadowed(winner: str, *later: str) -> None:
        for name in later:
            if configured[name]:
                log.warning("-o %s is ignored: credentials come from %s", name, winner)

    def found(creds: Credentials, source: str, *later: str) -> StaticCredentialsProvider:
        register_secret(creds.access_key_secret)
        register_secret(creds.security_token)
        if creds.anonymous:
            log.info("using anonymous (unsigned) requests for bucket %s", bucket)
        else:
            log.info(
                "using OSS credentials from %s (access key id %s%s)",
                source,
                creds.access_key_id,
                ", with session token" if creds.security_token else "",
            )
        shadowed(source, *later)
        return StaticCredentialsProvider(creds, source)

    def refreshing(fetch: Fetcher, source: str, *later: str) -> RefreshingCredentialsProvider:
        log.info(
            "using OSS credentials from %s (fetched when first needed, refreshed before expiry)",
            source,
        )
        shadowed(source, *later)
        return RefreshingCredentialsProvider(fetch, source)

    every = ("passwd_file", "credential_process", "ram_role")
    if anonymous:
        return found(ANONYMOUS, "the anonymous option", *every)

    register_secret(access_key_secret)
    register_secret(security_token)
    if access_key_id or access_key_secret:
        if not (access_key_id and access_key_secret):
            raise CredentialsError("explicit credentials need both an access key id and secret")
        return found(
            Credentials(access_key_id, access_key_secret, security_token or None),
            "explicit options",
            *every,
        )
    tried.append("explicit options (none given)")

    env_id = env.get("OSS_ACCESS_KEY_ID", "")
    env_secret = env.get("OSS_ACCESS_KEY_SECRET", "")
    env_token = env.get("OSS_SESSION_TOKEN") or None
    register_secret(env_secret)
    register_secret(env_token)
    if env_id or env_secret:
        if not (env_id and env_secret):
            raise CredentialsError(
                "OSS_ACCESS_KEY_ID and OSS_ACCESS_KEY_SECRET must both be set (one is empty)"
            )
        return found(
            Credentials(env_id, env_secret, env_token), "environment (OSS_ACCESS_KEY_*)", *every
        )
    tried.append("environment OSS_ACCESS_KEY_ID/OSS_ACCESS_KEY_SECRET (unset)")

    alibaba = sources.load_alibaba_env(env)
    if alibaba is not None:
        return found(alibaba, "environment (ALIBABA_CLOUD_ACCESS_KEY_*)", *every)
    tried.append("environment ALIBABA_CLOUD_ACCESS_KEY_ID/ALIBABA_CLOUD_ACCESS_KEY_SECRET (unset)")

    if passwd_file is not None:
        path = Path(passwd_file).expanduser()
        if not path.exists():
            raise CredentialsError(f"passwd file {path} does not exist")
        creds = load_passwd_file(path, bucket)
        if creds is None:
            raise CredentialsError(f"passwd file {path} has no entry for bucket {bucket}")
        return found(creds, f"passwd file {path}", "credential_process", "ram_role")

    metadata = ecs_metadata_endpoint or sources.DEFAULT_ECS_METADATA_ENDPOINT
    if credential_process is not None:
        process = sources.ProcessFetcher(credential_process)
        return refreshing(process, process.source, "ram_role")

    if ram_role is not None:
        ecs = sources.EcsRamRoleFetcher.from_option(ram_role, metadata, env)
        return refreshing(ecs, ecs.source)

    # The CLI's config before the SDKs' INI file, as in their default chain; each read only if
    # the one before gave nothing (a bad INI must not stop a good CLI profile).
    profile_sources: tuple[tuple[Callable[[], sources.IniProfile | None], str], ...] = (
        (
            lambda: sources.load_cli_profile(
                env, default_cli_config_file or sources.DEFAULT_CLI_CONFIG_FILE
            ),
            "the Alibaba Cloud CLI config (absent, disabled, or no such profile)",
        ),
        (
            lambda: sources.load_ini_profile(
                env, default_credentials_file or sources.DEFAULT_CREDENTIALS_FILE
            ),
            "the Alibaba Cloud credentials file (absent, or no such profile)",
        ),
    )
    for load_profile, absent in profile_sources:
        profile = load_profile()
        if profile is not None and profile.credentials is not None:
            return found(profile.credentials, profile.source)
        if profile is not None and profile.ram_role is not None:
            ecs = sources.EcsRamRoleFetcher.from_option(profile.ram_role, metadata, env)
            return refreshing(ecs, f"{profile.source}: {ecs.source}")
        tried.append(absent)

    for path in default_passwd_files:
        path = path.expanduser()
        creds = load_passwd_file(path, bucket)
        if creds is not None:
            return found(creds, f"passwd file {path}")
        tried.append(f"passwd file {path} ({'no entry' if path.exists() else 'absent'})")

    raise CredentialsError(
        "no OSS credentials found; tried: "
        + "; ".join(tried)
        + ". Pass keys explicitly, set the environment, write a passwd file, use"
        " credential_process= or ram_role=, or ask for anonymous access for a public bucket"
    )
