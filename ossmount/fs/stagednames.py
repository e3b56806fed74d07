"""How files being written appear among the names (`-o rw`): OSS does not know them until
their first commit, so the namespace learns them from the staging (fs/staging.py).

* Listed and looked up before their first commit (`add_staged`); their table entries are
  pinned while they are staged (Staging.pins), so even one nobody else holds (no kernel
  reference, no open directory, no handle: a file whose upload failed) keeps its number.
* Shown when a previous process left them sealed and this mount's start could not upload
  them (`show_unsent`).
* Gone, from our names and the kernel's, when the last close dropped a new file whose
  commit failed (`forget_dropped`).

Functions over the FileSystem's parts; trio thread only, no awaits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from ossmount.fs.staged import Staged
from ossmount.fs.staging import Staging
from ossmount.oss.models import ObjectMeta
from ossmount.tree.inodes import ROOT_INODE
from ossmount.tree.listing import DirSnapshot, Namespace
from ossmount.tree.names import split_key, split_path
from ossmount.tree.node import Node
from ossmount.write import StagedFile
from ossmount.write.journal import JournalRecord

__all__ = ["add_staged", "forget_dropped", "put_staged", "show_unsent"]

log = logging.getLogger(__name__)


def show_unsent(
    ns: Namespace, staging: Staging, unsent: Iterable[tuple[StagedFile, JournalRecord]]
) -> None:
    """Files a previous process sealed whose upload failed at this mount's start
    (fs/recovery.py) are shown as staged, as closed (Staging.restore), before the mount is
    ready: a name whose acknowledged version is not on OSS yet must neither show the older
    object (or nothing) nor be written anew over it. A key with no path under the mount
    root, or a second journal of one key (the later seal is shown), stays on disk unshown
    for the next mount."""
    for files, record in sorted(unsent, key=lambda kept: kept[1].ctime_ns or 0, reverse=True):
        parts = split_key(record.key, ns.root_prefix)
        if parts is None or "/".join(parts) in staging.by_path:
            log.warning("%s: staged file %s is not shown in this mount (its key has no path "
                        "under the mount root, or a later one of it is); the next mount "
                        "uploads it", staging.where(record.key), files.data)  # fmt: skip
            continue
        path = "/".join(parts)
        node = put_staged(ns, path, record.key, record.size, record.mtime_ns or record.ctime_ns)
        staging.restore(node.inode, path, files, record)


def put_staged(ns: Namespace, path: str, key: str, size: int, mtime_ns: int | None) -> Node:
    """The table entry of a staged file at `path` (its key, size and mtime; no ETag: not
    on OSS as staged)."""
    mtime = mtime_ns or time.time_ns()
    return ns.table.put(path, False, size, mtime, ObjectMeta(key, size, "", mtime))


def add_staged(ns: Namespace, snapshot: DirSnapshot, staging: Staging) -> None:
    """Files being created in the directory are listed before their first commit (OSS does
    not know them yet), pinned like the listed entries, in name order."""
    prefix = f"{snapshot.path}/" if snapshot.path else ""
    listed = {node.name for node in snapshot.entries}
    extra = []
    for path, inode in staging.by_path.items():
        name = path[len(prefix) :]
        if path.startswith(prefix) and "/" not in name and name not in listed:
            ns.table.pin(inode)
            extra.append(ns.get(inode))
    if extra:
        snapshot.entries = tuple(sorted((*snapshot.entries, *extra), key=lambda n: n.name))


def forget_dropped(
    ns: Namespace, staging: Staging, forget_name: Callable[[int, str], None], staged: Staged
) -> None:
    """After a last close: if it dropped changes whose commit failed (Staging.release), the
    name shows the object as it was, so a new file that never reached OSS is gone, from our
    names and from the kernel's (which had it from the create: a new `open(O_CREAT)`, a `cp`
    run again, found that entry and failed with ENOENT)."""
    if not staged.dirty or staged.orphan or staged.handles or staging.holds(staged):
        return
    if staged.committed is None and not (staged.base_etag or staged.replaces):
        dir_path, name = split_path(staged.path)
        parent = ns.table.find(dir_path, True) if dir_path else ROOT_INODE
        ns.deleted(staged.inode, staged.path)
        if parent is not None:
            forget_name(parent, name)  # the kernel's entry (KernelCache.forget_name)
