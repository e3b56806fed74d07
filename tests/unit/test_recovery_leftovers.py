"""What a process killed mid-way leaves in the staging directory is removed by the next
mount's recovery (fs/recovery.py `_drop_leftovers`): nothing piles up there mount after
mount."""

from __future__ import annotations

from pathlib import Path

from ossmount.fs.recovery import recover_staged
from ossmount.fs.staging import Staging
from ossmount.write import StagedFile
from tests.unit.test_write_unsynced_seal import staging

__all__ = ["staging"]


async def test_a_first_seal_cut_short_by_a_kill_leaves_nothing(staging: Staging) -> None:
    """Killed inside the seal's save_atomic: the staged bytes and the temporary record, and
    no journal (the close never returned)."""
    staged = StagedFile.beside(staging.directory / "x.data")
    staged.data.write_bytes(b"closed, never acknowledged")
    Path(f"{staged.journal}.tmp").write_bytes(b"half a reco")
    assert (await recover_staged(staging.directory, staging.uploader, "")).done == 0
    assert list(staging.directory.iterdir()) == []


async def test_spare_files_a_killed_mount_made_ahead_are_removed(staging: Staging) -> None:
    """Empty staging files made ahead (Staging.keep_spares) hold nothing anybody wrote."""
    (staging.directory / "0123abcd.spare").write_bytes(b"")
    assert (await recover_staged(staging.directory, staging.uploader, "")).done == 0
    assert list(staging.directory.iterdir()) == []
