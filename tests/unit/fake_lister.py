"""An in-memory bucket that answers ListObjectsV2 exactly, and counts every call.

Semantics copied from OSS/S3 ListObjectsV2: keys sorted by UTF-8 bytes (Python str order is
code point order, the same thing); only keys starting with `prefix`; `start_after` exclusive;
with a delimiter, a key whose rest (after the prefix) contains it is rolled up into the common
prefix ending at the first delimiter, emitted once; objects and common prefixes together count
toward `max_keys`; a page that stops before the end carries a continuation token. The token
here encodes the last item returned, so a page never repeats a common prefix.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass

import trio

from ossmount.oss.models import ListPage, ObjectMeta


@dataclass(frozen=True)
class Call:
    prefix: str
    delimiter: str
    continuation: str | None
    max_keys: int
    start_after: str | None


def meta_for(key: str, size: int = 0, mtime_ns: int | None = None) -> ObjectMeta:
    return ObjectMeta(
        key=key,
        size=size,
        etag=f'"etag-{key}-{size}"',
        mtime_ns=1_700_000_000_000_000_000 + len(key) if mtime_ns is None else mtime_ns,
    )


class FakeLister:
    """A `Lister` over a dict of objects. `calls` records every request in order.

    `gate`, when set, makes every call wait for it (to hold requests in flight in a test).
    """

    def __init__(self, keys: Iterable[str] = (), *, sizes: dict[str, int] | None = None) -> None:
        self.objects: dict[str, ObjectMeta] = {}
        self._sorted: list[str] = []
        self.calls: list[Call] = []
        self.gate: trio.Event | None = None
        self.fail: Exception | None = None  # raised by every call while set
        for key in keys:
            self.put(key, (sizes or {}).get(key, len(key)))

    def put(self, key: str, size: int = 0, mtime_ns: int | None = None) -> ObjectMeta:
        meta = meta_for(key, size, mtime_ns)
        if key not in self.objects:
            bisect.insort(self._sorted, key)
        self.objects[key] = meta
        return meta

    def delete(self, key: str) -> None:
        del self.objects[key]
        self._sorted.remove(key)

    @property
    def call_count(self) -> int:
        return len(self.calls)

    async def list_page(
        self,
        prefix: str,
        delimiter: str = "/",
        continuation: str | None = None,
        max_keys: int = 1000,
        start_after: str | None = None,
    ) -> ListPage:
        self.calls.append(Call(prefix, delimiter, continuation, max_keys, start_after))
        if self.gate is not None:
            await self.gate.wait()
        await trio.lowlevel.checkpoint()
        if self.fail is not None:
            raise self.fail
        assert 1 <= max_keys <= 1000, max_keys
        return self.list_now(prefix, delimiter, continuation, max_keys, start_after)

    def list_now(
        self,
        prefix: str,
        delimiter: str = "/",
        continuation: str | None = None,
        max_keys: int = 1000,
        start_after: str | None = None,
    ) -> ListPage:
        """The same answer as `list_page`, synchronously and without counting a call."""
        skip_le: str | None = start_after
        skip_cp: str | None = None
        if continuation is not None:
            kind, _, value = continuation.partition(":")
            assert kind in ("k", "cp"), continuation
            if skip_le is None or value > skip_le:
                skip_le = value
            if kind == "cp":
                skip_cp = value
        start = bisect.bisect_left(self._sorted, prefix)
        objects: list[ObjectMeta] = []
        prefixes: list[str] = []
        last: str | None = None  # token of the last item emitted
        last_cp: str | None = skip_cp
        for i in range(start, len(self._sorted)):
            key = self._sorted[i]
            if not key.startswith(prefix):
                break
            if skip_le is not None and key <= skip_le:
                continue
            if last_cp is not None and key.startswith(last_cp):
                continue
            rest = key[len(prefix) :]
            cut = rest.find(delimiter) if delimiter else -1
            if len(objects) + len(prefixes) == max_keys:
                return ListPage(tuple(objects), tuple(prefixes), last)
            if cut >= 0:
                cp = prefix + rest[: cut + len(delimiter)]
                prefixes.append(cp)
                last_cp = cp
                last = "cp:" + cp
            else:
                objects.append(self.objects[key])
                last = "k:" + key
        return ListPage(tuple(objects), tuple(prefixes), None)
