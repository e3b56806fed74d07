"""Secrets never reach logs, exception texts or reprs."""

from __future__ import annotations

import io
import logging

import pytest

from ossmount.oss import Credentials, OssClient, OssConfig, StaticCredentialsProvider
from ossmount.oss.credentials import resolve_credentials
from ossmount.oss.redact import REDACTED, RedactingFilter, redact, register_secret
from ossmount.oss.signing import sign_v1_headers, sign_v4_headers

SECRET = "Very-Secret-Key-0123456789"
TOKEN = "STS.tokenvalue+with/slashes=="


@pytest.fixture
def stream_logger() -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("test.redaction")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, out


def test_patterns_without_known_secret() -> None:
    v4 = sign_v4_headers(
        "GET", "b", "k", [], {}, access_key_id="ak", secret="unregistered1", region="r", now=0
    )
    text = redact(f"headers={v4}")
    assert v4["Authorization"].split("Signature=")[1] not in text
    assert REDACTED in text
    v1 = sign_v1_headers("GET", "b", "k", [], {}, access_key_id="ak", secret="unregistered2", now=0)
    sig = v1["Authorization"].split(":", 1)[1]
    assert sig not in redact(f"Authorization: {v1['Authorization']}")
    assert sig not in redact(f"auth was {v1['Authorization']}")
    signature = "a39966c61718be0d5b14e668088b3fa07601033f6518ac7b523100014269c0fe"
    q = {
        "x-oss-signature-version": "OSS4-HMAC-SHA256",
        "x-oss-credential": "ak/19700101/r/oss/aliyun_v4_request",
        "x-oss-security-token": "tok-abcdefgh",
        "x-oss-signature": signature,
    }
    url = "http://h/k?" + "&".join(f"{k}={v}" for k, v in q.items())
    clean = redact(url)
    assert q["x-oss-signature"] not in clean
    assert "tok-abcdefgh" not in clean
    assert "x-oss-credential" in clean  # the harmless parts stay readable
    assert "OSS_ACCESS_KEY_SECRET=" + REDACTED in redact("OSS_ACCESS_KEY_SECRET=abc123def")


def test_known_secret_anywhere(stream_logger: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = stream_logger
    register_secret(SECRET)
    logger.info("weird place %s and %s", SECRET, "x" + SECRET + "y")
    try:
        raise RuntimeError(f"library said {SECRET}")
    except RuntimeError:
        logger.exception("boom")
    text = out.getvalue()
    assert SECRET not in text
    assert text.count(REDACTED) >= 3


async def test_secrets_never_reach_logs_exceptions_or_reprs(
    caplog: pytest.LogCaptureFixture, stream_logger: tuple[logging.Logger, io.StringIO]
) -> None:
    logger, out = stream_logger
    caplog.set_level(logging.DEBUG)
    provider = resolve_credentials(
        "b",
        environ={
            "OSS_ACCESS_KEY_ID": "AKID-visible",
            "OSS_ACCESS_KEY_SECRET": SECRET,
            "OSS_SESSION_TOKEN": TOKEN,
        },
    )
    creds = await provider.get_credentials()
    client = OssClient(OssConfig("http://127.0.0.1:9", "b", region="r"), provider)
    try:
        # a request that fails at connect: its exception and the retry log lines
        from ossmount.oss import OssTransportError, RetryPolicy

        client._retry = RetryPolicy(max_attempts=2, base_delay_s=0, max_delay_s=0)
        with pytest.raises(OssTransportError) as info:
            await client.head("k")
        signed = await client._signer.sign("GET", "k", [], {})
        logger.debug("request headers %s", signed)
        logger.debug("creds %r provider %r", creds, provider)
        texts = [
            out.getvalue(),
            caplog.text,
            str(info.value),
            repr(info.value),
            repr(creds),
            repr(provider),
            repr(client),
        ]
    finally:
        await client.aclose()
    for text in texts:
        assert SECRET not in text
        assert TOKEN not in text
    assert "AKID-visible" in caplog.text  # the key id is reported, once, at INFO
    assert signed["x-oss-security-token"] == TOKEN  # the wire still carries it


def test_short_values_not_registered() -> None:
    register_secret("ab")
    assert redact("ab cab") == "ab cab"


def test_credentials_str_is_safe() -> None:
    c = Credentials("ak", SECRET)
    assert SECRET not in f"{c!s} {c!r}"
    assert StaticCredentialsProvider(c).__repr__().count(SECRET) == 0
