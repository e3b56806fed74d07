"""What the mount learns from its own writes (`Namespace.learned`, `moved`): no cached name or
listing hides a change this mount made, a walker's cached listing is patched, not dropped, and
a renamed inode keeps its number."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

from ossmount.oss.models import ListPage, ObjectMeta
from ossmount.tree import NotFound
from ossmount.tree.inodes import ROOT_INODE, InodeTable
from ossmount.tree.listing import Namespace
from ossmount.tree.metacache import RECENT_S, MetaCache
from ossmount.tree.records import Info as _Info
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


class _LateLister(FakeLister):
    """Answers from the bucket as it is when asked, but hands the answer over only once
    `late` is set: a listing that OSS answered before this mount's own write landed, and
    that reaches the namespace after the write was learned."""

    def __init__(self) -> None:
        super().__init__()
        self.late: trio.Event | None = None
        self.asked = trio.Event()

    async def list_page(self, *args: Any, **kwargs: Any) -> ListPage:
        late, self.late = self.late, None
        page = await super().list_page(*args, **kwargs)
        if late is not None:
            self.asked.set()
            await late.wait()
        return page


async def _raced(ns: Namespace, lister: _LateLister, ask: Callable[[], Awaitable[object]]) -> None:
    """`ask` sends a request answered with the old version; this mount learns its own new
    version of "f" meanwhile; then the old answer arrives."""
    lister.late = late = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask)
        await lister.asked.wait()
        lister.put("f", 7)  # our commit lands...
        ns.learned("f", lister.objects["f"])  # ...and is learned
        late.set()  # the answer from before it arrives


@pytest.mark.parametrize("how", ["getattr", "opendir"])
async def test_an_answer_from_before_this_mounts_own_write_does_not_bring_the_old_version_back(
    how: str,
) -> None:
    """A lookup or listing that OSS answered before this mount's commit landed, and that
    arrives after the commit was learned, must not put the old version back: an open then
    read the old ETag, got 412 from OSS and failed with ESTALE (a truncate right after an
    append under write-back, seen in a stress run)."""
    now = [0.0]
    lister = _LateLister()
    lister.put("f", 3)
    ns = Namespace(lister, ttl_s=1, clock=lambda: now[0])
    node = await ns.lookup(ROOT_INODE, "f")
    now[0] = 5.0  # expired: the next getattr or opendir asks OSS again
    if how == "getattr":
        await _raced(ns, lister, lambda: ns.getattr(node.inode))
    else:
        await _raced(ns, lister, lambda: _names(ns))
    new = lister.objects["f"]
    assert ns.get(node.inode).meta == new, "the version this mount wrote stays"
    assert (await ns.getattr(node.inode)).meta == new
    assert (await ns.lookup(ROOT_INODE, "f")).meta == new
    ns.check_invariants()


def test_own_changes_are_kept_for_late_answers_only_for_a_while() -> None:
    """MetaCache.since: this mount's changes at or after a request's start, by directory;
    those older than RECENT_S are dropped as more come, so a long `tar x` keeps a bounded
    set."""
    cache = MetaCache(ttl_s=60, negative_ttl_s=5, max_entries=100)
    file = _Info(False, ObjectMeta("d/a", 1, '"e"', 0))
    cache.learned("d/a", file, 10.0)
    cache.learned("d/b", None, 11.0)
    assert cache.since("d", 10.0) == {"a": file, "b": None}
    assert cache.since("d", 10.5) == {"b": None}
    assert cache.since("e", 0.0) == {}
    for i in range(5000):
        cache.learned(f"t/{i}", file, 20.0 + i * RECENT_S / 1000)  # 1000 per RECENT_S
    assert cache.since("d", 0.0) == {}, "older than RECENT_S: dropped"
    end = 20.0 + 4999 * RECENT_S / 1000
    assert len(cache.since("t", end - RECENT_S + 1)) == 992, "the recent ones stay"
    assert cache._recent_count <= 2100, "bounded by twice what RECENT_S holds"
    assert cache.since("t", end - 1, ["4999", "0", "x"]) == {"4999": file}, "of those names"
