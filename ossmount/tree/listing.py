"""`Namespace`: the directory tree of a bucket (or prefix), built from ListObjectsV2 only.

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
    What a listing or lookup learned is kept for `ttl_s` seconds (`stat_cache_expire`); a name
    known to be absent for `negative_ttl_s` (default: `ttl_s`). A complete directory listing
    also answers lookups of every name in that directory, present or not, so a `find` costs
    list requests only. When a name is known from both a listing and a lookup, the more recent
    answer wins. The cache holds at most `max_entries` names (a listing weighs its entry count);
    the least recently used are dropped first. `invalidate()` drops all of it (SIGHUP).
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
    Concurrent requests for the same thing share one Lister call (`_shared`): the first task
    runs it, the others wait on its event. If the first task is cancelled, a waiter runs the
    request itself; if it fails, every waiter gets the same exception. A result from before an
    `invalidate()` is returned to its callers but not cached (generation check).
"""

from __future__ import annotations

import bisect
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Mapping
from operator import itemgetter
from typing import Final, TypeVar

from ossmount.oss.models import ObjectMeta
from ossmount.tree.errors import NameInvalid, NameTooLong, NotADirectory, NotFound
from ossmount.tree.inodes import ROOT_INODE, InodeTable, stable_hash
from ossmount.tree.lister import Lister
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
from ossmount.tree.records import MISS as _MISS
from ossmount.tree.records import CachedListing as _CachedListing
from ossmount.tree.records import CachedName as _CachedName
from ossmount.tree.records import Flight as _Flight
from ossmount.tree.records import Info as _Info
from ossmount.tree.records import Miss as _Miss
from ossmount.tree.records import WalkOrder
from ossmount.tree.records import walk_key as _walk_key
from ossmount.tree.snapshot import DirSnapshot

__all__ = ["DirSnapshot", "Namespace", "Node", "WalkOrder"]

log = logging.getLogger(__name__)

LIST_PAGE_KEYS: Final = 1000
LOOKUP_MAX_KEYS: Final = 1000

T = TypeVar("T")

WALK_LISTING_MAX_AGE_TTLS: Final = 10  # files_after trusts a listing this many TTLs old
_DOTS: Final = ("", ".", "..")


class Namespace:
    """The mount's tree: lookup, getattr, opendir over a `Lister`, with caches and inodes.

    Constant: the lister, `root_prefix` (normalized, e.g. "some/prefix/"), TTLs, the clock.
    Mutable: the inode table (`table`), the metadata cache (`_names`, `_listings` and their
    LRU `_lru` with total weight `_weight`), flights in progress, the cache generation.
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
        self.ttl_s = ttl_s
        self.negative_ttl_s = ttl_s if negative_ttl_s is None else negative_ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self.table = InodeTable(
            hash_fn=hash_fn,
            max_idle=max(max_idle_inodes if max_idle_inodes is not None else max_entries, 1),
            dir_mtime_ns=dir_mtime_ns,
        )
        self.root: Node = self.table.get(ROOT_INODE)
        self._names: dict[tuple[str, str], _CachedName] = {}
        self._listings: dict[str, _CachedListing] = {}
        self._lru: OrderedDict[tuple[str, str, str], int] = OrderedDict()
        self._weight = 0
        self._generation = 0
        self._flights: dict[Hashable, _Flight[object]] = {}

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
        return self._put(path, info)

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
        if node.path.startswith("\0"):
            raise NotFound(node.path[1:], "replaced by a rename")
        dir_path, name = split_path(node.path)
        info = await self._resolve(dir_path, name)
        if info is None or info.is_dir != node.is_dir:
            raise NotFound(node.path, "no longer exists")
        return self._put(node.path, info)

    async def opendir(self, inode: int) -> DirSnapshot:
        """Snapshot of directory `inode`, from one complete listing (or a fresh cached one)."""
        dnode = self._dir_node(inode)
        entries = await self._listing(dnode.path)
        nodes: list[Node] = []
        prefix = f"{dnode.path}/" if dnode.path else ""
        put, pin = self.table.put, self.table.pin
        # no await below: each entry is pinned right after it gets its inode
        for name in sorted(entries):
            is_dir, meta = entries[name]
            if is_dir or meta is None:
                node = put(prefix + name, True, 0, 0, None)
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
        cached = self._listings.get(dir_path)
        if cached is None or self._clock() - cached.fetched_at > (
            WALK_LISTING_MAX_AGE_TTLS * self.ttl_s
        ):
            return []
        walk = cached.walks.get(order)
        if walk is None:
            walk = cached.walks[order] = self._walk(dir_path, cached.entries, order)
        at = bisect.bisect_right(walk, _walk_key(order, node.name, inode), key=itemgetter(0))
        return [(ino, meta) for _, ino, meta in walk[at : at + count]]

    def _walk(
        self, dir_path: str, entries: Mapping[str, _Info], order: WalkOrder
    ) -> list[tuple[str, int, ObjectMeta]]:
        """(sort key, inode, meta) of the listed files that have an inode, in `order`."""
        walk: list[tuple[str, int, ObjectMeta]] = []
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
        dir_path, name = split_path(path)
        info = _DIR_INFO if is_dir else (None if meta is None else _Info(False, meta))
        now = self._clock()
        listing = self._listings.get(dir_path)
        if listing is not None:
            old = listing.entries.get(name)
            simple = not name.endswith(SHADOW_SUFFIX) and (name + SHADOW_SUFFIX) not in (
                listing.entries
            )
            if simple and (old is None or info is None or old.is_dir == info.is_dir):
                entries = dict(listing.entries)
                if info is None:
                    entries.pop(name, None)
                else:
                    entries[name] = info
                self._store_listing(dir_path, entries, listing.fetched_at)
            if self._listings.get(dir_path) is listing:  # not replaced (too big, or shadowing)
                self._weight -= self._lru.pop(("l", dir_path, ""), 0)
                del self._listings[dir_path]
        for alias in (name, name + SHADOW_SUFFIX):
            if (dir_path, alias) in self._names:
                del self._names[(dir_path, alias)]
                self._weight -= self._lru.pop(("n", dir_path, alias), 0)
        self._store_name(dir_path, name, info, now)
        if info is None:
            return None
        if is_dir and path not in self._listings:
            # A directory this mount just made has nothing in it: lookups of the names a
            # `cp -r` or `tar x` is about to create are answered without a probe each.
            self._store_listing(path, {}, now)
        return self._put(path, info)

    def moved_tree(self, inode: int, path: str) -> None:
        """Directory `inode` and everything under it were renamed to `path` by this mount:
        numbers stay (see `InodeTable.move_tree`); every cached name and listing is dropped,
        since names under both the old and the new path changed."""
        self.table.move_tree(inode, path)
        self.invalidate()

    def deleted(self, inode: int, path: str) -> None:
        """This mount deleted entry `inode` at `path`: no cached name or listing shows it, and
        its number is detached from the path (`InodeTable.detach`)."""
        self.learned(path, None)
        self.table.detach(inode)

    def moved(self, inode: int, path: str) -> None:
        """Entry `inode` was renamed to `path` by this mount; its number stays (see
        `InodeTable.move`)."""
        self.table.move(inode, path)

    def invalidate(self) -> None:
        """Drop all cached metadata (names, listings). Inode numbers and counts stay."""
        self._names.clear()
        self._listings.clear()
        self._lru.clear()
        self._weight = 0
        self._generation += 1

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
        weight = 0
        for kind, a, b in self._lru:
            if kind == "n":
                if (a, b) not in self._names:
                    raise AssertionError(f"LRU has name {a!r}/{b!r} not in cache")
                weight += 1
            else:
                if a not in self._listings:
                    raise AssertionError(f"LRU has listing {a!r} not in cache")
                weight += max(1, len(self._listings[a].entries))
        if len(self._lru) != len(self._names) + len(self._listings):
            raise AssertionError("LRU and cache disagree")
        if weight != self._weight or weight > self.max_entries:
            raise AssertionError(f"cache weight {self._weight} (counted {weight})")

    @property
    def cached_entries(self) -> int:
        """Names held by the metadata cache (the figure bounded by `max_entries`)."""
        return self._weight

    # -- resolving names ---------------------------------------------------------------------

    def _dir_node(self, inode: int) -> Node:
        node = self.table.get(inode)
        if not node.is_dir:
            raise NotADirectory(node.path)
        return node

    def _dir_key(self, dir_path: str) -> str:
        return f"{self.root_prefix}{dir_path}/" if dir_path else self.root_prefix

    def _put(self, path: str, info: _Info) -> Node:
        if info.is_dir or info.meta is None:
            return self.table.put(path, True, 0, 0, None)
        return self.table.put(path, False, info.meta.size, info.meta.mtime_ns, info.meta)

    async def _resolve(self, dir_path: str, name: str) -> _Info | None:
        """What `name` in `dir_path` is: from the cache, else from one probe (shared)."""
        hit = self._cached(dir_path, name, self._clock())
        if not isinstance(hit, _Miss):
            return hit
        base = lookup_base(name)
        decided = await self._shared(("probe", dir_path, base), lambda: self._probe(dir_path, base))
        return decided[name]

    def _cached(self, dir_path: str, name: str, now: float) -> _Info | _Miss | None:
        best: _Info | _Miss | None = _MISS
        best_at = float("-inf")
        entry = self._names.get((dir_path, name))
        if entry is not None and self._fresh(entry.info is not None, entry.fetched_at, now):
            best, best_at = entry.info, entry.fetched_at
            self._lru.move_to_end(("n", dir_path, name))
        listing = self._listings.get(dir_path)
        if listing is not None and listing.fetched_at > best_at:
            info = listing.entries.get(name)
            if self._fresh(info is not None, listing.fetched_at, now):
                best = info
                self._lru.move_to_end(("l", dir_path, ""))
        return best

    def _fresh(self, positive: bool, fetched_at: float, now: float) -> bool:
        return now - fetched_at < (self.ttl_s if positive else self.negative_ttl_s)

    async def _probe(self, dir_path: str, base: str) -> dict[str, _Info | None]:
        """One ListObjectsV2 over `<dir>/<base>`; decides the names `base` and `base.ossfile`.

        Returns display name → info (None = absent) for every name it decides, and caches them.
        """
        started = self._clock()
        generation = self._generation
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
        for name in decided:
            if not valid_name(name):
                continue
            if name in resolved:
                is_dir, source = resolved[name]
                out[name] = _Info(is_dir, None if source is None else files[source])
            else:
                out[name] = None
            if generation == self._generation:
                self._store_name(dir_path, name, out[name], started)
        return out

    # -- listings ----------------------------------------------------------------------------

    async def _listing(self, dir_path: str) -> Mapping[str, _Info]:
        now = self._clock()
        cached = self._listings.get(dir_path)
        if cached is not None and self._fresh(True, cached.fetched_at, now):
            self._lru.move_to_end(("l", dir_path, ""))
            return cached.entries
        return await self._shared(("list", dir_path), lambda: self._list_dir(dir_path))

    async def _list_dir(self, dir_path: str) -> dict[str, _Info]:
        """Every page of `<dir>/` with delimiter `/`; resolved, validated entries. Caches them."""
        started = self._clock()
        generation = self._generation
        dir_key = self._dir_key(dir_path)
        cut = len(dir_key)
        files: dict[str, ObjectMeta] = {}
        dirs: set[str] = set()
        token: str | None = None
        while True:
            page = await self._lister.list_page(dir_key, "/", token, LIST_PAGE_KEYS)
            for obj in page.objects:
                key = obj.key
                name = key[cut:]
                if not key.startswith(dir_key) or name == "":
                    continue  # "" is this directory's own marker
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
        if dirs.isdisjoint(files):
            # Nothing shadowed (every directory but those holding a file and a prefix of one
            # name): resolve_names would map each name to itself; one pass instead of three.
            entries = dict.fromkeys(dirs, _DIR_INFO)
            entries.update({name: _Info(False, meta) for name, meta in files.items()})
        else:
            entries = self._shadowed(dir_key, files, dirs)
        if generation == self._generation:
            self._store_listing(dir_path, entries, started)
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

    # -- cache bookkeeping (all synchronous) -------------------------------------------------

    def _store_name(self, dir_path: str, name: str, info: _Info | None, at: float) -> None:
        if (self.ttl_s if info is not None else self.negative_ttl_s) <= 0:
            return
        lru_key = ("n", dir_path, name)
        if lru_key in self._lru:
            self._lru.move_to_end(lru_key)
        else:
            self._lru[lru_key] = 1
            self._weight += 1
        self._names[(dir_path, name)] = _CachedName(info, at)
        self._shrink()

    def _store_listing(self, dir_path: str, entries: dict[str, _Info], at: float) -> None:
        weight = max(1, len(entries))
        if self.ttl_s <= 0 or weight > self.max_entries:
            return
        lru_key = ("l", dir_path, "")
        old = self._lru.pop(lru_key, None)
        if old is not None:
            self._weight -= old
        self._lru[lru_key] = weight
        self._weight += weight
        self._listings[dir_path] = _CachedListing(entries, at)
        self._shrink()

    def _shrink(self) -> None:
        while self._weight > self.max_entries and self._lru:
            (kind, a, b), weight = self._lru.popitem(last=False)
            self._weight -= weight
            if kind == "n":
                del self._names[(a, b)]
            else:
                del self._listings[a]

    # -- request sharing ---------------------------------------------------------------------

    async def _shared(self, key: Hashable, fn: Callable[[], Awaitable[T]]) -> T:
        """Run `fn` once for all concurrent callers with the same `key` (see module doc)."""
        while True:
            flight = self._flights.get(key)
            if flight is None:
                mine: _Flight[T] = _Flight()
                self._flights[key] = mine  # type: ignore[assignment]
                try:
                    mine.result = await fn()
                    mine.ok = True
                    return mine.result
                except Exception as exc:
                    mine.error = exc
                    raise
                finally:
                    del self._flights[key]
                    mine.done.set()
            await flight.done.wait()
            if flight.ok:
                return flight.result  # type: ignore[return-value]
            if flight.error is not None:
                raise flight.error
            # the running task was cancelled: try again, maybe as the one running it
