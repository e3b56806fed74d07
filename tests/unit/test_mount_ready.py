"""Announcing the mount ready must never stat the mountpoint on the trio thread: that stat is
a FUSE request, answered by that same thread, so it deadlocks whenever the kernel has not
cached the root's attributes (seen once in a full test run: the daemon hung in getattr for
good after a test's first create had invalidated them)."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from ossmount import mount
from ossmount.daemon import Readiness
from ossmount.service.notify import Notifier

NO_BDI = os.makedev(0, 999_999)  # a device without /sys/class/bdi: the readahead write fails


class _Notifier:
    def __init__(self) -> None:
        self.status: list[str] = []

    def ready(self, status: str) -> None:
        self.status.append(status)

    async def status_loop(self, describe: Any) -> None:
        return  # the real one runs until unmount


async def test_the_ready_stat_runs_off_the_trio_thread_and_is_the_only_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    trio_thread = threading.get_ident()
    real_stat = os.stat
    stats: list[bool] = []  # per stat of the mountpoint: made on the trio thread?

    def stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if Path(path) != tmp_path:
            return real_stat(path, *args, **kwargs)
        stats.append(threading.get_ident() == trio_thread)
        st = real_stat(path)
        fields = list(st)
        fields[2] = NO_BDI  # st_dev: never touch the real disk's readahead
        return os.stat_result(fields)

    monkeypatch.setattr(os, "stat", stat)
    config = SimpleNamespace(
        mountpoint=tmp_path, kernel_readahead_kb=1024, endpoint="http://127.0.0.1:1",
        cache_dir=tmp_path, ignored_options=[],
    )  # fmt: skip
    notifier = _Notifier()
    await mount._announce_ready(
        cast(Any, config), "bkt", Readiness(None), cast(Notifier, notifier), lambda: "ready"
    )
    assert stats == [False], "one stat of the mountpoint, from a worker thread"
    assert notifier.status == ["ready"]
    assert "0:999999" in caplog.text, "the readahead is set on the stat's device"
