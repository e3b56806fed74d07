"""`OwnAttrs` (fs/ownattrs.py) without a mount: which nodes it HEADs, once per version, one
HEAD per key however many callers ask at once, and failures that never escape."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from ossmount.fs.ownattrs import OwnAttrs
from ossmount.fs.shown import Posix, ShownAttrs
from ossmount.oss import AccessDenied, NoSuchKey
from ossmount.oss.models import ObjectMeta
from ossmount.tree.node import Node

LAST_MODIFIED = "Sun, 06 Dec 2026 02:20:00 GMT"
LM_NS = 1796523600 * 1_000_000_000  # the listing's mtime of that Last-Modified


class FakeHead:
    """`head_headers` as OssClient answers it, from a dict of key -> (ETag, headers); counts
    calls, and holds every HEAD until `go` is set."""

    def __init__(self, objects: dict[str, tuple[str, dict[str, str]]]) -> None:
        self.objects = objects
        self.calls: list[str] = []
        self.go = trio.Event()
        self.go.set()
        self.fail: dict[str, Exception] = {}

    async def __call__(self, key: str) -> dict[str, str]:
        self.calls.append(key)
        await self.go.wait()
        if key in self.fail:
            raise self.fail[key]
        etag, headers = self.objects[key]
        return {"etag": etag, "last-modified": LAST_MODIFIED, **headers}


def node(key: str, etag: str, *, object_type: str = "Normal", mtime_ns: int = LM_NS) -> Node:
    meta = ObjectMeta(key, 1, etag, mtime_ns, None, object_type)
    return Node(hash(key) & 0xFFFF, key, False, 1, mtime_ns, meta)


def own(head: FakeHead, shown: ShownAttrs) -> OwnAttrs:
    return OwnAttrs(head, shown, parallel=4)


async def test_files_of_unknown_versions_only_once_each() -> None:
    head = FakeHead({
        "a": ('"1"', {"x-oss-meta-mode": "33261"}),
        "b": ('"2"', {}),
    })  # fmt: skip
    shown = ShownAttrs()
    heads = own(head, shown)
    nodes = [node("a", '"1"'), node("b", '"2"'), node("l", '"3"', object_type="Symlink")]
    await heads.learn(nodes)
    assert sorted(head.calls) == ["a", "b"], "no symlink"
    assert shown.get("a", '"1"') == Posix(mode=0o100755)
    assert shown.get("b", '"2"') == Posix(), "carries nothing: known as such"
    await heads.learn(nodes)
    assert len(head.calls) == 2, "known versions are not HEADed again"
    head.objects["a"] = ('"9"', {"x-oss-meta-mode": "33188"})
    await heads.learn([node("a", '"9"')])
    assert shown.get("a", '"9"') == Posix(mode=0o100644)
    assert len(head.calls) == 3, "a new version is HEADed once"


async def test_callers_asking_at_once_share_one_head_per_key() -> None:
    head = FakeHead({f"k{i}": (f'"{i}"', {}) for i in range(10)})
    head.go = trio.Event()
    shown = ShownAttrs()
    heads = own(head, shown)
    nodes = [node(f"k{i}", f'"{i}"') for i in range(10)]
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(heads.learn, nodes)
        await trio.testing.wait_all_tasks_blocked()
        assert len(head.calls) == 4, "at most `parallel` HEADs in flight"
        head.go.set()
    assert sorted(head.calls) == sorted(f"k{i}" for i in range(10))
    assert all(shown.get(f"k{i}", f'"{i}"') == Posix() for i in range(10))


async def test_failures_leave_the_defaults_and_warn_once(caplog: pytest.LogCaptureFixture) -> None:
    head = FakeHead({"ok": ('"1"', {"x-oss-meta-uid": "7"})})
    head.fail = {
        "gone": NoSuchKey(404, "NoSuchKey", "gone", bucket="b", key="gone"),
        "denied1": AccessDenied(403, "AccessDenied", "no", bucket="b", key="denied1"),
        "denied2": AccessDenied(403, "AccessDenied", "no", bucket="b", key="denied2"),
    }
    shown = ShownAttrs()
    with caplog.at_level(logging.WARNING):
        await own(head, shown).learn([node(k, '"1"') for k in ("ok", "gone", "denied1", "denied2")])
    assert shown.get("ok", '"1"') == Posix(uid=7)
    assert shown.get("denied1", '"1"') is None
    assert shown.get("gone", '"1"') is None
    assert caplog.text.count("--own-attrs:") == 1
    assert "2 HEAD(s) failed" in caplog.text
    assert "oss://b/denied" in caplog.text


async def test_a_metadata_only_change_elsewhere_is_headed_again() -> None:
    """ossfs's chmod copies the object onto itself: the ETag stays, Last-Modified moves. An
    entry a HEAD taught answers only for the Last-Modified it saw; one this mount stored
    (no Last-Modified kept) only for its ETag, as before."""
    head = FakeHead({"a": ('"1"', {"x-oss-meta-mode": "33261"})})
    shown = ShownAttrs()
    heads = own(head, shown)
    await heads.learn([node("a", '"1"')])
    assert shown.get("a", '"1"', LM_NS) == Posix(mode=0o100755)
    later = LM_NS + 60 * 1_000_000_000
    assert shown.get("a", '"1"', later) is None
    head.objects["a"] = ('"1"', {"x-oss-meta-mode": "33188"})
    await heads.learn([node("a", '"1"', mtime_ns=later)])
    assert len(head.calls) == 2
    assert shown.get("a", '"1"', LM_NS) == Posix(mode=0o100644), "the HEAD's own time is kept"
    shown.learn("mine", '"m"', Posix(mode=0o100700))
    assert shown.get("mine", '"m"', later) == Posix(mode=0o100700)


def dir_node(path: str) -> Node:
    return Node(hash(path) & 0xFFFF, path, True, 1, 0, None)


async def test_a_directory_heads_its_marker_once_and_one_without_a_marker_once_too() -> None:
    """A directory's attributes are its `dir/` marker's (under the mounted prefix); one with
    no marker (implicit) is learnt as carrying nothing, so it costs no HEAD again. The
    mount's root is never HEADed."""
    head = FakeHead({"p/d/": ('"m"', {"x-oss-meta-mode": str(0o40700), "x-oss-meta-uid": "7"})})
    head.fail["p/implicit/"] = NoSuchKey(404, "NoSuchKey", "no marker", key="p/implicit/")
    shown = ShownAttrs()
    heads = OwnAttrs(head, shown, parallel=4, root_prefix="p/")
    await heads.learn([dir_node(""), dir_node("d"), dir_node("implicit")])
    assert sorted(head.calls) == ["p/d/", "p/implicit/"]
    assert shown.get("p/d/", None) == Posix(mode=0o40700, uid=7)
    assert shown.get("p/implicit/", None) == Posix()
    await heads.learn([dir_node("d"), dir_node("implicit")])
    assert len(head.calls) == 2, "known: not HEADed again"


async def test_a_directory_listing_that_contradicts_what_was_learnt_drops_it() -> None:
    """The directory's own listing shows its marker (or none): a marker changed since (a
    chmod elsewhere: new Last-Modified), made since, or deleted since drops the entry, and
    the next lookup HEADs it again; a listing that agrees keeps it."""
    head = FakeHead({"d/": ('"m"', {"x-oss-meta-mode": str(0o40700)})})
    head.fail["e/"] = NoSuchKey(404, "NoSuchKey", "no marker", key="e/")
    shown = ShownAttrs()
    heads = own(head, shown)
    await heads.learn([dir_node("d"), dir_node("e")])
    listed = ObjectMeta("d/", 0, '"m"', LM_NS)
    heads.listed_marker("d/", listed)
    heads.listed_marker("e/", None)
    heads.listed_marker("unknown/", listed)
    assert shown.get("d/", None) is not None
    assert shown.get("e/", None) is not None
    heads.listed_marker("d/", ObjectMeta("d/", 0, '"m"', LM_NS + 10**9))
    heads.listed_marker("e/", ObjectMeta("e/", 0, '"n"', LM_NS))
    assert shown.get("d/", None) is None
    assert shown.get("e/", None) is None
    await heads.learn([dir_node("d")])
    heads.listed_marker("d/", None)
    assert shown.get("d/", None) is None, "its marker was deleted"
    assert sorted(head.calls[:2]) == ["d/", "e/"]  # in parallel: either order
    assert head.calls[2:] == ["d/"]


async def test_a_file_this_mount_stored_is_headed_once_a_listing_shows_a_later_change() -> None:
    """Stored here (no Last-Modified known): trusted while the listing's Last-Modified is
    not later than the store; a later one is another client's change (ossfs's chmod keeps
    the ETag), HEADed once, then known by its Last-Modified as any HEAD's."""
    head = FakeHead({"mine": ('"1"', {"x-oss-meta-mode": str(0o100711)})})
    shown = ShownAttrs()
    heads = own(head, shown)
    shown.learn("mine", '"1"', Posix(mode=0o100644), stored_ns=LM_NS)
    await heads.learn([node("mine", '"1"', mtime_ns=LM_NS)])
    await heads.learn([node("mine", '"1"', mtime_ns=LM_NS - 10**9)])
    assert head.calls == [], "not changed since it was stored"
    changed = LM_NS + 60 * 10**9  # HEADs say LAST_MODIFIED: the HEAD's time is kept
    await heads.learn([node("mine", '"1"', mtime_ns=changed)])
    assert head.calls == ["mine"]
    assert shown.get("mine", '"1"', LM_NS) == Posix(mode=0o100711)
    await heads.learn([node("mine", '"1"', mtime_ns=LM_NS)])
    assert head.calls == ["mine"]
