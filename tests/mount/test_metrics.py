"""--metrics-addr through a real mount: scraped with httpx, parsed with prometheus_client's parser.

The mount binds port 0 and logs the address it got (`metrics at http://127.0.0.1:PORT/metrics`),
which the test reads from the log: no race with another process for a "free" port.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from collections.abc import Callable

import httpx
import pytest

from ossmount.cache.ranges import PartLayout
from ossmount.emulator import Emulator
from ossmount.emulator.faults import FaultRule
from ossmount.errors import ExitCode
from tests.mount.conftest import MountFactory
from tests.mount.harness import BUCKET, SK, Mount

pytestmark = pytest.mark.mount

MiB = 1024 * 1024
ARGS = ("--part-size-mb", "1", "--metrics-addr", "127.0.0.1:0")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def metrics_url(mount: Mount) -> str:
    found = re.search(r"metrics at (http://127\.0\.0\.1:\d+/metrics)", mount.log())
    assert found, f"no metrics address in the log: {mount.log()}"
    return found.group(1)


def scrape(url: str) -> tuple[str, Samples]:
    from prometheus_client.parser import text_string_to_metric_families

    reply = httpx.get(url, timeout=10)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(reply.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return reply.text, out


def test_counters_move_with_reads_and_stop_at_unmount(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    verified = os.urandom(3 * MiB + 17)
    unverifiable = os.urandom(MiB + 5)
    emulator.put_object(BUCKET, "m/verified.bin", verified)
    emulator.put_object(BUCKET, "m/nocrc.bin", unverifiable, crc64=False)
    mount = make_mount(args=ARGS).start()
    url = metrics_url(mount)

    _, before = scrape(url)
    assert before[("ossmount_fetched_bytes_total", ())] == 0
    assert before[("ossmount_read_duration_seconds_count", ())] == 0
    assert before[("ossmount_mount_info", (("bucket", BUCKET), ("prefix", "")))] == 1

    assert (mount.path / "m" / "verified.bin").read_bytes() == verified
    assert (mount.path / "m" / "nocrc.bin").read_bytes() == unverifiable
    _, after = scrape(url)
    total = len(verified) + len(unverifiable)
    assert after[("ossmount_fetched_bytes_total", ())] == total
    assert after[("ossmount_parts_total", (("outcome", "done"),))] == 4 + 2
    assert after[("ossmount_parts_total", (("outcome", "failed"),))] == 0
    assert after[("ossmount_parts_in_flight", ())] == 0
    assert after[("ossmount_verdicts_total", (("verdict", "verified"),))] == 1
    assert after[("ossmount_verdicts_total", (("verdict", "unverifiable"),))] == 1
    assert after[("ossmount_verdicts_total", (("verdict", "corrupt"),))] == 0
    reads = after[("ossmount_read_duration_seconds_count", ())]
    assert reads >= 2  # at least one FUSE read per file; the kernel decides how many
    assert after[("ossmount_read_duration_seconds_sum", ())] > 0
    assert after[("ossmount_read_duration_seconds_bucket", (("le", "+Inf"),))] == reads
    assert after[("ossmount_cache_entries", ())] == 2
    assert after[("ossmount_cache_bytes", ())] == total
    assert after[("ossmount_cache_evictions_total", ())] == 0

    # A re-read after dropping the page cache comes from the cache file: no new bytes fetched.
    with (mount.path / "m" / "verified.bin").open("rb") as f:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        assert f.read() == verified
    _, again = scrape(url)
    assert again[("ossmount_fetched_bytes_total", ())] == total

    mount.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, timeout=5)


def test_the_secret_is_neither_in_the_debug_log_nor_in_the_scrape(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    emulator.put_object(BUCKET, "s.bin", os.urandom(2 * MiB))
    mount = make_mount(args=ARGS).start()
    (mount.path / "s.bin").read_bytes()
    body, _ = scrape(metrics_url(mount))
    mount.stop()
    assert "DEBUG" in mount.log()  # the harness mounts at --log-level DEBUG
    assert SK not in mount.log()
    assert SK not in body


def test_metrics_are_off_by_default(emulator: Emulator, make_mount: MountFactory) -> None:
    mount = make_mount().start()
    assert "metrics at" not in mount.log()


def test_an_address_in_use_is_a_usage_error_before_mounting(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        mount = make_mount(args=("--metrics-addr", f"127.0.0.1:{port}"))
        result = subprocess.run(
            mount.command(), env=mount.environment(), capture_output=True, text=True, timeout=30
        )
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert f"cannot serve metrics on 127.0.0.1:{port}" in result.stderr
    assert not os.path.ismount(mount.path)


def test_requests_and_retries_are_counted(emulator: Emulator, make_mount: MountFactory) -> None:
    data = os.urandom(2 * MiB)
    emulator.put_object(BUCKET, "r.bin", data)
    emulator.faults.add(
        FaultRule(action="error", op="GetObject", key="r.bin", status=503, code="SlowDown")
    )
    mount = make_mount(args=ARGS).start()
    assert (mount.path / "r.bin").read_bytes() == data
    _, got = scrape(metrics_url(mount))
    assert got[("ossmount_requests_total", (("operation", "list"), ("status", "200")))] >= 1
    parts = PartLayout(len(data), MiB).count  # --part-size-mb 1: a 256 KiB head, then 1 MiB
    assert got[("ossmount_requests_total", (("operation", "get"), ("status", "206")))] == parts
    assert got[("ossmount_requests_total", (("operation", "get"), ("status", "503")))] == 1
    assert got[("ossmount_retries_total", (("operation", "get"), ("reason", "SlowDown")))] == 1


def test_a_failed_write_back_upload_shows_in_the_staged_gauges_until_its_retry_lands(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    """ossmount_staged_unsent_files is what an operator alerts on: acknowledged bytes that
    are not on OSS."""
    failing = FaultRule("error", op="PutObject", key="f", times=None, status=503,
                        code="ServiceUnavailable")  # fmt: skip
    emulator.faults.add(failing)
    mount = make_mount(args=(*ARGS, "--rw", "--writeback", "--max-attempts", "1")).start()
    url = metrics_url(mount)
    (mount.path / "f").write_bytes(b"acknowledged")
    _, got = _scrape_until(url, lambda got: got[("ossmount_staged_unsent_files", ())] == 1)
    assert got[("ossmount_staged_files", ())] == 1
    assert got[("ossmount_staged_bytes", ())] == len(b"acknowledged")
    emulator.faults.clear()
    _, got = _scrape_until(url, lambda got: got[("ossmount_staged_files", ())] == 0)
    assert got[("ossmount_staged_unsent_files", ())] == 0
    assert emulator.get_bytes(BUCKET, "f") == b"acknowledged"


def _scrape_until(url: str, done: Callable[[Samples], bool]) -> tuple[str, Samples]:
    deadline = time.monotonic() + 20
    while True:
        text, got = scrape(url)
        if done(got):
            return text, got
        assert time.monotonic() < deadline, f"timed out; last scrape:\n{text}"
        time.sleep(0.05)
