"""Where the OSS client and the prefetcher report what happened, without depending on the
metrics stack.

The client and the prefetcher sit low in the layering and must not import prometheus_client
or the mount's service code. The client calls `record_request`/`record_retry`, which do
nothing until a mount installs a `RequestObserver` for the duration of the mount; the
prefetcher is handed a `PrefetchObserver` (`NO_PREFETCH_OBSERVER` when nobody watches).
`ossmount.service.metrics.MountMetrics` is both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol, TypeVar

__all__ = [
    "NO_PREFETCH_OBSERVER",
    "PrefetchObserver",
    "RequestObserver",
    "install",
    "record_request",
    "record_retry",
]


class RequestObserver(Protocol):
    def request(self, operation: str, status: int | str) -> None: ...

    def retry(self, operation: str, reason: str) -> None: ...


class PrefetchObserver(Protocol):
    """What the prefetcher reports. Called on the trio thread; must not block."""

    def part_started(self) -> None:
        """A part GET began (it holds a mount-wide GET slot until `part_ended`)."""

    def part_ended(self, outcome: str | None, nbytes: int = 0) -> None:
        """A part GET ended: outcome "done" (`nbytes` fetched), "failed", "changed", or None
        (cancelled, or read-ahead that met a full disk: not counted)."""

    def verdict(self, state: str) -> None:
        """A download reached its whole-object verdict: verified, unverifiable or corrupt."""

    def shed(self, nbytes: int) -> None:
        """Bytes of parts already read were punched out of a cache file."""

    def object_warmed(self, opened: bool) -> None:
        """An object was warmed ahead of a directory walk (`opened` False), or one warmed
        earlier was then opened by a reader (`opened` True)."""


class _NoPrefetchObserver:
    def part_started(self) -> None:
        pass

    def part_ended(self, outcome: str | None, nbytes: int = 0) -> None:
        pass

    def verdict(self, state: str) -> None:
        pass

    def shed(self, nbytes: int) -> None:
        pass

    def object_warmed(self, opened: bool) -> None:
        pass


NO_PREFETCH_OBSERVER: PrefetchObserver = _NoPrefetchObserver()


ObserverT = TypeVar("ObserverT", bound=RequestObserver)

_installed: RequestObserver | None = None


@contextlib.contextmanager
def install(observer: ObserverT) -> Iterator[ObserverT]:
    """Send `record_request`/`record_retry` to `observer` while the block runs."""
    global _installed
    previous, _installed = _installed, observer
    try:
        yield observer
    finally:
        _installed = previous


def record_request(operation: str, status: int | str) -> None:
    """One OSS request attempt ended: `status` is the HTTP status, or "transport" (no reply)."""
    if _installed is not None:
        _installed.request(operation, status)


def record_retry(operation: str, reason: str) -> None:
    """One OSS request will be retried because of `reason` (the error code)."""
    if _installed is not None:
        _installed.retry(operation, reason)
