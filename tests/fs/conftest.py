"""A `FileSystem` in-process over fakes: the exact ListObjectsV2 fake (tests/unit/fake_lister.py)
for names, the range fake (tests/unit/fake_source.py) for bytes, a real `CacheStore` under
tmp_path, and a kernel that records what it was asked to invalidate.

`Bucket.put` stores an object in both fakes with the same ETag and size, so the listing and
the GETs agree on versions the way OSS does; a `Namespace` that listed before a `put` still
holds the old version until its TTL or an `invalidate()`, as with a real overwrite.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from ossmount.cache.store import CacheStore
from ossmount.fs.attrs import Presentation
from ossmount.fs.filesystem import FileSystem
from ossmount.oss import NoSuchKey
from ossmount.oss.models import ObjectMeta
from ossmount.prefetch import Prefetcher
from ossmount.tree.listing import Namespace
from tests.unit.fake_lister import FakeLister
from tests.unit.fake_source import BUCKET, FakeSource
from tests.unit.prefetch_helpers import config, prefetcher_over

PART = 4096
LOOK = Presentation(uid=1234, gid=5678, umask=0o022, attr_timeout_s=30.0)


@dataclass
class RecordingKernel:
    invalidated: list[int] = field(default_factory=list)
    forgotten: list[tuple[int, str]] = field(default_factory=list)
    called: trio.Event = field(default_factory=trio.Event)

    def invalidate_inode(self, inode: int) -> None:
        self.invalidated.append(inode)
        self.called.set()

    def forget_name(self, parent: int, name: str) -> None:
        self.forgotten.append((parent, name))


class Bucket:
    """Objects as both fakes see them, plus symlinks (GetSymlink)."""

    def __init__(self) -> None:
        self.lister = FakeLister()
        self.source = FakeSource(PART)
        self.links: dict[str, str] = {}
        self.symlink_calls: list[str] = []

    def put(self, key: str, data: bytes) -> ObjectMeta:
        meta = self.source.put(key, data)
        self.lister.put(key, meta.size)
        self.lister.objects[key] = meta
        return meta

    def put_symlink(self, key: str, target: str) -> ObjectMeta:
        self.lister.put(key, 0)
        meta = ObjectMeta(key=key, size=0, etag=f'"link-{key}-{target}"', mtime_ns=1,
                          object_type="Symlink")  # fmt: skip
        self.lister.objects[key] = meta
        self.links[key] = target
        return meta

    async def get_symlink(self, key: str) -> str:
        self.symlink_calls.append(key)
        await trio.lowlevel.checkpoint()
        if key not in self.links:
            raise NoSuchKey(404, "NoSuchKey", "no such key", bucket=BUCKET, key=key)
        return self.links[key]


@dataclass
class Rig:
    fs: FileSystem
    bucket: Bucket
    namespace: Namespace
    prefetcher: Prefetcher
    kernel: RecordingKernel


@pytest.fixture
def bucket() -> Bucket:
    return Bucket()


@pytest.fixture
async def rig(bucket: Bucket, tmp_path: Path) -> AsyncIterator[Rig]:
    store = CacheStore(tmp_path / "cache", bucket=BUCKET)
    store.lock()
    namespace = Namespace(bucket.lister, ttl_s=60.0)
    kernel = RecordingKernel()
    cfg = config(part_size=PART, parallel_count=2, max_gets=4, readahead_parts=2)
    async with prefetcher_over(bucket.source, store, cfg) as prefetcher:
        fs = FileSystem(namespace, prefetcher, LOOK, symlinks=bucket, kernel=kernel, bucket=BUCKET)
        yield Rig(fs, bucket, namespace, prefetcher, kernel)
