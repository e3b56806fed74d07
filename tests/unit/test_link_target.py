"""fs.links.link_target: OSS symlink targets as POSIX targets that never leave the mount."""

from __future__ import annotations

import posixpath

import pytest

from ossmount.fs.links import link_target


@pytest.mark.parametrize(
    ("link", "target", "root", "expected"),
    [
        ("links/to", "data/t.txt", "", "../data/t.txt"),
        ("to", "t.txt", "", "t.txt"),
        ("a/b/c/to", "a/t", "", "../../t"),
        ("p/links/to", "p/data/t", "p/", "../data/t"),
        ("p/to", "p/d/t", "p/", "d/t"),
        # outside the mounted prefix: relpath of the keys would be "../../other/x"
        ("p/links/to", "other/x", "p/", None),
        # OSS takes targets literally; ".." is a key component, not "up", and has no path here
        ("links/to", "a/../../../etc/passwd", "", None),
        ("links/to", "a//b", "", None),
        ("links/to", "dir/", "", None),  # a directory marker is not a file to point at
        ("links/to", "", "", None),
    ],
)
def test_link_target(link: str, target: str, root: str, expected: str | None) -> None:
    got = link_target(link, target, root)
    assert got == expected
    if got is not None:  # resolved from the link's directory, it stays under the root
        link_dir = posixpath.dirname(link[len(root) :])
        resolved = posixpath.normpath(posixpath.join("/mnt", link_dir, got))
        assert resolved.startswith("/mnt/")


def test_a_target_shown_under_another_name_is_pointed_at_by_that_name() -> None:
    """Key `d/x` shadowed by the prefix `d/x/` is shown as `d/x.ossfile`."""
    assert link_target("links/to", "d/x", "", "x.ossfile") == "../d/x.ossfile"
    # A link inside the very directory that shadows its target: "." would be the directory.
    assert link_target("x/link", "x", "", "x.ossfile") == "../x.ossfile"
    assert link_target("x/link", "x", "") == "."
