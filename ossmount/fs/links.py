"""OSS symlink objects as POSIX symlinks: the target path, and a cache of it per link version.

OSS follows symlinks on GET and HEAD but lists the link itself (size 0), so serving it as a
regular file would hand out an empty or mismatched file; as a symlink the kernel resolves it to
the target's own entry, with the target's size and bytes. The target is a key; it is shown
relative to the link's own directory and never leaves the mount root.

`SymlinkTargets` keeps the answer per inode for the link's ETag: a link rewritten in place (new
ETag) is resolved again. Touched only on the trio thread; the one await (the GetSymlink call and
the shadowing probe) may interleave with another readlink of the same inode, and the later
answer simply overwrites the earlier, both being valid for the ETag they were fetched under.
"""

from __future__ import annotations

import logging
import posixpath
from typing import Protocol

from ossmount.fs.errors import LinkOutsideMount
from ossmount.oss.models import ObjectMeta
from ossmount.tree.listing import Namespace
from ossmount.tree.names import split_key

__all__ = ["SymlinkSource", "SymlinkTargets", "link_target"]

log = logging.getLogger(__name__)


class SymlinkSource(Protocol):
    async def get_symlink(self, key: str) -> str: ...


def link_target(
    link_key: str, target_key: str, root_prefix: str, shown_name: str | None = None
) -> str | None:
    """The POSIX target of symlink `link_key` → `target_key`: relative to the link's
    directory, and never leaving the mount root. `shown_name` replaces the target's last
    component when the object is shown under another name (`x.ossfile`, shadowed by `x/`).

    None when the target is outside the mounted prefix or has no path under it (a `..` or
    empty component: OSS takes the target literally as a key, it does not resolve it). A
    plain `relpath` of the keys would turn `other/x` under a prefix mount, or `a/../../etc`,
    into a path that climbs out of the mount onto the local disk.
    """
    link = split_key(link_key, root_prefix)
    target = split_key(target_key, root_prefix)
    if link is None or target is None or target_key.endswith("/"):
        return None
    if shown_name is not None:
        target = (*target[:-1], shown_name)
    return posixpath.relpath("/".join(target), "/".join(link[:-1]) or ".")


class SymlinkTargets:
    """readlink answers, fetched with GetSymlink once per link version (see module doc)."""

    def __init__(self, source: SymlinkSource, namespace: Namespace, bucket: str) -> None:
        self._source = source
        self._ns = namespace
        self._bucket = bucket
        self._cache: dict[int, tuple[str, str]] = {}  # inode -> (link ETag, target)

    def forget(self, inode: int) -> None:
        """The kernel evicted `inode`: its next readlink may fetch the target again."""
        self._cache.pop(inode, None)

    async def target(self, inode: int, meta: ObjectMeta) -> str:
        """The POSIX target of the symlink object `meta` (inode `inode`).

        Raises LinkOutsideMount when the target has no path under the mount root.
        """
        cached = self._cache.get(inode)
        if cached is not None and cached[0] == meta.etag:
            return cached[1]
        root = self._ns.root_prefix
        target_key = await self._source.get_symlink(meta.key)
        parts = split_key(target_key, root)
        shown = None
        if parts is not None and not target_key.endswith("/"):
            shown = await self._ns.shown_file_name("/".join(parts[:-1]), parts[-1], target_key)
        target = link_target(meta.key, target_key, root, shown)
        if target is None:
            log.warning(
                "symlink object %r points to %r, which has no path under the mount "
                "(prefix %r): readlink fails with EIO rather than give a path leaving it",
                meta.key,
                target_key,
                root,
            )
            raise LinkOutsideMount(
                f"oss://{self._bucket}/{meta.key}", f"target {target_key!r} is outside the mount"
            )
        self._cache[inode] = (meta.etag, target)
        return target
