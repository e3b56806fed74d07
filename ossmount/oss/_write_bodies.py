"""Request bodies of the write half (oss._writes) on the httpcore path (bodies up to 256 KiB,
and every body over TLS; larger ones go through `_upload_wire`): a staged file range streamed
piece by piece with its CRC-64 folded in as each piece goes, so the part's CRC is known when
the reply's arrives (the comparison is in oss._writes)."""

from __future__ import annotations

import os

import httpx
import trio

from ..crc64 import crc64
from ._write_types import FileRange, StagingError

__all__ = ["FileBody", "Sent"]

# Body pieces up to this size are read on the event loop: a pread of 256 KiB from the page
# cache takes tens of microseconds, less than handing it to a worker thread and back, and a
# commit of a small file (the `cp -r` of many small files) pays that hop once per file.
_INLINE_READ = 256 * 1024


class FileBody(httpx.AsyncByteStream):
    """A request body read from a file range, piece by piece in a worker thread, CRC folded in.

    A plain iterator object, not an async generator: when a send fails half-way nothing is
    left suspended for the garbage collector to finalize (trio warns about that)."""

    def __init__(self, where: str, src: FileRange, chunk: int, sent: Sent) -> None:
        self.where, self.src, self.chunk, self.sent = where, src, chunk, sent

    def __aiter__(self) -> FileBody:
        return self

    async def __anext__(self) -> bytes:
        src, sent = self.src, self.sent
        pos = sent.done
        if pos >= src.length:
            raise StopAsyncIteration
        n = min(self.chunk, src.length - pos)
        try:
            if n <= _INLINE_READ:  # a small file's body: a thread hop costs more than the read
                data, crc = _read_crc(src.fd, src.offset + pos, n, sent.crc)
            else:
                data, crc = await trio.to_thread.run_sync(
                    _read_crc, src.fd, src.offset + pos, n, sent.crc
                )
        except OSError as exc:
            raise StagingError(
                f"{self.where}: reading staged bytes at {src.offset + pos} failed: {exc}"
            ) from exc
        if len(data) != n:
            raise StagingError(
                f"{self.where}: staged file ends at {src.offset + pos + len(data)}, expected "
                f"bytes up to {src.offset + src.length}"
            )
        sent.crc = crc
        sent.done = pos + n
        return data


class Sent:
    """What one attempt's body stream has put on the wire so far."""

    __slots__ = ("crc", "done")

    def __init__(self) -> None:
        self.crc = 0
        self.done = 0


def _read_crc(fd: int, offset: int, n: int, crc: int) -> tuple[bytes, int]:
    data = os.pread(fd, n, offset)
    return data, crc64(data, crc)
