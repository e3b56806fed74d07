"""write/checkedlines.py: lines that check themselves, as the ledger and the owed log use."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from ossmount.write.checkedlines import checked_line, read_checked


def _number(body: str) -> int:
    return int(body)  # ValueError for anything else


def test_whole_lines_come_back_in_order_and_a_missing_file_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "log"
    assert list(read_checked(path, str)) == []
    path.write_bytes(checked_line("a\tb") + checked_line("") + checked_line("c"))
    assert list(read_checked(path, str)) == ["a\tb", "", "c"]


@pytest.mark.parametrize(
    "damage",
    [
        lambda line: line[:-3],  # torn mid-CRC: a crash mid-append
        lambda line: line.replace(b"7", b"8", 1),  # a flipped digit in the body
        lambda line: b"\xff" + line,  # not ASCII
        lambda line: line.replace(b"\t", b" "),  # no CRC field at all
    ],
)
def test_a_damaged_line_is_skipped_with_a_warning_and_the_rest_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: Callable[[bytes], bytes]
) -> None:
    path = tmp_path / "log"
    path.write_bytes(checked_line("1") + damage(checked_line("17")) + b"\n" + checked_line("3"))
    with caplog.at_level(logging.WARNING):
        assert list(read_checked(path, _number)) == [1, 3]
    assert f"skipping a damaged line of {path}" in caplog.text


def test_a_line_whose_crc_holds_but_that_parse_refuses_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "log"
    path.write_bytes(checked_line("x") + checked_line("2"))
    with caplog.at_level(logging.WARNING):
        assert list(read_checked(path, _number)) == [2]
    assert "invalid literal" in caplog.text
