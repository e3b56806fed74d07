"""The CRC-64s of a request body's pieces, cut at offsets the caller names, taken in the same
pass that hashes the body for its own CRC-64.

Why: a committed file becomes the read cache's verified entry (cache/adopt.py), whose
checkpoint lists a CRC-64 per *cache* part; the upload's parts are cut elsewhere, and a CRC
cannot be split after the fact. Hashing the file again in the cache's parts after close cost
a second read of every byte, from disk once the sent parts have left the page cache
(write/session.py `_release_pages`). So the body's hashing pass notes the running CRC at
each cut (`fold`: no extra read, no extra hashing, only the piece of the read buffer on each
side of a cut hashed separately), and the pieces' CRCs follow from those notes (`pieces`):
for A||B, CRC(B) = CRC(A||B) ^ shift(CRC(A), len(B)), which is `combine(CRC(A), CRC(A||B),
len(B))` (crc64.py: combine is exactly shift-then-xor).

Honesty: the notes are of the very bytes whose CRC-64 the request reports as sent (the same
running value), so pieces that combine to the body's CRC the server confirmed describe the
bytes the server holds (a CRC-64 collision aside). Whether the staged file still holds them
is the caller's to know (write/session.py, fs/staging.py).
"""

from __future__ import annotations

from ..crc64 import BytesLike, combine, crc64
from ._write_types import FileRange

__all__ = ["SHORT", "Cuts", "confirmed", "fold", "pieces", "pieces_of_bytes", "read_short"]

SHORT = 256 * 1024  # `read_short` reads bodies up to this (`_upload_wire.MIN_BODY`)


class Cuts:
    """Where a body is to be cut (`at`: offsets strictly inside it, ascending), and the
    CRC-64s of its pieces (len(at) + 1 of them) as found by the attempt that sent the body
    last; empty when that attempt's path does not take them (the caller then does without).

    Concurrency: one request owns it; its attempts run one after another, each resetting
    `pieces` before it sends, so after the request the pieces are those of the reply it
    returned (the one whose CRC-64 was checked)."""

    __slots__ = ("at", "pieces")

    def __init__(self, at: tuple[int, ...]) -> None:
        self.at = at
        self.pieces: tuple[int, ...] = ()


def fold(view: BytesLike, crc: int, pos: int, cuts: tuple[int, ...], marks: list[int]) -> int:
    """`crc` continued over `view`, which holds the body's bytes [pos, pos + len(view)); the
    running CRC at each cut in (pos, pos + len(view)] is appended to `marks` (which holds one
    per cut before `pos` already)."""
    end = pos + len(view)
    done = 0
    while len(marks) < len(cuts) and cuts[len(marks)] <= end:
        cut = cuts[len(marks)] - pos
        crc = crc64(view[done:cut], crc)
        done = cut
        marks.append(crc)
    if done < len(view):
        crc = crc64(view[done:], crc)
    return crc


def pieces(marks: list[int], cuts: tuple[int, ...], length: int, crc: int) -> tuple[int, ...]:
    """The CRC-64 of each piece of a body of `length` bytes whose CRC is `crc`, from the
    running CRCs at its cuts (`fold`); empty if the marks are not one per cut."""
    if len(marks) != len(cuts):
        return ()
    if not cuts:
        return (crc,)
    bounds = (0, *cuts, length)
    prefix = (0, *marks, crc)
    return tuple(
        combine(prefix[i], prefix[i + 1], bounds[i + 1] - bounds[i]) for i in range(len(bounds) - 1)
    )


def pieces_of_bytes(data: BytesLike, cuts: tuple[int, ...]) -> tuple[int, ...]:
    """`pieces` of a body held in memory (a short part sent from bytes)."""
    marks: list[int] = []
    crc = fold(data, 0, 0, cuts, marks)
    return pieces(marks, cuts, len(data), crc)


def confirmed(cuts: Cuts, crc: int) -> tuple[int, ...]:
    """The pieces of the body whose CRC-64 `crc` OSS confirmed, as its send took them (each
    attempt resets them, so they are the last one's, the confirmed one's); a body with no
    cut is one piece of that CRC."""
    if not cuts.at:
        return (crc,)
    return cuts.pieces if len(cuts.pieces) == len(cuts.at) + 1 else ()


def read_short(where: str, body: bytes | FileRange) -> bytes | None:
    """A body short enough to be read whole (at most `SHORT`: a short last part, which the
    worker-thread path does not carry), so its pieces and its CRC are taken from the one
    copy sent; None for a longer staged range. StagingError naming `where` if the staged file
    cannot supply it."""
    if not isinstance(body, FileRange):
        return body
    if body.length > SHORT:
        return None
    return body.read(where)
