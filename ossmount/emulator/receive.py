"""Receiving an upload's body: hashing, the ETag, ``Content-MD5``, and faults on writes.

Body faults on uploads (``PutObject``, ``UploadPart``, ``AppendObject``) act on the *request*
body, at ``after`` bytes received: ``reset`` / ``truncate`` end the connection there (RST /
FIN, nothing committed, no response), ``stall`` stops reading for ``seconds`` and then goes
on. An ``after`` at or beyond the body's end acts once the whole body is in, before the
object is committed or answered: the client sent everything and never hears back.

``--fast-etag`` (``App.fast_etag``): without a ``Content-MD5`` to check, the ETag of an
upload is built from its CRC-64 and size instead of its MD5. MD5 runs at ~0.75 GB/s on
this hardware and nothing else in an upload costs as much; the ETag of a real PutObject is
the MD5, so this is an opt-in for write benchmarks, off by default.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import h11
import trio

from .faults import FaultRule
from .pump import PUMP_MIN, pump_body
from .store import md5_etag
from .writer import BodyWriter
from .xml import OssError

if TYPE_CHECKING:
    from .app import Ctx

__all__ = ["UPLOAD_FAULTS", "UPLOAD_OPS", "receive_body"]

UPLOAD_OPS = frozenset({"PutObject", "UploadPart", "AppendObject"})
UPLOAD_FAULTS = frozenset({"reset", "truncate", "stall"})


def upload_faults(ctx: Ctx) -> list[FaultRule]:
    """The fired rules that act on this request's body rather than on its response."""
    if ctx.op not in UPLOAD_OPS:
        return []
    return sorted((r for r in ctx.faults if r.action in UPLOAD_FAULTS), key=lambda r: r.after)


async def _act(ctx: Ctx, rule: FaultRule) -> None:
    if rule.action == "stall":
        await trio.sleep(rule.seconds)
    else:
        await ctx.req.cut(rule.action)


async def feed_body(ctx: Ctx, writer: BodyWriter) -> None:
    """Feed the request body to ``writer``, acting on upload faults at their offsets.

    A Content-Length body over ``PUMP_MIN`` is received by the pump (pump.py) in a worker
    thread, in pieces that end at the fault offsets; anything else goes through
    ``Request.body()`` on the event loop.
    """
    pending = upload_faults(ctx)
    while pending and pending[0].after <= 0:  # before 100 Continue, as before any byte
        await _act(ctx, pending.pop(0))
    raw = await ctx.req.raw_body(PUMP_MIN)
    if raw is None:
        writer.reserve(ctx.req.content_length() or 0)
        async with contextlib.aclosing(ctx.req.body()) as body:
            await _feed_chunks(ctx, writer, body, pending, inline=False)
    else:
        await _pump(ctx, writer, raw, pending)
    for rule in pending:  # offsets at or past the end: the whole body is in
        await _act(ctx, rule)
    await writer.drain()


async def _pump(ctx: Ctx, writer: BodyWriter, raw: list[bytes], pending: list[FaultRule]) -> None:
    """The pumped body: what h11 held goes to the first pump call (off the loop too, with
    the file's reservation), unless a fault lies within it; pieces end at fault offsets."""
    length = ctx.req.content_length() or 0
    first = b"".join(raw)
    pos = 0
    if pending and pending[0].after < len(first):  # fault tests: by hand, on the loop
        async with contextlib.aclosing(_aiter(raw)) as pieces:
            pos = await _feed_chunks(ctx, writer, pieces, pending, inline=True)
        first = b""
    reserve = length - pos
    while pos + len(first) < length:
        stop = min(length, pending[0].after) if pending else length
        if stop > pos:
            want = stop - pos - len(first)
            got = await pump_body(ctx.req.socket, writer, want, first=first, reserve=reserve)
            pos += len(first) + got
            first, reserve = b"", 0
            if got < want:
                raise h11.RemoteProtocolError("peer closed the connection mid-body", 400)
        while pending and pending[0].after <= pos < length:
            await _act(ctx, pending.pop(0))
    if first:  # h11 held the whole body
        writer.write(first)
    ctx.req.body_done = True


async def _aiter(pieces: list[bytes]) -> AsyncGenerator[bytes, None]:
    for p in pieces:
        yield p


async def _feed_chunks(
    ctx: Ctx,
    writer: BodyWriter,
    chunks: AsyncIterator[bytes],
    pending: list[FaultRule],
    *,
    inline: bool,
) -> int:
    """Feed ``chunks`` (``inline``: with ``write``, as before a pump) acting on the faults
    due on the way; returns the bytes fed."""
    pos = 0
    async for chunk in chunks:
        while pending and pending[0].after < pos + len(chunk):
            cut = pending[0].after - pos
            if cut:
                await _feed(writer, chunk[:cut], inline)
            chunk, pos = chunk[cut:], pos + cut
            await _act(ctx, pending.pop(0))
        if chunk:
            await _feed(writer, chunk, inline)
            pos += len(chunk)
    return pos


async def _feed(writer: BodyWriter, chunk: bytes, inline: bool) -> None:
    if inline:
        writer.write(chunk)
    else:
        await writer.feed(chunk)


async def receive_body(
    ctx: Ctx, region: tuple[Path, int] | None = None
) -> tuple[BodyWriter, str, str | None]:
    """Read the request body into a store writer; returns (writer, etag, base64 MD5).

    The base64 MD5 is None when ``--fast-etag`` skipped MD5. ``region``: write the body into
    that file at that offset (a multipart part into its assembly file) instead of a new one.
    """
    want = ctx.req.headers.get("content-md5")
    fast = ctx.app.fast_etag and want is None
    writer = ctx.store.new_writer(md5=not fast, region=region)
    try:
        await feed_body(ctx, writer)
    except BaseException:
        writer.abort()
        raise
    if fast:
        return writer, f'"{writer.crc:016X}{writer.size:016X}"', None
    digest = writer.md5.digest()
    b64 = base64.b64encode(digest).decode()
    if want is not None and want.strip() != b64:
        writer.abort()
        raise OssError(400, "InvalidDigest", "The Content-MD5 you specified was invalid.")
    return writer, md5_etag(digest), b64
