"""An in-memory `RangeSource` for the prefetcher, with fault injection and accounting.

`get` delivers the requested bytes of the stored object into the given sink (window by window,
as the client does, so the sink's write errors surface as they would) and returns a
`GetResult` whose `meta` is the stored object's (whole-object size, ETag and CRC-64 header, as
the real client reports them) and whose `crc64` is the CRC of exactly the bytes written, as the
real client computes it while receiving. Like OSS it answers 412 (`PreconditionFailed`) when
`If-Match` names another ETag, unless told to ignore it (`honour_if_match = False`) to mimic a
replica that returns a different version's headers.

Faults are keyed by (key, offset) of the ranged GET:

* `fail_once`      the next GET of that range raises an `OssTransportError` (after its gate)
* `crc_header`     the response carries this CRC-64 header instead of the object's (None: none)
* `etag_header`    the response carries this ETag instead of the object's
* `flip`           the byte at an absolute object offset is inverted in what is written (and
                   in the returned range CRC: the client CRCs what it received)
* `gate`           the GET waits after it has "arrived" until the test releases it
* `hooks`          a callable run synchronously just before the GET returns or raises

Accounting: `calls` (every GET in order), `part_calls(key)` (GETs per part index),
`in_flight`/`max_in_flight` overall and per key, `heads`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from ossmount.crc64 import crc64
from ossmount.oss import NoSuchKey, OssTransportError, PreconditionFailed
from ossmount.oss.models import GetResult, ObjectMeta, Sink

BUCKET = "test-bucket"
MTIME_NS = 1_700_000_000_000_000_000


@dataclass(frozen=True, slots=True)
class Call:
    key: str
    offset: int
    length: int
    if_match: str | None


@dataclass
class Gate:
    """`arrived` is set when the GET reaches the gate; it proceeds once `release` is set."""

    arrived: trio.Event = field(default_factory=trio.Event)
    release: trio.Event = field(default_factory=trio.Event)


@dataclass
class Stored:
    data: bytes
    meta: ObjectMeta


class FakeSource:
    def __init__(self, part_size: int) -> None:
        self.part_size = part_size
        self.objects: dict[str, Stored] = {}
        self.calls: list[Call] = []
        self.heads: list[str] = []
        self.head_gate: trio.Event | None = None  # HEAD waits for it while set
        self.honour_if_match = True
        self.delay_s = 0.0  # trio.sleep in every GET (with a MockClock: overlap, not time)
        self.fail_once: dict[tuple[str, int], Exception | None] = {}
        self.crc_header: dict[tuple[str, int], int | None] = {}
        self.etag_header: dict[tuple[str, int], str] = {}
        self.flip: set[tuple[str, int]] = set()
        self.gates: dict[tuple[str, int], Gate] = {}
        self.hooks: dict[tuple[str, int], Callable[[], None]] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.in_flight_by_key: Counter[str] = Counter()
        self.max_in_flight_by_key: Counter[str] = Counter()
        self._versions = 0

    # -- objects ---------------------------------------------------------------------------

    def put(self, key: str, data: bytes, *, crc: bool = True) -> ObjectMeta:
        """Store (or replace) `key`; every put is a new version with a new ETag."""
        self._versions += 1
        meta = ObjectMeta(
            key=key,
            size=len(data),
            etag=f'"etag-{self._versions}"',
            mtime_ns=MTIME_NS + self._versions,
            crc64=crc64(data) if crc else None,
        )
        self.objects[key] = Stored(data, meta)
        return meta

    def delete(self, key: str) -> None:
        del self.objects[key]

    def gate(self, key: str, part: int) -> Gate:
        gate = self.gates[(key, part * self.part_size)] = Gate()
        return gate

    # -- accounting ------------------------------------------------------------------------

    def part_calls(self, key: str) -> Counter[int]:
        return Counter(c.offset // self.part_size for c in self.calls if c.key == key)

    def parts_fetched(self, key: str) -> set[int]:
        return set(self.part_calls(key))

    # -- RangeSource -----------------------------------------------------------------------

    async def head(self, key: str) -> ObjectMeta:
        self.heads.append(key)
        await trio.lowlevel.checkpoint()
        if self.head_gate is not None:
            await self.head_gate.wait()
        stored = self.objects.get(key)
        if stored is None:
            raise NoSuchKey(404, "NoSuchKey", "no such key", bucket=BUCKET, key=key)
        return stored.meta

    async def get(
        self,
        key: str,
        offset: int,
        length: int,
        sink: Sink,
        *,
        if_match: str | None = None,
    ) -> GetResult:
        where = (key, offset)
        self.calls.append(Call(key, offset, length, if_match))
        self.in_flight += 1
        self.in_flight_by_key[key] += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.max_in_flight_by_key[key] = max(
            self.max_in_flight_by_key[key], self.in_flight_by_key[key]
        )
        try:
            if self.delay_s:
                await trio.sleep(self.delay_s)
            else:
                await trio.lowlevel.checkpoint()
            gate = self.gates.get(where)
            if gate is not None:
                gate.arrived.set()
                await gate.release.wait()
            # No checkpoint from here on: the reply is "received" in one step.
            try:
                return self._answer(key, offset, length, sink, if_match)
            finally:
                hook = self.hooks.pop(where, None)
                if hook is not None:
                    hook()
        finally:
            self.in_flight -= 1
            self.in_flight_by_key[key] -= 1

    def _answer(
        self, key: str, offset: int, length: int, sink: Sink, if_match: str | None
    ) -> GetResult:
        where = (key, offset)
        if where in self.fail_once:
            error = self.fail_once.pop(where)
            raise error or OssTransportError("connection reset by peer", bucket=BUCKET, key=key)
        stored = self.objects.get(key)
        if stored is None:
            raise NoSuchKey(404, "NoSuchKey", "no such key", bucket=BUCKET, key=key)
        meta = stored.meta
        if self.honour_if_match and if_match is not None and if_match != meta.etag:
            raise PreconditionFailed(
                412, "PreconditionFailed", "If-Match failed", bucket=BUCKET, key=key
            )
        if offset < 0 or length <= 0 or offset + length > meta.size:
            raise ValueError(f"bad range {offset}+{length} of a {meta.size}-byte object")
        body = bytearray(stored.data[offset : offset + length])
        for flip_key, at in self.flip:
            if flip_key == key and offset <= at < offset + length:
                body[at - offset] ^= 0xFF
        pos = 0
        while pos < length:
            window = sink.window(pos, length - pos)
            window[:] = body[pos : pos + len(window)]
            sink.commit(window, pos)
            pos += len(window)
        if where in self.crc_header:
            meta = ObjectMeta(
                key=meta.key,
                size=meta.size,
                etag=meta.etag,
                mtime_ns=meta.mtime_ns,
                crc64=self.crc_header[where],
            )
        if where in self.etag_header:
            meta = ObjectMeta(
                key=meta.key,
                size=meta.size,
                etag=self.etag_header[where],
                mtime_ns=meta.mtime_ns,
                crc64=meta.crc64,
            )
        return GetResult(meta=meta, offset=offset, length=length, crc64=crc64(body))
