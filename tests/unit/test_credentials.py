"""Credential resolution order, passwd-file parsing and permission checks."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from ossmount.oss.credentials import (
    Credentials,
    CredentialsError,
    load_passwd_file,
    resolve_credentials,
)

SECRET = "s3cr3t-VALUE-xyz"


def passwd(tmp_path: Path, text: str, mode: int = 0o600, name: str = "passwd-ossfs") -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return path


async def test_explicit_wins(tmp_path: Path) -> None:
    p = passwd(tmp_path, "fileid:filesecret1\n")
    provider = resolve_credentials(
        "b",
        access_key_id="optid",
        access_key_secret=SECRET,
        passwd_file=p,
        environ={"OSS_ACCESS_KEY_ID": "envid", "OSS_ACCESS_KEY_SECRET": "envsecret1"},
    )
    creds = await provider.get_credentials()
    assert (creds.access_key_id, creds.access_key_secret) == ("optid", SECRET)
    assert provider.source == "explicit options"


async def test_env_before_file(tmp_path: Path) -> None:
    p = passwd(tmp_path, "fileid:filesecret1\n")
    env = {
        "OSS_ACCESS_KEY_ID": "envid",
        "OSS_ACCESS_KEY_SECRET": SECRET,
        "OSS_SESSION_TOKEN": "tok",
    }
    creds = await resolve_credentials("b", passwd_file=p, environ=env).get_credentials()
    assert creds == Credentials("envid", SECRET, "tok")


async def test_passwd_file_bucket_entry_wins(tmp_path: Path) -> None:
    p = passwd(tmp_path, "# comment\n\ndefid:defsecret1\nb:bid:bsecret11\nother:oid:osecret1\n")
    assert load_passwd_file(p, "b") == Credentials("bid", "bsecret11")
    assert load_passwd_file(p, "zzz") == Credentials("defid", "defsecret1")
    creds = await resolve_credentials("b", passwd_file=p, environ={}).get_credentials()
    assert creds.access_key_id == "bid"


async def test_default_passwd_locations(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    p = passwd(tmp_path, "id:secret123\n")
    provider = resolve_credentials("b", environ={}, default_passwd_files=(missing, p))
    assert (await provider.get_credentials()).access_key_id == "id"
    assert str(p) in provider.source


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o700])
def test_passwd_permissions_refused(tmp_path: Path, mode: int) -> None:
    p = passwd(tmp_path, f"id:{SECRET}\n", mode=mode)
    with pytest.raises(CredentialsError, match=r"chmod 600|executable") as info:
        load_passwd_file(p, "b")
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    "text", ["id secret\n", "[default]\n", "a:b:c:d\n", "onlyid\n", "b:x:s1\nb:y:s2\n"]
)
def test_malformed_passwd(tmp_path: Path, text: str) -> None:
    p = passwd(tmp_path, text)
    with pytest.raises(CredentialsError, match="line") as info:
        load_passwd_file(p, "b")
    message = str(info.value).replace(str(p), "<path>")
    for part in text.replace(":", " ").split():
        if len(part) > 3:
            assert part not in message


def test_none_found_names_what_was_tried(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError) as info:
        resolve_credentials("b", environ={}, default_passwd_files=(tmp_path / "x",))
    text = str(info.value)
    assert "explicit options" in text
    assert "OSS_ACCESS_KEY_ID" in text
    assert str(tmp_path / "x") in text
    assert "anonymous" in text


async def test_anonymous_only_when_asked(tmp_path: Path) -> None:
    creds = await resolve_credentials(
        "b", anonymous=True, environ={"OSS_ACCESS_KEY_ID": "x", "OSS_ACCESS_KEY_SECRET": "y"}
    ).get_credentials()
    assert creds.anonymous


def test_half_env_is_an_error() -> None:
    with pytest.raises(CredentialsError, match="both"):
        resolve_credentials("b", environ={"OSS_ACCESS_KEY_ID": "x"})


def test_missing_explicit_passwd_file(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="does not exist"):
        resolve_credentials("b", passwd_file=tmp_path / "none", environ={})


def test_one_info_line_with_source_and_key_id(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ossmount.oss.credentials")
    resolve_credentials("b", access_key_id="AKID123", access_key_secret=SECRET, environ={})
    records = [r for r in caplog.records if r.name == "ossmount.oss.credentials"]
    assert len(records) == 1
    assert records[0].levelno == logging.INFO
    msg = records[0].getMessage()
    assert "explicit options" in msg
    assert "AKID123" in msg
    assert SECRET not in msg


def test_repr_hides_secret() -> None:
    c = Credentials("AKID", SECRET, "TOKEN-abcdef")
    for text in (repr(c), str(c), f"{c}", repr([c])):
        assert SECRET not in text
        assert "TOKEN-abcdef" not in text
        assert "AKID" in text


def test_passwd_symlink_refused(tmp_path: Path) -> None:
    real = passwd(tmp_path, "id:secret123\n", name="real")
    link = tmp_path / "link"
    os.symlink(real, link)
    with pytest.raises(CredentialsError, match="cannot open"):
        load_passwd_file(link, "b")
