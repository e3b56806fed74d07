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


class FakeWrites:
    """`object_headers` as OssWrites answers it, from a dict; counts calls, and holds every
    HEAD until `go` is set."""

    def __init__(self, objects: dict[str, tuple[str, dict[str, str]]]) -> None:
        self.objects = objects
        self.calls: list[str] = []
        self.go = trio.Event()
        self.go.set()
        self.fail: dict[str, Exception] = {}

    async def object_headers(
        self, key: str, *, if_match: str | None = None
    ) -> tuple[str, dict[str, str], int | None]:
        self.calls.append(key)
        await self.go.wait()
        if key in self.fail:
            raise self.fail[key]
        etag, headers = self.objects[key]
        return etag, headers, None


def node(key: str, etag: str, *, object_type: str = "Normal") -> Node:
    meta = ObjectMeta(key, 1, etag, 0, None, object_type)
    return Node(hash(key) & 0xFFFF, key, False, 1, 0, meta)


def own(writes: FakeWrites, shown: ShownAttrs) -> OwnAttrs:
    return OwnAttrs(writes, shown, parallel=4)  # type: ignore[arg-type]


async def test_files_of_unknown_versions_only_once_each() -> None:
    writes = FakeWrites({
        "a": ('"1"', {"x-oss-meta-mode": "33261"}),
        "b": ('"2"', {}),
    })  # fmt: skip
    shown = ShownAttrs()
    heads = own(writes, shown)
    directory = Node(1, "d", True, 0, 0, None)
    nodes = [node("a", '"1"'), node("b", '"2"'), directory, node("l", '"3"', object_type="Symlink")]
    await heads.learn(nodes)
    assert sorted(writes.calls) == ["a", "b"], "no directory, no symlink"
    assert shown.get("a", '"1"') == Posix(mode=0o100755)
    assert shown.get("b", '"2"') == Posix(), "carries nothing: known as such"
    await heads.learn(nodes)
    assert len(writes.calls) == 2, "known versions are not HEADed again"
    writes.objects["a"] = ('"9"', {"x-oss-meta-mode": "33188"})
    await heads.learn([node("a", '"9"')])
    assert shown.get("a", '"9"') == Posix(mode=0o100644)
    assert len(writes.calls) == 3, "a new version is HEADed once"


async def test_callers_asking_at_once_share_one_head_per_key() -> None:
    writes = FakeWrites({f"k{i}": (f'"{i}"', {}) for i in range(10)})
    writes.go = trio.Event()
    shown = ShownAttrs()
    heads = own(writes, shown)
    nodes = [node(f"k{i}", f'"{i}"') for i in range(10)]
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(heads.learn, nodes)
        await trio.testing.wait_all_tasks_blocked()
        assert len(writes.calls) == 4, "at most `parallel` HEADs in flight"
        writes.go.set()
    assert sorted(writes.calls) == sorted(f"k{i}" for i in range(10))
    assert all(shown.get(f"k{i}", f'"{i}"') == Posix() for i in range(10))


async def test_failures_leave_the_defaults_and_warn_once(caplog: pytest.LogCaptureFixture) -> None:
    writes = FakeWrites({"ok": ('"1"', {"x-oss-meta-uid": "7"})})
    writes.fail = {
        "gone": NoSuchKey(404, "NoSuchKey", "gone", bucket="b", key="gone"),
        "denied1": AccessDenied(403, "AccessDenied", "no", bucket="b", key="denied1"),
        "denied2": AccessDenied(403, "AccessDenied", "no", bucket="b", key="denied2"),
    }
    shown = ShownAttrs()
    with caplog.at_level(logging.WARNING):
        await own(writes, shown).learn(
            [node(k, '"1"') for k in ("ok", "gone", "denied1", "denied2")]
        )
    assert shown.get("ok", '"1"') == Posix(uid=7)
    assert shown.get("denied1", '"1"') is None
    assert shown.get("gone", '"1"') is None
    assert caplog.text.count("--own-attrs:") == 1
    assert "2 HEAD(s) failed" in caplog.text
    assert "oss://b/denied" in caplog.text
