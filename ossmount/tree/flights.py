"""`Flights`: concurrent callers asking for the same thing share one Lister call.

Apart from `Namespace` (tree.listing) because it is a concurrency protocol of its own, with its
own invariants, and knows nothing of names or listings: a key, a coroutine function, a result.

Protocol (trio, one thread): the first caller with a key runs `fn`, the others wait on its
event. If the running task is cancelled, a waiter runs the request itself (the loop in `run`);
if it fails, every waiter gets the same exception. The key leaves the table before the event
is set, so a caller arriving after the end starts a new flight rather than reading an old one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import TypeVar

from ossmount.tree.records import Flight

__all__ = ["Flights"]

T = TypeVar("T")


class Flights:
    """The flights in progress, by key."""

    def __init__(self) -> None:
        self._flights: dict[Hashable, Flight[object]] = {}

    async def run(self, key: Hashable, fn: Callable[[], Awaitable[T]]) -> T:
        """Run `fn` once for all concurrent callers with the same `key` (see module doc)."""
        while True:
            flight = self._flights.get(key)
            if flight is None:
                mine: Flight[T] = Flight()
                self._flights[key] = mine  # type: ignore[assignment]
                try:
                    mine.result = await fn()
                    mine.ok = True
                    return mine.result
                except Exception as exc:
                    mine.error = exc
                    raise
                finally:
                    del self._flights[key]
                    mine.done.set()
            await flight.done.wait()
            if flight.ok:
                return flight.result  # type: ignore[return-value]
            if flight.error is not None:
                raise flight.error
            # the running task was cancelled: try again, maybe as the one running it
