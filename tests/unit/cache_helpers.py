"""Writing a part the way a GET does, for tests that hold the part's bytes in memory."""

from __future__ import annotations

from pathlib import Path

from ossmount.cache.entry import CacheEntry
from ossmount.cache.opening import open_entry
from ossmount.crc64 import BytesLike, crc64
from ossmount.oss.models import GetResult, ObjectMeta


def entry_in(tmp_path: Path, meta: ObjectMeta, part_size: int, bucket: str = "bkt") -> CacheEntry:
    """Open (or reopen) the cache entry of `meta` kept as obj.data / obj.ckpt in `tmp_path`."""
    return open_entry(
        bucket=bucket,
        meta=meta,
        part_size=part_size,
        path=tmp_path / "obj.data",
        checkpoint_path=tmp_path / "obj.ckpt",
    )


def write_part(entry: CacheEntry, index: int, data: BytesLike) -> int:
    """Deliver `data` as part `index`'s body through `entry.part_sink` (window by window, as
    the client does), record it, and return its CRC-64. A body of the wrong length is
    delivered and then refused by the sink's `record` (the part stays missing)."""
    view = memoryview(data).cast("B")
    start = entry.layout.span(index)[0]
    sink = entry.part_sink(index, memoryview(bytearray(4096)))
    pos = 0
    while pos < len(view):
        window = sink.window(pos, len(view) - pos)
        n = len(window)
        window[:] = view[pos : pos + n]
        sink.commit(window, pos)
        pos += n
    crc = crc64(view)
    sink.record(GetResult(meta=entry.meta, offset=start, length=len(view), crc64=crc))
    return crc


def recheck_all(entry: CacheEntry) -> CacheEntry:
    """Re-hash every part the entry trusts from its checkpoint, as a download does before
    serving it (cache.entry, "Re-checking"); for tests of what a reopen resumes."""
    for index in entry.present_parts():
        entry.recheck(index)
    return entry
