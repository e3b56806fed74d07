"""A CRC-64 carried by a copy this mount makes, for servers whose copies have none.

OSS computes the CRC-64 of what is uploaded, but "objects created by copy operations such as
CopyObject and UploadPartCopy may not have a CRC-64 value" (the OSS CRC-64 page), and the
emulator's have none. A rename is a copy, so `rsync -a` (which renames each file it wrote)
left every file unverifiable to later readers. When this mount copies an object to another
key with its metadata replaced (fs/filerename.py), it knows the source's CRC-64, taken from
the server for that very version, and the copy is fenced on that version's ETag; so it
stores it on the copy as `x-oss-meta-ossmount-crc64: <crc>;<ETag>`. A reader takes it only
when the server sends no CRC-64 and the object's ETag is the one named: any rewrite of the
content (by any client, even one that keeps the user metadata as ossfs 1.x does) changes the
ETag, so a stale value is never believed. A copy keeps the source's ETag (OSS and the
emulator), so the value holds on the copy and on its metadata-only copies after it.
"""

from __future__ import annotations

__all__ = ["CARRIED_CRC", "carried_crc", "carry_crc"]

CARRIED_CRC = "x-oss-meta-ossmount-crc64"


def carry_crc(crc: int, etag: str) -> dict[str, str]:
    """The header carrying `crc`, the CRC-64 of the version whose ETag is `etag`."""
    return {CARRIED_CRC: f"{crc};{_bare(etag)}"}


def carried_crc(value: str | None, etag: str) -> int | None:
    """The CRC-64 a `CARRIED_CRC` header value gives an object whose ETag is `etag`; None
    if there is none, it is unreadable, or it names another version."""
    if not value:
        return None
    crc, _, named = value.partition(";")
    if not crc.isdigit() or not named or named != _bare(etag):
        return None
    return int(crc) if int(crc) < 1 << 64 else None


def _bare(etag: str) -> str:
    """An ETag without its quotes, as the header carries it (a header value has none)."""
    return etag.strip('"')
