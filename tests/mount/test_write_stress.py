"""Four seeds of the write stress (stress.py: several workers at once on one `--rw` mount
with a 48 MiB cache cap, each call mirrored on a local directory; then a check through a
fresh mount and on the server), with and without `-o writeback`, with and without a
`kill -9` after the last close. More seeds: `python -m tests.mount.stress --help`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.mount.stress import run


@pytest.mark.parametrize(
    ("seed", "writeback", "kill"),
    [(1, False, False), (2, False, True), (3, True, False), (4, True, True)],
)
def test_workers_at_once_under_a_small_cap_lose_and_mix_up_nothing(
    tmp_path: Path, seed: int, writeback: bool, kill: bool
) -> None:
    failures, tally = run(seed, tmp_path, writeback=writeback, kill=kill)
    assert not failures, "\n".join([*failures, f"calls ok/made: {tally}"])
