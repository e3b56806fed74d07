"""`MetaCache`: what listings and lookups learned about names, for how long, within what bound.

Apart from `Namespace` (tree.listing), which decides what to ask OSS and turns answers into
nodes, because this part changes for cache-policy reasons only: TTLs, the weight bound, LRU
order, and how a change made by this mount patches what was learned.

Rules
    What a listing or lookup learned is kept for `ttl_s` seconds (`stat_cache_expire`); a name
    known to be absent for `negative_ttl_s`. A complete directory listing also answers lookups
    of every name in that directory, present or not, so a `find` costs list requests only.
    When a name is known from both a listing and a lookup, the more recent answer wins. What
    this mount changed itself (`learned`) is also kept apart for `RECENT_S` seconds, by
    directory (`since`): OSS may have answered a request sent before such a change landed,
    and that answer, arriving after it, must not bring the old version back. The
    cache holds at most `max_entries` names (a listing weighs its entry count); the least
    recently used are dropped first. `invalidate()` drops all of it (SIGHUP) and bumps
    `generation`: a caller compares it before and after its request and does not store an
    answer fetched before an invalidation.

Concurrency: every method is synchronous (no await), so each is atomic on the trio thread.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping

from ossmount.tree.names import SHADOW_SUFFIX, split_path
from ossmount.tree.records import MISS, CachedListing, CachedName, Info, Miss, Walks

__all__ = ["RECENT_S", "MetaCache", "apply_change", "simple_change"]

# How long this mount's own changes are kept for answers that may predate them: longer than
# any request takes (a listing's pages are bounded by the client's timeouts and retries).
RECENT_S = 120.0


def simple_change(entries: Mapping[str, Info], name: str, info: Info | None) -> bool:
    """Whether this mount's change of `name` (`info`; None: deleted) can be patched into a
    directory's listing `entries`: not when it touches a name a directory shadows, or turns a
    file into a directory or back (names.py); that listing is fetched again instead."""
    if name.endswith(SHADOW_SUFFIX) or name + SHADOW_SUFFIX in entries:
        return False
    old = entries.get(name)
    return old is None or info is None or old.is_dir == info.is_dir


def apply_change(entries: dict[str, Info], name: str, info: Info | None) -> None:
    """`entries` after this mount's change of `name` (`info`; None: deleted)."""
    if info is None:
        entries.pop(name, None)
    else:
        entries[name] = info


class MetaCache:
    """Names and listings with their fetch times, in one LRU bounded by weight.

    Constant: `ttl_s`, `negative_ttl_s`, `max_entries`. Mutable: `_names`, `_listings`, their
    LRU `_lru` (key -> weight: 1 per name, max(1, entries) per listing) with total `_weight`,
    and `generation`. Invariant (`check_invariants`): `_lru` holds exactly the keys of
    `_names` ("n", dir, name) and `_listings` ("l", dir, ""), and `_weight` <= `max_entries`.
    """

    def __init__(self, *, ttl_s: float, negative_ttl_s: float, max_entries: int) -> None:
        self.ttl_s = ttl_s
        self.negative_ttl_s = negative_ttl_s
        self.max_entries = max_entries
        self.generation = 0
        self._names: dict[tuple[str, str], CachedName] = {}
        self._listings: dict[str, CachedListing] = {}
        self._lru: OrderedDict[tuple[str, str, str], int] = OrderedDict()
        self._weight = 0
        # dir -> name -> (info, when): this mount's own changes (`since`). Old ones are
        # dropped once the count doubles since the last pruning: amortized O(1) per change.
        self._recent: dict[str, dict[str, tuple[Info | None, float]]] = {}
        self._recent_count = 0
        self._prune_at = 1024

    @property
    def weight(self) -> int:
        """Names held (the figure bounded by `max_entries`)."""
        return self._weight

    def lookup(self, dir_path: str, name: str, now: float) -> Info | Miss | None:
        """What is known of `name` in `dir_path`: its info, None (known absent), or MISS."""
        best: Info | Miss | None = MISS
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

    def fresh_listing(self, dir_path: str, now: float) -> Mapping[str, Info] | None:
        """The entries of `dir_path` if a listing of it is still fresh, else None."""
        cached = self._listings.get(dir_path)
        if cached is not None and self._fresh(True, cached.fetched_at, now):
            self._lru.move_to_end(("l", dir_path, ""))
            return cached.entries
        return None

    def listing(self, dir_path: str) -> CachedListing | None:
        """The cached listing of `dir_path` whatever its age (the caller judges it, as
        `Namespace.files_after` does for directory read-ahead), without moving it in the LRU."""
        return self._listings.get(dir_path)

    def _fresh(self, positive: bool, fetched_at: float, now: float) -> bool:
        return now - fetched_at < (self.ttl_s if positive else self.negative_ttl_s)

    def store_name(self, dir_path: str, name: str, info: Info | None, at: float) -> None:
        if (self.ttl_s if info is not None else self.negative_ttl_s) <= 0:
            return
        lru_key = ("n", dir_path, name)
        if lru_key in self._lru:
            self._lru.move_to_end(lru_key)
        else:
            self._lru[lru_key] = 1
            self._weight += 1
        self._names[(dir_path, name)] = CachedName(info, at)
        self._shrink()

    def store_listing(
        self, dir_path: str, entries: dict[str, Info], at: float, walks: Walks | None = None
    ) -> None:
        weight = max(1, len(entries))
        if self.ttl_s <= 0 or weight > self.max_entries:
            return
        lru_key = ("l", dir_path, "")
        old = self._lru.pop(lru_key, None)
        if old is not None:
            self._weight -= old
        self._lru[lru_key] = weight
        self._weight += weight
        self._listings[dir_path] = CachedListing(entries, at, {} if walks is None else walks)
        self._shrink()

    def learned(self, path: str, info: Info | None, now: float) -> None:
        """This mount itself changed `path` (`info` None: deleted), so nothing
        cached may hide it until its TTL. A cached listing of the directory is patched in
        place (a walker writing many files keeps it); when the change touches a name shadowed
        by a directory (names.py) it is dropped instead. A directory made here starts with an
        empty cached listing: lookups of the names a `cp -r` or `tar x` is about to create are
        answered without a probe each."""
        dir_path, name = split_path(path)
        listing = self._listings.get(dir_path)
        if listing is not None:
            if simple_change(listing.entries, name, info):
                # Patched in place, not copied: a walker writing 5,000 files into one
                # directory copied it 20,000 times. Nobody holds it across an await (opendir
                # and files_after read it synchronously). Its walks go along, for
                # Namespace.learned to patch (directory read-ahead rebuilt them per open).
                apply_change(listing.entries, name, info)
                self.store_listing(dir_path, listing.entries, listing.fetched_at, listing.walks)
            if self._listings.get(dir_path) is listing:  # not replaced (too big, or shadowing)
                self._weight -= self._lru.pop(("l", dir_path, ""), 0)
                del self._listings[dir_path]
        for alias in (name, name + SHADOW_SUFFIX):
            if (dir_path, alias) in self._names:
                del self._names[(dir_path, alias)]
                self._weight -= self._lru.pop(("n", dir_path, alias), 0)
        self.store_name(dir_path, name, info, now)
        if info is not None and info.is_dir and path not in self._listings:
            self.store_listing(path, {}, now)
        self._note(dir_path, name, info, now)

    def since(
        self, dir_path: str, started: float, names: Iterable[str] | None = None
    ) -> dict[str, Info | None]:
        """This mount's own changes in `dir_path` (`learned`) at or after `started`: what an
        answer to a request sent at `started` may not show yet (None: deleted). Of `names`
        only, when given: a lookup's probe asks for one name, in a directory a `tar x` may
        have written thousands of names into meanwhile."""
        changes = self._recent.get(dir_path)
        if not changes:
            return {}
        if names is not None:
            found = ((name, changes.get(name)) for name in names)
            return {name: c[0] for name, c in found if c is not None and c[1] >= started}
        return {name: info for name, (info, at) in changes.items() if at >= started}

    def _note(self, dir_path: str, name: str, info: Info | None, now: float) -> None:
        changes = self._recent.setdefault(dir_path, {})
        if name not in changes:
            self._recent_count += 1
        changes[name] = (info, now)
        if self._recent_count >= self._prune_at:
            for path in list(self._recent):
                kept = {n: c for n, c in self._recent[path].items() if now - c[1] < RECENT_S}
                self._recent_count -= len(self._recent[path]) - len(kept)
                if kept:
                    self._recent[path] = kept
                else:
                    del self._recent[path]
            self._prune_at = max(1024, 2 * self._recent_count)

    def _shrink(self) -> None:
        while self._weight > self.max_entries and self._lru:
            (kind, a, b), weight = self._lru.popitem(last=False)
            self._weight -= weight
            if kind == "n":
                del self._names[(a, b)]
            else:
                del self._listings[a]

    def invalidate(self) -> None:
        """Drop everything; answers fetched before this are not stored (`generation`)."""
        self._names.clear()
        self._listings.clear()
        self._lru.clear()
        self._weight = 0
        self.generation += 1

    def check_invariants(self) -> None:
        """Raise AssertionError if the LRU, the weight and the two maps disagree."""
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
