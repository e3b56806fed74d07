"""What the mount learns from its own writes (`Namespace.learned`, `moved`): no cached name or
listing hides a change this mount made, a walker's cached listing is patched, not dropped, and
a renamed inode keeps its number."""

from __future__ import annotations

import pytest

from ossmount.oss.models import ObjectMeta
from ossmount.tree import NotFound
from ossmount.tree.inodes import ROOT_INODE, InodeTable
from ossmount.tree.listing import Namespace
from tests.unit.fake_lister import FakeLister


async def _names(ns: Namespace) -> list[str]:
    snapshot = await ns.opendir(ROOT_INODE)
    try:
        return [n.name for n in snapshot.entries]
    finally:
        ns.releasedir(snapshot)


async def test_a_written_file_shows_in_the_cached_listing_without_a_request() -> None:
    lister = FakeLister()
    lister.put("a", 1)
    ns = Namespace(lister, ttl_s=60)
    assert await _names(ns) == ["a"]
    with pytest.raises(NotFound):
        await ns.lookup(ROOT_INODE, "b")  # cached as absent
    calls = lister.call_count
    node = ns.learned("b", ObjectMeta("b", 5, '"e"', 0))
    assert node is not None
    assert node.size == 5
    assert (await ns.lookup(ROOT_INODE, "b")).inode == node.inode
    assert await _names(ns) == ["a", "b"]
    ns.learned("a", None)
    assert await _names(ns) == ["b"]
    with pytest.raises(NotFound):
        await ns.lookup(ROOT_INODE, "a")
    assert lister.call_count == calls, "answered from what the mount learned"
    ns.check_invariants()


async def test_a_made_directory_is_a_directory_at_once() -> None:
    ns = Namespace(FakeLister(), ttl_s=60)
    assert await _names(ns) == []
    node = ns.learned("d", None, is_dir=True)
    assert node is not None
    assert node.is_dir
    assert (await ns.lookup(ROOT_INODE, "d")).is_dir
    assert await _names(ns) == ["d"]


def test_move_keeps_the_number_and_retires_the_victim() -> None:
    table = InodeTable()
    src = table.put("x", False, 1, 0, None)
    victim = table.put("y", False, 2, 0, None)
    table.remember(victim.inode)  # the kernel holds it: its number must stay valid
    table.move(src.inode, "y")
    assert table.get(src.inode).path == "y"
    assert table.find("y", False) == src.inode
    assert table.find("x", False) is None
    assert table.get(victim.inode).path.startswith("\0")
    table.check_invariants()
    table.forget(victim.inode, 1)  # then it goes: no name leads to it
    with pytest.raises(NotFound):
        table.get(victim.inode)


async def test_getattr_of_an_inode_replaced_by_a_rename_is_not_found() -> None:
    lister = FakeLister()
    lister.put("x", 1)
    lister.put("y", 2)
    ns = Namespace(lister, ttl_s=60)
    x = await ns.lookup(ROOT_INODE, "x")
    y = await ns.lookup(ROOT_INODE, "y")
    ns.moved(x.inode, "y")
    with pytest.raises(NotFound):
        await ns.getattr(y.inode)


async def test_names_in_a_directory_made_here_are_answered_without_a_probe() -> None:
    lister = FakeLister()
    ns = Namespace(lister, ttl_s=60)
    node = ns.learned("new", None, is_dir=True)
    assert node is not None
    calls = lister.call_count
    with pytest.raises(NotFound):
        await ns.lookup(node.inode, "file")
    assert lister.call_count == calls
    ns.learned("new/file", ObjectMeta("new/file", 3, '"e"', 0))
    assert (await ns.lookup(node.inode, "file")).size == 3
    assert lister.call_count == calls
    ns.check_invariants()


def test_move_tree_carries_every_entry_under_the_directory() -> None:
    table = InodeTable()
    d = table.put("d", True, 0, 0, None)
    f = table.put("d/sub/f", False, 1, 0, None)
    other = table.put("dd/f", False, 1, 0, None)  # shares the prefix "d", not the directory
    table.move_tree(d.inode, "x/e")
    assert table.get(d.inode).path == "x/e"
    assert table.get(f.inode).path == "x/e/sub/f"
    assert table.get(other.inode).path == "dd/f"
    assert table.find("x/e/sub/f", False) == f.inode
    table.check_invariants()
