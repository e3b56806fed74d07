"""setattr's mode, owners and times: where each goes (the size is the staging's business).

Which times a chmod, chown or utimens stores beside what it sets, and their values, follow
ossfs 1.x (fs/stamps.py): resolved against the object's headers where it is stored on the
object (fs/attrstore.py, which knows them), against what the mount shows for a staged file.

* A file being written (`Staged`, dirty or unlinked): into its fields, so they ride with
  its next commit (PutObject or the multipart's Initiate, and the journal: a crash or a
  write-back upload keeps them; for a file a write-back close sealed, the owed attributes'
  log: Staging.attrs_set) and are shown at once (fs/shown.py). No request.
* A staged file no commit will send again (closed and committed but not released yet, as
  when rsync's utimensat follows its close; or opened and not written): its fields too,
  and stored now like a closed file, under its lock, so a running commit (whose metadata
  was fixed when it started) finishes first.
* A closed file: stored on the object (fs/attrstore.py); one this mount just wrote owes
  them, sent a moment later in one copy, or in a rename's (fs/owedattrs.py).
* A directory: stored on its `dir/` marker, made if it has none (fs/dirattrs.py); owed
  likewise when this mount just wrote the marker.
* A symlink (lchown, utimensat with AT_SYMLINK_NOFOLLOW): on its symlink object
  (fs/linkattrs.py).
"""

from __future__ import annotations

import stat
from typing import TYPE_CHECKING

from ossmount.fs.attrs import is_symlink
from ossmount.fs.attrstore import store_attrs
from ossmount.fs.dirattrs import store_dir_attrs
from ossmount.fs.linkattrs import store_link_attrs
from ossmount.fs.shown import Posix
from ossmount.fs.stamps import stamped
from ossmount.oss.models import ObjectMeta

if TYPE_CHECKING:
    from ossmount.fs.attrs import Attr
    from ossmount.fs.shown import AttrView
    from ossmount.fs.staged import Staged
    from ossmount.fs.staging import Staging
    from ossmount.tree.listing import Namespace
    from ossmount.tree.node import Node

__all__ = ["set_attrs"]


async def set_attrs(
    staging: Staging, ns: Namespace, view: AttrView, inode: int, posix: Posix
) -> None:
    """Keep what setattr set on `inode` (`posix`: None where it set nothing; its ctime is
    ignored; see the module docstring)."""
    staged = staging.by_inode.get(inode)
    if staged is None:
        await _store(staging, ns, view, await ns.getattr(inode), posix)
        return
    mode, uid, gid, mtime_ns, _, _ = posix
    if mtime_ns is not None:
        staged.mtime_ns, staged.mtime_stamped = mtime_ns, False
    if mode is not None:
        staged.mode, staged.keep_mode = stat.S_IFREG | (mode & 0o7777), False
    if uid is not None:
        staged.uid = uid
    if gid is not None:
        staged.gid = gid
    if staging.carries_attrs(staged):
        _take_times(staged, stamped(posix, _times(view(ns.get(inode))), None))
        staging.attrs_set(staged)  # a crash before the upload keeps them too
        return
    async with staged.lock:
        if staging.carries_attrs(staged):
            _take_times(staged, stamped(posix, _times(view(ns.get(inode))), None))
            return
        stored = await _store(staging, ns, view, ns.get(inode), posix)
        if stored is not None:
            staging.restored(staged, stored)
        # Resolved against the object's own headers (what the mount shows may be defaults):
        # the file takes the times it now carries, which a later commit sends again.
        known = view.known(ns.get(inode))
        if known is not None:
            _take_times(staged, known)


def _times(attr: Attr) -> Posix:
    return Posix(mtime_ns=attr.mtime_ns, atime_ns=attr.atime_ns, ctime_ns=attr.ctime_ns)


def _take_times(staged: Staged, posix: Posix) -> None:
    """`staged`'s times from those of `posix` that are set."""
    if posix.mtime_ns is not None:
        staged.mtime_ns = posix.mtime_ns
    if posix.atime_ns is not None:
        staged.atime_ns = posix.atime_ns
    if posix.ctime_ns is not None:
        staged.ctime_ns = posix.ctime_ns


async def _store(
    staging: Staging, ns: Namespace, view: AttrView, node: Node, posix: Posix
) -> ObjectMeta | None:
    writes, known = staging.uploader.writes, staging.known
    if node.is_dir:
        await store_dir_attrs(writes, known, view, node, posix, defer=staging.owed.defers)
        return None
    if node.meta is None:
        return None
    if is_symlink(node.meta):
        stored = await store_link_attrs(writes, known, node.meta, posix)
    else:
        async with staging.owed.copying(node.meta.key):  # no commit of it lands meanwhile
            stored = await store_attrs(writes, node.meta, posix, known=known, request=True,
                                       defer=staging.owed.defers)  # fmt: skip
    if stored is not None:
        ns.learned(node.path, stored)
    return stored
