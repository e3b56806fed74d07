"""Keep credentials out of log output.

Two nets, because either alone leaks: patterns catch secrets we have never seen (an
Authorization header in a debug dump, a signature in a presigned URL, a token in a query
string), and the registry of known secret values catches them in any other shape (an
exception text from a library, a repr). `CredentialsResolver` registers every secret and
token it loads, so by the time anything can be logged the value is known here.

Install with `install_redaction()` (on the root logger's handlers: logger-level filters do not
see records propagated from child loggers) or add `RedactingFilter()` to your own handler.
"""

from __future__ import annotations

import logging
import re
import threading
from urllib.parse import quote

__all__ = ["REDACTED", "RedactingFilter", "install_redaction", "redact", "register_secret"]

REDACTED = "[REDACTED]"

_lock = threading.Lock()
_secrets: set[str] = set()
# Shorter strings would redact ordinary words; real secrets and tokens are much longer.
_MIN_SECRET_LEN = 6

_PATTERNS = [
    # Authorization: <anything up to end of line or closing quote>
    re.compile(r"(?i)(\bauthorization\b[\"']?\s*[:=]\s*[\"']?)[^\r\n\"']+"),
    # V4 Signature=hex, presign x-oss-signature=hex, V1 Signature=base64 in a URL
    re.compile(r"(?i)(\b(?:x-oss-)?signature\b[\"']?\s*[:=]\s*[\"']?)[^&\s\"',;)]+"),
    # STS tokens in headers or query strings
    re.compile(r"(?i)(\b(?:x-oss-)?security[-_]token\b[\"']?\s*[:=]\s*[\"']?)[^&\s\"',;)]+"),
    re.compile(r"(?i)(\b(?:oss_)?session_token\b[\"']?\s*[:=]\s*[\"']?)[^&\s\"',;)]+"),
    # anything=... named like a secret (access_key_secret=, OSS_ACCESS_KEY_SECRET=, secret: ...)
    re.compile(r"(?i)(\b\w*secret\w*\b[\"']?\s*[:=]\s*[\"']?)[^&\s\"',;)]+"),
    # V1 header value "OSS <id>:<base64 signature>"
    re.compile(r"(\bOSS [A-Za-z0-9._-]+:)[A-Za-z0-9+/=]{20,}"),
]


def register_secret(value: str | None) -> None:
    """Remember a secret value so any later occurrence in a log line is replaced."""
    if value and len(value) >= _MIN_SECRET_LEN:
        with _lock:
            _secrets.add(value)
            _secrets.add(quote(value, safe=""))


def redact(text: str) -> str:
    """`text` with known secrets and secret-shaped fields replaced by [REDACTED]."""
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (and formatted traceback) with `redact` before output."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg = clean
            record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install_redaction(logger: logging.Logger | None = None) -> RedactingFilter:
    """Attach one RedactingFilter to every handler of `logger` (default: the root logger)."""
    target = logger or logging.getLogger()
    flt = RedactingFilter()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(flt)
    return flt
