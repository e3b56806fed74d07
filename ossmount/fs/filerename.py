"""Rename of one file or link: its object moves to the new key, then the old key goes.

A file is copied server-side (CopyObject fenced on the listed ETag; by parts above its limit,
ossmount.write.bigcopy), with a Content-Type that follows the new name where it was a default
(fs/movetype.py), a link is made again (fs/linkattrs.py `move_link`), then the source
is deleted: not atomic, a crash in between leaves both keys. Attributes the source owes
(set moments ago, not sent yet: fs/owedattrs.py) ride in the copy, which then REPLACEs.
A file being written under the new name (`victim`) is replaced, as by unlink: its handles
keep working on its bytes, and none of its commits may land over the file moved here. Its
lock, held through the copy, makes a running commit land first and later ones wait, then
find it orphaned.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace

from ossmount.fs.attrs import is_symlink
from ossmount.fs.linkattrs import move_link
from ossmount.fs.movetype import renames_type, retyped
from ossmount.fs.staged import Staged
from ossmount.fs.staging import Staging
from ossmount.fs.stamps import now_s
from ossmount.oss.carriedcrc import carry_crc
from ossmount.oss.models import ObjectMeta
from ossmount.write.bigcopy import COPY_LIMIT, copy_any

__all__ = ["move_file"]


async def move_file(
    staging: Staging, meta: ObjectMeta, new_key: str, root_prefix: str, *,
    victim: Staged | None, noreplace: bool,
) -> ObjectMeta:  # fmt: skip
    """Move object `meta` to `new_key`; what the new key now holds."""
    writes = staging.uploader.writes
    async with victim.lock if victim is not None else contextlib.nullcontext():
        # What the object this replaces owes is moot, but a copy sending it lands first:
        # else it lands after this move, over what was moved here (a stress run: seed 130,
        # a rename over a file 0.1 s after that file's owed copy began). None starts
        # meanwhile; the debt is paid by the move, or given back if it fails.
        async with staging.owed.taken(new_key):
            moved = await _move(staging, meta, new_key, root_prefix, noreplace=noreplace)
        if victim is not None:
            staging.unlinked(victim)
            await staging.disown(victim)  # its sealed write-back journal must not land later
    await writes.delete_object(meta.key)
    return moved


async def _move(
    staging: Staging, meta: ObjectMeta, new_key: str, root_prefix: str, *, noreplace: bool
) -> ObjectMeta:
    """The new key made (a copy of a file, a link made again); the old one still there."""
    writes = staging.uploader.writes
    if is_symlink(meta):
        return await move_link(
            writes, staging.known, meta, new_key, root_prefix, forbid_overwrite=noreplace
        )
    # Attributes the source owes ride in this copy (fs/owedattrs.py): one sending
    # them lands first, else the copy takes them over (and gives them back if it fails).
    async with staging.owed.taken(meta.key) as owed:
        owed_headers = owed[1] if owed is not None and owed[0] == meta.etag else None
        headers = await _retyped_headers(staging, meta, new_key, owed_headers)
        headers = _with_crc(meta, headers)
        copied = await copy_any(writes, meta.key, new_key, size=meta.size,
                                etag=meta.etag, ledger=staging.uploader.ledger,
                                forbid_overwrite=noreplace, replace=headers)  # fmt: skip
    staging.known.forget(new_key)  # what the replaced object owed: paid by this copy
    staging.known.moved(meta.key, new_key, copied.etag)
    if headers is not None:
        staging.known.wrote(new_key, copied.etag, headers)
    return replace(meta, key=new_key, etag=copied.etag, mtime_ns=now_s(),
                   crc64=copied.crc64 or meta.crc64)  # fmt: skip


def _with_crc(meta: ObjectMeta, headers: dict[str, str] | None) -> dict[str, str] | None:
    """The copy's metadata with the source's CRC-64 carried (oss/carriedcrc.py), which the
    copy may not get from the server, when it replaces the metadata anyway (`rsync`'s
    temporary file owes the times and mode rsync set on it). Else it is copied as it is,
    with any CRC-64 the source carried: replacing metadata this mount only remembers could
    undo another client's chmod of the object meanwhile."""
    if headers is None or meta.crc64 is None or meta.size > COPY_LIMIT:  # by parts: new ETag
        return headers
    return {**headers, **carry_crc(meta.crc64, meta.etag)}


async def _retyped_headers(
    staging: Staging, meta: ObjectMeta, new_key: str, owed: dict[str, str] | None
) -> dict[str, str] | None:
    """What the copy to `new_key` replaces the metadata with: what the source owes (`owed`),
    with a type that follows the new name (fs/movetype.py); None: copied as it is. The
    source's metadata: what it owes, else what this mount sent moments ago, else one HEAD
    fenced on the listed ETag."""
    if not renames_type(meta.key, new_key):
        return owed
    headers = owed if owed is not None else staging.known.headers(meta.key, meta.etag)
    if headers is None:
        headers, _ = await staging.uploader.writes.kept_headers(meta.key, if_match=meta.etag)
    return retyped(meta.key, new_key, headers) or owed
