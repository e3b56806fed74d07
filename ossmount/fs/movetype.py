"""A renamed file's Content-Type follows its new name where it was only its old name's default.

OSS sets an object's Content-Type from its key's extension when the upload names none (ours
name none), and CopyObject keeps the source's. `rsync` writes each file as `.index.html.Xy12Ab`
(typed application/octet-stream by that name) and renames it to `index.html`; kept, every page
of a site synced through the mount would be served as a download, every image as a blob. ossfs
1.x sets the type from the new name on every rename (src/s3fs.cpp rename_object,
LookupMimeType); we do it only where the type was a default: the source's Content-Type is the
old name's guess or application/octet-stream (or unknown to us because we uploaded it without
one). A type set on purpose (`text/plain` on `notes.dat`) moves with the file.

Cost: nothing when both names guess the same type (`a.txt` -> `b.txt`, the common case); else
one HEAD for an object this mount did not write moments ago (fs/attrstore.py `KnownMeta`),
and the copy carries the metadata with directive REPLACE.

The guesses are Python's `mimetypes` (which reads the system's mime.types, as ossfs's table
does); OSS's own table may name a few types differently, which only matters for a source whose
stored type is one neither table guesses (then it is kept).
"""

from __future__ import annotations

import mimetypes
from collections.abc import Mapping

__all__ = ["OCTET_STREAM", "guessed_type", "renames_type", "retyped"]

OCTET_STREAM = "application/octet-stream"


def guessed_type(key: str) -> str:
    """The Content-Type a key's name suggests."""
    ctype, _ = mimetypes.guess_type(key.rsplit("/", 1)[-1], strict=False)
    return ctype or OCTET_STREAM


def renames_type(old_key: str, new_key: str) -> bool:
    """Whether a move may change the type: the two names suggest different ones."""
    return guessed_type(old_key) != guessed_type(new_key)


def retyped(old_key: str, new_key: str, headers: Mapping[str, str]) -> dict[str, str] | None:
    """The headers (lower-case names) a REPLACE copy of an object with `headers` to `new_key`
    sends, with the new name's type; None to copy it as it is (see the module docstring)."""
    new = guessed_type(new_key)
    current = headers.get("content-type")
    if current is not None:
        bare = current.split(";", 1)[0].strip().lower()
        if bare == new or bare not in (guessed_type(old_key), OCTET_STREAM):
            return None
    return {**headers, "content-type": new}
