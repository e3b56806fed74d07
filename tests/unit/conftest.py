"""Fixtures shared by the scheduler's unit tests (test_prefetch_*.py, test_warm.py, ...)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.fake_source import FakeSource


@pytest.fixture
def source(request: pytest.FixtureRequest) -> FakeSource:
    """An empty fake source with the requesting module's PART as its part size."""
    return FakeSource(request.module.PART)


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"
