"""fs/newnames.py: a new entry's key is the mount prefix + path (+ "/" for a marker), and
OSS's 1023-byte limit counts all of it."""

from __future__ import annotations

import pytest

from ossmount.fs.errors import Unstorable
from ossmount.fs.newnames import new_entry
from ossmount.tree.errors import NameTooLong


def test_the_key_is_prefix_path_and_suffix() -> None:
    assert new_entry("pre/", "a/b", "c") == ("a/b/c", "pre/a/b/c")
    assert new_entry("", "", "d", "/") == ("d", "d/")


def test_the_limit_counts_the_prefix_and_the_markers_slash_in_utf8_bytes() -> None:
    name = "é" * 100  # 200 bytes
    parent = "/".join(["p" * 200] * 4)  # 803 bytes
    assert new_entry("", parent, name[:-10])[1]  # 803 + 1 + 180 = 984
    with pytest.raises(NameTooLong, match="1024 bytes"):
        new_entry("q" * 20, parent, name)  # 20 + 803 + 1 + 200
    new_entry("q" * 19, parent, name)  # 1023
    with pytest.raises(NameTooLong, match="1024 bytes"):
        new_entry("q" * 19, parent, name, "/")


def test_a_name_that_is_not_utf8_is_unstorable_and_a_long_one_too_long() -> None:
    with pytest.raises(Unstorable, match="not valid UTF-8"):
        new_entry("", "", "caf\udce9")  # what os.fsdecode makes of Latin-1 "café"
    with pytest.raises(NameTooLong):
        new_entry("", "", "n" * 256)
