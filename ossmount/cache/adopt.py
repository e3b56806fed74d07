"""A file the write path just committed becomes the read cache's entry for that version.

Why: the staged file holds exactly the bytes OSS confirmed by CRC-64 at commit, so reading
the object back in the same mount must not cost a GET (issue 15). Rather than copy it, the
staged data file is renamed into the cache store with a checkpoint that claims every part
(`CacheStore.adopt`), state VERIFIED.

What makes the claim true: `prepare` hashes the staged file part by part in the read cache's
layout (cache.ranges; the upload's parts are cut differently, and CRC-64 runs at ~20 GB/s
here, so hashing is cheaper than splitting the upload's part CRCs), and only if those CRCs
combine to the CRC-64 the server confirmed is anything handed over; a file changed since (a
write raced the commit) stays a staged file and is dropped as before. Like every part a
checkpoint lists, each part is hashed again before its first read in a daemon's life
(cache.recheck), so the claim is checked once more by the reader, at ~50 ms per GiB.

A file the upload already hashed in the cache's parts is not read again: the pass that read
and hashed each upload part as it was sent also took the CRC-64 of its pieces between the
cache's part boundaries (oss/_cuts.py, write/pieces.py), and `prepare` given those pieces
combines them into the cache parts' CRCs (`part_crcs`) instead of hashing the file. Why the
claim is then as true as the hashed one: (1) each piece's CRC is of the very bytes whose
CRC-64 OSS confirmed for that part (the same running CRC; a resend takes new pieces), and the
commit hands pieces over only if every part of its Complete has the ones its own confirmed
send took (a part sent again after a write, resumed from a journal, or sent through a path
that takes none leaves the commit without pieces); (2) the staged file holds those bytes still:
a write into a part already sent invalidates it before the commit (`UploadSession.invalidate`,
so it is sent, and hashed, again), and the caller (fs/staging.py) gives the pieces only for a
file that no write, truncate or rename touched since its commit began (`Staged.dirty` stays
False, as for `adopt_known`) and whose size is the committed one; (3) as for hashed bytes, the
pieces must cover every cache part exactly and combine to the CRC-64 the server confirmed for
the object, or the file is hashed after all (`seal_for_cache`). And the re-check before the
first read (cache.recheck) hashes each part anyway, so a claim that were wrong would cost a
GET, never a wrong byte. Measured (`bench/bench_write_mount.py --src <before> --src .
--size-mib 1024 --repeat 3 (then 5) --only big`, 1 GiB `cp` into a --rw mount whose sent parts
had left the page cache, load 5-8 from other work, median [min..max]): from cp's end until the
entry is verified 1.63 [1.11..2.31] -> 0.01 [0.01..0.01] s (1.04 [0.68..1.59] -> 0.01
[0.00..0.02]), the daemon's disk reads meanwhile 1048 -> 0 MB (1056 -> 0) and its CPU 0.98 ->
0.00 s (0.38 -> 0.00); cp itself within the noise: 333 -> 343 MB/s (319 -> 304), daemon CPU
until cp's end 1.09 -> 1.13 s/GiB (1.09 -> 1.14, min 1.08 both; sealing from pieces, ~10 ms
of CPU per GiB for `part_crcs` and the final combine, now ends before cp's end is sampled).

Durability, as for the read path's checkpoints (cache.checkpoint, "Durability"): neither the
data nor the checkpoint is fsynced. Two fsyncs per file cost more than the whole commit of a
small file, and they buy nothing the re-check does not: after a crash a torn checkpoint fails
its digest and is discarded, and a part whose bytes did not reach the disk fails its re-check
and is fetched again, so the worst case is a GET, never a wrong byte.

A file of one cache part (at most `HEAD_PART_SIZE`, 256 KiB: every PutObject of `tar x` or
`cp -r` of small files) is not hashed at all (`adopt_known`): its one part's CRC-64 is the
whole object's, which the writer computed from the staged bytes as it sent them and OSS
confirmed at commit, and the caller (fs/staging.py) hands it over only if no write, truncate
or rename touched the file since that commit began (`Staged.dirty` stays False). It becomes
the `.one` file the read path keeps a one-part object in (cache.tail): the sealed checkpoint
(~200 bytes) is appended to the staged file, which is then renamed in, right on the trio
thread, with no worker thread hop, no second read of the bytes and no checkpoint file to
create. Order: the bytes are in the file before the tail that lists them is written, and the
tail before the rename, so a `.one` never exists without its tail; a crash before the rename
leaves a staged file, which the next mount's fs/recovery.py removes (its journal, if any, says
COMMITTED and is not replayed from the bytes). The re-check before first read still hashes
the part, as for every entry, so bytes a power loss kept from the disk are fetched again.
Measured (2,000 files of 8 KiB adopted into a fresh cache on this VM's ext4, 5 runs twice,
process CPU per `adopt_known`): 85-117 us, against 685-859 us when it created a checkpoint
file, most of which was that file's creation (inode allocation).

Both files are on the cache dir's filesystem (staging/ is a sibling of the bucket directory),
so the rename is cheap; a staging dir elsewhere (EXDEV) just means no adoption.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import trio

from ossmount.cache.checkpoint import Checkpoint, EntryState, save_first
from ossmount.cache.ranges import HEAD_PART_SIZE, PartLayout
from ossmount.cache.recheck import hash_span
from ossmount.cache.store import CacheStore
from ossmount.cache.tail import write_tail
from ossmount.crc64 import combine
from ossmount.oss.models import ObjectMeta

__all__ = ["Adopter", "Pieces", "part_crcs", "seal_for_cache"]

# (offset, length, CRC-64) of consecutive stretches of the committed bytes, in order, as the
# upload took them (write.commit_types.Piece, which is such a tuple).
Pieces = Sequence[tuple[int, int, int]]

log = logging.getLogger(__name__)


def seal_for_cache(
    data: Path, meta: ObjectMeta, *, bucket: str, part_size: int, out: Path
) -> int | None:
    """Blocking. Hash the bytes of `data` in the cache's parts; if they are the committed
    version (`meta.crc64`), write the sealed checkpoint to `out` (not fsynced: see the module
    docstring). The bytes the entry holds, or None (not the committed bytes, or no CRC)."""
    fd = os.open(data, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return _seal(fd, meta, bucket=bucket, part_size=part_size, out=out)
    finally:
        os.close(fd)


def part_crcs(layout: PartLayout, pieces: Pieces) -> dict[int, int] | None:
    """Each part's CRC-64 combined from `pieces`, without reading a byte; None unless the
    pieces run from byte 0 to the end with no gap or overlap and none straddles a part
    boundary."""
    crcs: dict[int, int] = {}
    given = iter(pieces)
    pos = 0
    for index in range(layout.count):
        start, length = layout.span(index)
        crc = 0
        while pos < start + length:
            piece = next(given, None)
            if piece is None or piece[0] != pos or pos + piece[1] > start + length:
                return None
            crc = combine(crc, piece[2], piece[1])
            pos += piece[1]
        crcs[index] = crc
    return None if next(given, None) is not None else crcs


def seal_from_pieces(
    data: Path, meta: ObjectMeta, pieces: Pieces, *, bucket: str, part_size: int, out: Path
) -> int | None:
    """Blocking but reads no byte of `data`. As `seal_for_cache`, from the CRC-64s the
    upload took (see the module docstring for why that is as good); None: they do not make
    the committed version, or `data` is not its size."""
    if meta.crc64 is None or os.stat(data).st_size != meta.size:
        return None
    layout = PartLayout(meta.size, part_size)
    crcs = part_crcs(layout, pieces)
    if crcs is None or layout.combined_crc(crcs) != meta.crc64:
        return None
    save_first(out, _checkpoint(meta, bucket, part_size, crcs))
    return meta.size


def _seal(fd: int, meta: ObjectMeta, *, bucket: str, part_size: int, out: Path) -> int | None:
    if meta.crc64 is None or os.fstat(fd).st_size != meta.size:
        return None
    layout = PartLayout(meta.size, part_size)
    crcs = {i: hash_span(fd, *layout.span(i)) for i in range(layout.count)}
    if layout.combined_crc(crcs) != meta.crc64:
        return None
    save_first(out, _checkpoint(meta, bucket, part_size, crcs))
    return meta.size


def _checkpoint(meta: ObjectMeta, bucket: str, part_size: int, crcs: dict[int, int]) -> Checkpoint:
    assert meta.crc64 is not None
    return Checkpoint(
        bucket=bucket, key=meta.key, etag=meta.etag, size=meta.size, mtime_ns=meta.mtime_ns,
        server_crc64=meta.crc64, part_size=part_size, part_crcs=crcs, state=EntryState.VERIFIED,
    )  # fmt: skip


class Adopter:
    """Hands committed staged files to one cache store (see the module docstring)."""

    def __init__(self, store: CacheStore, part_size: int) -> None:
        self.store = store
        self.part_size = part_size
        self.unread = 0  # files `prepare` sealed from their upload's pieces, not reading them

    def fits_one_part(self, meta: ObjectMeta) -> bool:
        """Whether `adopt_known` takes `meta`: one cache part, CRC-64 known."""
        return meta.crc64 is not None and meta.size <= min(self.part_size, HEAD_PART_SIZE)

    def adopt_known(self, data: Path, meta: ObjectMeta) -> bool:
        """Synchronously make `data` the verified entry of `meta` without reading it: only
        for a file of one part (`fits_one_part`) whose bytes the caller knows are exactly the
        ones OSS confirmed by `meta.crc64` (see the module docstring). False: not taken (the
        caller uses `prepare`); True: installed, or given up with both files removed."""
        if not self.fits_one_part(meta):
            return False
        assert meta.crc64 is not None
        crcs = {0: meta.crc64} if meta.size else {}
        try:
            _append_tail(data, _checkpoint(meta, self.store.bucket, self.part_size, crcs))
        except OSError as exc:
            log.debug("oss://%s/%s: not kept in the cache: %s", self.store.bucket, meta.key, exc)
            with contextlib.suppress(OSError):
                data.unlink(missing_ok=True)
            return True
        self.install(meta, data, None)
        return True

    async def prepare(self, data: Path, meta: ObjectMeta, pieces: Pieces = ()) -> Path | None:
        """The checkpoint written beside `data` (`<data>.ckpt`), or None: no adoption.
        `pieces`: the CRC-64s the upload took of the bytes `data` holds still (the caller
        knows; module docstring), which spare reading them when they make the version."""
        out = data.with_name(data.name + ".ckpt")
        where = f"oss://{self.store.bucket}/{meta.key}"

        def seal() -> tuple[int | None, bool]:
            """Blocking: the bytes held and whether they were sealed without reading them."""
            bucket, part_size = self.store.bucket, self.part_size
            if pieces:
                held = seal_from_pieces(data, meta, pieces, bucket=bucket, part_size=part_size,
                                        out=out)  # fmt: skip
                if held is not None:
                    return held, True
                log.debug("%s: its upload's CRC-64s do not make the version; hashing it", where)
            return seal_for_cache(data, meta, bucket=bucket, part_size=part_size, out=out), False

        try:
            held, unread = await trio.to_thread.run_sync(seal)
        except OSError as exc:
            log.debug("%s: not kept in the cache: %s", where, exc)
            return None
        if unread:
            self.unread += 1
            log.debug("%s: kept in the cache from its upload's CRC-64s (%d pieces), not read "
                      "again", where, len(pieces))  # fmt: skip
        if held is None:
            log.debug("oss://%s/%s: staged bytes are not the committed version; not cached",
                      self.store.bucket, meta.key)  # fmt: skip
            return None
        return out

    def install(self, meta: ObjectMeta, data: Path, checkpoint: Path | None) -> bool:
        """Move `data` and `checkpoint` (None: it is `data`'s tail) into the store
        (synchronously, on the trio thread, so no open of the key runs in between). On
        failure both are removed."""
        try:
            self.store.adopt(meta.key, data, checkpoint, meta.size)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                log.warning("oss://%s/%s: could not keep the committed file in the cache: %s",
                            self.store.bucket, meta.key, exc)  # fmt: skip
            for path in (data, checkpoint):
                if path is not None:
                    with contextlib.suppress(OSError):
                        path.unlink(missing_ok=True)
            return False
        return True


def _append_tail(data: Path, cp: Checkpoint) -> None:
    """Write `cp` as the tail of the staged file `data` (cache.tail), which must hold exactly
    the object's bytes; OSError otherwise."""
    fd = os.open(data, os.O_WRONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        if size != cp.size:
            raise OSError(errno.EINVAL, f"staged file {data} is {size} bytes, not {cp.size}")
        write_tail(fd, cp, again=False)
    finally:
        os.close(fd)
