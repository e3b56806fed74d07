"""Fixtures for mount tests; the harness itself is in harness.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ossmount.emulator import Emulator
from tests.mount.harness import AK, BUCKET, SK, Mount, fuse_problem


@pytest.fixture(scope="session", autouse=True)
def _require_fuse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    problem = fuse_problem()
    if problem is not None:
        pytest.fail(f"FUSE mount tests cannot run: {problem}", pytrace=False)
    yield
    # Only this session's mounts (under its own base temp dir): another pytest session on the
    # same machine may be mounting right now, and its mounts are not ours to judge.
    ours = str(tmp_path_factory.getbasetemp())
    leftovers = [
        line
        for line in Path("/proc/mounts").read_text().splitlines()
        if "ossmount" in line and ours in line
    ]
    assert not leftovers, f"tests left mounts behind: {leftovers}"


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(buckets=[BUCKET], access_key_id=AK, access_key_secret=SK) as emu:
        yield emu


MountFactory = Callable[..., Mount]


@pytest.fixture
def make_mount(emulator: Emulator, tmp_path: Path) -> Iterator[MountFactory]:
    """make_mount(args=(...)).start(); every mount made is stopped (and checked) at teardown."""
    made: list[Mount] = []

    def factory(**kwargs: object) -> Mount:
        mount = Mount(emulator, tmp_path, **kwargs)  # type: ignore[arg-type]
        made.append(mount)
        return mount

    yield factory
    errors = []
    for mount in made:
        try:
            mount.stop()
        except AssertionError as exc:
            errors.append(str(exc))
    assert not errors, errors
