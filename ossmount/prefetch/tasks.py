"""The prefetcher's background work, counted, so `Prefetcher.wait_idle` can say when none runs.

All of it runs in the prefetcher's service nursery, never in a FUSE request task. "Busy" work
(part workers, flushes, closing a download, a verdict) is counted from the moment it is
scheduled (synchronously, so a task that schedules its successor before it ends never lets the
count touch zero in between) until it returns. A flush timer asleep is not busy; its flush is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator

import trio

__all__ = ["Tasks"]


class Tasks:
    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._busy = 0
        self._idle = trio.Event()
        self._idle.set()

    def start_soon(self, fn: Callable[[], Awaitable[object]]) -> None:
        self._enter()
        try:
            self._nursery.start_soon(self._run, fn)
        except BaseException:  # a closed nursery: nothing was scheduled
            self._exit()
            raise

    def start_untracked(self, fn: Callable[[], Awaitable[object]]) -> None:
        self._nursery.start_soon(fn)

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        self._enter()
        try:
            yield
        finally:
            self._exit()

    async def wait_idle(self) -> None:
        """Return once no counted work is scheduled or running."""
        while self._busy:
            await self._idle.wait()

    @property
    def idle(self) -> bool:
        return self._busy == 0

    async def _run(self, fn: Callable[[], Awaitable[object]]) -> None:
        try:
            await fn()
        finally:
            self._exit()

    def _enter(self) -> None:
        if self._busy == 0:
            self._idle = trio.Event()
        self._busy += 1

    def _exit(self) -> None:
        self._busy -= 1
        if self._busy == 0:
            self._idle.set()
