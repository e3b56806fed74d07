"""`Namespace`: the directory tree of a bucket (or prefix), built from ListObjectsV2 only.

This module decides what to ask OSS and turns the answers into nodes and snapshots. What the
answers taught is kept by tree.metacache, and identical concurrent requests share one call
through tree.flights: each changes for its own reasons (cache policy, a concurrency protocol).

Requests
    * `opendir` lists the directory with `prefix=<dir>/`, `delimiter=/`, 1000 keys a page, and
      follows every continuation token: a directory of 10,000 keys costs 10 requests and nothing
      else. Size and mtime of every file come from the listing (mtime = Last-Modified), so
      `ls -l`, `find` and `rsync` never cause a HEAD (field notes §4.5).
    * An uncached `lookup(dir, name)` costs one request: `prefix=<dir>/<base>`, `delimiter=/`,
      `max-keys=1000`, where `base = lookup_base(name)`. Everything that decides the name lies
      in that sorted range: the object `<base>` comes first (it equals the prefix), then siblings
      such as `<base>-x` and `<base>.ossfile`, then the common prefix `<base>/` (every byte that
      can follow `<base>` in a sibling and sort before `/` is one of ` !"#$%&'()*+,-.`).
      Only when more than 1000 siblings sort between `<base>` and `<base>/` does the page end
      before the answer is known; then the missing facts are probed with `max-keys=1` requests
      (at most four), rather than paging through the siblings.

Cache
    What a listing or lookup learned is kept by `MetaCache` (tree.metacache: TTLs, negative
    TTL (default: `ttl_s`), weight bound, LRU, patching after this mount's own changes).
    Inode numbers are not cached data: they come from `InodeTable` and survive `invalidate()`.

Readdir snapshots
    `opendir` returns a `DirSnapshot`: the sorted entries (by name, which is UTF-8 byte order),
    each with its inode. The kernel pages through it with `readdir(fh, start_id)`; the cookie is
    the position in this immutable tuple, so it stays valid however the bucket changes. The
    snapshot pins its entries' inodes in the table until `releasedir`, so a number handed out in
    a reply cannot be reassigned before the kernel looks it up.

Concurrency (trio, one thread)
    Every state change happens in synchronous code between awaits. The only awaits are the
    Lister calls inside `_probe` / `_list_dir` and waiting on a shared flight; after them the
    code re-reads state instead of trusting what it saw before. In particular `_put` (assigns an
    inode, possibly evicting idle ones) and the following `remember` / `pin` are never split by an
    await, otherwise the new entry could be evicted in between.
    Concurrent requests for the same thing share one Lister call (tree.flights). A result from
    before an `invalidate()` is returned to its callers but not cached (generation check).
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import time
from collections.abc import Callable, Container, Mapping
from operator import itemgetter
from typing import Final

from ossmount.oss.models import ObjectMeta
from ossmount.tree.errors import NameInvalid, NameTooLong, NotADirectory, NotFound
from ossmount.tree.flights import Flights
from ossmount.tree.inodes import ROOT_INODE, InodeTable, stable_hash
from ossmount.tree.lister import Lister
from ossmount.tree.metacache import MetaCache, apply_change, simple_change
from ossmount.tree.names import (
    MAX_NAME_BYTES,
    SHADOW_SUFFIX,
    join_path,
    lookup_base,
    name_problem,
    normalize_root_prefix,
    resolve_names,
    split_path,
    valid_name,
)
from ossmount.tree.node import Node
from ossmount.tree.records import DIR_INFO as _DIR_INFO
from ossmount.tree.records import Info as _Info
from ossmount.tree.records import Miss as _Miss
from ossmount.tree.records import Walk, WalkOrder, Walks
from ossmount.tree.records import walk_key as _walk_key
from ossmount.tree.snapshot import DirSnapshot

__all__ = ["DirSnapshot", "Namespace", "Node", "WalkOrder"]

log = logging.getLogger(__name__)

LIST_PAGE_KEYS: Final = 1000
LOOKUP_MAX_KEYS: Final = 1000

WALK_LISTING_MAX_AGE_TTLS: Final = 10  # files_after trusts a listing this many TTLs old
_DOTS: Final = ("", ".", "..")


class Namespace:
    """The mount's tree: lookup, getattr, opendir over a `Lister`, with caches and inodes.

    Constant: the lister, `root_prefix` (normalized, e.g. "some/prefix/"), the clock.
    Mutable: the inode table (`table`), the metadata cache (`_cache`), flights in progress.
    """

    def __init__(
        self,
        lister: Lister,
        *,
        root_prefix: str = "",
        ttl_s: float = 60.0,
        negative_ttl_s: float | None = None,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        dir_mtime_ns: int = 0,
        hash_fn: Callable[[bytes], int] = stable_hash,
        max_idle_inodes: int | None = None,
    ) -> None:
        if ttl_s < 0 or (negative_ttl_s is not None and negative_ttl_s < 0):
            raise ValueError("TTLs must be >= 0")
        if max_entries < 0:
            raise ValueError("max_entries must be >= 0")
        self._lister = lister
        self.root_prefix = normalize_root_prefix(root_prefix)
        self._cache = MetaCache(
            ttl_s=ttl_s,
            negative_ttl_s=ttl_s if negative_ttl_s is None else negative_ttl_s,
            max_entries=max_entries,
        )
        self._clock = clock
        self.table = InodeTable(
            hash_fn=hash_fn,
            max_idle=max(max_idle_inodes if max_idle_inodes is not None else max_entries, 1),
            dir_mtime_ns=dir_mtime_ns,
        )
        self.root: Node = self.table.get(ROOT_INODE)
        self._flights = Flights()
        # Paths of files this mount is writing (set by the write layer: fs/staging.py's
        # `by_path`). OSS lists the version such a file replaces (a symlink, say) until its
        # upload lands, so a listing or lookup never refreshes their entries (`_listed`).
        self.held: Container[str] = frozenset()
        # Told of each directory's own `dir/` marker (its key, and the object or None) that a
        # listing of it from OSS showed (the root's aside): --own-attrs checks what it
        # learnt of the marker against it (fs/ownattrs.py `listed_marker`).
        self.on_marker: Callable[[str, ObjectMeta | None], None] | None = None

    # -- public API --------------------------------------------------------------------------

    def get(self, inode: int) -> Node:
        """The latest known `Node` of `inode`, without any request. Raises NotFound."""
        return self.table.get(inode)

    async def lookup(self, parent: int, name: str) -> Node:
        """Find `name` in directory `parent` and count one kernel reference to the result.

        Raises:
            NotFound: no such entry (cached negatively), or `parent` is unknown.
            NotADirectory: `parent` is a file.
            NameInvalid / NameTooLong: `name` can never exist here.
        """
        node = await self.entry(parent, name)
        self.table.remember(node.inode, 1)  # no await since `entry` put it: nothing evicted it
        return node

    async def entry(self, parent: int, name: str) -> Node:
        """`lookup` without counting a kernel reference (for unlink, rmdir, rename)."""
        pnode = self._dir_node(parent)
        path = join_path(pnode.path, name)
        problem = name_problem(name)
        if problem is not None:
            if problem.startswith("longer"):
                raise NameTooLong(path, problem)
            raise NameInvalid(path, problem)
        info = await self._resolve(pnode.path, name)
        if info is None:
            raise NotFound(path)
        return self._put(path, info, listed=True)

    def remember(self, inode: int, n: int = 1) -> None:
        """Count `n` kernel references to `inode` (each readdir entry that was accepted)."""
        self.table.remember(inode, n)

    def forget(self, inode: int, nlookup: int) -> bool:
        """FUSE forget: drop `nlookup` references; whether the kernel still holds any (when
        not, it has evicted its inode, and with it the inode's pages). Never raises."""
        return self.table.forget(inode, nlookup)

    async def shown_file_name(self, dir_path: str, name: str, key: str) -> str:
        """The name the object `key` (raw name `name` in `dir_path`) is shown under: `name`, or
        `name.ossfile` when a prefix of the same name takes `name` (see names.py).

        For symlink targets, which are keys: a link to a shadowed object must not resolve to
        the directory. One probe decides both names, so this costs at most one request.
        """
        alias = name + SHADOW_SUFFIX
        if not valid_name(alias):
            return name
        info = await self._resolve(dir_path, alias)
        if info is not None and info.meta is not None and info.meta.key == key:
            return alias
        return name

    async def getattr(self, inode: int) -> Node:
        """The `Node` of `inode`, re-checked against OSS once its cached metadata has expired.

        Raises NotFound when the inode is unknown or its entry is gone (deleted, or turned from
        file into directory or back: that is a different inode).
        """
        node = self.table.get(inode)
        if inode == ROOT_INODE:
            return node
        if node.detached:
            raise NotFound(node.path[1:], "replaced by a rename")
        dir_path, name = split_path(node.path)
        info = await self._resolve(dir_path, name)
        if info is None or info.is_dir != node.is_dir:
            raise NotFound(node.path, "no longer exists")
        return self._put(node.path, info, listed=True)

    async def opendir(self, inode: int) -> DirSnapshot:
        """Snapshot of directory `inode`, from one complete listing (or a fresh cached one)."""
        dnode = self._dir_node(inode)
        entries = await self._listing(dnode.path)
        nodes: list[Node] = []
        prefix = f"{dnode.path}/" if dnode.path else ""
        put, pin, held = self.table.put, self.table.pin, self.held
        # no await below: each entry is pinned right after it gets its inode
        for name in sorted(entries):
            is_dir, meta = entries[name]
            if is_dir or meta is None:
                node = put(prefix + name, True, 0, 0, None)
            elif held and prefix + name in held:
                node = self._listed(prefix + name, meta)
            else:
                node = put(prefix + name, False, meta.size, meta.mtime_ns, meta)
            pin(node.inode)
            nodes.append(node)
        return DirSnapshot(inode, dnode.path, tuple(nodes))

    def releasedir(self, snapshot: DirSnapshot) -> None:
        """Unpin the snapshot's entries. Idempotent."""
        if snapshot._released:
            return
        snapshot._released = True
        for node in snapshot.entries:
            self.table.unpin(node.inode)

    def files_after(self, inode: int, count: int, order: WalkOrder) -> list[tuple[int, ObjectMeta]]:
        """Up to `count` (inode, meta) of the files after file `inode` in its directory, in
        `order`, taken only from a cached listing: no request, and nothing when the directory
        was never listed. What directory read-ahead (prefetch.siblings) follows.

        The listing may be up to WALK_LISTING_MAX_AGE_TTLS x the TTL old: a walk of a big
        directory outlasts the TTL (100k files at 250 files/s take 400 s), and the walker does
        not list it again. A stale entry costs at most one refused GET: warm downloads are
        fenced by If-Match like every other, and the walker's own open checks freshness.

        "name" is the order of `ls`, rsync and a readdir of this filesystem; "inode" the order
        GNU `cp -r` and other gnulib `savedir` users read a directory in (sorted by d_ino, to
        be kind to disks). Only files that have an inode number (every entry of a directory
        that was read) take part. Subdirectories are skipped: a walker descends into them in
        between, and its walk of this directory carries on after.
        """
        node = self.table.get(inode)
        dir_path, _ = split_path(node.path)
        cached = self._cache.listing(dir_path)
        if cached is None or self._clock() - cached.fetched_at > (
            WALK_LISTING_MAX_AGE_TTLS * self._cache.ttl_s
        ):
            return []
        walk = cached.walks.get(order)
        if walk is None:
            walk = cached.walks[order] = self._walk(dir_path, cached.entries, order)
        at = bisect.bisect_right(walk, _walk_key(order, node.name, inode), key=itemgetter(0))
        return [(ino, meta) for _, ino, meta in walk[at : at + count]]

    def _walk(self, dir_path: str, entries: Mapping[str, _Info], order: WalkOrder) -> Walk:
        """(sort key, inode, meta) of the listed files that have an inode, in `order`."""
        walk: Walk = []
        for name, info in entries.items():
            if info.is_dir or info.meta is None:
                continue
            ino = self.table.find(join_path(dir_path, name), False)
            if ino is not None:
                walk.append((_walk_key(order, name, ino), ino, info.meta))
        walk.sort(key=itemgetter(0))
        return walk

    def learned(self, path: str, meta: ObjectMeta | None, *, is_dir: bool = False) -> Node | None:
        """Record what this mount itself just did at `path` (wrote `meta`, made a directory,
        deleted: `meta` None), so no cached name or listing hides it until its TTL. A cached
        listing of the parent is patched in place (a walker writing many files keeps it); when
        the change touches a name shadowed by a directory (names.py) it is dropped instead.
        A directory made here (`is_dir`) starts with an empty cached listing.
        Returns the entry's current `Node`, None for a deletion. Synchronous: no await."""
        info = _DIR_INFO if is_dir else (None if meta is None else _Info(False, meta))
        was = self.table.find(path, False)  # the file there before, if one had a number
        self._cache.learned(path, info, self._clock())
        node = None if info is None else self._put(path, info)
        self._patch_listing_walks(path, was, node)
        return node

    def _patch_listing_walks(self, path: str, was: int | None, now: Node | None) -> None:
        """`_patch_walks` on the cached listing of `path`'s directory, if it has walks."""
        dir_path, name = split_path(path)
        listing = self._cache.listing(dir_path)
        if listing is not None and listing.walks:
            _patch_walks(listing.walks, name, was, now)

    def moved_tree(self, inode: int, path: str) -> None:
        """Directory `inode` and everything under it were renamed to `path` by this mount:
        numbers stay (see `InodeTable.move_tree`); every cached name and listing is dropped,
        since names under both the old and the new path changed."""
        old = self.table.get(inode).path
        keys = (f"{self.root_prefix}{old}/", f"{self.root_prefix}{path}/")
        self.table.move_tree(inode, path, keys)
        self.invalidate()

    def deleted(self, inode: int, path: str) -> None:
        """This mount deleted entry `inode` at `path`: no cached name or listing shows it, and
        its number is detached from the path (`InodeTable.detach`)."""
        self.learned(path, None)
        self.table.detach(inode)

    def moved(self, inode: int, path: str) -> None:
        """Entry `inode` was renamed to `path` by this mount; its number stays (see
        `InodeTable.move`). A file it replaced leaves the walks (its number goes here)."""
        victim = self.table.find(path, False)
        self.table.move(inode, path)
        if victim is not None and victim != inode:
            self._patch_listing_walks(path, victim, None)

    def invalidate(self) -> None:
        """Drop all cached metadata (names, listings). Inode numbers and counts stay."""
        self._cache.invalidate()

    def kernel_entries(self) -> list[tuple[int, str, int]]:
        """(parent inode, name, inode) of every entry the kernel may hold cached.

        For SIGHUP: `invalidate` only drops our own caches, while the kernel keeps names and
        attributes for `attr_timeout`; these are what the caller invalidates there.
        """
        out: list[tuple[int, str, int]] = []
        for node in self.table.looked_up():
            if node.inode == ROOT_INODE:
                continue
            dir_path, name = split_path(node.path)
            parent = ROOT_INODE if not dir_path else self.table.find(dir_path, True)
            if parent is not None:
                out.append((parent, name, node.inode))
        return out

    def check_invariants(self) -> None:
        """Raise AssertionError if the table or the cache bookkeeping is inconsistent."""
        self.table.check_invariants()
        self._cache.check_invariants()

    @property
    def cached_entries(self) -> int:
        """Names held by the metadata cache (the figure bounded by `max_entries`)."""
        return self._cache.weight

    # -- resolving names ---------------------------------------------------------------------

    def _dir_node(self, inode: int) -> Node:
        node = self.table.get(inode)
        if not node.is_dir:
            raise NotADirectory(node.path)
        return node

    def _dir_key(self, dir_path: str) -> str:
        return f"{self.root_prefix}{dir_path}/" if dir_path else self.root_prefix

    def _put(self, path: str, info: _Info, *, listed: bool = False) -> Node:
        """The entry of what `info` says is at `path`: learnt from OSS (`listed`), or done
        by this mount (`learned`)."""
        if info.is_dir or info.meta is None:
            return self.table.put(path, True, 0, 0, None)
        if listed and path in self.held:
            return self._listed(path, info.meta)
        return self.table.put(path, False, info.meta.size, info.meta.mtime_ns, info.meta)

    def _listed(self, path: str, meta: ObjectMeta) -> Node:
        """The entry of a file this mount is writing (`held`) that OSS lists at `path`: left
        as it is, since OSS shows the version being replaced. Were a listed symlink adopted,
        the kernel, holding the inode as a regular file, would take the changed type for a
        bad inode (EIO on every call: the random walk, seed 370, a file renamed over a link
        under write-back). An entry dropped as idle is put back as a regular file."""
        ino = self.table.find(path, False)
        if ino is not None:
            return self.table.get(ino)
        if meta.object_type is not None:
            meta = dataclasses.replace(meta, object_type=None)
        return self.table.put(path, False, meta.size, meta.mtime_ns, meta)

    async def _resolve(self, dir_path: str, name: str) -> _Info | None:
        """What `name` in `dir_path` is: from the cache, else from one probe (shared)."""
        hit = self._cache.lookup(dir_path, name, self._clock())
        if not isinstance(hit, _Miss):
            return hit
        base = lookup_base(name)
        decided = await self._flights.run(
            ("probe", dir_path, base), lambda: self._probe(dir_path, base)
        )
        return decided[name]

    async def _probe(self, dir_path: str, base: str) -> dict[str, _Info | None]:
        """One ListObjectsV2 over `<dir>/<base>`; decides the names `base` and `base.ossfile`.

        Returns display name → info (None = absent) for every name it decides, and caches them.
        """
        started = self._clock()
        generation = self._cache.generation
        dir_key = self._dir_key(dir_path)
        prefix = dir_key + base
        raws = [r for r in (base, base + SHADOW_SUFFIX) if valid_name(r)]
        files: dict[str, ObjectMeta] = {}
        dirs: set[str] = set()
        page = await self._lister.list_page(prefix, "/", None, LOOKUP_MAX_KEYS)
        for obj in page.objects:
            if obj.key.startswith(dir_key) and obj.key[len(dir_key) :] in raws:
                files[obj.key[len(dir_key) :]] = obj
        for p in page.prefixes:
            if p.startswith(dir_key) and p.endswith("/") and p[len(dir_key) : -1] in raws:
                dirs.add(p[len(dir_key) : -1])
        if page.next_token is not None:
            # The page ended before `<base>/`: probe what it did not reach, one key each.
            last = max([o.key for o in page.objects] + list(page.prefixes), default=prefix)
            for raw in raws:
                key = dir_key + raw
                if last < key:
                    probe = await self._lister.list_page(key, "/", None, 1)
                    if probe.objects and probe.objects[0].key == key:
                        files[raw] = probe.objects[0]
                if last < key + "/":
                    probe = await self._lister.list_page(key + "/", "/", None, 1)
                    if probe.objects or probe.prefixes:
                        dirs.add(raw)
        resolved = resolve_names(files, dirs)
        decided = [base + SHADOW_SUFFIX]
        if lookup_base(base) == base:
            decided.append(base)
        out: dict[str, _Info | None] = {}
        ours = self._cache.since(dir_path, started, decided)  # may be newer than the answer
        for name in decided:
            if not valid_name(name):
                continue
            if name in ours:
                out[name] = ours[name]  # cached already, when it was learned
                continue
            if name in resolved:
                is_dir, source = resolved[name]
                out[name] = _Info(is_dir, None if source is None else files[source])
            else:
                out[name] = None
            if generation == self._cache.generation:
                self._cache.store_name(dir_path, name, out[name], started)
        return out

    # -- listings ----------------------------------------------------------------------------

    async def _listing(self, dir_path: str) -> Mapping[str, _Info]:
        cached = self._cache.fresh_listing(dir_path, self._clock())
        if cached is not None:
            return cached
        return await self._flights.run(("list", dir_path), lambda: self._list_dir(dir_path))

    async def _list_dir(self, dir_path: str) -> dict[str, _Info]:
        """Every page of `<dir>/` with delimiter `/`; resolved, validated entries. Caches them."""
        started = self._clock()
        generation = self._cache.generation
        dir_key = self._dir_key(dir_path)
        cut = len(dir_key)
        files: dict[str, ObjectMeta] = {}
        dirs: set[str] = set()
        marker: ObjectMeta | None = None
        token: str | None = None
        while True:
            page = await self._lister.list_page(dir_key, "/", token, LIST_PAGE_KEYS)
            for obj in page.objects:
                key = obj.key
                name = key[cut:]
                if not key.startswith(dir_key) or name == "":
                    if key == dir_key:
                        marker = obj  # this directory's own marker
                    continue
                # The common name (ASCII, short, no "/", NUL or dots-only) skips name_problem.
                common = name.isascii() and len(name) <= MAX_NAME_BYTES and "/" not in name
                if (common and "\0" not in name and name not in _DOTS) or self._usable(key, name):
                    files[name] = obj
            for p in page.prefixes:
                name = p[len(dir_key) : -1]
                if p.startswith(dir_key) and p.endswith("/") and self._usable(p, name):
                    dirs.add(name)
            if page.next_token is None:
                break
            token = page.next_token
        if self.on_marker is not None and dir_path:
            self.on_marker(dir_key, marker)
        if dirs.isdisjoint(files):
            # Nothing shadowed (every directory but those holding a file and a prefix of one
            # name): resolve_names would map each name to itself; one pass instead of three.
            entries = dict.fromkeys(dirs, _DIR_INFO)
            entries.update({name: _Info(False, meta) for name, meta in files.items()})
        else:
            entries = self._shadowed(dir_key, files, dirs)
        store = generation == self._cache.generation
        for name, info in self._cache.since(dir_path, started).items():
            # This mount's own change, maybe newer than the answer (MetaCache.learned); one
            # that cannot be patched into a listing is shown but not kept: fetched again.
            store = store and simple_change(entries, name, info)
            apply_change(entries, name, info)
        if store:
            self._cache.store_listing(dir_path, entries, started)
        return entries

    @staticmethod
    def _shadowed(dir_key: str, files: dict[str, ObjectMeta], dirs: set[str]) -> dict[str, _Info]:
        """The entries of a directory where a file and a prefix share a name (names.py)."""
        resolved = resolve_names(files, dirs)
        for f in dirs:
            if f in files and resolved.get(f + SHADOW_SUFFIX) != (False, f):
                log.debug("file %r hidden: directory of the same name, and %r is taken or too "
                          "long", dir_key + f, f + SHADOW_SUFFIX)  # fmt: skip
        return {
            name: _DIR_INFO if raw is None else _Info(False, files[raw])
            for name, (_is_dir, raw) in resolved.items()
        }

    def _usable(self, key: str, name: str) -> bool:
        problem = name_problem(name)
        if problem is None:
            return True
        log.debug("skipping key %r: name %r is %s", key, name[: MAX_NAME_BYTES + 1], problem)
        return False


def _patch_walks(walks: Walks, name: str, was: int | None, now: Node | None) -> None:
    """The cached listing's file walks (`files_after`) after this mount changed `name`: the
    file that was there (inode `was`) leaves them, the one there now (`now`) joins them.
    Rebuilding them instead cost a sort of the whole directory per open of a walker that
    also writes there (rsync -a into a mount reopens each file it wrote): half the daemon's
    time for 5,000 files in one directory."""
    for order, walk in walks.items():
        if was is not None:
            key = _walk_key(order, name, was)
            at = bisect.bisect_left(walk, key, key=itemgetter(0))
            if at < len(walk) and walk[at][0] == key:
                del walk[at]
        if now is not None and not now.is_dir and now.meta is not None:
            entry = (_walk_key(order, name, now.inode), now.inode, now.meta)
            bisect.insort(walk, entry, key=itemgetter(0))
