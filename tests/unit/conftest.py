"""Fixtures shared by the unit tests: the scheduler's (test_prefetch_*.py, test_warm.py, ...)
and the cache store's (test_cache_store.py, test_cache_park.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ossmount.cache.store import CacheStore
from tests.unit.fake_source import FakeSource


@pytest.fixture
def source(request: pytest.FixtureRequest) -> FakeSource:
    """An empty fake source with the requesting module's PART as its part size."""
    return FakeSource(request.module.PART)


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CacheStore]:
    """A locked, empty cache store of bucket "my-bucket" under tmp_path."""
    s = CacheStore(tmp_path / "cache", bucket="my-bucket")
    s.lock()
    yield s
    s.close()
