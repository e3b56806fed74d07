"""Rename of one file or link: its object moves to the new key, then the old key goes.

A file is copied server-side (CopyObject fenced on the listed ETag; by parts above its limit,
ossmount.write.bigcopy), a link is made again (fs/linkattrs.py `move_link`), then the source
is deleted: not atomic, a crash in between leaves both keys. A file being written under the
new name (`victim`) is replaced, as by unlink: its handles keep working on its bytes, and
none of its commits may land over the file moved here. Its lock, held through the copy, makes
a running commit land first and later ones wait, then find it orphaned.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace

from ossmount.fs.attrs import is_symlink
from ossmount.fs.linkattrs import move_link
from ossmount.fs.staged import Staged
from ossmount.fs.staging import Staging
from ossmount.fs.stamps import now_s
from ossmount.oss.models import ObjectMeta
from ossmount.write.bigcopy import copy_any

__all__ = ["move_file"]


async def move_file(
    staging: Staging, meta: ObjectMeta, new_key: str, root_prefix: str, *,
    victim: Staged | None, noreplace: bool,
) -> ObjectMeta:  # fmt: skip
    """Move object `meta` to `new_key`; what the new key now holds."""
    writes = staging.uploader.writes
    async with victim.lock if victim is not None else contextlib.nullcontext():
        if is_symlink(meta):
            moved = await move_link(
                writes, staging.known, meta, new_key, root_prefix, forbid_overwrite=noreplace
            )
        else:
            copied = await copy_any(writes, meta.key, new_key, size=meta.size, etag=meta.etag,
                                    ledger=staging.uploader.ledger,
                                    forbid_overwrite=noreplace)  # fmt: skip
            staging.known.moved(meta.key, new_key, copied.etag)
            moved = replace(meta, key=new_key, etag=copied.etag, mtime_ns=now_s(),
                            crc64=copied.crc64 or meta.crc64)  # fmt: skip
        if victim is not None:
            staging.unlinked(victim)
            await staging.disown(victim)  # its sealed write-back journal must not land later
    await writes.delete_object(meta.key)
    return moved
