"""Prometheus metrics of one mount, and the tiny HTTP server that exposes them.

One `MountMetrics` per mount, each with its own `CollectorRegistry` (never the process-global
default), so tests can build several side by side. The metric objects are prometheus_client's
(thread-safe; the exposition format and the parser come with it). What each part of the daemon
records:

| metric                                       | recorded by                                  |
|----------------------------------------------|----------------------------------------------|
| ossmount_requests_total{operation,status}    | the OSS client, through `record_request`     |
| ossmount_retries_total{operation,reason}     | the OSS client, through `record_retry`       |
| ossmount_fetched_bytes_total                 | prefetcher, per part written         |
| ossmount_parts_total{outcome}                | prefetcher, per part GET             |
| ossmount_parts_in_flight                     | prefetcher, around each part GET     |
| ossmount_verdicts_total{verdict}             | prefetcher, when a download finishes |
| ossmount_shed_bytes_total                    | prefetcher, per part punched out     |
| ossmount_staged_shed_bytes_total             | fs.staging, per punch of sent parts  |
| ossmount_read_duration_seconds (histogram)   | fs.ops, the FUSE read handler                |
| ossmount_cache_{bytes,entries,...}           | a collector reading CacheStore.statistics()  |

The OSS client reports through module functions (`record_request`, `record_retry`) that go to
the metrics `install`ed for this process (the mount's), and do nothing when none is: the client
takes no new constructor argument, and its own tests need no metrics at all. The prefetcher is
handed this object as its `ossmount.observe.PrefetchObserver` (the "prefetch" rows above) and
never imports this module.

Serving: `serve_metrics` is an HTTP/1.0 responder on the mount's trio loop rather than
prometheus_client's `start_http_server` thread. The cache collector reads `CacheStore`, whose
dicts the trio thread mutates; read from another thread they can change size mid-iteration.
On the loop, a scrape sees a consistent state, the listener lives and dies with the mount's
nursery (nothing to join at unmount), and a stuck loop shows as a failed scrape — which is the
truth. A scrape costs well under a millisecond of loop time.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import trio
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ossmount.observe import install, record_request, record_retry  # re-exported

__all__ = [
    "READ_BUCKETS_S",
    "CacheFigures",
    "MountMetrics",
    "install",
    "record_request",
    "record_retry",
    "serve_metrics",
]

log = logging.getLogger(__name__)

# FUSE reads: ~50 µs from the page cache or a cached file, up to seconds for a cold part.
READ_BUCKETS_S = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

_OPERATIONS = frozenset({"get", "head", "list"})
# Error codes come from the server: a hostile or odd one must not grow the label set for ever.
_MAX_REASONS = 32


class CacheFigures(Protocol):
    """What the cache collector reads (`ossmount.cache.store.CacheStats` has these)."""

    @property
    def bytes(self) -> int: ...
    @property
    def entries(self) -> int: ...
    @property
    def in_use(self) -> int: ...
    @property
    def evictions(self) -> int: ...
    @property
    def max_bytes(self) -> int | None: ...


class _CacheCollector(Collector):
    def __init__(self, figures: Callable[[], CacheFigures]) -> None:
        self._figures = figures

    def collect(self) -> Iterable[Metric]:
        stats = self._figures()
        yield GaugeMetricFamily(
            "ossmount_cache_bytes", "Bytes of objects in the cache (logical sizes)", stats.bytes
        )
        yield GaugeMetricFamily("ossmount_cache_entries", "Objects in the cache", stats.entries)
        yield GaugeMetricFamily(
            "ossmount_cache_entries_in_use", "Cache entries open by a reader", stats.in_use
        )
        if stats.max_bytes is not None:
            yield GaugeMetricFamily(
                "ossmount_cache_max_bytes", "Cache size limit (max_cache_size_mb)", stats.max_bytes
            )
        yield CounterMetricFamily(
            "ossmount_cache_evictions",
            "Cache entries evicted to stay under the size limit",
            stats.evictions,
        )


class StagedFigures(Protocol):
    """What the staged-files collector reads (`ossmount.fs.staged.StagedCounts` has these)."""

    @property
    def files(self) -> int: ...
    @property
    def unsent(self) -> int: ...
    @property
    def bytes(self) -> int: ...


class _StagedCollector(Collector):
    def __init__(self, figures: Callable[[], StagedFigures]) -> None:
        self._figures = figures

    def collect(self) -> Iterable[Metric]:
        counts = self._figures()
        yield GaugeMetricFamily(
            "ossmount_staged_files", "Files being written (--rw), staged on the cache disk",
            counts.files,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "ossmount_staged_unsent_files",
            "Files whose close was acknowledged but whose upload failed: retried in the "
            "background (user.ossmount.state upload-failed); alert when it stays above 0",
            counts.unsent,
        )
        yield GaugeMetricFamily(
            "ossmount_staged_bytes", "Bytes of the staged files on the cache disk", counts.bytes
        )


@dataclass(frozen=True, slots=True)
class _Count:
    """One counter: its name (the exposition adds `_total`), help text, label names, and the
    label values exported at 0 from the start (a dashboard sees every series before the first
    event, and a rate over a fresh series is 0, not absent)."""

    name: str
    doc: str
    labels: tuple[str, ...] = ()
    preset: tuple[str, ...] = ()

    def build(self, registry: CollectorRegistry) -> Counter:
        counter = Counter(self.name, self.doc, self.labels, registry=registry)
        for value in self.preset:
            counter.labels(value)
        return counter


# The counters of a mount, one row each (recorded by: see the module docstring's table).
_REQUESTS = _Count(
    "ossmount_requests",
    "OSS requests (attempts) by operation and HTTP status; status=transport when no reply came",
    ("operation", "status"),
)
_RETRIES = _Count(
    "ossmount_retries",
    "OSS requests retried, by operation and the error code that caused the retry",
    ("operation", "reason"),
)
_FETCHED_BYTES = _Count(
    "ossmount_fetched_bytes", "Object bytes fetched from OSS into the cache (parts written)"
)
_PARTS = _Count(
    "ossmount_parts",
    "Part GETs by outcome: done, failed (after the client's retries), changed (the object was "
    "replaced or deleted)",
    ("outcome",),
    ("done", "failed", "changed"),
)
_VERDICTS = _Count(
    "ossmount_verdicts",
    "Whole-object CRC-64 verdicts, counted each time one is reached (a download completes, or "
    "a complete entry never judged is opened; a verdict resumed from the checkpoint is not "
    "counted again): verified, unverifiable (no server CRC), corrupt",
    ("verdict",),
    ("verified", "unverifiable", "corrupt"),
)
_SHED_BYTES = _Count(
    "ossmount_shed_bytes",
    "Cached bytes punched out of cache files still in use, to keep the cache under its cap or "
    "free-space floor (objects bigger than the cache stream through it)",
)
_WARMED = _Count(
    "ossmount_warmed_objects",
    "Small objects fetched ahead of a reader walking their directory (cp -r, rsync, tar): "
    "directory read-ahead",
)
_WARMED_OPENED = _Count(
    "ossmount_warmed_objects_opened",
    "Warmed objects that a reader then opened; the rest of ossmount_warmed_objects was fetched "
    "for nothing (a walk that stopped)",
)
_STAGED_SHED_BYTES = _Count(
    "ossmount_staged_shed_bytes",
    "Bytes of files being written (-o rw) that OSS had confirmed, punched out of their staging "
    "files to keep them under the cache cap or free-space floor (files bigger than the cache)",
)
_COMMITS = _Count(
    "ossmount_commits",
    "Files a -o rw mount uploaded on close, fsync or in the background (write-back), by "
    "outcome: committed (on OSS, CRC-64 verified) or failed",
    ("outcome",),
)


class MountMetrics:
    """Every metric of one mount, in a registry of its own."""

    def __init__(self, *, bucket: str = "", prefix: str = "") -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        Info("ossmount_mount", "What this process mounts", registry=r).info(
            {"bucket": bucket, "prefix": prefix}
        )
        self.requests = _REQUESTS.build(r)
        self.retries = _RETRIES.build(r)
        self.fetched_bytes = _FETCHED_BYTES.build(r)
        self.parts = _PARTS.build(r)
        self.verdicts = _VERDICTS.build(r)
        self.shed_bytes = _SHED_BYTES.build(r)
        self.warmed = _WARMED.build(r)
        self.warmed_opened = _WARMED_OPENED.build(r)
        self.commits = _COMMITS.build(r)
        self.staged_shed_bytes = _STAGED_SHED_BYTES.build(r)
        self.parts_in_flight = Gauge(
            "ossmount_parts_in_flight", "Part GETs in progress", registry=r
        )
        self.read_seconds = Histogram(
            "ossmount_read_duration_seconds",
            "Time to answer one FUSE read request",
            buckets=READ_BUCKETS_S,
            registry=r,
        )
        self._reasons: set[str] = set()
        self._request_children: dict[tuple[str, int | str], Counter] = {}
        self._part_children: dict[str, Counter] = {}
        self._cache: _CacheCollector | None = None

    # -- recording ------------------------------------------------------------------------

    def request(self, operation: str, status: int | str) -> None:
        # The labelled child is looked up once per (operation, status): `labels()` costs
        # ~1.5 us, paid per GET (issue 13, W8: one GET per random read). Both sets are small.
        child = self._request_children.get((operation, status))
        if child is None:
            child = self.requests.labels(_operation(operation), str(status))
            self._request_children[operation, status] = child
        child.inc()

    def retry(self, operation: str, reason: str) -> None:
        if reason not in self._reasons:
            if len(self._reasons) >= _MAX_REASONS:
                reason = "other"
            else:
                self._reasons.add(reason)
        self.retries.labels(_operation(operation), reason).inc()

    # -- the prefetcher's reports (ossmount.observe.PrefetchObserver) -----------------------

    def part_started(self) -> None:
        self.parts_in_flight.inc()

    def part_ended(self, outcome: str | None, nbytes: int = 0) -> None:
        self.parts_in_flight.dec()
        if outcome is not None:
            child = self._part_children.get(outcome)
            if child is None:
                child = self._part_children[outcome] = self.parts.labels(outcome)
            child.inc()
        if nbytes:
            self.fetched_bytes.inc(nbytes)

    def verdict(self, state: str) -> None:
        self.verdicts.labels(state).inc()

    def commit(self, outcome: str) -> None:
        self.commits.labels(outcome).inc()

    def shed(self, nbytes: int) -> None:
        self.shed_bytes.inc(nbytes)

    def staged_shed(self, nbytes: int) -> None:
        self.staged_shed_bytes.inc(nbytes)

    def object_warmed(self, opened: bool) -> None:
        (self.warmed_opened if opened else self.warmed).inc()

    def watch_cache(self, figures: Callable[[], CacheFigures]) -> None:
        """Report the cache through `figures()` (e.g. `store.statistics`) at every scrape."""
        if self._cache is not None:
            self.registry.unregister(self._cache)
        self._cache = _CacheCollector(figures)
        self.registry.register(self._cache)

    def watch_staged(self, figures: Callable[[], StagedFigures]) -> None:
        """Report the files being written through `figures()` at every scrape (--rw)."""
        self.registry.register(_StagedCollector(figures))

    def exposition(self) -> bytes:
        """The registry in Prometheus text format 0.0.4."""
        return generate_latest(self.registry)


def _operation(name: str) -> str:
    name = name.lower()
    return name if name in _OPERATIONS else "other"


# The OSS client reports through ossmount.observe (install, record_request, record_retry).


# -- serving --------------------------------------------------------------------------------

_MAX_REQUEST_HEAD = 8192
_REQUEST_TIMEOUT_S = 10.0


async def serve_metrics(
    metrics: MountMetrics,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer `GET /metrics` on host:port until cancelled. `nursery.start` returns the bound
    (host, port), so port 0 works; a bind failure raises OSError from `start`."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    async with contextlib.AsyncExitStack() as stack:
        for listener in listeners:
            stack.push_async_callback(listener.aclose)
        sockname = listeners[0].socket.getsockname()
        bound = (str(sockname[0]), int(sockname[1]))
        display = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        log.info("metrics at http://%s:%d/metrics", display, bound[1])
        task_status.started(bound)
        await trio.serve_listeners(functools.partial(_answer, metrics), listeners)


async def _answer(metrics: MountMetrics, stream: trio.SocketStream) -> None:
    async with stream:
        try:
            with trio.fail_after(_REQUEST_TIMEOUT_S):
                head = b""
                while b"\r\n\r\n" not in head and b"\n\n" not in head:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        return
                    head += chunk
                    if len(head) > _MAX_REQUEST_HEAD:
                        await stream.send_all(_reply(431, b"request head too large\n"))
                        return
                status, body, ctype = _route(metrics, head.split(b"\n", 1)[0])
                await stream.send_all(_reply(status, body, ctype))
        except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError):
            return


def _route(metrics: MountMetrics, request_line: bytes) -> tuple[int, bytes, str]:
    parts = request_line.decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return 400, b"bad request\n", "text/plain"
    method, target = parts[0], parts[1].split("?", 1)[0]
    if target not in ("/metrics", "/"):
        return 404, b"not found: try /metrics\n", "text/plain"
    if method != "GET":
        return 405, b"only GET\n", "text/plain"
    return 200, metrics.exposition(), CONTENT_TYPE_PLAIN_0_0_4


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
}


def _reply(status: int, body: bytes, ctype: str = "text/plain") -> bytes:
    reason = _REASONS[status]
    head = (
        f"HTTP/1.0 {status} {reason}\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body
