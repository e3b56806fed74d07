"""Append-only logs of lines that check themselves, for the upload ledger (write/ledger.py)
and the owed-attributes log (write/owedlog.py).

Each line is `<body> TAB <crc32 hex of the body>\\n`, the body ASCII without newlines. A
crash mid-append leaves a torn last line; a disk may damage one. Either fails its CRC (or
its parse) and is skipped with a warning, never taken for something else, so a reader can
only forget an event, never invent one. How durable an append is (fsynced or not) is the
caller's choice.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

__all__ = ["checked_line", "read_checked"]

log = logging.getLogger(__name__)

T = TypeVar("T")


def checked_line(body: str) -> bytes:
    """`body` as one line with its CRC-32; `body` is ASCII, with no newline."""
    return f"{body}\t{zlib.crc32(body.encode('ascii')):08x}\n".encode("ascii")


def read_checked(path: Path, parse: Callable[[str], T]) -> Iterator[T]:
    """`parse` of the body of every whole line of `path` (none if there is no file), in
    order; a line whose CRC does not match, or that `parse` refuses (ValueError), is
    skipped with a warning naming the file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    for raw in data.split(b"\n"):
        if not raw:
            continue
        try:
            body, crc = raw.decode("ascii").rsplit("\t", 1)
            if int(crc, 16) != zlib.crc32(body.encode("ascii")):
                raise ValueError("CRC mismatch")
            parsed = parse(body)
        except (ValueError, IndexError) as exc:  # UnicodeDecodeError is a ValueError
            log.warning("skipping a damaged line of %s: %s", path, exc)
            continue
        yield parsed
