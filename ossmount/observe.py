"""Where the OSS client reports request outcomes, without depending on the metrics stack.

The client sits low in the layering and must not import prometheus_client or the mount's
service code; it calls these two functions, which do nothing until a mount installs an
observer (`ossmount.service.metrics.MountMetrics`) for the duration of the mount.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol, TypeVar

__all__ = ["RequestObserver", "install", "record_request", "record_retry"]


class RequestObserver(Protocol):
    def request(self, operation: str, status: int | str) -> None: ...

    def retry(self, operation: str, reason: str) -> None: ...


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
