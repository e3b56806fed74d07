"""ossmount.service.metrics: per-mount registries, the client hooks, the cache collector, the
scheduler's instrumentation, and the HTTP responder (scraped with httpx, parsed with
prometheus_client's own parser)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from ossmount.cache.store import CacheStore
from ossmount.config import build_config
from ossmount.errors import StartupError
from ossmount.fs.staged import StagedCounts
from ossmount.observe import NO_PREFETCH_OBSERVER
from ossmount.prefetch import (
    DownloadFailed,
    ObjectCorrupt,
    PrefetchConfig,
    Prefetcher,
)
from ossmount.service.metrics import (
    MountMetrics,
    install,
    record_request,
    record_retry,
    serve_metrics,
)
from tests.unit.fake_source import BUCKET, FakeSource
from tests.unit.prefetch_helpers import prefetcher_over, read_all

PART = 4096
PARTS = 5
SIZE = (PARTS - 1) * PART + 100
KEY = "dir/object.bin"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by (name, sorted labels)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics: MountMetrics, name: str, **labels: str) -> float:
    got = metrics.registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


# --------------------------------------------------------------------- registry and hooks


def test_each_mount_has_its_own_registry() -> None:
    a, b = MountMetrics(bucket="one"), MountMetrics(bucket="two")
    a.request("GET", 200)
    assert value(a, "ossmount_requests_total", operation="get", status="200") == 1
    assert value(b, "ossmount_requests_total", operation="get", status="200") == 0
    assert value(a, "ossmount_mount_info", bucket="one", prefix="") == 1


def test_client_hooks_go_to_the_installed_metrics_and_do_nothing_otherwise() -> None:
    record_request("GET", 200)  # nothing installed: a no-op, no error
    outer, inner = MountMetrics(), MountMetrics()
    with install(outer):
        record_request("HEAD", 404)
        with install(inner):
            record_retry("GET", "SlowDown")
        record_request("LIST", "transport")
    assert value(outer, "ossmount_requests_total", operation="head", status="404") == 1
    assert value(outer, "ossmount_requests_total", operation="list", status="transport") == 1
    assert value(inner, "ossmount_retries_total", operation="get", reason="SlowDown") == 1
    assert value(outer, "ossmount_retries_total", operation="get", reason="SlowDown") == 0
    record_request("GET", 200)  # uninstalled again
    assert value(outer, "ossmount_requests_total", operation="get", status="200") == 0


def test_repeated_requests_and_parts_count_on_their_own_labels() -> None:
    """The labelled children are looked up once and kept: every later call still counts on
    its own (operation, status) or outcome."""
    m = MountMetrics()
    for _ in range(3):
        m.request("get", 206)
        m.part_started()
        m.part_ended("done", 10)
    m.request("GET", 206)
    m.request("get", "transport")
    m.request("DELETE", 204)
    m.part_ended("failed")
    assert value(m, "ossmount_requests_total", operation="get", status="206") == 4
    assert value(m, "ossmount_requests_total", operation="get", status="transport") == 1
    assert value(m, "ossmount_requests_total", operation="other", status="204") == 1
    assert value(m, "ossmount_parts_total", outcome="done") == 3
    assert value(m, "ossmount_parts_total", outcome="failed") == 1


def test_label_values_stay_bounded() -> None:
    m = MountMetrics()
    m.request("DELETE", 200)
    assert value(m, "ossmount_requests_total", operation="other", status="200") == 1
    for i in range(100):
        m.retry("get", f"Code{i}")
    reasons = {
        s.labels["reason"] for s in m.retries.collect()[0].samples if s.name.endswith("_total")
    }
    assert len(reasons) == 33  # 32 distinct codes, then "other"
    assert value(m, "ossmount_retries_total", operation="get", reason="other") == 68


@dataclass
class Stats:
    bytes: int = 0
    entries: int = 0
    in_use: int = 0
    evictions: int = 0
    max_bytes: int | None = None


def test_cache_collector_reads_the_figures_at_every_scrape() -> None:
    m = MountMetrics()
    stats = Stats(bytes=10, entries=2, in_use=1, evictions=0, max_bytes=None)
    m.watch_cache(lambda: stats)
    first = samples(m.exposition().decode())
    assert first[("ossmount_cache_bytes", ())] == 10
    assert first[("ossmount_cache_entries", ())] == 2
    assert first[("ossmount_cache_entries_in_use", ())] == 1
    assert first[("ossmount_cache_evictions_total", ())] == 0
    assert ("ossmount_cache_max_bytes", ()) not in first
    stats = Stats(bytes=5, entries=1, in_use=0, evictions=3, max_bytes=100)
    second = samples(m.exposition().decode())
    assert second[("ossmount_cache_bytes", ())] == 5
    assert second[("ossmount_cache_evictions_total", ())] == 3
    assert second[("ossmount_cache_max_bytes", ())] == 100
    m.watch_cache(lambda: stats)  # replacing the source is allowed (no duplicate names)


def test_staged_collector_reads_the_counts_at_every_scrape() -> None:
    m = MountMetrics()
    counts = StagedCounts(files=3, unsent=1, bytes=4096)
    m.watch_staged(lambda: counts)
    first = samples(m.exposition().decode())
    assert first[("ossmount_staged_files", ())] == 3
    assert first[("ossmount_staged_unsent_files", ())] == 1
    assert first[("ossmount_staged_bytes", ())] == 4096
    counts = StagedCounts(files=0, unsent=0, bytes=0)
    second = samples(m.exposition().decode())
    assert second[("ossmount_staged_unsent_files", ())] == 0
    assert second[("ossmount_staged_files", ())] == 0


def test_exposition_lists_every_family_before_any_traffic() -> None:
    names = {f.name for f in text_string_to_metric_families(MountMetrics().exposition().decode())}
    assert {
        "ossmount_requests",
        "ossmount_retries",
        "ossmount_fetched_bytes",
        "ossmount_parts",
        "ossmount_parts_in_flight",
        "ossmount_verdicts",
        "ossmount_read_duration_seconds",
        "ossmount_mount_info",
    } <= names


# --------------------------------------------------------------------- --metrics-addr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("[::1]:9464", ("::1", 9464)),
        ("localhost:80", ("localhost", 80)),
    ],
)
def test_metrics_addr_is_parsed(text: str, expected: tuple[str, int]) -> None:
    config = build_config("bkt", "/mnt", {"metrics_addr": text}, foreground=True, ignored=[])
    assert config.metrics_addr == expected


@pytest.mark.parametrize("text", ["9464", "127.0.0.1", "example.com:9464", "1.2.3.4:70000", ":1"])
def test_bad_metrics_addr_is_a_usage_error(text: str) -> None:
    with pytest.raises(StartupError, match="metrics-addr"):
        build_config("bkt", "/mnt", {"metrics_addr": text}, foreground=True, ignored=[])


def test_metrics_are_off_by_default() -> None:
    assert build_config("bkt", "/mnt", {}, foreground=True, ignored=[]).metrics_addr is None


# --------------------------------------------------------------------- scheduler


@asynccontextmanager
async def prefetcher(tmp_path: Path, source: FakeSource) -> AsyncIterator[Prefetcher]:
    store = CacheStore(tmp_path / "cache", bucket=BUCKET)
    store.lock()
    metrics = MountMetrics(bucket=BUCKET)
    metrics.watch_cache(store.statistics)
    cfg = PrefetchConfig(
        bucket=BUCKET, part_size=PART, parallel_count=2, max_gets=4, readahead_bytes=2 * PART
    )
    async with prefetcher_over(source, store, cfg, metrics) as p:
        yield p


async def test_scheduler_counts_parts_bytes_and_the_verdict(tmp_path: Path) -> None:
    source = FakeSource(PART)
    data = random.Random(1).randbytes(SIZE)
    meta = source.put(KEY, data)
    async with prefetcher(tmp_path, source) as p:
        m = p.metrics
        gate = source.gate(KEY, 2)
        reader = p.open(meta)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all, reader)
            await gate.arrived.wait()
            assert value(m, "ossmount_parts_in_flight") >= 1
            gate.release.set()
        assert value(m, "ossmount_parts_in_flight") == 0
        assert value(m, "ossmount_parts_total", outcome="done") == PARTS
        assert value(m, "ossmount_fetched_bytes_total") == SIZE
        assert value(m, "ossmount_verdicts_total", verdict="verified") == 1
        assert value(m, "ossmount_verdicts_total", verdict="corrupt") == 0
        await reader.aclose()
        await trio.testing.wait_all_tasks_blocked()
        scraped = samples(m.exposition().decode())
        assert scraped[("ossmount_cache_entries", ())] == 1
        assert scraped[("ossmount_cache_bytes", ())] == SIZE


async def test_scheduler_counts_failed_parts_and_corrupt_objects(tmp_path: Path) -> None:
    source = FakeSource(PART)
    data = random.Random(2).randbytes(SIZE)
    meta = source.put(KEY, data)
    source.fail_once[(KEY, PART)] = None
    source.flip.add((KEY, 3 * PART + 5))
    async with prefetcher(tmp_path, source) as p:
        m = p.metrics
        reader = p.open(meta)
        with pytest.raises(DownloadFailed):
            await reader.read(PART + 1, 10)
        assert value(m, "ossmount_parts_total", outcome="failed") == 1
        with pytest.raises(ObjectCorrupt):
            await read_all(reader)
        assert value(m, "ossmount_verdicts_total", verdict="corrupt") == 1
        assert value(m, "ossmount_verdicts_total", verdict="verified") == 0
        await reader.aclose()


async def test_scheduler_without_metrics_reports_to_nobody(tmp_path: Path) -> None:
    """Without a mount's metrics the prefetcher reports to a no-op observer (it no longer
    builds a private registry: it does not import the metrics stack, see test_boundaries)."""
    store = CacheStore(tmp_path / "c", bucket=BUCKET)
    store.lock()
    cfg = PrefetchConfig(
        bucket=BUCKET, part_size=PART, parallel_count=1, max_gets=1, readahead_bytes=PART
    )
    source = FakeSource(PART)
    data = random.Random(3).randbytes(SIZE)
    meta = source.put(KEY, data)
    async with trio.open_nursery() as nursery:
        p = Prefetcher(source, store, nursery, cfg)
        reader = p.open(meta)
        assert await read_all(reader) == data
        await reader.aclose()
        await p.wait_idle()
    assert p.metrics is NO_PREFETCH_OBSERVER
    store.close()


# --------------------------------------------------------------------- HTTP


async def test_served_on_loopback_and_parsed_by_the_prometheus_parser() -> None:
    m = MountMetrics(bucket="bkt")
    m.request("GET", 206)
    m.read_seconds.observe(0.003)
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(serve_metrics, m, "127.0.0.1", 0)
        assert host == "127.0.0.1"
        assert port > 0
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as http:
            reply = await http.get("/metrics")
            assert reply.status_code == 200
            assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
            got = samples(reply.text)
            assert got[("ossmount_requests_total", (("operation", "get"), ("status", "206")))] == 1
            assert got[("ossmount_read_duration_seconds_count", ())] == 1
            assert got[("ossmount_read_duration_seconds_bucket", (("le", "0.005"),))] == 1
            assert got[("ossmount_read_duration_seconds_bucket", (("le", "0.0025"),))] == 0
            assert (await http.get("/nothing")).status_code == 404
            assert (await http.post("/metrics")).status_code == 405
        nursery.cancel_scope.cancel()
    with pytest.raises(OSError, match="connect"):  # the listener closed with the nursery
        await trio.open_tcp_stream(host, port)


async def test_a_client_that_never_finishes_its_request_does_not_block_others() -> None:
    m = MountMetrics()
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(serve_metrics, m, "127.0.0.1", 0)
        silent = await trio.open_tcp_stream(host, port)
        await silent.send_all(b"GET /metrics HTTP/1.1\r\n")  # and never the blank line
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://{host}:{port}/metrics")).status_code == 200
        await silent.aclose()
        nursery.cancel_scope.cancel()


async def test_bind_failure_raises_from_start() -> None:
    async with trio.open_nursery() as nursery:
        _, port = await nursery.start(serve_metrics, MountMetrics(), "127.0.0.1", 0)
        with pytest.raises(OSError, match="in use"):
            await nursery.start(serve_metrics, MountMetrics(), "127.0.0.1", port)
        nursery.cancel_scope.cancel()
