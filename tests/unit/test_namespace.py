"""Namespace against the exact ListObjectsV2 fake: tree shape, request counts, cache, inodes."""

from __future__ import annotations

import logging

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ossmount.tree import (
    ROOT_INODE,
    DirSnapshot,
    NameInvalid,
    Namespace,
    NameTooLong,
    Node,
    NotADirectory,
    NotFound,
)
from tests.unit.fake_lister import FakeLister
from tests.unit.test_inodes import lookups


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def listing(ns: Namespace, inode: int = ROOT_INODE) -> dict[str, Node]:
    snap = await ns.opendir(inode)
    try:
        return {n.name: n for n in snap.entries}
    finally:
        ns.releasedir(snap)


async def walk(ns: Namespace) -> dict[str, tuple[bool, str | None, int]]:
    """path -> (is_dir, real key of a file, size) for the whole tree, via opendir only."""
    out: dict[str, tuple[bool, str | None, int]] = {}
    todo = [ROOT_INODE]
    while todo:
        for node in (await listing(ns, todo.pop())).values():
            out[node.path] = (node.is_dir, node.meta.key if node.meta else None, node.size)
            if node.is_dir:
                todo.append(node.inode)
    return out


async def resolve(ns: Namespace, path: str) -> Node:
    node = ns.root
    for part in path.split("/"):
        node = await ns.lookup(node.inode, part)
    return node


# -- shape of the tree ---------------------------------------------------------------------


async def test_implicit_directories() -> None:
    ns = Namespace(FakeLister(["a/b/c", "a/d"]))
    assert await walk(ns) == {
        "a": (True, None, 0),
        "a/b": (True, None, 0),
        "a/b/c": (False, "a/b/c", 5),
        "a/d": (False, "a/d", 3),
    }
    ns.check_invariants()


async def test_markers_are_directories_only() -> None:
    fake = FakeLister(["m/", "n/", "n/x"])
    fake.put("n/", size=7)  # a marker with content is still only a directory
    ns = Namespace(fake)
    assert await walk(ns) == {"m": (True, None, 0), "n": (True, None, 0), "n/x": (False, "n/x", 3)}
    m = await ns.lookup(ROOT_INODE, "m")
    assert m.is_dir


async def test_file_and_directory_with_the_same_name() -> None:
    fake = FakeLister(["a", "a/b"], sizes={"a": 11, "a/b": 2})
    ns = Namespace(fake)
    tree = await walk(ns)
    assert tree == {
        "a": (True, None, 0),
        "a/b": (False, "a/b", 2),
        "a.ossfile": (False, "a", 11),
    }
    ns2 = Namespace(fake)
    before = fake.call_count
    shadowed = await ns2.lookup(ROOT_INODE, "a.ossfile")
    assert shadowed.meta is not None
    assert shadowed.meta.key == "a"
    assert shadowed.size == 11
    assert (await ns2.lookup(ROOT_INODE, "a")).is_dir
    assert fake.call_count == before + 1  # one request decided both names


async def test_real_object_keeps_the_suffixed_name() -> None:
    fake = FakeLister(["a", "a/b", "a.ossfile"])
    ns = Namespace(fake)
    tree = await walk(ns)
    assert tree["a.ossfile"][1] == "a.ossfile"
    assert "a" not in {v[1] for v in tree.values()}


async def test_invalid_names_are_skipped_with_one_debug_line_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    keys = ["ok", "x//y", "./q", "../q", "bad\0name", "z" * 256, "d/" + "é" * 200, "/lead"]
    ns = Namespace(FakeLister(keys))
    with caplog.at_level(logging.DEBUG, logger="ossmount.tree.listing"):
        tree = await walk(ns)
    assert tree == {"ok": (False, "ok", 2), "x": (True, None, 0), "d": (True, None, 0)}
    skipped = [r for r in caplog.records if "skipping key" in r.getMessage()]
    # ".", "..", NUL, 256 bytes, "" (from "/lead") at the root; "" in x; 400 bytes in d
    assert len(skipped) == 7
    assert all(r.levelno == logging.DEBUG for r in caplog.records)


async def test_invalid_lookup_names() -> None:
    ns = Namespace(FakeLister(["a"]))
    for bad in ["", ".", "..", "a/b", "a\0"]:
        with pytest.raises(NameInvalid):
            await ns.lookup(ROOT_INODE, bad)
    with pytest.raises(NameTooLong):
        await ns.lookup(ROOT_INODE, "x" * 256)


async def test_prefix_mount() -> None:
    fake = FakeLister(["some/prefix/a", "some/prefix/d/e", "some/prefixed", "other/x", "some/p"])
    ns = Namespace(fake, root_prefix="/some/prefix")
    assert await walk(ns) == {
        "a": (False, "some/prefix/a", 13),
        "d": (True, None, 0),
        "d/e": (False, "some/prefix/d/e", 15),
    }
    assert all(c.prefix.startswith("some/prefix/") for c in fake.calls)
    ns2 = Namespace(fake, root_prefix="some/prefix/")
    node = await resolve(ns2, "d/e")
    assert node.meta is not None
    assert node.meta.key == "some/prefix/d/e"
    with pytest.raises(NotFound):
        await ns2.lookup(ROOT_INODE, "ed")


async def test_not_a_directory() -> None:
    ns = Namespace(FakeLister(["f"]))
    f = await ns.lookup(ROOT_INODE, "f")
    with pytest.raises(NotADirectory):
        await ns.lookup(f.inode, "x")
    with pytest.raises(NotADirectory):
        await ns.opendir(f.inode)


# -- request counts ------------------------------------------------------------------------


async def test_pagination_2500_keys_three_pages_no_other_request() -> None:
    fake = FakeLister([f"big/f{i:05d}" for i in range(2500)])
    ns = Namespace(fake)
    big = await ns.lookup(ROOT_INODE, "big")
    fake.calls.clear()
    snap = await ns.opendir(big.inode)
    assert len(snap.entries) == 2500
    assert fake.call_count == 3
    assert [c.max_keys for c in fake.calls] == [1000, 1000, 1000]
    assert [n.name for n in snap.entries] == sorted(n.name for n in snap.entries)
    # ls -l: every child's attributes come from the snapshot; lookups hit the listing cache
    for node in snap.entries[:50]:
        assert (await ns.lookup(big.inode, node.name)).inode == node.inode
    assert fake.call_count == 3
    ns.releasedir(snap)
    ns.check_invariants()


async def test_ten_thousand_entries() -> None:
    fake = FakeLister([f"d/{i}" for i in range(10_000)] + [f"d/sub{i}/x" for i in range(500)])
    ns = Namespace(fake)
    d = await ns.lookup(ROOT_INODE, "d")
    fake.calls.clear()
    snap = await ns.opendir(d.inode)
    assert len(snap.entries) == 10_500
    assert fake.call_count == 11
    assert len({n.inode for n in snap.entries}) == 10_500
    ns.releasedir(snap)


async def test_uncached_lookup_is_one_request_despite_siblings_between() -> None:
    # "name-x", "name.txt", "name-dir/" sort between "name" and "name/".
    keys = ["name", "name-x", "name.txt", "name-dir/k", "name/child", "nam", "namf"]
    fake = FakeLister(keys)
    for name, is_dir in [("name", True), ("name.ossfile", False), ("name-x", False)]:
        ns = Namespace(fake)
        fake.calls.clear()
        node = await ns.lookup(ROOT_INODE, name)
        assert node.is_dir is is_dir
        assert fake.call_count == 1
    ns = Namespace(fake)
    fake.calls.clear()
    with pytest.raises(NotFound):
        await ns.lookup(ROOT_INODE, "nope")
    assert fake.call_count == 1


async def test_lookup_past_more_than_a_page_of_siblings() -> None:
    # 1500 siblings between "n" and "n/": the first page ends early; the answer is still right.
    keys = ["n", "n/inside", "n.ossfile/x"] + [f"n-{i:04d}" for i in range(1500)]
    fake = FakeLister(keys)
    ns = Namespace(fake)
    node = await ns.lookup(ROOT_INODE, "n")
    assert node.is_dir
    assert fake.call_count <= 5
    assert (await ns.lookup(ROOT_INODE, "n.ossfile")).is_dir
    fake2 = FakeLister(["n", *[f"n-{i:04d}" for i in range(1500)]])
    ns2 = Namespace(fake2)
    assert not (await ns2.lookup(ROOT_INODE, "n")).is_dir
    with pytest.raises(NotFound):
        await ns2.lookup(ROOT_INODE, "n.ossfile")
    # both sides agree with a full listing
    assert set(await listing(Namespace(fake))) >= {"n", "n.ossfile"}


# -- cache ---------------------------------------------------------------------------------


async def test_ttl_expiry_with_injected_clock() -> None:
    fake = FakeLister(["f"], sizes={"f": 1})
    clock = Clock()
    ns = Namespace(fake, ttl_s=10, clock=clock)
    f = await ns.lookup(ROOT_INODE, "f")
    fake.put("f", size=2)
    clock.now += 9
    assert (await ns.getattr(f.inode)).size == 1
    assert fake.call_count == 1
    clock.now += 2
    assert (await ns.getattr(f.inode)).size == 2
    assert fake.call_count == 2
    assert ns.get(f.inode).size == 2
    fake.delete("f")
    clock.now += 11
    with pytest.raises(NotFound):
        await ns.getattr(f.inode)


async def test_negative_cache() -> None:
    fake = FakeLister(["a"])
    clock = Clock()
    ns = Namespace(fake, ttl_s=100, negative_ttl_s=5, clock=clock)
    with pytest.raises(NotFound):
        await ns.lookup(ROOT_INODE, "b")
    fake.put("b")
    clock.now += 4
    with pytest.raises(NotFound):
        await ns.lookup(ROOT_INODE, "b")
    assert fake.call_count == 1
    clock.now += 2
    assert (await ns.lookup(ROOT_INODE, "b")).path == "b"
    assert fake.call_count == 2


async def test_listing_answers_lookups_and_expires() -> None:
    fake = FakeLister(["d/a", "d/b"])
    clock = Clock()
    ns = Namespace(fake, ttl_s=10, clock=clock)
    d = await ns.lookup(ROOT_INODE, "d")
    await listing(ns, d.inode)
    n = fake.call_count
    await ns.lookup(d.inode, "a")
    with pytest.raises(NotFound):
        await ns.lookup(d.inode, "zz")  # absent from a fresh complete listing: no request
    await listing(ns, d.inode)
    assert fake.call_count == n
    clock.now += 10
    await listing(ns, d.inode)
    assert fake.call_count == n + 1


async def test_ttl_zero_caches_nothing() -> None:
    fake = FakeLister(["a"])
    ns = Namespace(fake, ttl_s=0)
    await ns.lookup(ROOT_INODE, "a")
    await ns.lookup(ROOT_INODE, "a")
    assert fake.call_count == 2
    assert ns.cached_entries == 0


async def test_cache_is_bounded() -> None:
    fake = FakeLister([f"k{i}" for i in range(50)] + [f"d/{i}" for i in range(30)])
    ns = Namespace(fake, max_entries=20)
    for i in range(50):
        await ns.lookup(ROOT_INODE, f"k{i}")
        assert ns.cached_entries <= 20
        ns.check_invariants()
    d = await ns.lookup(ROOT_INODE, "d")
    assert len(await listing(ns, d.inode)) == 30  # too big to cache, still listed
    ns.check_invariants()


async def test_invalidate_drops_metadata_keeps_inodes() -> None:
    fake = FakeLister(["a"])
    ns = Namespace(fake)
    a = await ns.lookup(ROOT_INODE, "a")
    ns.invalidate()
    assert (await ns.lookup(ROOT_INODE, "a")).inode == a.inode
    assert fake.call_count == 2
    assert lookups(ns.table, a.inode) == 2


async def test_kernel_entries_are_the_looked_up_names_with_their_parents() -> None:
    ns = Namespace(FakeLister(["d/a", "d/b", "c"]))
    d = await ns.lookup(ROOT_INODE, "d")
    a = await ns.lookup(d.inode, "a")
    await ns.lookup(ROOT_INODE, "c")
    snap = await ns.opendir(d.inode)  # pinned by the snapshot, not looked up: not cached
    b = next(n for n in snap.entries if n.path == "d/b")
    assert b.inode not in {i for _, _, i in ns.kernel_entries()}
    ns.forget(a.inode, 1)
    ns.releasedir(snap)
    got = sorted(ns.kernel_entries())
    c = ns.table.find("c", False)
    assert got == sorted([(ROOT_INODE, "d", d.inode), (ROOT_INODE, "c", c)])


async def test_concurrent_lookups_share_one_request() -> None:
    fake = FakeLister(["a", "a/x"])
    ns = Namespace(fake)
    fake.gate = trio.Event()
    results: list[Node] = []

    async def one(name: str) -> None:
        results.append(await ns.lookup(ROOT_INODE, name))

    async with trio.open_nursery() as nursery:
        for name in ["a", "a.ossfile", "a", "a.ossfile"]:
            nursery.start_soon(one, name)
        await trio.testing.wait_all_tasks_blocked()
        fake.gate.set()
    assert fake.call_count == 1
    assert len(results) == 4
    ns.check_invariants()


async def test_lister_errors_reach_every_waiter_and_are_not_cached() -> None:
    fake = FakeLister(["a"])
    ns = Namespace(fake)
    fake.gate = trio.Event()
    fake.fail = OSError("connection reset")
    errors: list[BaseException] = []

    async def one() -> None:
        try:
            await ns.lookup(ROOT_INODE, "a")
        except OSError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(one)
        await trio.testing.wait_all_tasks_blocked()
        fake.gate.set()
    assert len(errors) == 3
    assert fake.call_count == 1
    fake.fail = None
    assert (await ns.lookup(ROOT_INODE, "a")).path == "a"
    ns.check_invariants()


async def test_cancelled_leader_lets_a_waiter_retry() -> None:
    fake = FakeLister(["a"])
    ns = Namespace(fake)
    fake.gate = trio.Event()
    got: list[Node] = []
    async with trio.open_nursery() as nursery:
        leader_scope = trio.CancelScope()

        async def leader() -> None:
            with leader_scope:
                await ns.lookup(ROOT_INODE, "a")

        async def waiter() -> None:
            got.append(await ns.lookup(ROOT_INODE, "a"))

        nursery.start_soon(leader)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        leader_scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        fake.gate.set()
    assert [n.path for n in got] == ["a"]
    assert fake.call_count == 2


# -- inodes and lookup counts --------------------------------------------------------------


async def test_inodes_stable_across_mounts() -> None:
    keys = ["a/b/c", "a/b/d", "a", "x/", "y", "z/q/r/s"]
    one, two = Namespace(FakeLister(keys)), Namespace(FakeLister(keys))
    await resolve(two, "z/q/r/s")  # a different order of discovery
    first = {p: ns_node.inode for p, ns_node in (await _nodes(one)).items()}
    second = {p: ns_node.inode for p, ns_node in (await _nodes(two)).items()}
    assert first == second
    assert len(set(first.values())) == len(first)
    assert ROOT_INODE not in first.values()


async def _nodes(ns: Namespace) -> dict[str, Node]:
    out: dict[str, Node] = {}
    todo = [ROOT_INODE]
    while todo:
        for node in (await listing(ns, todo.pop())).values():
            out[node.path] = node
            if node.is_dir:
                todo.append(node.inode)
    return out


async def test_forced_collisions_in_a_listing() -> None:
    fake = FakeLister([f"f{i}" for i in range(40)] + [f"d{i}/x" for i in range(10)])
    ns = Namespace(fake, hash_fn=lambda data: 2 + data[-1] % 2)
    snap = await ns.opendir(ROOT_INODE)
    inodes = [n.inode for n in snap.entries]
    assert len(set(inodes)) == len(inodes) == 50
    ns.check_invariants()
    for n in snap.entries:
        assert (await ns.lookup(ROOT_INODE, n.name)).inode == n.inode
    ns.releasedir(snap)
    ns.check_invariants()


async def test_lookup_counts_follow_fuse_semantics() -> None:
    fake = FakeLister(["d/a", "d/b"])
    ns = Namespace(fake, max_idle_inodes=1)
    d = await ns.lookup(ROOT_INODE, "d")
    d2 = await ns.lookup(ROOT_INODE, "d")
    assert d.inode == d2.inode
    assert lookups(ns.table, d.inode) == 2
    snap: DirSnapshot = await ns.opendir(d.inode)
    # the adapter's readdir: each accepted entry counts; refused ones do not
    for count, (_next_id, node) in enumerate(snap.entries_from(0)):
        if count == 1:  # readdir_reply returned False: stop, do not count
            break
        ns.remember(node.inode)
    a, b = snap.entries
    assert lookups(ns.table, a.inode) == 1
    assert lookups(ns.table, b.inode) == 0
    assert [i for i, _ in snap.entries_from(1)] == [2]  # resume after cookie 1
    ns.releasedir(snap)
    ns.releasedir(snap)  # idempotent
    ns.check_invariants()
    ns.forget(a.inode, 1)
    ns.forget(d.inode, 2)
    ns.check_invariants()
    assert lookups(ns.table, d.inode) == 0
    # with max_idle_inodes=1 forgotten entries are gone once others arrive
    await ns.lookup(ROOT_INODE, "d")
    ns.check_invariants()


async def test_stale_inode() -> None:
    ns = Namespace(FakeLister([]))
    with pytest.raises(NotFound):
        ns.get(987654321)
    with pytest.raises(NotFound):
        await ns.getattr(987654321)
    with pytest.raises(NotFound):
        await ns.opendir(987654321)


# -- reference model -----------------------------------------------------------------------


def _valid(name: str) -> bool:
    return name not in ("", ".", "..") and "\0" not in name and len(name.encode()) <= 255


def reference(keys: list[str], root: str) -> dict[str, tuple[bool, str | None]]:
    """The tree the mount should show, computed directly from the keys (no listing)."""
    raw: dict[str, tuple[dict[str, str], set[str]]] = {"": ({}, set())}
    for key in keys:
        if not key.startswith(root) or key == root:
            continue
        rel = key[len(root) :]
        marker = rel.endswith("/")
        parts = rel.split("/")
        if marker:
            parts = parts[:-1]
        path, ok = "", True
        for part in parts if marker else parts[:-1]:
            if not _valid(part):
                ok = False
                break
            raw[path][1].add(part)
            path = f"{path}/{part}" if path else part
            raw.setdefault(path, ({}, set()))
        if ok and not marker and _valid(parts[-1]):
            raw[path][0][parts[-1]] = key
    out: dict[str, tuple[bool, str | None]] = {}
    for dir_path, (files, dirs) in raw.items():
        entries: dict[str, tuple[bool, str | None]] = dict.fromkeys(dirs, (True, None))
        for f, key in files.items():
            if f not in dirs:
                entries[f] = (False, key)
        for f, key in files.items():
            alias = f + ".ossfile"
            if f in dirs and alias not in entries and _valid(alias):
                entries[alias] = (False, key)
        for name, value in entries.items():
            out[f"{dir_path}/{name}" if dir_path else name] = value
    return out


_parts = st.sampled_from(
    ["a", "b", "a.ossfile", "a-", "a-b", "é", ".", "..", "", "c\0", "x" * 250, "y" * 256]
)
_keys = st.lists(
    st.builds(
        lambda parts, slash: "/".join(parts) + ("/" if slash else ""),
        st.lists(_parts, min_size=1, max_size=4),
        st.booleans(),
    ),
    max_size=25,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(keys=_keys, root=st.sampled_from(["", "a/", "a/b/"]))
async def test_tree_matches_reference_model(keys: list[str], root: str) -> None:
    keys = [k for k in keys if k]
    fake = FakeLister(keys)
    ns = Namespace(fake, root_prefix=root)
    tree = await walk(ns)
    expected = reference(keys, root)
    assert {p: v[:2] for p, v in tree.items()} == expected
    ns.check_invariants()
    # Each entry is also found by lookups alone, at one request each (nothing cached: TTL 0).
    cold = Namespace(fake, root_prefix=root, ttl_s=0)
    for path, (is_dir, key) in expected.items():
        parent, _, name = path.rpartition("/")
        pnode = await resolve(cold, parent) if parent else cold.root
        before = fake.call_count
        node = await cold.lookup(pnode.inode, name)
        assert fake.call_count == before + 1
        assert (node.is_dir, node.meta.key if node.meta else None) == (is_dir, key)
    # and names that are not in the tree are not found
    for name in ["a", "b", "a.ossfile", "a-", "é", "zz", "a.ossfile.ossfile"]:
        if name not in expected:
            with pytest.raises(NotFound):
                await cold.lookup(ROOT_INODE, name)
    cold.check_invariants()


# -- directory read-ahead's view ------------------------------------------------------------


async def test_files_after_follows_name_order_skipping_directories() -> None:
    fake = FakeLister(["d/a", "d/b", "d/c/x", "d/d", "d/e", "d/f"])
    ns = Namespace(fake, ttl_s=10)
    d = await ns.lookup(ROOT_INODE, "d")
    nodes = await listing(ns, d.inode)
    calls = fake.call_count

    def after(name: str, count: int = 3) -> list[str]:
        return [m.key for _, m in ns.files_after(nodes[name].inode, count, "name")]

    assert after("a") == ["d/b", "d/d", "d/e"]  # "c" is a directory
    assert after("e") == ["d/f"]
    assert after("f") == []
    assert fake.call_count == calls  # never a request


async def test_files_after_in_inode_order() -> None:
    """GNU cp -r reads a directory sorted by inode number: that walk is followed too."""
    keys = [f"d/f{i:02d}" for i in range(20)]
    ns = Namespace(FakeLister(keys), ttl_s=10)
    d = await ns.lookup(ROOT_INODE, "d")
    nodes = await listing(ns, d.inode)
    by_inode = sorted(nodes.values(), key=lambda n: n.inode)
    assert [n.path for n in by_inode] != [n.path for n in nodes.values()]  # really reordered
    got = ns.files_after(by_inode[5].inode, 4, "inode")
    assert [(ino, m.key) for ino, m in got] == [(n.inode, n.meta.key) for n in by_inode[6:10]]  # type: ignore[union-attr]


async def test_files_after_needs_a_listing_at_most_ten_ttls_old() -> None:
    """A walk of a big directory outlasts the TTL; a stale entry costs one refused GET."""
    fake = FakeLister(["d/a", "d/b"])
    clock = Clock()
    ns = Namespace(fake, ttl_s=10, clock=clock)
    d = await ns.lookup(ROOT_INODE, "d")
    a = await ns.lookup(d.inode, "a")  # a lookup alone lists nothing whole
    assert ns.files_after(a.inode, 4, "name") == []
    await listing(ns, d.inode)
    assert [m.key for _, m in ns.files_after(a.inode, 4, "name")] == ["d/b"]
    calls = fake.call_count
    clock.now += 100
    assert [m.key for _, m in ns.files_after(a.inode, 4, "name")] == ["d/b"]
    clock.now += 1
    assert ns.files_after(a.inode, 4, "name") == []  # too old to follow, and not re-listed
    assert fake.call_count == calls
