"""chmod, chown and utimens of a file this mount just wrote: stored a moment later, in one copy.

Why: each of them costs a CopyObject of the object onto itself (fs/attrstore.py), and the
tools that write trees set them one after another right after the close: `rsync -a` sets the
temporary file's mtime, then its mode, then renames it (a copy and a delete); `tar x` and
`cp -p` set times, owner and mode of each directory. Sent one by one, `rsync -a` paid five
requests per file. Owed instead (`KnownMeta.owe`: shown at once, no request), they go out
`delay_s` after the first of them, all in one copy, or ride in the copy of a rename that
comes first (fs/filerename.py): `rsync -a` pays three (PutObject, CopyObject, DeleteObject).

What a debt promises, and what it does not (SEMANTICS.md, "Attributes"):
  * the mount shows the new attributes at once;
  * OSS has them within `delay_s` (1 s), or at the file's fsync, a rename of its directory,
    or unmount, whichever comes first;
  * a crash before that does not lose them: KnownMeta logs each debt until it is paid
    (write/owedlog.py), and the next mount sends what the log still owes before it is
    ready; a power loss may lose the last ones (the log is not fsynced), as a local disk
    may lose metadata not yet fsynced. The attribute table saved for the next mount
    (fs/shownfile.py) leaves owed objects out, so it never shows what OSS does not have;
  * only objects whose headers the mount knows without a HEAD (it wrote them in the last
    30 s, `KnownMeta`) owe; others are stored at once, as before.

Sending is fenced on the ETag the attributes were set on: an object replaced or deleted
since keeps what its new writer gave it (logged at INFO). Any other failure is logged
naming the object (WARNING), and the mount stops showing what it could not store.

Concurrency: trio thread. `run` takes due debts oldest first (O(1) each: a debt leaves the
table when taken, `KnownMeta.settle`) and hands them to `parallel` workers. A debt is taken
by whoever sends it: a worker, `store` (fsync, unmount), or a rename's copy
(fs/filerename.py), which first waits for a copy already sending one (`sent`), so the rename
copies the object with its attributes either way. From the moment it is taken until its copy
ends, `_sending` holds an event for the key: one copy per key at a time, and a debt begun
meanwhile is sent after it. A setattr's own copy (`copying`) holds one too, and a commit of
the key waits for whichever runs and takes the debt (Staging._commit_dirty), so no copy of an
older version lands over a newer one.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable

import trio

from ossmount.fs.attrstore import KnownMeta
from ossmount.oss import NoSuchKey
from ossmount.oss._errors import PreconditionFailed
from ossmount.oss._writes import OssWrites

__all__ = ["OWED_DELAY_S", "OwedAttrs"]

log = logging.getLogger(__name__)

OWED_DELAY_S = 1.0


class OwedAttrs:
    """Sends what `known` owes (see the module docstring)."""

    def __init__(
        self,
        writes: OssWrites,
        known: KnownMeta,
        *,
        delay_s: float = OWED_DELAY_S,
        parallel: int = 16,
    ) -> None:
        self._writes, self._known, self._delay = writes, known, delay_s
        self._parallel = parallel
        # A copy onto itself keeps the ETag on OSS and the emulator; if one did not, the
        # namespace's listed ETag is stale: told with the key (the FileSystem sets it).
        self.on_new_etag: Callable[[str], None] = lambda key: None
        # key -> set when the copy sending its debt ends; from the moment the debt is taken.
        self._sending: dict[str, trio.Event] = {}

    @property
    def defers(self) -> bool:
        """Whether attributes are owed at all (a delay of 0: each is stored at once)."""
        return self._delay > 0

    async def run(self) -> None:
        """Send debts as they fall due, oldest first, `parallel` copies at a time, until
        cancelled. One debt per key in flight: a key whose earlier copy still runs waits."""
        send, receive = trio.open_memory_channel[tuple[str, str, dict[str, str]]](0)
        async with trio.open_nursery() as nursery:
            for _ in range(self._parallel):
                nursery.start_soon(self._worker, receive)
            while True:
                if self._known.owed_changed.is_set():
                    self._known.owed_changed = trio.Event()
                key, wait_s = self._known.next_due(self._delay)
                if key is None:
                    with trio.move_on_after(math.inf if wait_s is None else wait_s):
                        await self._known.owed_changed.wait()
                    continue
                await self.sent(key)
                taken = self._take(key)
                if taken is not None:
                    await send.send((key, *taken))  # a free worker takes it

    async def _worker(
        self, receive: trio.MemoryReceiveChannel[tuple[str, str, dict[str, str]]]
    ) -> None:
        async for key, etag, headers in receive:
            await self._send(key, etag, headers)

    async def sent(self, key: str) -> None:
        """Wait until no copy is sending what `key` owed: the object has it, or it failed."""
        while (running := self._sending.get(key)) is not None:
            await running.wait()

    @contextlib.asynccontextmanager
    async def taken(self, key: str) -> AsyncIterator[tuple[str, dict[str, str]] | None]:
        """Around a request that replaces or removes `key` (a commit, a delete, a rename's
        copy from or to it): a copy sending what `key` owes lands first (fenced on the old
        ETag only when it starts, it would otherwise land after the request: the old bytes
        back over a commit, a deleted object back, a renamed-over file back), and the debt
        (ETag, headers) is taken meanwhile, so none starts; yielded, for the request to
        carry or drop. Given back if the request fails; the caller pays it when it succeeds
        (KnownMeta `wrote`, `forget`, `moved`)."""
        await self.sent(key)
        debt = self._known.settle(key)
        try:
            yield debt
        except BaseException:
            if debt is not None:
                self._known.owe(key, *debt)
            raise

    @contextlib.asynccontextmanager
    async def copying(self, key: str) -> AsyncIterator[None]:
        """Around a copy of `key` onto itself made outside the debts (a setattr's, when
        nothing is owed: `--attr-delay 0`, or an object this mount did not write): it counts
        as sending, so it waits for a copy already sending one, none starts meanwhile, and a
        commit of `key` waits for it (Staging._commit_dirty): fenced on the old ETag only
        when it starts, it would otherwise land over a version committed meanwhile."""
        await self.sent(key)
        self._sending[key] = trio.Event()
        try:
            yield
        finally:
            self._sending.pop(key).set()

    async def store(self, key: str) -> None:
        """Send what `key` owes now, after any copy already sending an earlier debt."""
        await self.sent(key)
        taken = self._take(key)
        if taken is not None:
            await self._send(key, *taken)

    def _take(self, key: str) -> tuple[str, dict[str, str]] | None:
        """`key`'s debt, taken to be sent (`_sending` covers it until `_send` ends)."""
        debt = self._known.settle(key)
        if debt is not None:
            self._sending[key] = trio.Event()
        return debt

    async def _send(self, key: str, etag: str, headers: dict[str, str]) -> None:
        try:
            copied = await self._writes.copy_object(key, key, if_match=etag, meta=headers)
        except (PreconditionFailed, NoSuchKey) as exc:
            self._known.forget_version(key, etag)
            log.info("%s: replaced or deleted before its mode/owner/times were stored (%s); "
                     "it keeps what its new writer gave it", self._where(key), exc)  # fmt: skip
        except Exception as exc:
            if self._known.owed(key) is None:  # a debt begun meanwhile carries these too
                self._known.forget_version(key, etag)
            log.warning("%s: storing its mode/owner/times failed (%s); the bytes are "
                        "stored, the object keeps its earlier attributes", self._where(key),
                        exc)  # fmt: skip
        except BaseException:  # cancelled (an unmount out of time): not shown as stored,
            if self._known.owed(key) is None:  # and the next mount sends it (write/owedlog.py)
                self._known.forget_version(key, etag, paid=False)
            raise
        else:
            if self._known.owed(key) is None:  # else set again meanwhile: that debt is newer
                self._known.wrote(key, copied.etag, headers, already_shown=copied.etag == etag)
            if copied.etag != etag:
                self.on_new_etag(key)
        finally:
            self._sending.pop(key).set()

    async def store_under(self, prefix: str) -> None:
        """Send what every key under `prefix` owes (before a directory rename copies them
        with the metadata OSS has)."""
        for key in sorted(self._known.owed_keys() | set(self._sending)):
            if key.startswith(prefix):
                await self.store(key)

    async def store_all(self) -> None:
        """Send every debt now (unmount), `parallel` at a time."""
        limit = trio.CapacityLimiter(self._parallel)

        async def one(key: str) -> None:
            async with limit:
                await self.store(key)

        async with trio.open_nursery() as nursery:
            for key in self._known.owed_keys() | set(self._sending):
                nursery.start_soon(one, key)

    def _where(self, key: str) -> str:
        return f"oss://{self._writes.bucket}/{key}"
