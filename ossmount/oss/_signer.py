"""Signing a request of one client: its credentials, signature version and clock correction.

Apart from `_client` so the request paths (httpcore's and the ranged GETs' own, `_gethead`)
share one place that knows how a request is signed and with which time.

Concurrency: trio thread only. The clock offset is a float replaced between awaits (learnt
from a RequestTimeTooSkewed reply's Date); every attempt reads it afresh, so a retry after a
skew is signed with the corrected time.
"""

from __future__ import annotations

import logging
import time
from email.utils import parsedate_to_datetime

from . import signing
from ._config import OssConfig
from .credentials_types import ANONYMOUS, Credentials, CredentialsProvider

__all__ = ["Signer"]

log = logging.getLogger(__name__)


class Signer:
    def __init__(self, config: OssConfig, credentials: CredentialsProvider) -> None:
        self._config = config
        self._credentials = credentials
        self._region = config.resolved_region() if config.signature_version == "v4" else ""
        self.clock_offset_s = 0.0

    def now(self) -> float:
        """The time to sign with: ours, corrected by what the server told us."""
        return time.time() + self.clock_offset_s

    async def credentials(self) -> Credentials:
        """The key for the next request (asked every attempt: providers may refresh)."""
        if self._config.signature_version == "anonymous":
            return ANONYMOUS
        return await self._credentials.get_credentials()

    async def sign(
        self, method: str, key: str | None, query: list[tuple[str, str]], headers: dict[str, str]
    ) -> dict[str, str]:
        """`headers` plus the signature's, signed now with the current credentials."""
        return self.signed(await self.credentials(), method, key, query, headers, self.now())

    def sign_get(
        self, creds: Credentials, key: str, headers: dict[str, str], now: float
    ) -> dict[str, str]:
        """A GET of `key` without query (`_gethead.SignGet`)."""
        return self.signed(creds, "GET", key, [], headers, now)

    def signed(
        self,
        creds: Credentials,
        method: str,
        key: str | None,
        query: list[tuple[str, str]],
        headers: dict[str, str],
        now: float,
    ) -> dict[str, str]:
        config = self._config
        if creds.anonymous:
            return headers
        if config.signature_version == "v1":
            return signing.sign_v1_headers(
                method,
                config.bucket,
                key,
                query,
                headers,
                access_key_id=creds.access_key_id,
                secret=creds.access_key_secret,
                now=now,
                security_token=creds.security_token,
            )
        return signing.sign_v4_headers(
            method,
            config.bucket,
            key,
            query,
            headers,
            access_key_id=creds.access_key_id,
            secret=creds.access_key_secret,
            region=self._region,
            now=now,
            security_token=creds.security_token,
            product=config.product,
        )

    def learn_clock_offset(self, date: str | None) -> None:
        """A RequestTimeTooSkewed reply's Date: sign from now on with the server's time."""
        if not date:
            return
        try:
            server = parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return
        self.clock_offset_s = server - time.time()
        log.warning(
            "OSS says our clock is off; signing with a %.0f s correction from the server's Date",
            self.clock_offset_s,
        )
