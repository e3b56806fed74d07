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

The order is `_SOURCES`, a list of providers tried in turn: each returns a provider, or what
it tried (for the final error), or raises `CredentialsError` for a source that is configured
but unusable (a fail-fast, never a silent fall-through to the next key).

Secrets are registered with `redact` the moment they are read, and `Credentials.__repr__`
shows only the key id, so neither logs nor tracebacks can carry them.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from . import credentials_sources as sources
from .credentials_refresh import RefreshingCredentialsProvider

# The types are re-exported (`X as X`): callers may take everything credential from here.
from .credentials_types import ANONYMOUS as ANONYMOUS
from .credentials_types import Credentials as Credentials
from .credentials_types import CredentialsError as CredentialsError
from .credentials_types import CredentialsProvider as CredentialsProvider
from .credentials_types import StaticCredentialsProvider as StaticCredentialsProvider
from .redact import register_secret

__all__ = ["load_passwd_file", "resolve_credentials"]

log = logging.getLogger(__name__)

DEFAULT_PASSWD_FILES = (Path("~/.passwd-ossfs"), Path("/etc/passwd-ossfs"))
_SYSTEM_PASSWD_FILE = Path("/etc/passwd-ossfs")


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


Provider = StaticCredentialsProvider | RefreshingCredentialsProvider


@dataclass(frozen=True, slots=True)
class _Request:
    """What the operator configured, and where the well-known files are (tests move them)."""

    bucket: str
    env: Mapping[str, str]
    explicit: tuple[str, str, str | None]  # key id, secret, token given as options
    anonymous: bool
    metadata_endpoint: str
    # The mount options that name a source (a winner before them shadows them).
    passwd_file: str | os.PathLike[str] | None
    credential_process: str | None
    ram_role: str | None
    credentials_file: Path
    cli_config_file: Path
    default_passwd_files: tuple[Path, ...]

    def ecs_role(self, value: str) -> sources.EcsRamRoleFetcher:
        return sources.EcsRamRoleFetcher.from_option(value, self.metadata_endpoint, self.env)


# A source answers a provider, or what it tried (for the error when none answers), or None when
# it was not asked for; it raises CredentialsError when configured but unusable.
Source = Callable[[_Request], Provider | str | None]


def _anonymous(req: _Request) -> Provider | None:
    return StaticCredentialsProvider(ANONYMOUS, "the anonymous option") if req.anonymous else None


def _static_pair(key_id: str, secret: str, token: str | None, what: str) -> Credentials | None:
    """A key given as separate values: None if neither is set, an error if only one is."""
    register_secret(secret)
    register_secret(token)
    if not (key_id or secret):
        return None
    if not (key_id and secret):
        raise CredentialsError(what)
    return Credentials(key_id, secret, token or None)


def _explicit(req: _Request) -> Provider | str:
    creds = _static_pair(
        *req.explicit, "explicit credentials need both an access key id and secret"
    )
    if creds is None:
        return "explicit options (none given)"
    return StaticCredentialsProvider(creds, "explicit options")


def _oss_env(req: _Request) -> Provider | str:
    creds = _static_pair(
        req.env.get("OSS_ACCESS_KEY_ID", ""),
        req.env.get("OSS_ACCESS_KEY_SECRET", ""),
        req.env.get("OSS_SESSION_TOKEN"),
        "OSS_ACCESS_KEY_ID and OSS_ACCESS_KEY_SECRET must both be set (one is empty)",
    )
    if creds is None:
        return "environment OSS_ACCESS_KEY_ID/OSS_ACCESS_KEY_SECRET (unset)"
    return StaticCredentialsProvider(creds, "environment (OSS_ACCESS_KEY_*)")


def _alibaba_env(req: _Request) -> Provider | str:
    creds = sources.load_alibaba_env(req.env)
    if creds is None:
        return "environment ALIBABA_CLOUD_ACCESS_KEY_ID/ALIBABA_CLOUD_ACCESS_KEY_SECRET (unset)"
    return StaticCredentialsProvider(creds, "environment (ALIBABA_CLOUD_ACCESS_KEY_*)")


def _passwd_option(req: _Request) -> Provider | None:
    if req.passwd_file is None:
        return None
    path = Path(req.passwd_file).expanduser()
    if not path.exists():
        raise CredentialsError(f"passwd file {path} does not exist")
    creds = load_passwd_file(path, req.bucket)
    if creds is None:
        raise CredentialsError(f"passwd file {path} has no entry for bucket {req.bucket}")
    return StaticCredentialsProvider(creds, f"passwd file {path}")


def _process_option(req: _Request) -> Provider | None:
    if req.credential_process is None:
        return None
    process = sources.ProcessFetcher(req.credential_process)
    return RefreshingCredentialsProvider(process, process.source)


def _ram_role_option(req: _Request) -> Provider | None:
    if req.ram_role is None:
        return None
    ecs = req.ecs_role(req.ram_role)
    return RefreshingCredentialsProvider(ecs, ecs.source)


def _from_profile(req: _Request, profile: sources.IniProfile | None, absent: str) -> Provider | str:
    if profile is not None and profile.credentials is not None:
        return StaticCredentialsProvider(profile.credentials, profile.source)
    if profile is not None and profile.ram_role is not None:
        ecs = req.ecs_role(profile.ram_role)
        return RefreshingCredentialsProvider(ecs, f"{profile.source}: {ecs.source}")
    return absent


def _cli_profile(req: _Request) -> Provider | str:
    return _from_profile(
        req,
        sources.load_cli_profile(req.env, req.cli_config_file),
        "the Alibaba Cloud CLI config (absent, disabled, or no such profile)",
    )


def _ini_profile(req: _Request) -> Provider | str:
    return _from_profile(
        req,
        sources.load_ini_profile(req.env, req.credentials_file),
        "the Alibaba Cloud credentials file (absent, or no such profile)",
    )


def _default_passwd_files(req: _Request) -> Provider | str:
    tried: list[str] = []
    for path in req.default_passwd_files:
        path = path.expanduser()
        creds = load_passwd_file(path, req.bucket)
        if creds is not None:
            return StaticCredentialsProvider(creds, f"passwd file {path}")
        tried.append(f"passwd file {path} ({'no entry' if path.exists() else 'absent'})")
    return "; ".join(tried)


# The documented order, first answer wins. The option a source stands for (if any) is named so
# that a winner earlier in the list can say which configured options it shadows. The CLI's
# config comes before the SDKs' INI file, as in their default chain; each is read only if the
# one before gave nothing (a bad INI must not stop a good CLI profile).
_SOURCES: tuple[tuple[str | None, Source], ...] = (
    (None, _anonymous),
    (None, _explicit),
    (None, _oss_env),
    (None, _alibaba_env),
    ("passwd_file", _passwd_option),
    ("credential_process", _process_option),
    ("ram_role", _ram_role_option),
    (None, _cli_profile),
    (None, _ini_profile),
    (None, _default_passwd_files),
)


def _announce(provider: Provider, bucket: str) -> None:
    if isinstance(provider, RefreshingCredentialsProvider):
        log.info(
            "using OSS credentials from %s (fetched when first needed, refreshed before expiry)",
            provider.source,
        )
        return
    creds = provider.credentials
    register_secret(creds.access_key_secret)
    register_secret(creds.security_token)
    if creds.anonymous:
        log.info("using anonymous (unsigned) requests for bucket %s", bucket)
    else:
        log.info(
            "using OSS credentials from %s (access key id %s%s)",
            provider.source,
            creds.access_key_id,
            ", with session token" if creds.security_token else "",
        )


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
) -> Provider:
    """Resolve credentials for `bucket` in the documented order and log the source once.

    Returns a `StaticCredentialsProvider`, or a `RefreshingCredentialsProvider` for sources
    whose keys expire (`credential_process`, RAM role); those fetch on first use, so their
    errors surface as `CredentialsError` from `get_credentials()`.
    """
    req = _Request(
        bucket=bucket,
        env=os.environ if environ is None else environ,
        explicit=(access_key_id or "", access_key_secret or "", security_token),
        anonymous=anonymous,
        metadata_endpoint=ecs_metadata_endpoint or sources.DEFAULT_ECS_METADATA_ENDPOINT,
        passwd_file=passwd_file,
        credential_process=credential_process,
        ram_role=ram_role,
        credentials_file=default_credentials_file or sources.DEFAULT_CREDENTIALS_FILE,
        cli_config_file=default_cli_config_file or sources.DEFAULT_CLI_CONFIG_FILE,
        default_passwd_files=default_passwd_files,
    )
    tried: list[str] = []
    for index, (_, source) in enumerate(_SOURCES):
        answer = source(req)
        if answer is None or isinstance(answer, str):
            tried += [answer] if answer else []
            continue
        _announce(answer, bucket)
        for option, _ in _SOURCES[index + 1 :]:
            if option is not None and getattr(req, option) is not None:
                log.warning("-o %s is ignored: credentials come from %s", option, answer.source)
        return answer
    raise CredentialsError(
        "no OSS credentials found; tried: "
        + "; ".join(tried)
        + ". Pass keys explicitly, set the environment, write a passwd file, use"
        " credential_process= or ram_role=, or ask for anonymous access for a public bucket"
    )
