"""Server-side copy of any size: CopyObject up to its 1 GiB limit, a multipart copy above it.

OSS refuses CopyObject for sources over 1 GB ("use UploadPartCopy"), so `rename` of a big
file needs InitiateMultipartUpload (carrying the source's metadata and content headers, as
CopyObject's COPY directive would), one UploadPartCopy per range of the source, each fenced on
the source's ETag (`x-oss-copy-source-if-match`: a source replaced mid-way fails the copy, so
the result is never a mix of two versions), then CompleteMultipartUpload.

Verification: the source's CRC-64 comes from the fenced HEAD that also reads its metadata,
and Complete's CRC-64 must equal it (UploadPartCopy replies carry no CRC of their own, so the
parts cannot be checked one by one). A source without a CRC-64 (some copied objects) cannot
be checked: the copy is then only as good as OSS's own. The upload id goes into the ledger
before the first part (the sweeper aborts it after a crash), and any failure aborts it.

A source at most `COPY_LIMIT` goes by CopyObject; one refused by it anyway as too large
(InvalidArgument / EntityTooLarge: a smaller limit than we know) is copied by parts.

Concurrency: parts go `parallel` at a time in a nursery of their own; the first failure
cancels the rest, the upload is aborted, and the failure raised.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import trio

from ossmount.oss._errors import OssError
from ossmount.oss._writes import CopyResult, OssWrites, PartResult

from .ledger import UploadLedger

__all__ = ["COPY_LIMIT", "COPY_PART", "copy_any", "copy_by_parts"]

log = logging.getLogger(__name__)

COPY_LIMIT = 1 << 30  # OSS: CopyObject takes sources up to 1 GB
COPY_PART = 64 << 20  # server-side parts cost one request each, not our bandwidth
_TOO_LARGE = frozenset(("InvalidArgument", "EntityTooLarge"))


async def copy_any(
    writes: OssWrites,
    src_key: str,
    dst_key: str,
    *,
    size: int,
    etag: str,
    ledger: UploadLedger | None = None,
    forbid_overwrite: bool = False,
    part_size: int = COPY_PART,
    replace: Mapping[str, str] | None = None,
) -> CopyResult:
    """Copy `src_key` (version `etag`, `size` bytes) to `dst_key`, whatever its size, with
    the source's metadata, or with `replace` (every user and content header) instead."""
    if size <= COPY_LIMIT:
        try:
            return await writes.copy_object(
                src_key, dst_key, if_match=etag, meta=replace, forbid_overwrite=forbid_overwrite
            )
        except OssError as exc:
            if exc.status != 400 or exc.code not in _TOO_LARGE:
                raise
            log.info("oss://%s/%s: CopyObject refused (%s); copying it by parts", writes.bucket,
                     src_key, exc.code)  # fmt: skip
    return await copy_by_parts(
        writes, src_key, dst_key, size=size, etag=etag, ledger=ledger,
        forbid_overwrite=forbid_overwrite, part_size=part_size, replace=replace,
    )  # fmt: skip


async def copy_by_parts(
    writes: OssWrites,
    src_key: str,
    dst_key: str,
    *,
    size: int,
    etag: str,
    ledger: UploadLedger | None = None,
    forbid_overwrite: bool = False,
    part_size: int = COPY_PART,
    parallel: int = 4,
    replace: Mapping[str, str] | None = None,
) -> CopyResult:
    """The multipart copy (see the module docstring); `replace` as for `copy_any`."""
    part = max(part_size, -(-size // 10000), 100 * 1024)
    kept, crc = await writes.kept_headers(src_key, if_match=etag)
    if replace is not None:
        kept = dict(replace)
    if ledger is not None:  # an upload whose id a crash keeps from the ledger is ours too
        await trio.to_thread.run_sync(ledger.intend, dst_key)
    upload_id = await writes.initiate_multipart(
        dst_key, meta=kept, forbid_overwrite=forbid_overwrite
    )
    if ledger is not None:
        await trio.to_thread.run_sync(ledger.add, upload_id, dst_key)
    try:
        parts = await _copy_parts(writes, src_key, dst_key, upload_id, etag, size, part, parallel)
        done = await writes.complete_multipart(
            dst_key, upload_id, parts, forbid_overwrite=forbid_overwrite, expected_crc=crc,
            verify=crc is not None,
        )  # fmt: skip
    except BaseException:
        with trio.CancelScope(shield=True):
            try:
                await writes.abort_multipart(dst_key, upload_id)
            except Exception as exc:
                log.warning("oss://%s/%s: aborting copy upload %s failed (%s); the sweeper "
                            "will", writes.bucket, dst_key, upload_id, exc)  # fmt: skip
        raise
    finally:
        if ledger is not None:
            ledger.active.discard(upload_id)
    checked = "verified" if crc is not None else "unknown: the source has none"
    log.info("oss://%s/%s copied to %s by %d UploadPartCopy (CRC-64 %s)", writes.bucket,
             src_key, dst_key, len(parts), checked)  # fmt: skip
    return CopyResult(done.etag, time.time_ns(), done.crc64)


async def _copy_parts(
    writes: OssWrites,
    src_key: str,
    dst_key: str,
    upload_id: str,
    etag: str,
    size: int,
    part: int,
    parallel: int,
) -> list[PartResult]:
    count = max(1, -(-size // part))
    results: list[PartResult] = []
    numbers = iter(range(1, count + 1))

    async def worker() -> None:
        for number in numbers:  # shared: parts start in ascending order
            start = (number - 1) * part
            end = min(size, start + part)
            done = await writes.upload_part_copy(
                dst_key, upload_id, number, src_key, (start, end), expected_crc=None, if_match=etag
            )
            results.append(done)

    try:
        async with trio.open_nursery() as nursery:
            for _ in range(min(parallel, count)):
                nursery.start_soon(worker)
    except BaseExceptionGroup as group:
        first = next((e for e in group.exceptions if not isinstance(e, trio.Cancelled)), None)
        if first is None:
            raise
        raise first from None
    return results
