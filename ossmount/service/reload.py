"""Credentials that SIGHUP can replace, and the STATUS line describing a running mount.

The OSS client asks its credentials provider before every request attempt, so swapping the
provider behind a stable wrapper is enough to rotate keys without touching the client or
failing requests in flight (an attempt already signed finishes with the key it was signed with).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ossmount.cache.store import CacheStats
from ossmount.oss import Credentials, CredentialsProvider

if TYPE_CHECKING:
    from ossmount.fs.staged import StagedCounts

__all__ = ["ReloadableCredentials", "describe_mount", "format_bytes"]


class ReloadableCredentials:
    """A `CredentialsProvider` delegating to one that `reload()` can replace.

    `resolve` builds a fresh provider (normally `resolve_credentials` with the mount's
    options). If the current provider has its own `refresh()`/`reload()` coroutine (a future
    refreshing provider), that is used instead of resolving again.
    """

    def __init__(
        self, provider: CredentialsProvider, resolve: Callable[[], CredentialsProvider]
    ) -> None:
        self._provider = provider
        self._resolve = resolve

    @property
    def provider(self) -> CredentialsProvider:
        return self._provider

    async def get_credentials(self) -> Credentials:
        return await self._provider.get_credentials()

    async def reload(self) -> str:
        """Re-read the credentials; returns where they now come from (for the log line).

        Raises whatever resolving raises (CredentialsError), keeping the current provider.
        """
        for name in ("refresh", "reload"):
            method = getattr(self._provider, name, None)
            if callable(method):
                result = method()
                if inspect.isawaitable(result):
                    await result
                return f"{_source(self._provider)} (refreshed)"
        quiet = _Quiet()
        credentials_log = logging.getLogger("ossmount.oss.credentials")
        credentials_log.addFilter(quiet)  # the caller logs the one line for the signal
        try:
            provider = self._resolve()
        finally:
            credentials_log.removeFilter(quiet)
        self._provider = provider
        return _source(provider)


class _Quiet(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO


def _source(provider: CredentialsProvider) -> str:
    source = getattr(provider, "source", None)
    creds = getattr(provider, "credentials", None)
    text = str(source) if source else type(provider).__name__
    if isinstance(creds, Credentials):
        text += " (anonymous)" if creds.anonymous else f" (access key id {creds.access_key_id})"
    return text


def format_bytes(n: int) -> str:
    """1.2 GiB, 340 MiB, 12 KiB, 17 B: binary units, 2-3 significant digits."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            if unit == "B":
                return f"{n} B"
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def describe_mount(
    source: str, mountpoint: str, downloads: int, gets_in_flight: int, cache: CacheStats,
    staged: StagedCounts | None = None,
) -> str:  # fmt: skip
    """One STATUS line, e.g.
    `mounted bkt:/prefix at /mnt; 3 downloads (5 GETs); cache 1.2 GiB in 40 files (6% of 20 GiB)`,
    then, on a --rw mount writing files, `; 3 files being written, 1 upload failed (retrying)`:
    what `systemctl status` shows an operator about acknowledged bytes not on OSS yet.
    """
    text = f"mounted {source} at {mountpoint}; {downloads} download{'s' * (downloads != 1)}"
    if gets_in_flight:
        text += f" ({gets_in_flight} GET{'s' * (gets_in_flight != 1)})"
    text += f"; cache {format_bytes(cache.bytes)} in {cache.entries} file"
    text += "s" * (cache.entries != 1)
    if cache.max_bytes:
        percent = round(100 * cache.bytes / cache.max_bytes)
        text += f" ({percent}% of {format_bytes(cache.max_bytes)})"
    if staged is not None and staged.files:
        text += f"; {staged.files} file{'s' * (staged.files != 1)} being written"
        if staged.unsent:
            text += f", {staged.unsent} upload{'s' * (staged.unsent != 1)} failed (retrying)"
    return text
