"""Temporary credentials (STS tokens) that are fetched again before they expire.

`RefreshingCredentialsProvider` wraps a *fetcher* (an async callable returning
`FetchedCredentials`: a key and, for temporary keys, the wall-clock time it expires) and is
what the OSS client asks before signing every attempt:

* it serves the cached key until the refresh point, which is 80 % of the lifetime the key had
  left when it was fetched if that exceeded 120 s (the Go SDK v2's rule,
  `oss-protocol.md` §7), else half of it. A key without an expiry is never refreshed on its
  own (`refresh()` — SIGHUP — still fetches again);
* at the refresh point one caller fetches; everyone else keeps getting the current key
  meanwhile, so reads in flight and new reads never wait for, or fail because of, a refresh
  while the key is valid;
* a failed refresh while the key is still valid logs one WARNING (per run of failures) and
  keeps serving it, trying again after a short back-off (2, 4, 8, 16, then every 30 s);
* once the key has expired, callers share one fetch; if that fails they get a
  `CredentialsError` naming the source (and, until the back-off passes, the same error without
  another fetch, so a broken source is not hammered by every read).

Times are kept on trio's clock (converted from the wall-clock expiry at fetch time), so tests
drive the schedule with `trio.testing.MockClock`. Keys are treated as expired
`EXPIRY_SKEW_S` before their stated expiry. Secrets are registered for redaction as soon as they
are fetched and never appear in a log line or `repr`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from .credentials_types import Credentials, CredentialsError
from .redact import register_secret

__all__ = [
    "EXPIRY_SKEW_S",
    "FetchedCredentials",
    "Fetcher",
    "RefreshingCredentialsProvider",
    "refresh_delay",
]

# The logger `resolve_credentials` uses: SIGHUP's reload quiets this one logger's INFO lines.
log = logging.getLogger("ossmount.oss.credentials")

EXPIRY_SKEW_S = 5.0  # a key this close to its expiry is not used to sign any more
_REFRESH_FRACTION = 0.8
_SHORT_LIFETIME_S = 120.0
_BACKOFF_S = (2.0, 4.0, 8.0, 16.0, 30.0)


@dataclass(frozen=True, slots=True)
class FetchedCredentials:
    """A key from a source, and when it expires (Unix time), None if it does not."""

    credentials: Credentials
    expiration: float | None = None


Fetcher = Callable[[], Awaitable[FetchedCredentials]]


def refresh_delay(lifetime: float) -> float:
    """Seconds after a fetch to fetch again, for a key with `lifetime` seconds left."""
    if lifetime > _SHORT_LIFETIME_S:
        return _REFRESH_FRACTION * lifetime
    return max(0.0, lifetime / 2)


@dataclass(slots=True)
class _Current:
    credentials: Credentials
    expires_at: float  # trio time; inf when the key does not expire
    refresh_at: float  # trio time; inf when it is never refreshed on its own


class RefreshingCredentialsProvider:
    """A `CredentialsProvider` for keys that expire; see the module docstring."""

    def __init__(
        self, fetch: Fetcher, source: str, *, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self._fetch = fetch
        self.source = source
        self._wall_clock = wall_clock
        self._current: _Current | None = None
        self._refreshing: trio.Event | None = None
        self._failures = 0
        self._retry_at = -float("inf")
        self._last_error: CredentialsError | None = None

    @property
    def credentials(self) -> Credentials | None:
        """The key being served now (None before the first fetch)."""
        return self._current.credentials if self._current else None

    @property
    def expires_in(self) -> float | None:
        """Seconds until the current key may no longer be used (None: none, or no expiry)."""
        if self._current is None or self._current.expires_at == float("inf"):
            return None
        return self._current.expires_at - trio.current_time()

    def __repr__(self) -> str:
        creds = self.credentials
        key = f", access_key_id={creds.access_key_id!r}" if creds is not None else ""
        return f"RefreshingCredentialsProvider(source={self.source!r}{key}, secret=<hidden>)"

    __str__ = __repr__

    async def get_credentials(self) -> Credentials:
        while True:
            now = trio.current_time()
            current = self._current
            if current is not None and now < current.refresh_at:
                return current.credentials
            valid = current is not None and now < current.expires_at
            if (
                current is not None
                and valid
                and (self._refreshing is not None or now < self._retry_at)
            ):
                return current.credentials  # someone is refreshing, or we are backing off
            if not valid and self._last_error is not None and now < self._retry_at:
                raise self._expired_error(self._last_error)
            if self._refreshing is not None:
                await self._refreshing.wait()  # expired: share the fetch already running
                continue
            await self._refresh_once(forced=False)

    async def refresh(self) -> None:
        """Fetch again now (SIGHUP). Raises CredentialsError, keeping the current key."""
        while self._refreshing is not None:
            await self._refreshing.wait()
        await self._refresh_once(forced=True)

    async def _refresh_once(self, *, forced: bool) -> None:
        event = self._refreshing = trio.Event()
        try:
            try:
                fetched = await self._fetch()
                self._install(fetched)
            except CredentialsError as exc:
                self._failed(exc, forced=forced)
        finally:
            self._refreshing = None
            event.set()

    def _install(self, fetched: FetchedCredentials) -> None:
        creds = fetched.credentials
        register_secret(creds.access_key_secret)
        register_secret(creds.security_token)
        now = trio.current_time()
        if fetched.expiration is None:
            expires_at = refresh_at = float("inf")
            lifetime_text = "no expiry"
        else:
            lifetime = fetched.expiration - self._wall_clock()
            if lifetime <= EXPIRY_SKEW_S:
                raise CredentialsError(
                    f"the credentials it returned expire in {lifetime:.0f} s"
                    " (already expired, or this machine's clock is wrong)"
                )
            expires_at = now + lifetime - EXPIRY_SKEW_S
            refresh_at = now + refresh_delay(lifetime)
            lifetime_text = f"valid for {lifetime:.0f} s, refresh in {refresh_at - now:.0f} s"
        previous = self._current
        self._current = _Current(creds, expires_at, refresh_at)
        if self._failures:
            log.info(
                "credentials from %s refreshed after %d failed attempt%s (access key id %s)",
                self.source,
                self._failures,
                "s" * (self._failures != 1),
                creds.access_key_id,
            )
        else:
            log.debug(
                "credentials from %s %s (access key id %s, %s)",
                self.source,
                "fetched" if previous is None else "refreshed",
                creds.access_key_id,
                lifetime_text,
            )
        self._failures = 0
        self._retry_at = -float("inf")
        self._last_error = None

    def _failed(self, exc: CredentialsError, *, forced: bool) -> None:
        now = trio.current_time()
        self._failures += 1
        self._last_error = exc
        self._retry_at = now + _BACKOFF_S[min(self._failures, len(_BACKOFF_S)) - 1]
        current = self._current
        if current is not None and now < current.expires_at:
            if forced:
                raise exc  # SIGHUP: its handler logs the one line
            level = logging.WARNING if self._failures == 1 else logging.DEBUG
            log.log(
                level,
                "could not refresh credentials from %s (%s); still using the current ones, "
                "valid for %.0f s more; retrying",
                self.source,
                exc,
                current.expires_at - now,
            )
            return
        raise self._expired_error(exc) from None

    def _expired_error(self, exc: CredentialsError) -> CredentialsError:
        if self._current is None:
            return CredentialsError(f"cannot get credentials from {self.source}: {exc}")
        return CredentialsError(
            f"credentials from {self.source} expired and could not be refreshed: {exc}"
        )
