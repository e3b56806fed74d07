"""InodeTable: path-derived numbers, collisions, lookup counts, pins, idle eviction."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ossmount.tree.errors import NotFound
from ossmount.tree.inodes import MAX_INODE, ROOT_INODE, InodeTable, stable_hash

KNOWN = 4390970765311005265  # blake2b-64 of b"f:dir/file", masked to 63 bits


def test_root() -> None:
    t = InodeTable()
    root = t.get(ROOT_INODE)
    assert ROOT_INODE == 1
    assert root.path == ""
    assert root.is_dir
    assert t.inode_for("", True) == ROOT_INODE
    t.check_invariants()


def test_numbers_are_derived_from_the_path() -> None:
    t1, t2 = InodeTable(), InodeTable()
    a = t1.inode_for("dir/file", False)
    t2.inode_for("something/else", True)  # arrival order does not matter
    assert t2.inode_for("dir/file", False) == a
    assert a == stable_hash(b"f:dir/file") & MAX_INODE
    assert t1.inode_for("dir/file", True) == stable_hash(b"d:dir/file") & MAX_INODE
    assert t1.inode_for("dir/file", True) != a


def test_known_value_never_changes() -> None:
    # Pinned on purpose: changing the derivation changes every user's inode numbers.
    assert InodeTable().inode_for("dir/file", False) == KNOWN


@pytest.mark.parametrize("bad", [0, 1])
def test_reserved_numbers_are_skipped(bad: int) -> None:
    t = InodeTable(hash_fn=lambda data: bad if data.endswith(b"x") else 7 + len(data))
    ino = t.inode_for("x", False)
    assert ino not in (0, 1)
    t.check_invariants()


def test_collisions_get_distinct_deterministic_numbers() -> None:
    def tiny(data: bytes) -> int:
        return 2 + data[-1] % 3  # only 3 distinct values

    t = InodeTable(hash_fn=tiny)
    names = [f"n{i}" for i in range(50)]
    inos = [t.inode_for(n, False) for n in names]
    assert len(set(inos)) == len(inos)
    assert 1 not in inos
    assert 0 not in inos
    t.check_invariants()
    # same arrival order, same numbers
    t2 = InodeTable(hash_fn=tiny)
    assert [t2.inode_for(n, False) for n in names] == inos


def test_get_unknown_raises() -> None:
    with pytest.raises(NotFound):
        InodeTable().get(12345)


def test_put_updates_node_keeps_number() -> None:
    t = InodeTable(dir_mtime_ns=5)
    n1 = t.put("f", False, 10, 100, None)
    n2 = t.put("f", False, 20, 200, None)
    assert n1.inode == n2.inode
    assert t.get(n1.inode).size == 20
    d = t.put("d", True, 99, 99, None)
    assert d.size == 0
    assert d.mtime_ns == 5


def lookups(table: InodeTable, ino: int) -> int:
    """The kernel references the table counts for `ino` (0 when it holds no entry)."""
    entry = table._by_ino.get(ino)
    return entry.lookups if entry is not None else 0


def test_lookup_counts() -> None:
    t = InodeTable(max_idle=1)
    ino = t.inode_for("a", False)
    t.remember(ino, 2)
    t.inode_for("b", False)
    t.inode_for("c", False)  # evicts idle "b", never the looked-up "a"
    assert ino in t
    t.forget(ino, 1)
    assert ino in t
    assert lookups(t, ino) == 1
    t.forget(ino, 1)
    assert lookups(t, ino) == 0
    t.check_invariants()
    t.inode_for("d", False)  # "a" is idle now and the oldest: evicted
    assert ino not in t
    t.check_invariants()


def test_pins_keep_entries() -> None:
    t = InodeTable(max_idle=1)
    a = t.inode_for("a", False)
    t.pin(a)
    for i in range(5):
        t.inode_for(f"x{i}", False)
    assert a in t
    t.unpin(a)
    t.check_invariants()
    with pytest.raises(AssertionError):
        t.unpin(a)


def test_forget_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    t = InodeTable()
    with caplog.at_level(logging.WARNING, logger="ossmount.tree.inodes"):
        t.forget(999, 1)
        ino = t.inode_for("a", False)
        t.remember(ino)
        t.forget(ino, 5)
    assert lookups(t, ino) == 0
    assert len(caplog.records) == 2
    t.check_invariants()


_ops = st.lists(
    st.tuples(
        st.sampled_from(["assign", "remember", "forget", "pin", "unpin"]),
        st.sampled_from([f"p{i}" for i in range(12)]),
        st.booleans(),
        st.integers(1, 3),
    ),
    max_size=80,
)


@settings(max_examples=200)
@given(ops=_ops, max_idle=st.integers(1, 4))
def test_random_operations_keep_invariants(
    ops: list[tuple[str, str, bool, int]], max_idle: int
) -> None:
    """A model of what the kernel holds: its numbers never change or get shared."""
    t = InodeTable(hash_fn=lambda data: 2 + data[-1] % 4, max_idle=max_idle)
    held: dict[tuple[str, bool], int] = {}  # kernel lookups: key -> count
    pins: dict[tuple[str, bool], int] = {}
    numbers: dict[tuple[str, bool], int] = {}  # number of each entry the kernel holds
    for op, path, is_dir, n in ops:
        key = (path, is_dir)
        ino = t.inode_for(path, is_dir)
        if held.get(key, 0) or pins.get(key, 0):
            assert ino == numbers[key]  # a number the kernel holds never changes
        numbers[key] = ino
        if op == "remember":
            t.remember(ino, n)
            held[key] = held.get(key, 0) + n
        elif op == "forget" and held.get(key, 0):
            m = min(n, held[key])
            t.forget(ino, m)
            held[key] -= m
        elif op == "pin":
            t.pin(ino)
            pins[key] = pins.get(key, 0) + 1
        elif op == "unpin" and pins.get(key, 0):
            t.unpin(ino)
            pins[key] -= 1
        t.check_invariants()
        live = {k: numbers[k] for k in numbers if held.get(k, 0) or pins.get(k, 0)}
        for k, v in live.items():
            assert t.find(*k) == v
            assert lookups(t, v) == held.get(k, 0)
        assert len(set(live.values())) == len(live)


def test_forget_says_whether_the_kernel_still_holds_references() -> None:
    t = InodeTable()
    ino = t.inode_for("a", False)
    t.remember(ino, 2)
    assert t.forget(ino, 1) is True
    assert t.forget(ino, 1) is False
    assert t.forget(424242, 1) is False


def test_a_detached_entry_keeps_its_number_for_the_kernel_and_frees_the_path() -> None:
    """A file this mount deleted while the kernel holds it (open): its number stays valid,
    a new file under the name gets another one, and once forgotten it is dropped at once,
    so a path deleted and made again many times does not walk ever further down its
    candidates."""
    t = InodeTable()
    old = t.put("d/f", False, 3, 1, None).inode
    t.remember(old)
    t.detach(old)
    assert t.get(old).path.startswith("\0gone/")
    assert t.detached(old)
    new = t.put("d/f", False, 5, 2, None).inode
    assert new != old
    assert t.get(new).path == "d/f"
    assert not t.detached(new)
    assert not t.detached(12345)  # not in the table
    assert not t.forget(old, 1)
    with pytest.raises(NotFound):
        t.get(old)
    t.detach(new)  # no kernel reference: dropped now
    with pytest.raises(NotFound):
        t.get(new)
    assert t.put("d/f", False, 1, 3, None).inode == old  # the first candidate again
    t.check_invariants()
