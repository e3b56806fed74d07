"""chmod, chown and utimens of a file nobody has open for writing: stored as ossfs stores them.

ossfs 1.x (src/s3fs.cpp s3fs_chmod/s3fs_chown/s3fs_utimens) HEADs the object and copies it
onto itself with `x-oss-metadata-directive: REPLACE`, the object's metadata plus the changed
`x-oss-meta-mode` / `-uid` / `-gid` / `-mtime` / `-atime` / `-ctime` (which times, with what
values: fs/stamps.py); we do the same (`OssWrites.replace_meta`), fenced on the ETag the
namespace knows, so a bucket written by either reads the same in both. Cost: one HEAD, plus
one CopyObject when a value other than the ctime really changes (a chmod to the mode the
object already has costs the HEAD only; ossfs would copy it to bump the ctime). A file open
for writing, or whose write-back upload is pending, carries mode, owner and times with its
upload instead (fs/staging.py): no request.
Which of these a setattr takes is decided in fs/setattrs.py; directories' markers are stored
the same way (fs/dirattrs.py).

No HEAD for an object this mount just wrote (`KnownMeta`): its commit sent every header the
object has (our PutObject and multipart uploads carry nothing but `posix_meta`), so what a
REPLACE copy must send again is known, as long as the object still has the ETag we gave it.
`rsync -a` (utimensat and chmod by path after the close) and `tar x` with attributes set after
close then pay the copy only. The record lasts `max_age_s` (30 s): a metadata-only change by
another client keeps the ETag, so a record trusted for ever could undo one; within the window
the risk is that of ossfs's own HEAD-then-copy, only wider.

The copy keeps the bytes and (on OSS and the emulator) the ETag, so the version the cache
holds stays the current one; the CRC-64 may be missing from the copy's replies, so the known
one is kept.
"""

from __future__ import annotations

import stat
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

import trio

from ossmount.fs.shown import Posix, ShownAttrs, posix_of
from ossmount.fs.stamps import now_s, only_ctime_differs, stamped
from ossmount.oss._writes import OssWrites
from ossmount.oss.models import ObjectMeta
from ossmount.write.owedlog import OwedLog

__all__ = ["KnownMeta", "store_attrs"]


class KnownMeta:
    """Metadata of objects this mount wrote moments ago: key -> (ETag, every header a
    REPLACE copy must carry). Bounded (`capacity`, oldest dropped first) and short-lived
    (`max_age_s`). Trio thread only; no awaits inside.

    Owed metadata (`owe`): headers a chmod, chown or utimens set on an object this mount just
    wrote, not sent yet: fs/owedattrs.py sends them a moment later, in one copy with any set
    after them, or a rename's copy carries them (fs/filerename.py). Until then they are what
    `headers` answers and what the mount shows; they are neither bounded nor aged (they
    leave when sent, or with the object), so a debt is never dropped unsent.

    The POSIX part of what it learns also goes to `shown` (fs/shown.py), which keeps far
    more objects, far longer, in much less memory: what the mount shows for them.

    Every debt also goes to `owed_log` (write/owedlog.py), when one is set, from the moment
    it begins until it is paid: stored or carried (`wrote`, `moved`), or dropped with its
    object (`forget`). A debt taken to be sent (`settle`) stays in the log until then, so a
    crash while it is sent loses nothing."""

    def __init__(
        self,
        capacity: int = 4096,
        max_age_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        shown: ShownAttrs | None = None,
    ) -> None:
        self._capacity, self._max_age, self._clock = capacity, max_age_s, clock
        self._known: OrderedDict[str, tuple[str, dict[str, str], float]] = OrderedDict()
        # key -> (ETag the headers go on, the headers, when the debt began), oldest first
        # (fs/owedattrs.py takes them from the front).
        self._owed: dict[str, tuple[str, dict[str, str], float]] = {}
        self.owed_changed = trio.Event()  # set when a debt begins (fs/owedattrs.py waits)
        self.shown = shown if shown is not None else ShownAttrs()
        self.owed_log: OwedLog | None = None

    def wrote(
        self, key: str, etag: str, headers: Mapping[str, str], *, already_shown: bool = False
    ) -> None:
        """The object `key` now has `etag` and exactly `headers` (lower-case names): what it
        owed, if anything, is settled (a commit or copy that carried it, or replaced it).
        `already_shown`: the mount shows them already (a debt sent): `shown` is not told
        again, so the entry keeps its place among the newest (fs/shown.py keeps the newest
        learnt)."""
        self._owed.pop(key, None)
        self._paid(key)
        self._known.pop(key, None)
        lowered = {k.lower(): v for k, v in headers.items()}
        self._known[key] = (etag, lowered, self._clock())
        while len(self._known) > self._capacity:
            self._known.popitem(last=False)
        if already_shown:
            self.shown.restamp(key, time.time_ns())
        else:
            self.shown.learn(key, etag, posix_of(lowered), stored_ns=time.time_ns())

    def owe(self, key: str, etag: str, headers: Mapping[str, str]) -> None:
        """Version `etag` of `key` is to carry exactly `headers`, sent later (see the class
        docstring); shown from now on. A debt keeps the time it began and its place (oldest
        first), so one changed again and again is still sent within the delay."""
        lowered = {k.lower(): v for k, v in headers.items()}
        earlier = self._owed.get(key)
        if earlier is not None and earlier[0] == etag:
            self._owed[key] = (etag, lowered, earlier[2])
        else:
            self._owed.pop(key, None)
            self._owed[key] = (etag, lowered, self._clock())
        if self.owed_log is not None:
            self.owed_log.owe(key, etag, lowered)
        self.shown.learn(key, etag, posix_of(lowered), stored_ns=time.time_ns())
        self.owed_changed.set()

    def owed(self, key: str) -> tuple[str, dict[str, str]] | None:
        """The ETag and headers `key` owes, if it does."""
        debt = self._owed.get(key)
        return None if debt is None else (debt[0], dict(debt[1]))

    def owed_keys(self) -> set[str]:
        return set(self._owed)

    def settle(self, key: str) -> tuple[str, dict[str, str]] | None:
        """Take `key`'s debt to send it (the caller makes good: `wrote` when it is stored,
        `forget` when it cannot be). Meanwhile its headers are what `headers` answers, so a
        chmod while the copy runs builds on them (and is owed again)."""
        debt = self._owed.pop(key, None)
        if debt is None:
            return None
        self._known.pop(key, None)
        self._known[key] = (debt[0], debt[1], self._clock())
        return debt[0], dict(debt[1])

    def next_due(self, delay_s: float) -> tuple[str | None, float | None]:
        """The oldest debt's key if it is `delay_s` old (else None), and in how many seconds
        it will be (None: it is, or there is no debt). O(1): debts are kept oldest first and
        leave when taken (`settle`)."""
        for key, debt in self._owed.items():
            wait = debt[2] + delay_s - self._clock()
            return (key, None) if wait <= 0 else (None, wait)
        return None, None

    def headers(self, key: str, etag: str) -> dict[str, str] | None:
        """What `key` carries if it is still the version we wrote (`etag`), recently (or is
        to carry: what it owes)."""
        debt = self._owed.get(key)
        if debt is not None and debt[0] == etag:
            return dict(debt[1])
        known = self._known.get(key)
        if known is None or known[0] != etag or self._clock() - known[2] > self._max_age:
            return None
        return dict(known[1])

    def forget(self, key: str, *, paid: bool = True) -> None:
        """Drop all that is known of `key`; `paid=False`: what it owes stays in the log, to
        be sent by the next mount (a copy cut short by the end of this one)."""
        self._owed.pop(key, None)
        if paid:
            self._paid(key)
        self._known.pop(key, None)
        self.shown.forget(key)

    def forget_version(self, key: str, etag: str, *, paid: bool = True) -> None:
        """`forget`, unless `key` is known as another version by now (committed since)."""
        known, debt = self._known.get(key), self._owed.get(key)
        if (known is None or known[0] == etag) and (debt is None or debt[0] == etag):
            self.forget(key, paid=paid)

    def _paid(self, key: str) -> None:
        if self.owed_log is not None:
            self.owed_log.paid(key)

    def moved(self, old: str, new: str, etag: str) -> None:
        """`old` was copied (metadata kept, or what it owed, taken before the copy:
        fs/filerename.py) to `new`, now with `etag`, and deleted."""
        debt = self._owed.pop(old, None)  # set while the copy ran: it moves along, owed
        self._paid(old)
        known = self._known.pop(old, None)
        self._known.pop(new, None)
        self.shown.moved(old, new, etag, time.time_ns())
        if known is not None:
            self.wrote(new, etag, known[1])
        if debt is not None:
            self.owe(new, etag, debt[1])


async def store_attrs(
    writes: OssWrites,
    meta: ObjectMeta,
    posix: Posix,
    *,
    known: KnownMeta | None = None,
    kind: int = stat.S_IFREG,
    request: bool = False,
    defer: bool = False,
) -> ObjectMeta | None:
    """Store what `posix` sets (its None fields are left as they are) on `meta`'s object; its
    new metadata, or None if nothing was copied (nothing but the ctime would change). With
    `known` holding the object's headers, no HEAD; it learns the headers after a copy, and
    those of the HEAD when nothing needed copying. `kind`: the file-type bits stored with a
    mode (S_IFDIR on a `dir/` marker). `request`: `posix` is what a setattr asked for, stored
    with the times ossfs stores beside it, from the object's current ones (fs/stamps.py);
    else exactly the values to store. `defer`: an object whose headers `known` holds owes
    the new ones instead (`KnownMeta.owe`, sent by fs/owedattrs.py): no request now, and None."""
    if posix == Posix():
        return None
    kept = known.headers(meta.key, meta.etag) if known is not None else None
    headed = kept is None
    if kept is None:
        kept, _ = await writes.kept_headers(meta.key, if_match=meta.etag)
    if request:
        posix = stamped(posix, posix_of(kept), meta.mtime_ns)
    mode = posix.mode
    updates = posix._replace(mode=None if mode is None else kind | (mode & 0o7777)).meta()
    copied = None
    if not only_ctime_differs(updates, kept):
        if defer and not headed and known is not None:
            known.owe(meta.key, meta.etag, {**kept, **{k.lower(): v for k, v in updates.items()}})
            return None
        copied = await writes.replace_meta(meta.key, updates, if_match=meta.etag, kept=kept)
    if copied is None:
        if known is not None and headed:  # it had them already: the HEAD told us the rest
            known.wrote(meta.key, meta.etag, kept)
        return None
    if known is not None:
        known.wrote(meta.key, copied.etag, {**kept, **updates})
    now = now_s()  # as listings show it
    crc = copied.crc64 if copied.crc64 is not None else meta.crc64
    return ObjectMeta(meta.key, meta.size, copied.etag, now, crc, meta.object_type,
                      meta.storage_class)  # fmt: skip
