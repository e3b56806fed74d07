"""Credential sources beyond env and passwd file, and the refreshing provider.

ALIBABA_CLOUD_* env, the SDKs' INI file, `credential_process=` (a small Python script as the
command), the ECS RAM role against a fake metadata server on 127.0.0.1 (IMDSv2, the IMDSv1
fallback and its switch), the resolution order, and `RefreshingCredentialsProvider` on trio's
MockClock: refresh before expiry, one shared refresh, a failed refresh keeps the old key, an
expired key with a failing source is an error naming the source; secrets in no log or repr.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trio
import trio.testing

from ossmount.oss.credentials import Credentials, CredentialsError, resolve_credentials
from ossmount.oss.credentials_refresh import (
    FetchedCredentials,
    RefreshingCredentialsProvider,
    refresh_delay,
)
from ossmount.oss.credentials_sources import (
    EcsRamRoleFetcher,
    ProcessFetcher,
    load_cli_profile,
    load_ini_profile,
    parse_credentials_json,
    parse_ram_role,
)
from ossmount.service.reload import ReloadableCredentials

SECRET = "sk-VERY-secret-value-123"
TOKEN = "sts-TOKEN-value-abcdef-456"
LOGGER = "ossmount.oss.credentials"


def iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def no_secret_in(text: str, *secrets: str) -> None:
    for secret in (SECRET, TOKEN, *secrets):
        assert secret not in text


# ------------------------------------------------------------------ ALIBABA_CLOUD_* env


async def test_alibaba_env_after_oss_env() -> None:
    alibaba = {
        "ALIBABA_CLOUD_ACCESS_KEY_ID": "alid",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET,
        "ALIBABA_CLOUD_SECURITY_TOKEN": TOKEN,
    }
    provider = resolve_credentials("b", environ=alibaba, default_passwd_files=())
    assert await provider.get_credentials() == Credentials("alid", SECRET, TOKEN)
    assert "ALIBABA_CLOUD" in provider.source
    oss = {"OSS_ACCESS_KEY_ID": "ossid", "OSS_ACCESS_KEY_SECRET": "oss-secret-1"}
    provider = resolve_credentials("b", environ={**alibaba, **oss}, default_passwd_files=())
    assert (await provider.get_credentials()).access_key_id == "ossid"


def test_half_alibaba_env_is_an_error() -> None:
    with pytest.raises(CredentialsError, match="both") as info:
        resolve_credentials("b", environ={"ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET})
    no_secret_in(str(info.value))


# --------------------------------------------------------------------------- the INI file

INI = f"""
[default]
enable = true
type = access_key
access_key_id = defid
access_key_secret = {SECRET}

[other]
type = access_key
access_key_id = otherid
access_key_secret = other-secret-%-value

[sts]
type = ram_role_arn
access_key_id = roleid
access_key_secret = {SECRET}
role_arn = acs:ram::1:role/x

[ecs]
type = ecs_ram_role
role_name = my-role
"""


def test_ini_default_and_named_profile(tmp_path: Path) -> None:
    path = write(tmp_path / "credentials.ini", INI)
    env = {"ALIBABA_CLOUD_CREDENTIALS_FILE": str(path)}
    profile = load_ini_profile(env)
    assert profile is not None
    assert profile.credentials == Credentials("defid", SECRET)
    assert profile.source == f"credentials file {path} profile [default]"
    other = load_ini_profile({**env, "ALIBABA_CLOUD_PROFILE": "other"})
    assert other is not None
    assert other.credentials == Credentials("otherid", "other-secret-%-value")  # no interpolation
    ecs = load_ini_profile({**env, "ALIBABA_CLOUD_PROFILE": "ecs"})
    assert ecs is not None
    assert (ecs.credentials, ecs.ram_role) == (None, "my-role")


def test_ini_default_location_and_absence(tmp_path: Path) -> None:
    assert load_ini_profile({}, tmp_path / "missing.ini") is None
    write(tmp_path / "c.ini", "[someone-else]\ntype = access_key\n")
    assert load_ini_profile({}, tmp_path / "c.ini") is None  # no [default]: not ours to use
    write(tmp_path / "c.ini", INI)
    profile = load_ini_profile({}, tmp_path / "c.ini")
    assert profile is not None
    assert profile.credentials is not None


def test_ini_unsupported_type_names_file_and_profile(tmp_path: Path) -> None:
    path = write(tmp_path / "credentials.ini", INI)
    env = {"ALIBABA_CLOUD_CREDENTIALS_FILE": str(path), "ALIBABA_CLOUD_PROFILE": "sts"}
    with pytest.raises(CredentialsError) as info:
        load_ini_profile(env)
    message = str(info.value)
    assert str(path) in message
    assert "[sts]" in message
    assert "unsupported type 'ram_role_arn'" in message
    no_secret_in(message)


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"ALIBABA_CLOUD_CREDENTIALS_FILE": "{dir}/nope.ini"}, "does not exist"),
        ({"ALIBABA_CLOUD_PROFILE": "missing"}, r"no profile \[missing\]"),
    ],
)
def test_ini_named_file_or_profile_must_exist(
    tmp_path: Path, env: dict[str, str], match: str
) -> None:
    write(tmp_path / "c.ini", INI)
    env = {k: v.format(dir=tmp_path) for k, v in env.items()}
    with pytest.raises(CredentialsError, match=match):
        load_ini_profile(env, tmp_path / "c.ini")


def test_ini_parse_error_does_not_quote_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "c.ini", f"access_key_secret = {SECRET}\n[default]\n")
    with pytest.raises(CredentialsError, match="not valid INI") as info:
        load_ini_profile({}, path)
    no_secret_in(str(info.value))
    path = write(tmp_path / "c.ini", f"[default]\ntype = access_key\n  {SECRET}\n[default]\n")
    with pytest.raises(CredentialsError, match="not valid INI") as info:
        load_ini_profile({}, path)
    no_secret_in(str(info.value))


def test_ini_readable_by_others_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path / "c.ini", INI, mode=0o644)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert load_ini_profile({}, path) is not None
    assert "chmod 600" in caplog.text


# -------------------------------------------------------------------- resolution order


def _script(tmp_path: Path, key_id: str, *, expires_in: float | None = None) -> str:
    body = {"AccessKeyId": key_id, "AccessKeySecret": SECRET}
    if expires_in is not None:
        body |= {"SecurityToken": TOKEN, "Expiration": iso(time.time() + expires_in)}
    script = tmp_path / f"creds-{key_id}.py"
    script.write_text(f"import json\nprint(json.dumps({body!r}))\n")
    return shlex.join([sys.executable, str(script)])


CLI_CONFIG = json.dumps(
    {
        "current": "work",
        "profiles": [
            {"name": "default", "mode": "AK", "access_key_id": "x", "access_key_secret": "y"},
            {"name": "work", "mode": "AK", "access_key_id": "cliid", "access_key_secret": SECRET},
            {
                "name": "sts",
                "mode": "StsToken",
                "access_key_id": "stsid",
                "access_key_secret": SECRET,
                "sts_token": TOKEN,
            },
            {"name": "ecs", "mode": "EcsRamRole", "ram_role_name": "reader"},
            {
                "name": "arn",
                "mode": "RamRoleArn",
                "access_key_id": "a",
                "access_key_secret": SECRET,
            },
            {"name": "half", "mode": "StsToken", "access_key_id": "h", "access_key_secret": SECRET},
        ],
    }
)


def test_cli_config_profiles(tmp_path: Path) -> None:
    path = write(tmp_path / "config.json", CLI_CONFIG)
    current = load_cli_profile({}, path)
    assert current is not None
    assert current.credentials == Credentials("cliid", SECRET)
    assert current.source == f"Alibaba Cloud CLI config {path} profile [work]"
    sts = load_cli_profile({"ALIBABA_CLOUD_PROFILE": "sts"}, path)
    assert sts is not None
    assert sts.credentials == Credentials("stsid", SECRET, TOKEN)
    ecs = load_cli_profile({"ALIBABA_CLOUD_PROFILE": "ecs"}, path)
    assert ecs is not None
    assert (ecs.credentials, ecs.ram_role) == (None, "reader")
    assert load_cli_profile({"ALIBABA_CLOUD_CLI_PROFILE_DISABLED": "true"}, path) is None
    assert load_cli_profile({}, tmp_path / "absent.json") is None


@pytest.mark.parametrize(
    ("profile", "match"),
    [
        ("arn", r"profile \[arn\]: mode 'RamRoleArn' is not supported"),
        ("half", "mode StsToken needs access_key_id, access_key_secret, sts_token"),
        ("missing", "has no profile missing"),
    ],
)
def test_cli_config_errors_name_the_profile_never_a_secret(
    tmp_path: Path, profile: str, match: str
) -> None:
    path = write(tmp_path / "config.json", CLI_CONFIG)
    with pytest.raises(CredentialsError, match=match) as info:
        load_cli_profile({"ALIBABA_CLOUD_PROFILE": profile}, path)
    assert str(path) in str(info.value)
    no_secret_in(str(info.value))


def test_cli_config_that_is_not_json_is_not_quoted(tmp_path: Path) -> None:
    path = write(tmp_path / "config.json", f'{{"profiles": [{{"access_key_secret": "{SECRET}"')
    with pytest.raises(CredentialsError, match="is not valid JSON") as info:
        load_cli_profile({}, path)
    no_secret_in(str(info.value))


async def test_resolution_order(tmp_path: Path) -> None:
    """Each source in turn wins once everything before it is taken away."""
    ini = write(tmp_path / "c.ini", INI)
    etc = write(tmp_path / "etc-passwd-ossfs", "etcid:etc-secret-1\n")
    home = write(tmp_path / "home-passwd-ossfs", "homeid:home-secret-1\n")
    option_file = write(tmp_path / "option-passwd", "optfileid:opt-secret-1\n")
    kwargs: dict[str, object] = {
        "access_key_id": "explicitid",
        "access_key_secret": "explicit-secret",
        "passwd_file": option_file,
        "credential_process": _script(tmp_path, "processid"),
        "ram_role": "role-that-is-never-asked-for",
    }
    env = {
        "OSS_ACCESS_KEY_ID": "ossid",
        "OSS_ACCESS_KEY_SECRET": "oss-secret-1",
        "ALIBABA_CLOUD_ACCESS_KEY_ID": "alibabaid",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "alibaba-secret-1",
    }

    cli: Path | None = write(tmp_path / "config.json", CLI_CONFIG)

    async def winner() -> str:
        provider = resolve_credentials(
            "b",
            environ={**env, "ALIBABA_CLOUD_CREDENTIALS_FILE": str(ini)} if ini else env,
            default_passwd_files=tuple(p for p in (home, etc) if p),
            default_credentials_file=tmp_path / "absent.ini",
            default_cli_config_file=cli or tmp_path / "absent.json",
            **kwargs,  # type: ignore[arg-type]
        )
        if isinstance(provider, RefreshingCredentialsProvider):
            return provider.source
        return (await provider.get_credentials()).access_key_id

    assert await winner() == "explicitid"
    del kwargs["access_key_id"], kwargs["access_key_secret"]
    assert await winner() == "ossid"
    del env["OSS_ACCESS_KEY_ID"], env["OSS_ACCESS_KEY_SECRET"]
    assert await winner() == "alibabaid"
    env.clear()
    assert await winner() == "optfileid"
    del kwargs["passwd_file"]
    assert (await winner()).startswith(f"credential_process {sys.executable}")
    del kwargs["credential_process"]
    assert (await winner()).startswith("ECS RAM role role-that-is-never-asked-for")
    del kwargs["ram_role"]
    assert await winner() == "cliid"
    cli = None
    assert await winner() == "defid"
    ini = None  # type: ignore[assignment]
    assert await winner() == "homeid"
    home = None  # type: ignore[assignment]
    assert await winner() == "etcid"
    etc = None  # type: ignore[assignment]
    with pytest.raises(CredentialsError, match="credentials file"):
        await winner()


def test_shadowed_mount_options_are_named(caplog: pytest.LogCaptureFixture) -> None:
    env = {"OSS_ACCESS_KEY_ID": "ossid", "OSS_ACCESS_KEY_SECRET": SECRET}
    with caplog.at_level(logging.INFO, logger=LOGGER):
        resolve_credentials("b", environ=env, ram_role="r", default_passwd_files=())
    records = [r for r in caplog.records if r.name == LOGGER]
    assert [r.levelno for r in records] == [logging.INFO, logging.WARNING]
    assert "-o ram_role is ignored" in records[1].getMessage()
    assert "OSS_ACCESS_KEY" in records[1].getMessage()


def test_explicit_passwd_file_without_an_entry(tmp_path: Path) -> None:
    path = write(tmp_path / "p", "other:id:secret123\n")
    with pytest.raises(CredentialsError, match="no entry for bucket b"):
        resolve_credentials("b", passwd_file=path, environ={}, default_passwd_files=())


async def test_ini_ecs_role_profile_uses_the_metadata_service(tmp_path: Path) -> None:
    path = write(tmp_path / "c.ini", INI)
    with FakeMetadata() as server:
        provider = resolve_credentials(
            "b",
            environ={"ALIBABA_CLOUD_CREDENTIALS_FILE": str(path), "ALIBABA_CLOUD_PROFILE": "ecs"},
            ecs_metadata_endpoint=server.endpoint,
            default_passwd_files=(),
        )
        server.role = "my-role"
        creds = await provider.get_credentials()
    assert creds.access_key_id == "STS.key1"
    assert isinstance(provider, RefreshingCredentialsProvider)
    assert "profile [ecs]" in provider.source


# ------------------------------------------------------------------------ credential_process


def _py(tmp_path: Path, code: str) -> str:
    script = tmp_path / "proc.py"
    script.write_text(code)
    return shlex.join([sys.executable, str(script)])


async def test_process_temporary_credentials(tmp_path: Path) -> None:
    fetcher = ProcessFetcher(_script(tmp_path, "procid", expires_in=3600))
    fetched = await fetcher()
    assert fetched.credentials == Credentials("procid", SECRET, TOKEN)
    assert fetched.expiration is not None
    assert abs(fetched.expiration - (time.time() + 3600)) < 5
    assert fetcher.source == f"credential_process {sys.executable}"


async def test_process_long_term_credentials_do_not_expire(tmp_path: Path) -> None:
    fetched = await ProcessFetcher(_script(tmp_path, "longid"))()
    assert fetched == FetchedCredentials(Credentials("longid", SECRET), None)


async def test_process_runs_without_a_shell(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    command = _py(
        tmp_path,
        "import sys, json\nprint(json.dumps({'AccessKeyId': sys.argv[1],"
        f" 'AccessKeySecret': {SECRET!r}}}))\n",
    )
    fetched = await ProcessFetcher(f"{command} '$(touch {marker})'")()
    assert fetched.credentials.access_key_id == f"$(touch {marker})"
    assert not marker.exists()


@pytest.mark.parametrize(
    ("code", "match"),
    [
        (
            f"import sys\nprint({{'AccessKeySecret': {SECRET!r}}})\n"
            "print('token expired: run login', file=sys.stderr)\nsys.exit(3)\n",
            "exited with status 3: token expired: run login",
        ),
        (f"print('AccessKeySecret={SECRET} not json')\n", r"not a JSON object \(\d+ bytes\)"),
        (f"import json\nprint(json.dumps([{SECRET!r}]))\n", r"not a JSON object \(a list\)"),
        (f"import json\nprint(json.dumps({{'AccessKeySecret': {SECRET!r}}}))\n", "AccessKeyId"),
        (
            "import json\nprint(json.dumps({'AccessKeyId': 'a', "
            f"'AccessKeySecret': {SECRET!r}, 'Expiration': 'tomorrow'}}))\n",
            "ISO 8601",
        ),
        ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n", "killed by signal 9"),
    ],
)
async def test_process_failures_never_quote_stdout(tmp_path: Path, code: str, match: str) -> None:
    with pytest.raises(CredentialsError, match=match) as info:
        await ProcessFetcher(_py(tmp_path, code))()
    no_secret_in(str(info.value))


async def test_process_timeout(tmp_path: Path) -> None:
    fetcher = ProcessFetcher(_py(tmp_path, "import time\ntime.sleep(60)\n"), timeout=0.5)
    started = time.monotonic()
    with pytest.raises(CredentialsError, match=r"did not finish within 0\.5 s"):
        await fetcher()
    assert time.monotonic() - started < 10


async def test_process_missing_command(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match=r"cannot run .*nope"):
        await ProcessFetcher(str(tmp_path / "nope"))()
    with pytest.raises(CredentialsError, match="empty"):
        ProcessFetcher("  ")
    with pytest.raises(CredentialsError, match="cannot split"):
        ProcessFetcher("'unbalanced")


async def test_process_is_run_again_before_expiration(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    counter = tmp_path / "count"
    command = _py(
        tmp_path,
        "import json, pathlib, time\n"
        f"p = pathlib.Path({str(counter)!r})\n"
        "n = int(p.read_text()) + 1 if p.exists() else 1\n"
        "p.write_text(str(n))\n"
        "print(json.dumps({'AccessKeyId': f'key{n}', 'AccessKeySecret': "
        f"{SECRET!r}, 'SecurityToken': {TOKEN!r}, 'Expiration': time.strftime("
        "'%Y-%m-%dT%H:%M:%SZ', time.gmtime(time.time() + 1000))}))\n",
    )
    provider = resolve_credentials(
        "b", credential_process=command, environ={}, default_passwd_files=()
    )
    assert (await provider.get_credentials()).access_key_id == "key1"
    mock_clock.jump(700)  # refresh at 80 % of ~1000 s
    assert (await provider.get_credentials()).access_key_id == "key1"
    mock_clock.jump(150)
    assert (await provider.get_credentials()).access_key_id == "key2"
    assert counter.read_text() == "2"


# --------------------------------------------------------------------------- ECS RAM role

_ROLE_PATH = "/latest/meta-data/ram/security-credentials/"


class FakeMetadata:
    """The ECS metadata service's RAM-role endpoints, on 127.0.0.1, in a thread."""

    def __init__(self, *, v2: bool = True, require_token: bool = False) -> None:
        self.v2 = v2
        self.require_token = require_token
        self.role = "ossmount-role"
        self.lifetime = 3600.0
        self.token = "imds-token-0123456789"
        self.issued = 0
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.broken = False
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def _send(self, status: int, body: str, kind: str = "text/plain") -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self) -> None:
                fake.requests.append(("PUT", self.path, dict(self.headers)))
                if not fake.v2 or self.path != "/latest/api/token":
                    self._send(404, "Not Found")
                elif not self.headers.get("X-aliyun-ecs-metadata-token-ttl-seconds"):
                    self._send(400, "missing ttl")
                else:
                    self._send(200, fake.token)

            def do_GET(self) -> None:
                fake.requests.append(("GET", self.path, dict(self.headers)))
                token = self.headers.get("X-aliyun-ecs-metadata-token")
                if (token is not None and token != fake.token) or (
                    fake.require_token and token is None
                ):
                    self._send(401, "Unauthorized")
                elif fake.broken:
                    self._send(500, "Internal Server Error")
                elif self.path == _ROLE_PATH:
                    self._send(200, fake.role)
                elif self.path == _ROLE_PATH + fake.role:
                    fake.issued += 1
                    body = {
                        "AccessKeyId": f"STS.key{fake.issued}",
                        "AccessKeySecret": f"{SECRET}-{fake.issued}",
                        "SecurityToken": f"{TOKEN}-{fake.issued}",
                        "Expiration": iso(time.time() + fake.lifetime),
                        "LastUpdated": iso(time.time()),
                        "Code": "Success",
                    }
                    self._send(200, json.dumps(body), "application/json")
                else:
                    self._send(404, "Not Found")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def paths(self, method: str) -> list[str]:
        return [path for m, path, _ in self.requests if m == method]

    def __enter__(self) -> FakeMetadata:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def metadata() -> Iterator[FakeMetadata]:
    with FakeMetadata(require_token=True) as server:
        yield server


async def test_imdsv2_token_then_role_discovery(metadata: FakeMetadata) -> None:
    fetcher = EcsRamRoleFetcher("", endpoint=metadata.endpoint)
    fetched = await fetcher()
    assert fetched.credentials == Credentials("STS.key1", f"{SECRET}-1", f"{TOKEN}-1")
    assert fetched.expiration is not None
    assert abs(fetched.expiration - (time.time() + 3600)) < 5
    put = metadata.requests[0]
    assert put[:2] == ("PUT", "/latest/api/token")
    assert put[2]["X-aliyun-ecs-metadata-token-ttl-seconds"] == "21600"
    assert metadata.paths("GET") == [_ROLE_PATH, _ROLE_PATH + "ossmount-role"]
    for _, _, headers in metadata.requests[1:]:
        assert headers["X-aliyun-ecs-metadata-token"] == metadata.token
    assert not fetcher.used_imdsv1
    await fetcher()  # the discovered role is remembered
    assert metadata.paths("GET")[2:] == [_ROLE_PATH + "ossmount-role"]


async def test_named_role_and_ossfs_url(metadata: FakeMetadata) -> None:
    metadata.role = "named"
    fetcher = EcsRamRoleFetcher.from_option(
        f"{metadata.endpoint}/latest/meta-data/ram/security-credentials/named",
        "http://100.100.100.200",
        {},
    )
    assert fetcher.endpoint == metadata.endpoint
    assert (await fetcher()).credentials.access_key_id == "STS.key1"
    assert metadata.paths("GET") == [_ROLE_PATH + "named"]
    assert parse_ram_role("r1", "http://x/") == ("http://x", "r1")
    assert parse_ram_role("", "http://x") == ("http://x", "")
    assert parse_ram_role("http://h:1" + _ROLE_PATH, "http://x") == ("http://h:1", "")
    with pytest.raises(CredentialsError, match="does not end in"):
        parse_ram_role("http://h/other/path", "http://x")


async def test_imdsv1_fallback() -> None:
    with FakeMetadata(v2=False) as server:
        fetcher = EcsRamRoleFetcher("ossmount-role", endpoint=server.endpoint)
        assert (await fetcher()).credentials.access_key_id == "STS.key1"
        assert fetcher.used_imdsv1
        assert server.paths("PUT") == ["/latest/api/token"]
        (get,) = [r for r in server.requests if r[0] == "GET"]
        assert "X-aliyun-ecs-metadata-token" not in get[2]


async def test_imdsv1_disabled() -> None:
    with FakeMetadata(v2=False) as server:
        fetcher = EcsRamRoleFetcher.from_option(
            "ossmount-role", server.endpoint, {"ALIBABA_CLOUD_IMDSV1_DISABLED": "true"}
        )
        with pytest.raises(CredentialsError, match="ALIBABA_CLOUD_IMDSV1_DISABLED"):
            await fetcher()
        assert server.paths("GET") == []


async def test_metadata_errors(metadata: FakeMetadata) -> None:
    with pytest.raises(CredentialsError, match="no RAM role 'other' is attached"):
        await EcsRamRoleFetcher("other", endpoint=metadata.endpoint)()
    metadata.role = ""
    with pytest.raises(CredentialsError, match="no RAM role is attached"):
        await EcsRamRoleFetcher("", endpoint=metadata.endpoint)()
    metadata.role = "r"
    metadata.broken = True
    with pytest.raises(CredentialsError, match="HTTP 500"):
        await EcsRamRoleFetcher("r", endpoint=metadata.endpoint)()
    closed = trio.socket.socket()
    await closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(CredentialsError, match="cannot reach the metadata service"):
        await EcsRamRoleFetcher("r", endpoint=f"http://127.0.0.1:{port}")()


def test_metadata_answer_must_be_temporary_and_successful() -> None:
    with pytest.raises(CredentialsError, match="SecurityToken, Expiration"):
        parse_credentials_json(
            json.dumps({"AccessKeyId": "a", "AccessKeySecret": SECRET}), "x", temporary=True
        )
    with pytest.raises(CredentialsError, match="Code 'Failed'") as info:
        parse_credentials_json(
            json.dumps({"Code": "Failed", "AccessKeySecret": SECRET}), "x", temporary=True
        )
    no_secret_in(str(info.value))


async def test_ram_role_is_refreshed_before_expiry(
    metadata: FakeMetadata, mock_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    provider = resolve_credentials(
        "b",
        ram_role="ossmount-role",
        ecs_metadata_endpoint=metadata.endpoint,
        environ={},
        default_passwd_files=(),
    )
    assert (await provider.get_credentials()).access_key_id == "STS.key1"
    mock_clock.jump(2800)  # refresh at 80 % of 3600 s = 2880 s
    assert (await provider.get_credentials()).access_key_id == "STS.key1"
    mock_clock.jump(100)
    assert (await provider.get_credentials()).access_key_id == "STS.key2"
    assert metadata.issued == 2
    for secret in (f"{SECRET}-1", f"{SECRET}-2", f"{TOKEN}-1", metadata.token):
        assert secret not in caplog.text
        assert secret not in repr(provider)


# ------------------------------------------------------------- RefreshingCredentialsProvider

WALL = 1_700_000_000.0


class FakeSource:
    """A fetcher whose keys live `lifetime` s; `fail` makes it raise; `delay` makes it slow."""

    def __init__(self, lifetime: float | None = 1000.0) -> None:
        self.lifetime = lifetime
        self.calls = 0
        self.fail = False
        self.delay = 0.0

    async def __call__(self) -> FetchedCredentials:
        self.calls += 1
        if self.delay:
            await trio.sleep(self.delay)
        if self.fail:
            raise CredentialsError("source is down")
        creds = Credentials(f"key{self.calls}", f"{SECRET}-{self.calls}", TOKEN)
        expiry = None if self.lifetime is None else WALL + self.lifetime
        return FetchedCredentials(creds, expiry)


def provider_for(source: FakeSource) -> RefreshingCredentialsProvider:
    return RefreshingCredentialsProvider(source, "fake source", wall_clock=lambda: WALL)


def test_refresh_delay() -> None:
    assert refresh_delay(3600) == pytest.approx(2880)
    assert refresh_delay(121) == pytest.approx(96.8)
    assert refresh_delay(100) == 50
    assert refresh_delay(-5) == 0


async def test_refreshes_at_80_percent_of_lifetime(autojump_clock: trio.testing.MockClock) -> None:
    source = FakeSource(lifetime=1000)
    provider = provider_for(source)
    assert (await provider.get_credentials()).access_key_id == "key1"
    await trio.sleep(799)
    assert (await provider.get_credentials()).access_key_id == "key1"
    await trio.sleep(2)
    assert (await provider.get_credentials()).access_key_id == "key2"
    assert provider.expires_in == pytest.approx(1000 - 5)
    assert source.calls == 2


async def test_keys_without_expiry_are_not_refreshed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    source = FakeSource(lifetime=None)
    provider = provider_for(source)
    await provider.get_credentials()
    await trio.sleep(10**7)
    assert (await provider.get_credentials()).access_key_id == "key1"
    await provider.refresh()  # SIGHUP
    assert (await provider.get_credentials()).access_key_id == "key2"


async def test_concurrent_callers_share_one_fetch(autojump_clock: trio.testing.MockClock) -> None:
    source = FakeSource()
    source.delay = 1.0
    provider = provider_for(source)
    got: list[str] = []

    async def read() -> None:
        got.append((await provider.get_credentials()).access_key_id)

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(read)
    assert got == ["key1"] * 20
    assert source.calls == 1


async def test_readers_keep_the_valid_key_while_one_refreshes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    source = FakeSource(lifetime=1000)
    provider = provider_for(source)
    await provider.get_credentials()
    await trio.sleep(900)
    source.delay = 30.0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(provider.get_credentials)  # this one fetches (30 s)
        await trio.sleep(1)
        with trio.fail_after(0.001):  # the others do not wait for it
            for _ in range(5):
                assert (await provider.get_credentials()).access_key_id == "key1"
    assert (await provider.get_credentials()).access_key_id == "key2"
    assert source.calls == 2


async def test_failed_refresh_keeps_old_key_with_one_warning(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    source = FakeSource(lifetime=1000)
    provider = provider_for(source)
    await provider.get_credentials()
    await trio.sleep(801)
    source.fail = True
    for _ in range(10):  # reads through the retries: none fails
        assert (await provider.get_credentials()).access_key_id == "key1"
        await trio.sleep(17)
    assert source.calls > 3  # it kept trying, with back-off
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "fake source" in message
    assert "source is down" in message
    assert "still using the current ones" in message
    source.fail = False
    await trio.sleep(30)
    new = await provider.get_credentials()
    assert new.access_key_id == f"key{source.calls}"
    assert "refreshed after" in caplog.records[-1].getMessage()
    no_secret_in(caplog.text, f"{SECRET}-1", f"{TOKEN}")


async def test_expired_and_failing_is_an_error_naming_the_source(
    autojump_clock: trio.testing.MockClock,
) -> None:
    source = FakeSource(lifetime=1000)
    provider = provider_for(source)
    await provider.get_credentials()
    source.fail = True
    await trio.sleep(1000)
    with pytest.raises(CredentialsError, match="fake source expired and could not be refreshed"):
        await provider.get_credentials()
    calls = source.calls
    with pytest.raises(CredentialsError, match="source is down"):
        await provider.get_credentials()  # within the back-off: no new fetch
    assert source.calls == calls
    source.fail = False
    await trio.sleep(60)
    assert (await provider.get_credentials()).access_key_id == f"key{calls + 1}"


async def test_first_fetch_failing(autojump_clock: trio.testing.MockClock) -> None:
    source = FakeSource()
    source.fail = True
    with pytest.raises(CredentialsError, match="cannot get credentials from fake source"):
        await provider_for(source).get_credentials()


async def test_already_expired_keys_are_refused(autojump_clock: trio.testing.MockClock) -> None:
    source = FakeSource(lifetime=3)
    with pytest.raises(CredentialsError, match="already expired"):
        await provider_for(source).get_credentials()


async def test_cancelled_refresh_lets_the_next_caller_fetch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    source = FakeSource()
    source.delay = 10.0
    provider = provider_for(source)
    with trio.move_on_after(1):
        await provider.get_credentials()
    source.delay = 0
    assert (await provider.get_credentials()).access_key_id == "key2"


async def test_sighup_refresh_failure_keeps_the_key(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    source = FakeSource()
    provider = provider_for(source)
    wrapper = ReloadableCredentials(provider, lambda: pytest.fail("not re-resolved"))
    await wrapper.get_credentials()
    assert await wrapper.reload() == "fake source (access key id key2) (refreshed)"
    source.fail = True
    with caplog.at_level(logging.WARNING), pytest.raises(CredentialsError, match="down"):
        await wrapper.reload()
    assert not caplog.records  # the SIGHUP handler logs its own line
    assert (await wrapper.get_credentials()).access_key_id == "key2"


async def test_repr_and_logs_hide_secrets(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    provider = provider_for(FakeSource())
    assert "fake source" in repr(provider)
    await provider.get_credentials()
    text = repr(provider) + str(provider) + repr([provider])
    assert "key1" in text
    no_secret_in(text + caplog.text, f"{SECRET}-1")


# ------------------------------------------------------------------------ mount options


def test_mount_options() -> None:
    from ossmount.config import build_config, parse_o_options
    from ossmount.errors import StartupError

    raw, _ = parse_o_options(["credential_process=/usr/bin/get-keys --profile x,ram_role="])
    config = build_config("bkt", "/mnt", raw, foreground=True, ignored=[])
    assert config.credential_process == "/usr/bin/get-keys --profile x"
    assert config.ram_role == ""  # the instance's attached role
    assert config.ecs_metadata_endpoint == "http://100.100.100.200"
    raw, _ = parse_o_options(["ecs_metadata_endpoint=http://127.0.0.1:8080/"])
    config = build_config("bkt", "/mnt", raw, foreground=True, ignored=[])
    assert (config.credential_process, config.ram_role) == (None, None)
    assert config.ecs_metadata_endpoint == "http://127.0.0.1:8080"
    for bad in (
        "credential_process='unbalanced",
        "credential_process= ",
        "ecs_metadata_endpoint=x",
    ):
        raw, _ = parse_o_options([bad])
        with pytest.raises(StartupError, match="bad value"):
            build_config("bkt", "/mnt", raw, foreground=True, ignored=[])
