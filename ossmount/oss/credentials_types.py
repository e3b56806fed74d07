"""What a credential is, and what hands one out: the types every credential module shares.

Kept apart from the resolution order (`credentials`), which imports every source: the sources
and the refresher build on these types, and `ossmount.oss` exports them without loading the
sources' HTTP client (the emulator imports `ossmount.oss.signing`, and with it this package).

`Credentials.__repr__` shows only the key id, so neither logs nor tracebacks carry a secret.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "ANONYMOUS",
    "Credentials",
    "CredentialsError",
    "CredentialsProvider",
    "StaticCredentialsProvider",
]


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
    a refreshing provider for STS/RAM-role keys can slot in)."""

    async def get_credentials(self) -> Credentials: ...


@dataclass(frozen=True, slots=True)
class StaticCredentialsProvider:
    credentials: Credentials
    source: str = "explicit options"

    async def get_credentials(self) -> Credentials:
        return self.credentials
