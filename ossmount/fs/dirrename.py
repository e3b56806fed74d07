"""Rename of a directory: every key under it, copied server-side, then the old keys deleted.

OSS has no directories, so a directory rename is one CopyObject per key (a multipart copy
above CopyObject's 1 GiB, ossmount.write.bigcopy), each fenced on the ETag the listing
showed, so an object replaced meanwhile fails the rename instead of being copied in its new
version and then deleted, and one DeleteMultipleObjects per 1000 old keys.
Copies all come first, deletions after: a crash (or a failed copy) mid-way leaves the old tree
whole and a partial copy under the new name, never a key in neither place. Not atomic: other
clients can see both trees while it runs.

Concurrency: copies run `_PARALLEL` at a time in a nursery of their own; the first failure
cancels the rest and is raised (nothing is deleted then).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from ossmount.fs.errors import NotEmpty
from ossmount.fs.newnames import check_key_length
from ossmount.oss._writes import OssWrites
from ossmount.oss.models import ObjectMeta
from ossmount.write.bigcopy import copy_any
from ossmount.write.ledger import UploadLedger

__all__ = ["rename_tree"]

_PARALLEL = 8


async def _all_keys(writes: OssWrites, prefix: str) -> list[ObjectMeta]:
    out: list[ObjectMeta] = []
    token: str | None = None
    while True:
        page = await writes.client.list_page(prefix, "", token, 1000)
        out.extend(page.objects)
        if page.next_token is None:
            return out
        token = page.next_token


async def rename_tree(
    writes: OssWrites,
    old_prefix: str,
    new_prefix: str,
    ledger: UploadLedger | None = None,
    move_link: Callable[[ObjectMeta, str], Awaitable[object]] | None = None,
) -> int:
    """Move every key under `old_prefix` (ending in "/") to `new_prefix`; the number moved.
    Symlink objects go by `move_link(meta, new_key)` (fs/linkattrs.py), not CopyObject.
    Raises NotEmpty when something already exists under `new_prefix`, NameTooLong when a key
    would be over OSS's limit under it (nothing is copied then)."""
    taken = await writes.client.list_page(new_prefix, "", None, 2)
    if any(o.key != new_prefix for o in taken.objects):
        raise NotEmpty(f"oss://{writes.bucket}/{new_prefix}", "rename onto a non-empty directory")
    objects = await _all_keys(writes, old_prefix)
    for meta in objects:  # before any copy: a key too long mid-way would leave half a rename
        check_key_length(
            new_prefix + meta.key[len(old_prefix) :], f"oss://{writes.bucket}/{meta.key}"
        )
    limiter = trio.CapacityLimiter(_PARALLEL)

    async def copy(meta: ObjectMeta) -> None:
        async with limiter:
            target = new_prefix + meta.key[len(old_prefix) :]
            if move_link is not None and meta.object_type == "Symlink":
                await move_link(meta, target)
            else:
                await copy_any(
                    writes, meta.key, target, size=meta.size, etag=meta.etag, ledger=ledger
                )

    try:
        async with trio.open_nursery() as nursery:
            for meta in objects:
                nursery.start_soon(copy, meta)
    except BaseExceptionGroup as group:
        first = next((e for e in group.exceptions if not isinstance(e, trio.Cancelled)), None)
        if first is None:
            raise
        raise first from None
    await writes.delete_objects([m.key for m in objects])
    return len(objects)
