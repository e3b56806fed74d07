"""A symlink's owner and times, kept on its OSS symlink object as ossfs 1.x keeps a link's.

ossfs 1.x (src/s3fs.cpp `s3fs_symlink`, `s3fs_chown`, `s3fs_utimens`) stores a link with
`x-oss-meta-mode` S_IFLNK|0777, `-uid`/`-gid` of the caller and `-atime`, `-mtime`, `-ctime`
(now); lchown and utimensat(AT_SYMLINK_NOFOLLOW) reach its chown/utimens, which copy the
link's object onto itself with the new values (and the times of fs/stamps.py). Our links
are PutSymlink objects (ossfs 1.x writes a plain object holding the target instead); they
carry the same `x-oss-meta-*`, which PutSymlink stores as the link's own user metadata, so
`ls -l` shows the same owner and times in both mounts. With the
mode S_IFLNK ossfs takes the object for a link, so it also gets ossfs's own copy of the target
(`x-oss-meta-symlink-target`, its "new symlink format": readlink in ossfs reads it from the
header whatever its options; without it ossfs would read the body, and GET follows an OSS
link to the target's bytes). OSS answers a HEAD of a link with the link's own x-oss-meta-*,
which is what ossfs reads. That copy is the POSIX target our readlink answers at creation.
A rename (`move_link`) keeps that POSIX target, as a moved relative link does, and points the
new OSS link at the key it now names: a tree renamed with its internal links keeps them.

How a value is changed: not by CopyObject onto itself (whether OSS copies a link as a link or
follows it is not documented, and a HEAD answers the target's ETag, so neither can be fenced on
the link's own), but by GetSymlink (the target key, the link's own ETag and user metadata) then
PutSymlink of the same target with the metadata and the new values over it. The ETag GetSymlink
answers must be the one the namespace knows (else PreconditionFailed, as a fenced copy fails);
between the two requests the link is not fenced (PutSymlink takes no If-Match): another client
repointing it in that window is undone, the risk of ossfs's own HEAD-then-copy. No GetSymlink
for a link this mount made or changed in the last 30 s with that ETag (`KnownMeta` holds its
headers and target). Requests: one GetSymlink, plus one PutSymlink when a value other than
the ctime changes.
"""

from __future__ import annotations

import posixpath
import stat
from urllib.parse import quote

from ossmount.fs.attrstore import KnownMeta
from ossmount.fs.links import link_target
from ossmount.fs.shown import Posix, posix_of
from ossmount.fs.stamps import now_s, only_ctime_differs, stamped
from ossmount.oss._errors import PreconditionFailed
from ossmount.oss._writes import OssWrites
from ossmount.oss.models import ObjectMeta

__all__ = [
    "LINK_MODE",
    "OSSFS_TARGET",
    "make_link",
    "move_link",
    "ossfs_target",
    "store_link_attrs",
]

LINK_MODE = stat.S_IFLNK | 0o777  # what ossfs stores as a link's x-oss-meta-mode
# Where `KnownMeta` keeps a link's target key with its headers (the header PutSymlink sends it
# in; never sent from there).
TARGET = "x-oss-symlink-target"
OSSFS_TARGET = "x-oss-meta-symlink-target"


def ossfs_target(posix_target: str) -> str:
    """ossfs 1.x's `x-oss-meta-symlink-target` for a link to `posix_target`: its "new
    symlink format" with the target in the header (src/fdcache_entity.cpp SetSymlinkAttr:
    `type:length:urlEncode(target)`, the length in bytes; src/string_util.cpp urlEncode keeps
    `/`, `.`, `-`, `_`, `~` and alphanumerics)."""
    raw = posix_target.encode("utf-8", "surrogateescape")
    return f"header:{len(raw)}:{quote(raw, safe='/')}"


async def make_link(
    writes: OssWrites, known: KnownMeta, key: str, target_key: str, root_prefix: str,
    uid: int | None, gid: int | None,
) -> ObjectMeta:  # fmt: skip
    """symlink: the PutSymlink object `key` -> `target_key`, carrying ossfs's mode, the
    caller's owner, the time and ossfs's copy of the target (what our readlink answers)."""
    now = now_s()  # ossfs: time(NULL)
    headers = Posix(LINK_MODE, uid, gid, now, now, now).meta()
    shown = link_target(key, target_key, root_prefix)
    if shown is not None:
        headers[OSSFS_TARGET] = ossfs_target(shown)
    etag = await writes.put_symlink(key, target_key, meta=headers)
    known.wrote(key, etag, {**headers, TARGET: target_key})
    return ObjectMeta(key, 0, etag, now, None, object_type="Symlink")


async def store_link_attrs(
    writes: OssWrites, known: KnownMeta, meta: ObjectMeta, posix: Posix
) -> ObjectMeta | None:
    """lchown/utimensat(AT_SYMLINK_NOFOLLOW) of the link `meta`: what `posix` sets (a mode
    cannot be set on a Linux link; one given keeps the link type), with the times ossfs
    stores beside it (fs/stamps.py); its new metadata, or None when nothing but the ctime
    would change (no PutSymlink)."""
    if posix == Posix():
        return None
    headers = known.headers(meta.key, meta.etag)
    if headers is not None and TARGET in headers:
        target = headers.pop(TARGET)
    else:
        target, etag, headers = await writes.symlink_headers(meta.key)
        if etag != meta.etag:
            changed = f"the symlink's ETag is {etag}, not {meta.etag}"
            raise PreconditionFailed(
                412, "PreconditionFailed", changed, bucket=writes.bucket, key=meta.key
            )
        known.wrote(meta.key, etag, {**headers, TARGET: target})
    stored = stamped(posix, posix_of(headers), meta.mtime_ns)
    mode = None if stored.mode is None else stat.S_IFLNK | (stored.mode & 0o7777)
    updates = stored._replace(mode=mode).meta()
    if only_ctime_differs(updates, headers):
        return None
    headers.update(updates)
    etag = await writes.put_symlink(meta.key, target, meta=headers)
    known.wrote(meta.key, etag, {**headers, TARGET: target})
    now = now_s()  # as listings show it
    return ObjectMeta(meta.key, 0, etag, now, None, object_type="Symlink")


async def move_link(
    writes: OssWrites, known: KnownMeta, meta: ObjectMeta, new_key: str, root_prefix: str,
    *, forbid_overwrite: bool = False,
) -> ObjectMeta:  # fmt: skip
    """rename of the link `meta` (alone or inside a directory) to `new_key`: a new PutSymlink
    with its metadata, whose target keeps the POSIX target it showed, as a moved relative link
    does (a tree renamed with its internal links keeps them pointing inside it). CopyObject is
    not used: whether OSS copies a link or follows it is not documented. A target this mount
    cannot show (outside the mounted prefix) is kept as the key it is. The caller deletes the
    old key. Fenced as `store_link_attrs` is: GetSymlink must answer the ETag listed."""
    target, etag, headers = await writes.symlink_headers(meta.key)
    if etag != meta.etag:
        changed = f"the symlink's ETag is {etag}, not {meta.etag}"
        raise PreconditionFailed(
            412, "PreconditionFailed", changed, bucket=writes.bucket, key=meta.key
        )
    shown = link_target(meta.key, target, root_prefix)
    if shown is not None:
        new_dir = posixpath.dirname(new_key[len(root_prefix) :])
        resolved = posixpath.normpath(posixpath.join(new_dir, shown))
        if resolved not in ("", ".", "..") and not resolved.startswith("../"):
            target = root_prefix + resolved
    etag = await writes.put_symlink(
        new_key, target, meta=headers, forbid_overwrite=forbid_overwrite
    )
    known.wrote(new_key, etag, {**headers, TARGET: target})
    return ObjectMeta(new_key, 0, etag, now_s(), None, object_type="Symlink")
