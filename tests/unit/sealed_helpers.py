"""What the tests of the sealed record kinds share (ossmount.sealed: cache checkpoints, write
journals): the frame's promises, checked the same way for each kind."""

from __future__ import annotations

from collections.abc import Callable

import pytest


def assert_cut_and_padded_refused(
    data: bytes, decode: Callable[[bytes], object], error: type[Exception]
) -> None:
    """`data` (one encoded record) cut at every byte, or with one byte appended, is refused
    with `error`: a torn write or trailing junk never reads back as a record."""
    for n in range(len(data)):
        with pytest.raises(error):
            decode(data[:n])
    with pytest.raises(error):
        decode(data + b"\0")
