"""Pure key → name rules: validity, splitting under a root prefix, the shadowing rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ossmount.tree.names import (
    SHADOW_SUFFIX,
    join_path,
    lookup_base,
    normalize_root_prefix,
    resolve_names,
    split_key,
    split_path,
    valid_name,
)


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("a", True),
        ("file.txt", True),
        ("...", True),
        (".hidden", True),
        ("é" * 127, True),  # 254 bytes
        ("x" * 255, True),
        ("x" * 256, False),
        ("é" * 128, False),  # 256 bytes, 128 characters
        ("", False),
        (".", False),
        ("..", False),
        ("a/b", False),
        ("a\0b", False),
        ("\udcff", False),  # lone surrogate: not UTF-8
    ],
)
def test_valid_name(name: str, ok: bool) -> None:
    assert valid_name(name) is ok


@pytest.mark.parametrize(
    ("prefix", "normalized"),
    [("", ""), ("/", ""), ("/some/prefix", "some/prefix/"), ("some/prefix/", "some/prefix/")],
)
def test_normalize_root_prefix(prefix: str, normalized: str) -> None:
    assert normalize_root_prefix(prefix) == normalized


@pytest.mark.parametrize(
    ("key", "root", "parts"),
    [
        ("a", "", ("a",)),
        ("a/b/c", "", ("a", "b", "c")),
        ("a/b/", "", ("a", "b")),  # marker
        ("a//b", "", None),
        ("/a", "", None),
        ("a/./b", "", None),
        ("a/../b", "", None),
        ("a/" + "x" * 256, "", None),
        ("a\0", "", None),
        ("p/q/a", "p/q/", ("a",)),
        ("p/q/", "p/q/", None),  # the root's own marker
        ("p/qa", "p/q/", None),
        ("other", "p/q/", None),
        ("p/q//", "p/q/", None),
    ],
)
def test_split_key(key: str, root: str, parts: tuple[str, ...] | None) -> None:
    assert split_key(key, root) == parts


def test_paths() -> None:
    assert join_path("", "a") == "a"
    assert join_path("a/b", "c") == "a/b/c"
    assert split_path("a/b/c") == ("a/b", "c")
    assert split_path("c") == ("", "c")


def test_lookup_base() -> None:
    assert lookup_base("a") == "a"
    assert lookup_base("a" + SHADOW_SUFFIX) == "a"
    assert lookup_base(SHADOW_SUFFIX) == SHADOW_SUFFIX
    assert lookup_base("a" + SHADOW_SUFFIX * 2) == "a" + SHADOW_SUFFIX


def test_suffix_sorts_inside_lookup_range() -> None:
    # The one-request lookup relies on "a" < "a.ossfile" < "a.ossfile/" < "a/".
    assert "d/a" < "d/a" + SHADOW_SUFFIX < "d/a" + SHADOW_SUFFIX + "/" < "d/a/"


def test_resolve_plain() -> None:
    assert resolve_names(["f"], ["d"]) == {"f": (False, "f"), "d": (True, None)}


def test_resolve_shadowed_file_gets_suffix() -> None:
    assert resolve_names(["a"], ["a"]) == {"a": (True, None), "a.ossfile": (False, "a")}


def test_resolve_real_entry_wins_suffixed_name() -> None:
    # A real object "a.ossfile" keeps its name; the shadowed "a" is hidden.
    assert resolve_names(["a", "a.ossfile"], ["a"]) == {
        "a": (True, None),
        "a.ossfile": (False, "a.ossfile"),
    }
    # A real directory "a.ossfile" too.
    assert resolve_names(["a"], ["a", "a.ossfile"]) == {
        "a": (True, None),
        "a.ossfile": (True, None),
    }


def test_resolve_cascade() -> None:
    # "a.ossfile" is itself shadowed by a directory: it moves to "a.ossfile.ossfile"; "a" stays
    # hidden because the directory "a.ossfile" holds that name.
    got = resolve_names(["a", "a.ossfile"], ["a", "a.ossfile"])
    assert got == {
        "a": (True, None),
        "a.ossfile": (True, None),
        "a.ossfile.ossfile": (False, "a.ossfile"),
    }


def test_resolve_alias_too_long_is_hidden() -> None:
    long = "x" * 250
    assert resolve_names([long], [long]) == {long: (True, None)}


_names = st.sampled_from(
    ["a", "b", "a.ossfile", "a.ossfile.ossfile", "b.ossfile", "a-", ".ossfile"]
)


@given(files=st.sets(_names), dirs=st.sets(_names), probe=_names)
def test_resolve_is_local(files: set[str], dirs: set[str], probe: str) -> None:
    """The answer for a name depends only on the raw names `name` and `lookup_base(name)`.

    This is what lets one ListObjectsV2 over `prefix=<dir>/<base>` decide a lookup.
    """
    full = resolve_names(files, dirs)
    base = lookup_base(probe)
    near = {base, base + SHADOW_SUFFIX}
    local = resolve_names(files & near, dirs & near)
    assert full.get(probe) == local.get(probe)
    # and no two display names come from the same raw file
    sources = [raw for _, raw in full.values() if raw is not None]
    assert len(sources) == len(set(sources))
