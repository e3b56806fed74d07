"""fs/attrs.py Presentation: the modes of entries whose own mode the mount does not know."""

from __future__ import annotations

import stat

from ossmount.fs.attrs import Presentation


def _look(**kw: object) -> Presentation:
    return Presentation(uid=0, gid=0, umask=0o022, attr_timeout_s=1.0, **kw)  # type: ignore[arg-type]


def test_default_modes_follow_rw_and_the_umask() -> None:
    assert stat.S_IMODE(_look().file_mode) == 0o444
    assert stat.S_IMODE(_look(writable=True).file_mode) == 0o644
    assert stat.S_IMODE(_look(writable=True).dir_mode) == 0o755
    assert stat.S_ISREG(_look().file_mode)


def test_file_mode_sets_the_bits_before_the_umask_and_a_read_only_mount_drops_write() -> None:
    assert stat.S_IMODE(_look(writable=True, file_bits=0o755).file_mode) == 0o755
    assert stat.S_IMODE(_look(writable=True, file_bits=0o777).file_mode) == 0o755
    assert stat.S_IMODE(_look(file_bits=0o775).file_mode) == 0o555
