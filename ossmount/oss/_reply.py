"""What a reply's head says: object metadata from headers, and a ranged GET's reply checked
against what was asked (Content-Range, ETag pin, size), as plain functions over a header dict.

Why a dict: `httpx.Headers.get` scans and lower-cases every header per call, and a ranged GET
looked up ~11 of them (~10 us per GET on the 2 vCPU VM); one dict of lower-case names built
from the raw header list costs ~3.5 us and each lookup after that is a hash probe. Likewise
`Last-Modified` is parsed by hand in its fixed RFC 1123 form (~2 us instead of ~12 us for
`email.utils.parsedate_to_datetime`, which stays as the fallback for any other form).
"""

from __future__ import annotations

import calendar
import functools
import math
import re
from email.utils import parsedate_to_datetime

import httpx

from ._errors import BadResponse, ObjectChanged
from .carriedcrc import CARRIED_CRC, carried_crc
from .models import ObjectMeta

__all__ = ["GetState", "check_get_reply", "header_dict", "http_date_s", "meta_from_headers"]

_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$")
_MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}


def header_dict(response: httpx.Response) -> dict[str, str]:
    """Lower-case name -> value of every header (a repeated name: the last one)."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in response.headers.raw}


def http_date_s(text: str) -> int | None:
    """Seconds since the epoch of an HTTP date (`Sun, 06 Dec 2026 02:20:00 GMT`); None if
    unreadable."""
    parts = text.split()
    if len(parts) == 6 and parts[5] == "GMT":
        month = _MONTHS.get(parts[2])
        hms = parts[4].split(":")
        if month is not None and len(hms) == 3:
            try:
                fields = (int(parts[3]), month, int(parts[1]), *(int(x) for x in hms))
            except ValueError:
                fields = ()
            if fields and 1 <= fields[2] <= 31 and all(0 <= x <= 60 for x in fields[3:]):
                return calendar.timegm(fields)
    try:
        return int(parsedate_to_datetime(text).timestamp())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def meta_from_headers(key: str, headers: dict[str, str], size: int) -> ObjectMeta:
    """ObjectMeta from a HEAD or GET reply's headers (`header_dict`); `size` is the object's.
    Without the server's CRC-64, the one a copy of this mount carried (oss/carriedcrc.py)."""
    get = headers.get
    crc = get("x-oss-hash-crc64ecma")
    etag = get("etag", "")
    if crc is None and (carried := carried_crc(get(CARRIED_CRC), etag)) is not None:
        crc = str(carried)
    return _meta(
        key,
        size,
        etag,
        get("last-modified"),
        crc,
        get("x-oss-object-type"),
        get("x-oss-storage-class"),
    )


@functools.lru_cache(maxsize=256)
def _meta(
    key: str,
    size: int,
    etag: str,
    last_modified: str | None,
    crc_header: str | None,
    object_type: str | None,
    storage_class: str | None,
) -> ObjectMeta:
    """Memoised: the GETs of one object version carry the same headers, and a random reader
    sends one per read (issue 13, W8); parsing the date and building the (frozen, so
    shareable) ObjectMeta again cost ~5 us of each."""
    seconds = http_date_s(last_modified) if last_modified else None
    crc = int(crc_header) if crc_header and crc_header.strip().isdigit() else None
    return ObjectMeta(
        key=key,
        size=size,
        etag=etag,
        mtime_ns=(seconds or 0) * 1_000_000_000,
        crc64=crc,
        object_type=object_type,
        storage_class=storage_class,
    )


class GetState:
    """Progress of one ranged GET across attempts (owned by one task)."""

    def __init__(self, offset: int, length: int, if_match: str | None) -> None:
        self.offset = offset
        self.length = length  # may shrink once the object's real size is known
        self.pos = 0  # bytes delivered so far
        self.crc = 0
        self.meta: ObjectMeta | None = None
        self.if_match = if_match
        self.pinned: str | None = if_match  # ETag every attempt must match
        # trio time no wait of an attempt may pass, when no cancel scope bounds the attempts
        # (OssClient.get); inf when one does
        self.deadline = math.inf


def changed(bucket: str, key: str, expected: str, got: str) -> ObjectChanged:
    return ObjectChanged(
        412,
        "ObjectChanged",
        f"ETag is {got}, expected {expected}: the object changed",
        bucket=bucket,
        key=key,
    )


def bad(bucket: str, key: str, status: int, headers: dict[str, str], what: str) -> BadResponse:
    return BadResponse(
        status,
        "InvalidResponse",
        what,
        request_id=headers.get("x-oss-request-id"),
        bucket=bucket,
        key=key,
    )


def check_get_reply(
    bucket: str,
    key: str,
    status: int,
    headers: dict[str, str],
    state: GetState,
    start: int,
    end: int,
) -> tuple[int, int]:
    """Validate a GET reply against what we asked (bytes `start`-`end`) and set/verify
    state.meta.

    Returns (skip, stop): how many leading body bytes to read past (non-zero only for a
    200 that ignored our Range) and the object offset just after the last byte this reply
    carries for us."""
    etag = headers.get("etag", "")
    if state.pinned is not None and etag and etag != state.pinned:
        raise changed(bucket, key, state.pinned, etag)
    skip = 0
    if status == 206:
        match = _CONTENT_RANGE.match(headers.get("content-range", ""))
        if not match or match.group(3) == "*":
            raise bad(bucket, key, status, headers, "206 reply without a usable Content-Range")
        first, last, total = int(match.group(1)), int(match.group(2)), int(match.group(3))
        if first != start or last > end or last < first:
            raise bad(
                bucket,
                key,
                status,
                headers,
                f"asked bytes {start}-{end}, got Content-Range {first}-{last}",
            )
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) != last - first + 1:
            raise bad(bucket, key, status, headers, "Content-Length disagrees with Content-Range")
        if last < end and last == total - 1:
            state.length = total - state.offset  # the object ends inside our range
        stop = last + 1
    elif status == 200:
        length = headers.get("content-length", "")
        if not length.isdigit():
            raise bad(bucket, key, status, headers, "200 reply without Content-Length")
        total = int(length)
        if start >= total:
            raise bad(bucket, key, status, headers, f"object has {total} bytes, asked from {start}")
        skip = start
        state.length = min(state.length, total - state.offset)
        stop = total
    else:
        raise bad(bucket, key, status, headers, f"unexpected status {status} for GET")
    meta = meta_from_headers(key, headers, total)
    if state.meta is None:
        state.meta = meta
        if state.pinned is None and meta.etag:
            state.pinned = meta.etag  # resumes must come from this same version
    elif meta.size != state.meta.size:
        raise changed(bucket, key, state.meta.etag, meta.etag)
    return skip, stop
