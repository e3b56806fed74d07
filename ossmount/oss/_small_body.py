"""A request with a small staged body (PutObject of a small file, a short last part) sent with
its head in one write on the event loop, on the client's own `_wire` connections.

Why (issue 15, W14/W15: `cp -r` and `tar x` of many small files into a --rw mount, one commit
per file): through httpx/httpcore/h11 such a PUT cost more of the daemon's CPU than anything
else per file (py-spy --gil of a tar x of 2,000 files of 8 KiB: h11's header decoding and
validation, httpcore's connection state). The GET side's `_wire` already sends a request head
as one string and reads the reply head with its own parser: a small body simply follows the
head in the same write. The body worker thread (`_upload_wire`) does not pay here: its thread
hop costs what httpcore did (tar x 2,000 files, 3 runs: 2.60 vs 2.77 ms of daemon CPU a file).

Only bodies up to `MAX_BODY` (64 KiB), so head and body normally leave in the one write the
pool makes without waiting, and the server's answer, even an early refusal, is read as a
reply, never lost to a send failing first. The CRC-64 is that of the bytes read from the
staged file and written to the socket, compared by the caller with the reply's, as on the
other paths. Plain HTTP and TLS alike (`_wire` does both).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..crc64 import crc64
from ._errors import describe_cause
from ._wire import WireBody, WireError
from ._write_types import FileRange

if TYPE_CHECKING:
    from ._client import OssClient

__all__ = ["MAX_BODY", "request_bytes", "request_small", "usable"]

MAX_BODY = 64 * 1024
_REPLY_CAP = 1024 * 1024  # a PUT's reply is empty, an error's XML a few hundred bytes


def usable(body: FileRange) -> bool:
    return body.length <= MAX_BODY


async def request_small(
    client: OssClient,
    method: str,
    key: str,
    query: list[tuple[str, str]],
    headers: dict[str, str],
    body: FileRange,
) -> tuple[dict[str, str], bytes, int]:
    """One signed attempt (the caller sets Content-Length): the reply's lower-case headers,
    its body and the CRC-64 of the body sent. A non-2xx reply raises its typed OssError, a
    failed exchange OssTransportError, a staged file that cannot supply the body
    StagingError."""
    where = f"{method} oss://{client.config.bucket}/{key}"
    return await request_bytes(client, method, key, query, headers, body.read(where))


async def request_bytes(
    client: OssClient,
    method: str,
    key: str,
    query: list[tuple[str, str]],
    headers: dict[str, str],
    data: bytes,
    *,
    reply_cap: int = _REPLY_CAP,
) -> tuple[dict[str, str], bytes, int]:
    """`request_small` with the body in memory (b"" for none: a copy, a delete, an
    initiate; an XML body: a complete). `reply_cap`: the largest reply body taken."""
    where = f"{method} oss://{client.config.bucket}/{key}"
    head = await client._wire_head(method, key, query, headers, where)
    try:
        reply = await client._wire.request(head + data, client.config.read_timeout_s)
    except WireError as exc:
        raise client._wire_failed(method, key, describe_cause(exc)) from exc
    client._wire_replied(method, key, reply.status, reply.headers)
    if reply.content_length == 0:  # a HEAD's, a 204's, an empty PUT reply: nothing to read
        client._wire.release(reply.conn, reply.keep_alive)
        text = b""
    else:
        reader = WireBody(
            client._wire, reply, stall_s=client.config.stall_timeout_s,
            limiter=client._body_threads,
        )  # fmt: skip
        try:
            text = b"" if reply.chunked else await reader.read_capped(reply_cap)
        finally:
            await reader.aclose()
    length = reply.content_length
    if reply.status < 300 and length is not None and len(text) < min(length, reply_cap + 1):
        # The connection broke inside a success's body (a complete's or a copy's XML): the
        # request may have taken effect, but its answer is lost, which is a transport
        # failure the caller retries, never an empty success.
        raise client._wire_failed(method, key, f"reply body cut at {len(text)} of {length} bytes")
    over = reply_cap if len(text) > reply_cap else None
    client._wire_checked(key, reply.status, reply.headers, text, over_cap=over)
    return reply.headers, text, crc64(data) if data else 0
