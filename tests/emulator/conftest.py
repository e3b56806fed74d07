"""Fixtures: an emulator per test, in its own thread, stopped afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from ossmount.emulator import Emulator


@pytest.fixture
def emu() -> Iterator[Emulator]:
    """Signature checking on (the default), bucket ``demo``, credentials ak/sk."""
    with Emulator(buckets=["demo"]) as e:
        yield e


@pytest.fixture
def open_emu() -> Iterator[Emulator]:
    """Signature checking off: raw HTTP tests of OSS semantics."""
    with Emulator(buckets=["demo"], verify_signatures=False) as e:
        yield e


@pytest.fixture
def http(open_emu: Emulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=open_emu.endpoint, headers={"Accept-Encoding": "identity"}) as c:
        yield c
