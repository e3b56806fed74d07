"""chmod, chown and utimens of a file nobody has open for writing: stored as ossfs stores them.

ossfs 1.x (src/s3fs.cpp s3fs_chmod/s3fs_chown/s3fs_utimens) HEADs the object and copies it
onto itself with `x-oss-metadata-directive: REPLACE`, the object's metadata plus the changed
`x-oss-meta-mode` / `-uid` / `-gid` / `-mtime`; we do the same (`OssWrites.replace_meta`),
fenced on the ETag the namespace knows, so a bucket written by either reads the same in both.
Cost: one HEAD, plus one CopyObject when a value really changes (a chmod to the mode the
object already has costs the HEAD only). A file open for writing, or whose write-back upload
is pending, carries mode and mtime with its upload instead (fs/staging.py): no request.

The copy keeps the bytes and (on OSS and the emulator) the ETag, so the version the cache
holds stays the current one; the CRC-64 may be missing from the copy's replies, so the known
one is kept.
"""

from __future__ import annotations

import stat
import time

from ossmount.oss._writes import OssWrites, posix_meta
from ossmount.oss.models import ObjectMeta

__all__ = ["store_attrs"]


async def store_attrs(
    writes: OssWrites,
    meta: ObjectMeta,
    *,
    mtime_ns: int | None,
    mode: int | None,
    uid: int | None,
    gid: int | None,
) -> ObjectMeta | None:
    """Store what changed on `meta`'s object; its new metadata, or None if nothing was copied."""
    updates = posix_meta(
        mtime_ns=mtime_ns,
        mode=None if mode is None else stat.S_IFREG | (mode & 0o7777),
        uid=uid,
        gid=gid,
    )
    if not updates:
        return None
    copied = await writes.replace_meta(meta.key, updates, if_match=meta.etag)
    if copied is None:
        return None
    now = time.time_ns() // 1_000_000_000 * 1_000_000_000  # as listings show it
    crc = copied.crc64 if copied.crc64 is not None else meta.crc64
    return ObjectMeta(meta.key, meta.size, copied.etag, now, crc, meta.object_type,
                      meta.storage_class)  # fmt: skip
