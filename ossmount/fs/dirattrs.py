"""A directory's mode, owner and times, kept on its `dir/` marker object as ossfs 1.x keeps them.

ossfs (src/s3fs.cpp `create_directory_object`, `s3fs_chmod`/`_chown`/`_utimens`):
    * mkdir PUTs the `dir/` marker with `x-oss-meta-mode`, `-uid`, `-gid` (the caller's) and
      `-atime`, `-mtime`, `-ctime` (now); so do we.
    * chmod, chown and utimens of a directory whose marker exists copy the marker onto itself
      with REPLACE, as for a file (with the times of fs/stamps.py); of a directory with no
      marker (an "implicit" one, only keys below it) ossfs makes the marker, carrying the new
      attributes (ctime now; a utimens's times as fs/stamps.py says, from the ones shown;
      ossfs also writes the shown owner and mtime, which for us are the mount's defaults and
      the epoch: not written). We do the same:
      PutObject with `x-oss-forbid-overwrite` (a marker someone made meanwhile is not
      replaced: it is then updated by the copy). The directory then outlives its last entry
      and `rmdir` can remove it, as with ossfs.
    * The mount's root has no marker of ours: its attributes are not stored, and setting them
      is not refused either (`rsync -a src/ mnt/` sets them), only ignored. ossfs refuses
      them with EIO ("Could not change mode for mount point"), failing that rsync.

Requests: a marker this mount wrote in the last 30 s costs no HEAD (fs/attrstore.py
`KnownMeta`), and its copy goes a moment later, one for all the attributes set meanwhile
(`tar x` sets a directory's times, owner and mode in a row: fs/owedattrs.py); one it wrote
before costs the fenced HEAD of `store_attrs`; any other, one HEAD to find it (and its ETag)
plus that one. What was stored is shown (fs/shown.py): the marker key has no ETag in
listings, so it is trusted until this mount deletes or renames it (with --own-attrs, also
until the directory's own listing shows another marker, or none: fs/ownattrs.py).
"""

from __future__ import annotations

import stat
from typing import TYPE_CHECKING

from ossmount.fs.attrstore import KnownMeta, store_attrs
from ossmount.fs.shown import Posix
from ossmount.fs.stamps import now_s, stamped
from ossmount.oss import NoSuchKey
from ossmount.oss._errors import OssError, PreconditionFailed
from ossmount.oss._writes import FileAlreadyExists, OssWrites
from ossmount.oss.models import ObjectMeta

if TYPE_CHECKING:
    from ossmount.fs.shown import AttrView
    from ossmount.tree.node import Node

__all__ = ["make_dir", "store_dir_attrs"]


async def make_dir(
    writes: OssWrites,
    known: KnownMeta,
    key: str,
    *,
    mode: int,
    uid: int | None,
    gid: int | None,
) -> None:
    """mkdir: the `key` (ending in "/") marker carrying the new directory's attributes."""
    now = now_s()  # ossfs: time(NULL)
    headers = Posix(stat.S_IFDIR | (mode & 0o7777), uid, gid, now, now, now).meta()
    put = await writes.put_object(key, b"", meta=headers)
    known.wrote(key, put.etag, headers)


async def store_dir_attrs(
    writes: OssWrites, known: KnownMeta, view: AttrView, node: Node, posix: Posix, *,
    defer: bool = False,
) -> None:  # fmt: skip
    """chmod/chown/utimens of directory `node`: what `posix` sets (see the module docstring;
    `defer`: as `store_attrs`)."""
    key = view.marker_key(node)
    if not key:
        return  # the mount's root

    async def copy(etag: str) -> None:
        marker = ObjectMeta(key, 0, etag, 0)
        await store_attrs(writes, marker, posix, known=known, kind=stat.S_IFDIR, request=True,
                          defer=defer)  # fmt: skip

    etag = known.shown.etag(key)
    if etag:  # "": --own-attrs learnt that it has no marker (fs/ownattrs.py)
        try:
            await copy(etag)
            return
        except (PreconditionFailed, NoSuchKey):
            pass  # changed or removed by someone else since: look again
    for _ in range(2):
        try:
            etag = (await writes.client.head(key)).etag
        except NoSuchKey:
            attr = view(node)
            shown = attr.mode if posix.mode is None else posix.mode
            current = Posix(mtime_ns=attr.mtime_ns, atime_ns=attr.atime_ns,
                            ctime_ns=attr.ctime_ns)  # fmt: skip
            stored = stamped(posix, current, None)
            headers = stored._replace(mode=stat.S_IFDIR | (shown & 0o7777)).meta()
            try:
                put = await writes.put_object(key, b"", meta=headers, forbid_overwrite=True)
            except FileAlreadyExists:
                continue  # made meanwhile: update that one
            known.wrote(key, put.etag, headers)
            return
        await copy(etag)
        return
    raise OssError(409, "MarkerRace", "the directory marker kept appearing and vanishing "
                   "while its attributes were stored", bucket=writes.bucket, key=key)  # fmt: skip
