"""The emulator fixture that the client and writer tests share (tests/emulator and tests/mount
define their own, with other buckets and lifetimes, and override this one)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ossmount.emulator import Emulator


@pytest.fixture
def emu() -> Iterator[Emulator]:
    """A fresh emulator per test, bucket ``bkt``, credentials ak/sk (tests.sdk reads it)."""
    with Emulator(buckets=["bkt"], access_key_id="ak", access_key_secret="sk") as e:
        yield e
