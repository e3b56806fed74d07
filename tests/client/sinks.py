"""Body sinks for client tests: into a buffer, or pwritten into a file at an offset.

The client delivers into whatever `Sink` its caller owns (production: the cache's part sink);
these two are the plainest destinations, and `get_into` / `get_to_fd` the calls the tests use.
"""

from __future__ import annotations

import os

from ossmount.oss import OssClient
from ossmount.oss.models import GetResult


class MemorySink:
    """Receives straight into the caller's buffer (no copy on the plain-HTTP path)."""

    def __init__(self, dest: memoryview) -> None:
        self._dest = dest

    def window(self, pos: int, limit: int) -> memoryview:
        return self._dest[pos : pos + limit]

    def commit(self, view: memoryview, pos: int) -> None:
        pass


class FileSink:
    """Receives into a scratch window, then pwrites it to `fd` at `file_offset` + pos."""

    def __init__(self, fd: int, file_offset: int, window: int = 1024 * 1024) -> None:
        self._fd = fd
        self._file_offset = file_offset
        self._scratch = memoryview(bytearray(window))

    def window(self, pos: int, limit: int) -> memoryview:
        return self._scratch[: min(limit, len(self._scratch))]

    def commit(self, view: memoryview, pos: int) -> None:
        offset = self._file_offset + pos
        while view:
            written = os.pwrite(self._fd, view, offset)
            view, offset = view[written:], offset + written


async def get_into(
    client: OssClient,
    key: str,
    offset: int,
    buf: bytearray | memoryview,
    *,
    if_match: str | None = None,
) -> GetResult:
    view = memoryview(buf).cast("B")
    return await client.get(key, offset, len(view), MemorySink(view), if_match=if_match)


async def get_to_fd(
    client: OssClient,
    key: str,
    offset: int,
    length: int,
    fd: int,
    file_offset: int,
    *,
    if_match: str | None = None,
) -> GetResult:
    sink = FileSink(fd, file_offset)
    return await client.get(key, offset, length, sink, if_match=if_match)
