"""What the mount learns from its own writes (`Namespace.learned`, `moved`): no cached name or
listing hides a change this mount made, a walker's cached listing is patched, not dropped, and
a renamed inode keeps its number."""

from __future__ import annotations

import dataclasses

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


async def test_a_walkers_writes_keep_the_read_ahead_walks_as_a_rebuild_would_make_them() -> None:
    """rsync -a into a directory: create a temp name, rename it over the final one, reopen
    it. The cached walks (files_after) are patched by each change, not rebuilt per open: they
    must stay what a rebuild from the patched listing gives, in both orders."""
    import random

    lister = FakeLister()
    for i in range(0, 40, 2):
        lister.put(f"d/f{i:02d}", i)
    lister.put("d/sub/x", 1)
    ns = Namespace(lister, ttl_s=60)
    d = await ns.lookup(ROOT_INODE, "d")
    snapshot = await ns.opendir(d.inode)
    ns.releasedir(snapshot)
    first = snapshot.entries[0]
    rng = random.Random(7)

    for step in range(60):
        name = f"f{rng.randrange(40):02d}"
        if rng.random() < 0.3:
            ns.learned(f"d/{name}", None)
            continue
        temp = f".{name}.{step}"
        made = ns.learned(f"d/{temp}", ObjectMeta(f"d/{temp}", step, f'"{step}"', 0))
        assert made is not None
        for order in ("name", "inode"):  # the reopen (directory read-ahead): walks built
            ns.files_after(made.inode, 1, order)  # type: ignore[arg-type]
        ns.learned(f"d/{temp}", None)
        ns.moved(made.inode, f"d/{name}")
        ns.learned(f"d/{name}", ObjectMeta(f"d/{name}", step, f'"{step}"', 0))
        listing = ns._cache.listing("d")
        assert listing is not None
        patched = {order: list(walk) for order, walk in listing.walks.items()}
        listing.walks.clear()  # what files_after rebuilds from the listing
        for order in ("name", "inode"):
            ns.files_after(first.inode, 1, order)  # type: ignore[arg-type]
        assert set(patched) == {"name", "inode"}
        for order in ("name", "inode"):
            got = [e[:2] for e in patched[order]]
            want = [e[:2] for e in listing.walks[order]]  # type: ignore[index]
            assert got == want, f"step {step}, {order}: {sorted(set(got) ^ set(want))}"
        assert listing.walks == patched


async def _listed(ns: Namespace) -> dict[str, ObjectMeta | None]:
    snapshot = await ns.opendir(ROOT_INODE)
    try:
        return {n.name: n.meta for n in snapshot.entries}
    finally:
        ns.releasedir(snapshot)


async def test_a_listing_leaves_a_held_file_s_entry_as_this_mount_made_it() -> None:
    """A file this mount is writing (`held`) keeps its entry whatever OSS lists there (the
    version it replaces, a symlink here), through a listing, a lookup and a getattr; the
    mount's own `learned` still updates it, and once released the listing does again."""
    lister = FakeLister()
    link = lister.put("a", 6)
    lister.objects["a"] = link = dataclasses.replace(link, object_type="Symlink")
    ns = Namespace(lister, ttl_s=0)
    ours = ObjectMeta("a", 3, "", 0)
    node = ns.learned("a", ours)
    assert node is not None
    ns.held = {"a"}
    assert (await _listed(ns))["a"] == ours
    assert (await ns.lookup(ROOT_INODE, "a")).meta == ours
    assert (await ns.getattr(node.inode)).meta == ours
    committed = ObjectMeta("a", 3, '"e"', 0)
    assert ns.learned("a", committed) == node._replace(meta=committed)
    ns.held = set()
    assert (await _listed(ns))["a"] == link
    ns.check_invariants()


async def test_a_held_file_s_entry_dropped_as_idle_comes_back_a_regular_file() -> None:
    lister = FakeLister()
    lister.objects["a"] = dataclasses.replace(lister.put("a", 6), object_type="Symlink")
    ns = Namespace(lister, ttl_s=0)
    ns.held = {"a"}
    meta = (await _listed(ns))["a"]
    assert meta is not None
    assert (meta.object_type, meta.size) == (None, 6)
