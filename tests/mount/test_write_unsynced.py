"""A close that waits for its commit seals the staged file without an fsync, naming the boot
(write/boot.py): through a real mount, a kill -9 in the same boot is resumed (test_write.py),
and the same leftovers seen from another boot (a power loss) are dropped, never uploaded, and
their multipart upload is aborted."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from ossmount.emulator import Emulator
from ossmount.write.boot import current_boot_id
from ossmount.write.journal import WriteState, load, save_atomic
from tests.mount.conftest import MountFactory
from tests.mount.test_write import RW, kill_9_while_the_last_part_is_sent, server_bytes, server_keys

MiB = 1024 * 1024


def test_a_sync_close_cut_by_a_power_loss_is_dropped_and_its_upload_aborted(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    emulator.put_object("bkt", "big", b"the good old version")
    (tmp_path / "src").write_bytes(os.urandom(4 * MiB + 99))
    # The last, short part is held at close: the file is sealed, half uploaded, when it dies.
    mount, cp_status = kill_9_while_the_last_part_is_sent(
        emulator, make_mount, tmp_path / "src", "big", parts=5
    )
    assert cp_status != 0  # the writer was never told the file was stored
    [journal] = (mount.cache / "staging").glob("*.journal")
    rec = load(journal)
    assert rec is not None
    assert (rec.sealed, rec.state, rec.boot_id) == (True, WriteState.UPLOADING, current_boot_id())
    save_atomic(journal, dataclasses.replace(rec, boot_id="a-boot-before-the-power-loss"))

    make_mount(args=RW).start()
    assert server_bytes(emulator, "big") == b"the good old version"
    assert "big" in server_keys(emulator)
    aborted = [r for r in emulator.requests if r.op == "AbortMultipartUpload" and r.key == "big"]
    assert len(aborted) == 1
    assert not list((mount.cache / "staging").glob("*.data"))
