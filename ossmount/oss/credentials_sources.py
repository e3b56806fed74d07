"""Credential sources beyond the passwd file: Alibaba Cloud env, the CLI's config, the SDKs' INI
file, an external command, and the ECS instance's RAM role. `resolve_credentials` (in
`credentials`) puts them in order; this module only reads each one. Formats:
`shared/oss-protocol.md` §7.

* `ALIBABA_CLOUD_ACCESS_KEY_ID` / `ALIBABA_CLOUD_ACCESS_KEY_SECRET`
  [/ `ALIBABA_CLOUD_SECURITY_TOKEN`] — what the `alibabacloud-credentials` default chain
  reads first.
* The Alibaba Cloud CLI's config (`aliyun configure`): `~/.aliyun/config.json`, profile
  `$ALIBABA_CLOUD_PROFILE`, else the file's `current`, else `default`; modes `AK`, `StsToken`
  and `EcsRamRole` are understood, any other is an error naming the file, profile and mode.
  `ALIBABA_CLOUD_CLI_PROFILE_DISABLED=true` skips the file (as the SDKs' default chain does).
* The INI file of the Alibaba Cloud SDKs: `$ALIBABA_CLOUD_CREDENTIALS_FILE`, else
  `~/.alibabacloud/credentials.ini`; section `$ALIBABA_CLOUD_PROFILE` (default `default`).
  `type = access_key` (`access_key_id`, `access_key_secret`) and `type = ecs_ram_role`
  (optional `role_name`) are understood; any other type is an error naming the file, the
  profile and the type, rather than a silent fall-through to some other key.
* `credential_process=CMD`: CMD is split like a shell would (`shlex.split`) but run without
  one, with stdin empty and a timeout; it prints one JSON object
  `{"AccessKeyId", "AccessKeySecret"[, "SecurityToken", "Expiration"]}` (OSSFS2's and the Go
  SDK's format). With `Expiration` (ISO 8601) it is run again before then. Its stdout carries
  secrets, so no error message ever quotes it; the last line of its stderr is quoted.
* `ram_role=NAME` (OSSFS2's spelling; ossfs's full metadata URL works too; empty: the role
  attached to the instance): the ECS metadata service. An IMDSv2 token first
  (`PUT /latest/api/token`), then `GET /latest/meta-data/ram/security-credentials/[NAME]` with
  `X-aliyun-ecs-metadata-token`; without a token it falls back to IMDSv1 unless
  `ALIBABA_CLOUD_IMDSV1_DISABLED=true`. Proxy variables are ignored (the metadata service is
  link-local). Refreshed before `Expiration`.
"""

from __future__ import annotations

import configparser
import json
import logging
import os
import shlex
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import trio

from .credentials_refresh import FetchedCredentials
from .credentials_types import Credentials, CredentialsError
from .redact import redact, register_secret

__all__ = [
    "DEFAULT_CLI_CONFIG_FILE",
    "DEFAULT_CREDENTIALS_FILE",
    "DEFAULT_ECS_METADATA_ENDPOINT",
    "EcsRamRoleFetcher",
    "IniProfile",
    "ProcessFetcher",
    "load_alibaba_env",
    "load_cli_profile",
    "load_ini_profile",
    "parse_credentials_json",
    "parse_ram_role",
]

log = logging.getLogger("ossmount.oss.credentials")

DEFAULT_CREDENTIALS_FILE = Path("~/.alibabacloud/credentials.ini")
DEFAULT_CLI_CONFIG_FILE = Path("~/.aliyun/config.json")
DEFAULT_ECS_METADATA_ENDPOINT = "http://100.100.100.200"
PROCESS_TIMEOUT_S = 30.0
_ROLE_PATH = "/latest/meta-data/ram/security-credentials/"
_TOKEN_PATH = "/latest/api/token"
_TOKEN_TTL_S = 21600


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")


def _warn_if_others_read(what: str, path: Path, mode: int) -> None:
    """A file of keys that group or other may read: say so (ossfs refuses its passwd file;
    the SDKs read theirs regardless, so a WARNING, not an error)."""
    if mode & 0o077:
        log.warning(
            "%s %s may be read by other users (mode %04o); run chmod 600 %s",
            what,
            path,
            mode,
            path,
        )


# ------------------------------------------------------------------ ALIBABA_CLOUD_* environment


def load_alibaba_env(env: Mapping[str, str]) -> Credentials | None:
    """The key in `ALIBABA_CLOUD_ACCESS_KEY_*`, None if unset; one half set is an error."""
    key_id = env.get("ALIBABA_CLOUD_ACCESS_KEY_ID", "")
    secret = env.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "")
    token = env.get("ALIBABA_CLOUD_SECURITY_TOKEN") or None
    register_secret(secret)
    register_secret(token)
    if not (key_id or secret):
        return None
    if not (key_id and secret):
        raise CredentialsError(
            "ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET must both be set"
            " (one is empty)"
        )
    return Credentials(key_id, secret, token)


# --------------------------------------------------------------------------- the INI file


@dataclass(frozen=True, slots=True)
class IniProfile:
    """What a profile of a credentials file (the SDKs' INI, or the CLI's JSON) says: a key,
    or an ECS RAM role to ask for."""

    path: Path
    profile: str
    credentials: Credentials | None = None
    ram_role: str | None = None  # type ecs_ram_role; "" means the instance's attached role
    what: str = "credentials file"

    @property
    def source(self) -> str:
        return f"{self.what} {self.path} profile [{self.profile}]"


def load_ini_profile(
    env: Mapping[str, str], default_file: Path = DEFAULT_CREDENTIALS_FILE
) -> IniProfile | None:
    """The profile named by `ALIBABA_CLOUD_PROFILE` (default `default`) of the credentials file.

    None when the default file or the default profile is absent; a file or profile named
    explicitly by the environment must exist. Errors name the file, the profile and the line,
    never a value.
    """
    named_file = env.get("ALIBABA_CLOUD_CREDENTIALS_FILE") or None
    path = Path(named_file or default_file).expanduser()
    named_profile = env.get("ALIBABA_CLOUD_PROFILE") or None
    profile = named_profile or "default"
    try:
        with path.open(encoding="utf-8") as fh:
            mode = stat.S_IMODE(os.fstat(fh.fileno()).st_mode)
            text = fh.read()
    except FileNotFoundError:
        if named_file:
            raise CredentialsError(
                f"credentials file {path} (ALIBABA_CLOUD_CREDENTIALS_FILE) does not exist"
            ) from None
        return None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise CredentialsError(f"cannot read credentials file {path}: {reason}") from None
    parser = configparser.ConfigParser(interpolation=None, default_section="\0no-defaults")
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error as exc:
        # Parsing errors quote the offending line, which may hold a secret: only the line number.
        line = getattr(exc, "lineno", None)
        where = f" near line {line}" if line else ""
        raise CredentialsError(
            f"credentials file {path} is not valid INI{where} ({type(exc).__name__})"
        ) from None
    for name in parser.sections():
        for key in ("access_key_secret", "security_token", "sts_token"):
            register_secret(parser.get(name, key, fallback=None))
    if not parser.has_section(profile):
        if named_profile:
            raise CredentialsError(
                f"credentials file {path} has no profile [{profile}] (ALIBABA_CLOUD_PROFILE)"
            )
        return None
    _warn_if_others_read("credentials file", path, mode)
    section = parser[profile]
    result = IniProfile(path, profile)
    if section.get("enable", "true").strip().lower() == "false":
        log.debug("%s is disabled (enable = false); skipped", result.source)
        return None
    kind = section.get("type", "").strip()
    if kind == "access_key":
        key_id = section.get("access_key_id", "").strip()
        secret = section.get("access_key_secret", "").strip()
        if not (key_id and secret):
            raise CredentialsError(
                f"{result.source}: type access_key needs access_key_id and access_key_secret"
            )
        return IniProfile(path, profile, credentials=Credentials(key_id, secret))
    if kind == "ecs_ram_role":
        return IniProfile(path, profile, ram_role=section.get("role_name", "").strip())
    raise CredentialsError(
        f"{result.source}: unsupported type {kind or '(none)'!r}; ossmount understands"
        " access_key and ecs_ram_role (use credential_process= for anything else)"
    )


# ---------------------------------------------------------------- the CLI's config.json


def load_cli_profile(
    env: Mapping[str, str], default_file: Path = DEFAULT_CLI_CONFIG_FILE
) -> IniProfile | None:
    """The Alibaba Cloud CLI's profile: `ALIBABA_CLOUD_PROFILE`, else `current`, else `default`.

    None when disabled, when the file is absent, or when the profile is absent and was not
    named by the environment. Errors name the file, the profile and the mode, never a value.
    """
    if _true(env.get("ALIBABA_CLOUD_CLI_PROFILE_DISABLED")):
        return None
    path = default_file.expanduser()
    what = "Alibaba Cloud CLI config"
    try:
        with path.open("rb") as fh:
            mode = stat.S_IMODE(os.fstat(fh.fileno()).st_mode)
            raw = fh.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CredentialsError(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        data: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise CredentialsError(f"{what} {path} is not valid JSON ({len(raw)} bytes)") from None
    profiles = data.get("profiles") if isinstance(data, dict) else None
    if not isinstance(profiles, list):
        raise CredentialsError(f"{what} {path} has no list of profiles")
    for item in profiles:
        if isinstance(item, dict):
            for key in ("access_key_secret", "sts_token"):
                value = item.get(key)
                register_secret(value if isinstance(value, str) else None)
    named = env.get("ALIBABA_CLOUD_PROFILE") or None
    current = data.get("current")
    name = named or (current if isinstance(current, str) and current else "default")
    chosen = next((p for p in profiles if isinstance(p, dict) and p.get("name") == name), None)
    if chosen is None:
        if named:
            raise CredentialsError(f"{what} {path} has no profile {name} (ALIBABA_CLOUD_PROFILE)")
        return None
    result = IniProfile(path, name, what=what)
    _warn_if_others_read(what, path, mode)

    def field(key: str) -> str:
        value = chosen.get(key, "")
        return value.strip() if isinstance(value, str) else ""

    kind = field("mode") or "AK"
    if kind in ("AK", "StsToken"):
        needs = ["access_key_id", "access_key_secret"] + (
            ["sts_token"] if kind == "StsToken" else []
        )
        values = [field(key) for key in needs]
        if not all(values):
            raise CredentialsError(f"{result.source}: mode {kind} needs {', '.join(needs)}")
        creds = Credentials(values[0], values[1], values[2] if len(values) > 2 else None)
        return IniProfile(path, name, credentials=creds, what=what)
    if kind == "EcsRamRole":
        return IniProfile(path, name, ram_role=field("ram_role_name"), what=what)
    raise CredentialsError(
        f"{result.source}: mode {kind!r} is not supported; ossmount understands AK, StsToken and"
        " EcsRamRole (use credential_process= for anything else, or set"
        " ALIBABA_CLOUD_CLI_PROFILE_DISABLED=true to skip this file)"
    )


# --------------------------------------------------------------------- JSON from a source


def _parse_expiration(text: object, what: str) -> float:
    if not isinstance(text, str):
        raise CredentialsError(f"{what}: Expiration is not a string")
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise CredentialsError(
            f"{what}: Expiration {text!r} is not an ISO 8601 time such as 2024-01-01T00:00:00Z"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # the SDKs write UTC, sometimes without the Z
    return when.timestamp()


def parse_credentials_json(
    raw: bytes | str, what: str, *, temporary: bool = False
) -> FetchedCredentials:
    """`{"AccessKeyId", "AccessKeySecret"[, "SecurityToken", "Expiration"]}` → a key.

    `what` names the text in errors ("the output of ..."); errors never quote the text itself.
    `temporary` requires a token and an expiry (the metadata service always sends both).
    """
    try:
        data: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        size = len(raw)
        raise CredentialsError(f"{what} is not a JSON object ({size} bytes)") from None
    if not isinstance(data, dict):
        raise CredentialsError(f"{what} is not a JSON object (a {type(data).__name__})")
    for name in ("AccessKeySecret", "SecurityToken"):
        if isinstance(data.get(name), str):
            register_secret(data[name])
    code = data.get("Code")
    if code is not None and code != "Success":
        raise CredentialsError(f"{what} says Code {str(code)[:40]!r}, not 'Success'")
    required = ["AccessKeyId", "AccessKeySecret"]
    if temporary:
        required += ["SecurityToken", "Expiration"]
    missing = [n for n in required if not (isinstance(data.get(n), str) and data[n])]
    if missing:
        raise CredentialsError(f"{what} lacks {', '.join(missing)}")
    token = data.get("SecurityToken") or None
    if token is not None and not isinstance(token, str):
        raise CredentialsError(f"{what}: SecurityToken is not a string")
    expiration = data.get("Expiration")
    return FetchedCredentials(
        Credentials(data["AccessKeyId"], data["AccessKeySecret"], token),
        None if expiration in (None, "") else _parse_expiration(expiration, what),
    )


# ------------------------------------------------------------------------ credential_process


class ProcessFetcher:
    """Runs `credential_process` and parses what it prints (a fetcher for the refresher)."""

    def __init__(self, command: str, *, timeout: float = PROCESS_TIMEOUT_S) -> None:
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise CredentialsError(f"credential_process: cannot split the command: {exc}") from None
        if not argv:
            raise CredentialsError("credential_process: the command is empty")
        self.argv = argv
        self.timeout = timeout

    @property
    def source(self) -> str:
        # Only the program: arguments may carry something sensitive.
        return f"credential_process {self.argv[0]}"

    async def __call__(self) -> FetchedCredentials:
        try:
            with trio.fail_after(self.timeout):
                result = await trio.run_process(
                    self.argv, stdin=b"", capture_stdout=True, capture_stderr=True, check=False
                )
        except trio.TooSlowError:
            raise CredentialsError(
                f"{self.argv[0]} did not finish within {self.timeout:g} s (killed)"
            ) from None
        except OSError as exc:
            raise CredentialsError(f"cannot run {self.argv[0]}: {exc.strerror}") from None
        if result.returncode != 0:
            status = (
                f"was killed by signal {-result.returncode}"
                if result.returncode < 0
                else f"exited with status {result.returncode}"
            )
            raise CredentialsError(f"{self.argv[0]} {status}{_stderr_tail(result.stderr)}")
        return parse_credentials_json(result.stdout, f"the output of {self.argv[0]}")


def _stderr_tail(stderr: bytes) -> str:
    lines = [line for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    if not lines:
        return ""
    last = lines[-1].strip()
    if len(last) > 200:
        last = last[:200] + "…"
    return f": {redact(last)}"


# --------------------------------------------------------------------------- ECS RAM role


def parse_ram_role(value: str, endpoint: str) -> tuple[str, str]:
    """`ram_role=` → (metadata endpoint, role name; "" to ask the instance for its role).

    Accepts a role name (OSSFS2) or ossfs's full URL
    `http://100.100.100.200/latest/meta-data/ram/security-credentials/NAME`.
    """
    value = value.strip()
    if not value.startswith(("http://", "https://")):
        if "/" in value:
            raise CredentialsError(f"ram_role {value!r} is neither a role name nor a URL")
        return endpoint.rstrip("/"), value
    parts = urlsplit(value)
    if not parts.path.startswith(_ROLE_PATH.rstrip("/")):
        raise CredentialsError(
            f"ram_role URL {value!r} does not end in {_ROLE_PATH}NAME (the metadata service's"
            " RAM role path)"
        )
    role = parts.path[len(_ROLE_PATH) :].strip("/") if len(parts.path) > len(_ROLE_PATH) else ""
    return f"{parts.scheme}://{parts.netloc}", role


class EcsRamRoleFetcher:
    """Temporary keys of the instance's RAM role from the ECS metadata service."""

    def __init__(
        self,
        role: str = "",
        *,
        endpoint: str = DEFAULT_ECS_METADATA_ENDPOINT,
        imdsv1_disabled: bool = False,
        timeout: float = 5.0,
        connect_timeout: float = 1.0,
    ) -> None:
        self.role = role
        self.endpoint = endpoint.rstrip("/")
        self.imdsv1_disabled = imdsv1_disabled
        self._timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self._discovered: str | None = None
        self.used_imdsv1 = False  # for tests and the debug log

    @classmethod
    def from_option(cls, value: str, endpoint: str, env: Mapping[str, str]) -> EcsRamRoleFetcher:
        url, role = parse_ram_role(value, endpoint)
        return cls(
            role, endpoint=url, imdsv1_disabled=_true(env.get("ALIBABA_CLOUD_IMDSV1_DISABLED"))
        )

    @property
    def source(self) -> str:
        role = f"ECS RAM role {self.role}" if self.role else "the ECS instance's RAM role"
        return f"{role} (metadata service {self.endpoint})"

    async def __call__(self) -> FetchedCredentials:
        # trust_env=False: HTTP(S)_PROXY must not route the link-local metadata service.
        async with httpx.AsyncClient(
            timeout=self._timeout, trust_env=False, follow_redirects=False
        ) as client:
            headers: dict[str, str] = {}
            token = await self._token(client)
            if token is not None:
                headers["X-aliyun-ecs-metadata-token"] = token
            role = self.role or self._discovered or await self._discover(client, headers)
            response = await self._request(
                client, "GET", _ROLE_PATH + quote(role, safe=""), headers
            )
            if response.status_code == 404:
                raise CredentialsError(f"no RAM role {role!r} is attached to this instance")
            if response.status_code != 200:
                raise CredentialsError(
                    f"the metadata service answered HTTP {response.status_code} for role {role!r}"
                )
            return parse_credentials_json(
                response.content, f"the metadata service's answer for role {role!r}", temporary=True
            )

    async def _request(
        self, client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str]
    ) -> httpx.Response:
        try:
            return await client.request(method, self.endpoint + path, headers=headers)
        except httpx.HTTPError as exc:
            raise CredentialsError(
                f"cannot reach the metadata service at {self.endpoint}"
                f" ({type(exc).__name__}{': ' + str(exc) if str(exc) else ''});"
                " is this an ECS instance?"
            ) from None

    async def _token(self, client: httpx.AsyncClient) -> str | None:
        headers = {"X-aliyun-ecs-metadata-token-ttl-seconds": str(_TOKEN_TTL_S)}
        problem: str
        try:
            response = await self._request(client, "PUT", _TOKEN_PATH, headers)
        except CredentialsError as exc:
            problem = str(exc)
        else:
            if response.status_code == 200 and response.text.strip():
                token = response.text.strip()
                register_secret(token)
                self.used_imdsv1 = False
                return token
            problem = f"the token request was answered HTTP {response.status_code}"
        if self.imdsv1_disabled:
            raise CredentialsError(
                f"no IMDSv2 token from the metadata service ({problem}) and IMDSv1 is disabled"
                " (ALIBABA_CLOUD_IMDSV1_DISABLED=true)"
            )
        if not self.used_imdsv1:
            log.debug(
                "no IMDSv2 token from %s (%s); falling back to IMDSv1", self.endpoint, problem
            )
        self.used_imdsv1 = True
        return None

    async def _discover(self, client: httpx.AsyncClient, headers: dict[str, str]) -> str:
        response = await self._request(client, "GET", _ROLE_PATH, headers)
        names = response.text.split() if response.status_code == 200 else []
        role = names[0] if names else ""
        if response.status_code == 404 or (response.status_code == 200 and not role):
            raise CredentialsError("no RAM role is attached to this ECS instance")
        if response.status_code != 200:
            raise CredentialsError(
                f"the metadata service answered HTTP {response.status_code} when asked for the"
                " instance's RAM role"
            )
        self._discovered = role
        log.debug("the ECS instance's RAM role is %s", role)
        return role
