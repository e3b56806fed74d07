"""`--own-attrs`: each file and directory shows its own `x-oss-meta-*` mode, owner and times,
learnt by one HEAD per object version (a directory's: of its `dir/` marker) and kept in the
cache dir.

Why: listings carry no user metadata, so without this a file the mount did not store shows
the defaults (fs/shown.py). A bucket written by ossfs 1.x, or by ossmount on another machine,
then shows every file 0644 (a script does not run) with its upload time as mtime (`rsync -a`
out of the mount stamps the upload times). ossfs 1.x and s3fs HEAD every file on every
mount (W6: 10,000 HEADs for one `ls -lR`, every time); this HEADs a file only when the
attribute table (`ShownAttrs`, saved across remounts by fs/shownfile.py) has nothing for the
version the listing shows, so a tree costs its HEADs once, and a remount none.

When: before the entries of an `opendir` are handed out (all of its unknown entries at
once, `parallel` at a time), and in `lookup` and `getattr` of a file whose version is
unknown (a new or replaced object) or of a directory whose marker is. Symlinks are not
HEADed (links keep their own attributes, fs/linkattrs.py). The table learns what each HEAD
found, nothing included, under the ETag and Last-Modified the HEAD returned, and the entry
answers only while the listing shows both: a metadata-only change by another client
(ossfs's chmod copies the object onto itself: same ETag, new Last-Modified) is HEADed again
once the listing shows it; and if the object changed between the listing and the HEAD, the
entry waits for the listing that shows the new version.

Directories: ossfs 1.x keeps a directory's mode, owner and times on its `dir/` marker
(fs/dirattrs.py), and `default_permissions` checks them (a 0700 directory of another user
must not be entered). A directory whose marker the table does not know costs one HEAD of
the marker; one with no marker (an "implicit" directory) is learnt as carrying nothing
(ETag ""), so it is not HEADed again either. The parent's listing shows a directory as a
prefix, with no ETag to check the entry against; the directory's own listing shows its
marker (or none), and `listed_marker` drops an entry that listing contradicts, so the next
lookup HEADs the marker again: a chmod of a directory by another client shows once the
directory has been listed, as a file's once its parent has.

Entries this mount stored itself (a commit's, a chmod's copy: fs/attrstore.py) carry no
Last-Modified, only the time they were stored; they answer until a listing shows the object
changed later than that (`ShownAttrs.changed_since_stored`), which only another client does:
that object is then HEADed once. Without it, a chmod through ossfs of a file this mount had
written went unseen for as long as the cache dir kept the entry.

Failures: a HEAD that fails (after the client's retries) leaves that file showing the
defaults until its next lookup; after a batch, one WARNING (at most one per `_WARN_EVERY_S`)
says how many failed since the last one and the last error, which names the object and the
cause. It never fails the `ls`. An object deleted since the listing is skipped.

Concurrency: trio thread. `_inflight` makes concurrent callers asking for the same key wait
for one HEAD (two `ls` of one directory send each HEAD once); the table is written only
between awaits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping

import trio

from ossmount.fs.attrs import is_symlink
from ossmount.fs.shown import Posix, ShownAttrs, marker_key, posix_of
from ossmount.oss import NoSuchKey, OssError, OssTransportError
from ossmount.oss._reply import http_date_s
from ossmount.oss.models import ObjectMeta
from ossmount.tree.node import Node

__all__ = ["OwnAttrs"]

log = logging.getLogger(__name__)

_WARN_EVERY_S = 60.0


class OwnAttrs:
    """Learns the attributes of listed files into `shown` (see the module docstring)."""

    def __init__(
        self,
        head: Callable[[str], Awaitable[Mapping[str, str]]],
        shown: ShownAttrs,
        *,
        parallel: int = 32,
        root_prefix: str = "",
    ) -> None:
        """`head(key)`: one HEAD's reply headers, lower-case names (OssClient.head_headers);
        `root_prefix`: the mounted prefix, whose own marker is never HEADed."""
        self._head, self._shown = head, shown
        self._root_prefix = root_prefix
        self._parallel = parallel
        self._limit = trio.CapacityLimiter(parallel)  # across concurrent callers too
        self._inflight: dict[str, trio.Event] = {}
        self._failed = 0  # since the last WARNING
        self._last_failure = ""
        self._warned_at = -_WARN_EVERY_S

    def unknown(self, nodes: Iterable[Node]) -> list[tuple[str, Node]]:
        """(key to HEAD, node) of each of `nodes` whose attributes the table lacks."""
        todo = []
        for node in nodes:
            meta = node.meta
            if meta is not None:
                if not is_symlink(meta) and not self._knows(meta.key, meta):
                    todo.append((meta.key, node))
            elif node.is_dir and node.path:
                marker = marker_key(self._root_prefix, node)
                if not self._knows(marker, None):
                    todo.append((marker, node))
        return todo

    def _knows(self, key: str, meta: ObjectMeta | None) -> bool:
        """Whether the table answers for `key` as listed (`meta`; None: a directory's
        marker, which no parent listing shows): an entry this mount stored counts only
        while the listing's Last-Modified is not later (another client's change since,
        maybe of the metadata only: the ETag stays)."""
        if meta is None:
            return self._shown.get(key, None) is not None
        return self._shown.get(
            key, meta.etag, meta.mtime_ns
        ) is not None and not self._shown.changed_since_stored(key, meta.mtime_ns)

    def listed_marker(self, key: str, marker: ObjectMeta | None) -> None:
        """A listing of the directory whose marker is `key` showed that marker as `marker`
        (None: no marker): an entry of it the listing contradicts is dropped (see the
        module docstring). Namespace.on_marker."""
        etag = self._shown.etag(key)
        if etag is None:
            return
        if marker is None:
            if etag:  # learnt with a marker that is gone
                self._shown.forget(key)
        elif not self._knows(key, marker):
            self._shown.forget(key)

    async def learn(self, nodes: Iterable[Node]) -> None:
        """Make the table know every file and directory of `nodes` it can (never raises but
        Cancelled)."""
        todo = self.unknown(nodes)
        if not todo:
            return
        if len(todo) == 1:
            await self._learn_one(*todo[0])
        else:
            # `parallel` workers share one iterator, not a task per file: a task per file of
            # a 10,000-entry directory raised the daemon's peak RSS from 54 to 96 MiB.
            queue = iter(todo)

            async def worker() -> None:
                for key, node in queue:
                    await self._learn_one(key, node)

            async with trio.open_nursery() as nursery:
                for _ in range(min(self._parallel, len(todo))):
                    nursery.start_soon(worker)
        self._report()

    def _report(self) -> None:
        """One WARNING for the failures since the last one, at most every `_WARN_EVERY_S`."""
        now = time.monotonic()
        if self._failed and now - self._warned_at >= _WARN_EVERY_S:
            log.warning("--own-attrs: %d HEAD(s) failed, those files show the default mode "
                        "and times until looked up again; the last: %s",
                        self._failed, self._last_failure)  # fmt: skip
            self._warned_at, self._failed = now, 0

    async def _learn_one(self, key: str, node: Node) -> None:
        """HEAD `key`, the object of `node` or, for a directory, its marker."""
        meta = node.meta
        running = self._inflight.get(key)
        if running is not None:
            await running.wait()
            return
        done = self._inflight[key] = trio.Event()
        try:
            async with self._limit:
                if self._knows(key, meta):
                    return  # learnt while this waited for a slot
                headers = await self._head(key)
            seen = http_date_s(headers.get("last-modified", ""))
            self._shown.learn(key, headers.get("etag", ""), posix_of(headers),
                              seen_ns=None if seen is None else seen * 1_000_000_000)  # fmt: skip
        except NoSuchKey:
            if meta is None:  # a directory with no marker: it carries nothing
                self._shown.learn(key, "", Posix())
            # else a file deleted since the listing: the next listing drops it
        except (OssError, OssTransportError) as exc:
            self._failed += 1
            self._last_failure = str(exc)  # names the object and the cause
        finally:
            del self._inflight[key]
            done.set()
