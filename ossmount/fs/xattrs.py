"""Extended attributes: `user.ossmount.*` tell a user (and the demo) what the mount knows of a
file; every other namespace does not exist here.

| name                  | value                                                           |
|-----------------------|-----------------------------------------------------------------|
| user.ossmount.key     | the object's key (a shadowed `a.ossfile` shows `a`)             |
| user.ossmount.etag    | its ETag, quotes included, as OSS sent it                       |
| user.ossmount.state   | verified, unverifiable, partial, corrupt or uncached; a file    |
|                       | being written (-o rw): written (not committed), uploading,      |
|                       | committed, upload-failed or staging-failed                      |
| user.ossmount.crc64   | the server's CRC-64 of the cached version, when known           |

Directories have none; other `user.*` names are absent (ENODATA).

They are read by name only: listxattr lists none (CephFS hides its virtual `ceph.*` attributes
the same way). Listed, they were copied as real attributes onto local files by `cp -a` and
`rsync -X` out of the mount (a local copy then said `verified`), and `rsync -aX` into the
mount failed (exit 23) trying to remove them from every file it wrote.

Names outside `user.` (`security.selinux`, `system.posix_acl_access`, `trusted.*`) answer
"not supported" (EOPNOTSUPP), not "absent". Why (measured with strace on coreutils 9.1): `ls -l`
asks every entry for `security.selinux` and `system.posix_acl_access`; after ENODATA it asks
the next entry again, after EOPNOTSUPP it remembers the device as unsupported and stops
asking, so a `ls -lR` of 10,000 files costs two requests instead of 20,000. s3fs and ossfs2
answer the same. The kernel does not cache the answer itself: only an ENOSYS from the daemon
makes it stop sending getxattr, and that would also switch off the `user.ossmount.*` names.
"""

from __future__ import annotations

from collections.abc import Callable

from ossmount.crc64 import format_crc
from ossmount.fs.errors import AttributeNotSupported, NoSuchAttribute
from ossmount.tree.node import Node

__all__ = ["XATTRS", "check_namespace", "xattr_value"]

XATTR_STATE = "user.ossmount.state"
XATTR_ETAG = "user.ossmount.etag"
XATTR_KEY = "user.ossmount.key"
XATTR_CRC = "user.ossmount.crc64"
XATTRS = (XATTR_STATE, XATTR_ETAG, XATTR_KEY, XATTR_CRC)

CachedState = Callable[[Node], tuple[str, int | None]]


def check_namespace(name: str, inode: int) -> None:
    """Raise AttributeNotSupported for a name outside `user.`, before any lookup: the kernel
    asks `security.capability` before every write(2) to a file (file_remove_privs; it keeps
    no answer but ENOSYS, which would end the user.* attributes too), 1,024 times a GiB."""
    if not name.startswith("user."):
        raise AttributeNotSupported(f"inode {inode}", f"no {name.partition('.')[0]}.* here")


def xattr_value(node: Node, name: str, cached_state: CachedState, where: str) -> bytes:
    """The value of `name` on `node`; `where` names the object in errors.

    Raises AttributeNotSupported outside the `user.` namespace, NoSuchAttribute for a name
    the entry does not have.
    """
    if not name.startswith("user."):
        raise AttributeNotSupported(where, f"no {name.partition('.')[0]}.* attributes here")
    meta = node.meta
    if node.is_dir or meta is None or name not in XATTRS:
        raise NoSuchAttribute(where, f"no attribute {name!r}")
    if name == XATTR_KEY:
        return meta.key.encode()
    if name == XATTR_ETAG:
        return meta.etag.encode()
    state, crc = cached_state(node)
    if name == XATTR_STATE:
        return state.encode()
    return format_crc(crc).encode()
