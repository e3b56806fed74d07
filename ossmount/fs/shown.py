"""The mode, owner and times the mount shows: the ones it stored itself, else its defaults.

Why: a tool that stats what it just set must see it. `rsync -a` creates its temp file 0600,
then chmods it only if `stat` shows another mode than the source's; with a fixed 0644 shown it
skipped the chmod of a 0644 file, and the object kept `x-oss-meta-mode` 0600 for ossfs
readers. And a second `rsync -a` re-sent every file whose shown mtime was the upload time,
not the source's.

What is known, and from where (no extra request but `--own-attrs`'s: `ls -l` and rsync keep 0
HEADs):
    * a file being written: its `Staged` fields (the create's mode and owner, setattr's);
    * an object this mount stored (a commit, a chmod/chown/utimens copy, a `dir/` marker):
      the `x-oss-meta-mode/-uid/-gid/-mtime/-atime/-ctime` it sent (or learnt by a HEAD it
      made anyway: a chmod's, an overwrite's), parsed as ossfs 1.x parses them
      (src/metaheader.cpp get_mtime/get_atime/get_ctime), held in `ShownAttrs`, keyed by
      object key and trusted only while the listing shows the ETag it had then (a marker: no
      ETag to compare, trusted until this mount removes or renames it); with --own-attrs,
      also only while the listing's Last-Modified is not later than the time it was stored
      (`changed_since_stored`: another client's chmod keeps the ETag);
    * with `--own-attrs`, what a HEAD of a listed file or of a directory's marker found
      (fs/ownattrs.py), also kept by ETag in the same table;
    * anything else (known only from LIST): the mount's defaults (fs/attrs.py `attr_of`).
The table outlives the mount: fs/shownfile.py saves it in the cache dir and the next mount
reads it back. GETs are not read for `x-oss-meta-*`: an object's permissions would then
change under a reader depending on whether it happened to be read (default_permissions
checks them).

An absent (or unparsable, or zero) time shows what it would without it: the Last-Modified,
as ossfs falls back to it.

Memory: `ShownAttrs` is bounded (`capacity`, oldest learnt dropped first): ~130 bytes an
object plus its key string, often shared with the inode table's node (12 MiB for 100,000,
the default capacity; `bench/bench_shown_attrs.py`); atime and ctime add 8 bytes when equal
(a utimens stores them so, and a file created and committed within a second has them so),
16 when not, none when absent; the time an entry was stored (or the Last-Modified a HEAD
found) adds 8. Time per listed entry, over the
~0.5 µs of `attr_of` (timeit, 10,000 entries): +0.1 µs on a read-only mount, +0.5 µs on a
`--rw` one, +2 µs for an entry whose attributes are known (unpacking). What it forgets shows
the defaults again, as after a remount.

Concurrency: trio thread only, no awaits; readdir calls `AttrView` once per entry.
"""

from __future__ import annotations

import stat
import struct
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, NamedTuple

from ossmount.fs.attrs import Attr, Presentation, attr_of
from ossmount.oss._write_types import posix_meta

if TYPE_CHECKING:
    from ossmount.fs.staged import Staged
    from ossmount.tree.node import Node

__all__ = [
    "STORED_SLACK_NS",
    "AttrView",
    "Posix",
    "ShownAttrs",
    "adopt_sent",
    "marker_key",
    "posix_of",
    "well_packed",
]


class Posix(NamedTuple):
    """What an object carries in `x-oss-meta-*`; None where it carries nothing usable."""

    mode: int | None = None  # st_mode as stored (ossfs writes the file-type bits too)
    uid: int | None = None
    gid: int | None = None
    mtime_ns: int | None = None
    atime_ns: int | None = None
    ctime_ns: int | None = None

    def meta(self) -> dict[str, str]:
        """The `x-oss-meta-*` headers ossfs reads these from (none for what is None)."""
        return posix_meta(
            mtime_ns=self.mtime_ns, mode=self.mode, uid=self.uid, gid=self.gid,
            atime_ns=self.atime_ns, ctime_ns=self.ctime_ns,
        )  # fmt: skip


def _c_int(text: str) -> int | None:
    """strtoull(text, base 0) as ossfs calls it, refusing what it refuses (then: unknown)."""
    text = text.strip()
    try:
        if text[:2].lower() == "0x":
            value = int(text[2:], 16)
        elif len(text) > 1 and text[0] == "0":
            value = int(text[1:], 8)
        else:
            value = int(text, 10)
    except ValueError:
        return None
    return value if 0 <= value < 1 << 32 else None


def _mtime(text: str) -> int | None:
    """`sec[.nsec]`: ossfs takes the digits after the dot as nanoseconds as they are (its
    atime and ctime too: src/metaheader.cpp cvt_string_to_time)."""
    sec, _, nsec = text.strip().partition(".")
    if not sec.isdigit() or (nsec and not nsec.isdigit()):
        return None
    ns = int(nsec) if nsec else 0
    if ns >= 1_000_000_000 or not 0 < int(sec) < 1 << 33:  # ossfs ignores zero or negative
        return None
    return int(sec) * 1_000_000_000 + ns


def posix_of(headers: Mapping[str, str]) -> Posix:
    """The POSIX attributes in an object's headers (lower-case names)."""
    mode, uid, gid, mtime, atime, ctime = (headers.get(f"x-oss-meta-{name}") for name in _NAMES)
    return Posix(
        None if mode is None else _c_int(mode),
        None if uid is None else _c_int(uid),
        None if gid is None else _c_int(gid),
        None if mtime is None else _mtime(mtime),
        None if atime is None else _mtime(atime),
        None if ctime is None else _mtime(ctime),
    )


_NAMES = ("mode", "uid", "gid", "mtime", "atime", "ctime")


# One table value: which fields are known (flag bits below), mode, uid, gid, mtime_ns, then
# atime_ns and ctime_ns only when known (one of them when equal), then the ETag's UTF-8. One
# bytes object, not a tuple of ints and a str: 126 bytes an object in the table instead of
# 298 (bench/bench_shown_attrs.py, 100,000 objects, no atime/ctime).
_PACK = struct.Struct("<BIIIq")
_TIME = struct.Struct("<q")
_MODE, _UID, _GID, _MTIME, _ATIME, _CTIME, _CTIME_IS_ATIME = 1, 2, 4, 8, 16, 32, 64
# Learnt by a HEAD (--own-attrs): the value also holds the Last-Modified it had, and answers
# only while the listing shows that one too. A metadata-only change by another client (ossfs's
# chmod copies the object onto itself) keeps the ETag but not the Last-Modified. Stored by
# this mount: the slot holds minus the local time it was stored (`learn`'s `stored_ns`),
# which `get` does not compare (the object's Last-Modified is the server's, unknown here),
# but --own-attrs does (`changed_since_stored`).
_SEEN = 128
# A Last-Modified this much past the time this mount stored an entry is another client's
# change (a Last-Modified has whole seconds, and the two clocks may differ a little).
STORED_SLACK_NS = 2_000_000_000
# Where the ETag starts, by flags: after the head and the atime, ctime and seen time it holds.
_SEEN_AT = tuple(
    _PACK.size + 8 * (bool(f & _ATIME) + bool(f & _CTIME and not f & _CTIME_IS_ATIME))
    for f in range(256)
)
_ETAG_AT = tuple(at + 8 * bool(f & _SEEN) for f, at in enumerate(_SEEN_AT))


def _pack(etag: str, posix: Posix, seen_ns: int | None = None) -> bytes:
    mode, uid, gid, mtime, atime, ctime = posix
    flags = 0
    for bit, value in ((_MODE, mode), (_UID, uid), (_GID, gid), (_MTIME, mtime),
                       (_ATIME, atime), (_CTIME, ctime)):  # fmt: skip
        if value is not None:
            flags |= bit
    times = b"" if atime is None else _TIME.pack(atime)
    if ctime is not None and ctime == atime:
        flags |= _CTIME_IS_ATIME
    elif ctime is not None:
        times += _TIME.pack(ctime)
    if seen_ns is not None:
        flags |= _SEEN
        times += _TIME.pack(seen_ns)
    head = _PACK.pack(flags, mode or 0, uid or 0, gid or 0, mtime or 0)
    return head + times + etag.encode("utf-8", "surrogatepass")


def _unpack(value: bytes) -> Posix:
    flags, mode, uid, gid, mtime = _PACK.unpack_from(value)
    atime = ctime = None
    if flags & _ATIME:
        atime = _TIME.unpack_from(value, _PACK.size)[0]
    if flags & _CTIME_IS_ATIME:
        ctime = atime
    elif flags & _CTIME:
        ctime = _TIME.unpack_from(value, _SEEN_AT[flags] - 8)[0]
    return Posix(
        mode if flags & _MODE else None,
        uid if flags & _UID else None,
        gid if flags & _GID else None,
        mtime if flags & _MTIME else None,
        atime,
        ctime,
    )


def _restamped(value: bytes, stored_ns: int) -> bytes:
    """Table value `value`, stored by this mount at `stored_ns` (`_SEEN`)."""
    return _pack(_etag_bytes(value).decode("utf-8", "surrogatepass"), _unpack(value), -stored_ns)


def _etag_bytes(value: bytes) -> bytes:
    return value[_ETAG_AT[value[0]] :]


def well_packed(value: bytes) -> bool:
    """Whether `value` is a table value `_unpack` reads as it was packed (a saved one)."""
    return bool(value) and value[0] < len(_ETAG_AT) and len(value) >= _ETAG_AT[value[0]]


class ShownAttrs:
    """key -> (ETag, `Posix`) of objects this mount stored attributes on or HEADed for them
    (see the module docstring), packed (`_PACK`). A plain dict in learning order: the oldest
    is dropped past `capacity`."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._known: dict[str, bytes] = {}
        # Bumped by every change: fs/shownfile.py saves the table only when it moved.
        self.changes = 0

    def __len__(self) -> int:
        return len(self._known)

    def packed(self) -> list[tuple[str, bytes]]:
        """Every (key, packed value), oldest learnt first: a snapshot for fs/shownfile.py."""
        return list(self._known.items())

    def restore(self, packed: Iterable[tuple[str, bytes]]) -> None:
        """Put back what `packed` (of an earlier table) held, oldest first; values must be
        well formed (`well_packed`)."""
        for key, value in packed:
            self._put(key, value)

    def learn(
        self, key: str, etag: str, posix: Posix, *, seen_ns: int | None = None,
        stored_ns: int | None = None,
    ) -> None:  # fmt: skip
        """`seen_ns`: the Last-Modified a HEAD found, which the entry then also requires.
        `stored_ns`: this mount stored the attributes at that time (time.time_ns()), which
        `changed_since_stored` compares a listing's Last-Modified with."""
        self.changes += 1
        # Also an object that carries nothing: --own-attrs (fs/ownattrs.py) then knows it
        # need not HEAD that version again.
        self._put(key, _pack(etag, posix, seen_ns if stored_ns is None else -stored_ns))

    def restamp(self, key: str, stored_ns: int) -> None:
        """The attributes `key`'s entry shows were stored on OSS at `stored_ns` (a debt was
        paid); the entry keeps its place among the newest learnt."""
        known = self._known.get(key)
        if known is not None:
            self.changes += 1
            self._known[key] = _restamped(known, stored_ns)

    def changed_since_stored(self, key: str, mtime_ns: int) -> bool:
        """Whether a listing's Last-Modified `mtime_ns` of `key` is later than this mount
        stored its entry (by more than `STORED_SLACK_NS`): another client changed the object
        since, maybe its metadata only (same ETag). False for entries a HEAD taught (`get`
        compares those) and for ones stored before stamps were kept."""
        known = self._known.get(key)
        if known is None or not known[0] & _SEEN:
            return False
        seen: int = _TIME.unpack_from(known, _SEEN_AT[known[0]])[0]
        return seen < 0 and mtime_ns > -seen + STORED_SLACK_NS

    def _put(self, key: str, value: bytes) -> None:
        """`key` becomes the most recently learnt; the oldest goes past `capacity`."""
        self._known.pop(key, None)
        self._known[key] = value
        if len(self._known) > self._capacity:
            del self._known[next(iter(self._known))]

    def get(self, key: str, etag: str | None, mtime_ns: int | None = None) -> Posix | None:
        """What `key` carries, if it is still the version it was learnt from (`etag`; None:
        do not compare, for `dir/` markers, which no listing shows an ETag of) and, for an
        entry a HEAD taught, still has the Last-Modified it had then (`mtime_ns`, the
        listing's)."""
        known = self._known.get(key)
        if known is None:
            return None
        if etag is not None and _etag_bytes(known) != etag.encode("utf-8", "surrogatepass"):
            return None
        flags = known[0]
        if flags & _SEEN and mtime_ns is not None:
            seen = _TIME.unpack_from(known, _SEEN_AT[flags])[0]
            if seen >= 0 and seen != mtime_ns:  # (< 0: stored here; see `_SEEN`)
                return None
        return _unpack(known)

    def etag(self, key: str) -> str | None:
        known = self._known.get(key)
        return None if known is None else _etag_bytes(known).decode("utf-8", "surrogatepass")

    def forget(self, key: str) -> None:
        if self._known.pop(key, None) is not None:
            self.changes += 1

    def moved(self, old: str, new: str, etag: str, stored_ns: int) -> None:
        """`old` was copied with its metadata to `new` (now `etag`) at `stored_ns`, and
        deleted."""
        self.changes += 1
        known = self._known.pop(old, None)
        self._known.pop(new, None)
        if known is not None:
            self.learn(new, etag, _unpack(known), stored_ns=stored_ns)

    def moved_tree(self, old_prefix: str, new_prefix: str, stored_ns: int) -> None:
        """Every key under `old_prefix` was copied with its metadata (and ETag) under
        `new_prefix` by `stored_ns`, then deleted (a directory rename: rare, so a scan is
        fine). The copies have new Last-Modifieds: what the entries show was stored then."""
        cut = len(old_prefix)
        self.changes += 1
        for key in [k for k in self._known if k.startswith(old_prefix)]:
            self._known[new_prefix + key[cut:]] = _restamped(self._known.pop(key), stored_ns)


class AttrView:
    """`Attr` of a node as the mount shows it (see the module docstring)."""

    def __init__(
        self,
        look: Presentation,
        root_prefix: str,
        shown: ShownAttrs | None = None,
        staged: Mapping[int, Staged] | None = None,
    ) -> None:
        self._look = look
        self._dir_mode, self._file_mode = look.dir_mode, look.file_mode
        self._root_prefix = root_prefix
        self._shown = shown
        self._staged = staged if staged is not None else {}

    def marker_key(self, node: Node) -> str:
        """The `dir/` marker key of directory `node` ("" for the mount's root, which has none
        this mount would touch)."""
        return marker_key(self._root_prefix, node)

    def known(self, node: Node) -> Posix | None:
        """What this mount stored on `node`'s object, if it still has that version."""
        shown = self._shown
        if not shown:
            return None
        if node.is_dir:
            return shown.get(self.marker_key(node), None) if node.path else None
        meta = node.meta
        return None if meta is None else shown.get(meta.key, meta.etag, meta.mtime_ns)

    def carry(self, node: Node, staged: Staged) -> None:
        """`staged` was just started from `node`'s object (opened for writing): its commit
        stores the mode and owner the object shows, not the staged file's defaults. Of an
        object whose mode this mount does not know (known only from a listing), the commit
        keeps the mode it has on the server (`keep_mode`, learnt by the commit's HEAD, as
        ossfs keeps it) and the owner likewise (no uid/gid of ours goes over its own)."""
        attr = attr_of(node, self._look, self._dir_mode, self._file_mode)
        posix = self.known(node)
        if posix is not None:
            attr = _over(attr, posix)
            staged.uid, staged.gid = posix.uid, posix.gid
        staged.mode = stat.S_IFREG | (attr.mode & 0o7777)
        staged.keep_mode = posix is None or posix.mode is None

    def __call__(self, node: Node) -> Attr:
        attr = attr_of(node, self._look, self._dir_mode, self._file_mode)
        staged = self._staged.get(node.inode) if self._staged else None
        if staged is None and not self._shown:
            return attr  # the common read-only case: nothing more to look up
        posix = self.known(node)
        if posix is not None:
            attr = _over(attr, posix)
        if staged is not None:  # its number is its own while staged (Staging.pins)
            attr = _over(attr, Posix(staged.mode, staged.uid, staged.gid, staged.mtime_ns,
                                     staged.atime_ns, staged.ctime_ns), staged.size)  # fmt: skip
        return attr


def marker_key(root_prefix: str, node: Node) -> str:
    """The `dir/` marker key of directory `node` ("" for the mount's root)."""
    return f"{root_prefix}{node.path}/" if node.path else ""


def adopt_sent(staged: Staged, sent: Mapping[str, str]) -> None:
    """`staged` was committed with the headers `sent`: a mode kept from the version it
    replaced (`keep_mode`) is its own from now on, shown and sent again by later commits.
    One the mount cannot parse stays kept as it is."""
    if not staged.keep_mode:
        return
    mode = posix_of(sent).mode
    if mode is not None:
        staged.mode, staged.keep_mode = stat.S_IFREG | (mode & 0o7777), False


def _over(attr: Attr, posix: Posix, size: int | None = None) -> Attr:
    """`attr` with what `posix` knows (and `size`, if given); the file type always stays the
    entry's own. (Built whole: NamedTuple._replace costs ~3x as much, once per listed entry,
    and ~10 times per file `tar x` writes.)"""
    mode, uid, gid, mtime, atime, ctime = posix
    return Attr(
        attr.inode,
        attr.mode if mode is None else stat.S_IFMT(attr.mode) | (mode & 0o7777),
        attr.nlink,
        attr.uid if uid is None else uid,
        attr.gid if gid is None else gid,
        attr.size if size is None else size,
        attr.block_size,
        attr.mtime_ns if mtime is None else mtime,
        attr.ctime_ns if ctime is None else ctime,
        attr.atime_ns if atime is None else atime,
        attr.timeout_s,
    )
