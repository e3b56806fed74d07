"""CRC-64/ECMA as OSS computes it (`x-oss-hash-crc64ecma`; CRC-64/XZ parameters).

Why fastcrc: measured at 12.8-27 GB/s on these machines, and it releases the GIL, where crcmod
(the reference named in the product design, kept as the cross-check in tests) does ~0.5 GB/s
holding it (shared/measurements.md §3). At those speeds a 1 MiB network chunk costs ~50 µs, so
the client folds the CRC into the receive loop inline; only whole-file passes go off-loop.

`combine` is zlib's crc32_combine idea carried to 64 bits: advancing a CRC register over
`len2` zero bytes is a linear map over GF(2), so it is a 64x64 bit-matrix we square up by
powers of two. Because init == xorout == all ones for this CRC, CRC(A||B) is exactly
shift(CRC(A), len(B)) ^ CRC(B) and no fix-up term is needed.
"""

from __future__ import annotations

import functools
import threading

import fastcrc

__all__ = ["BytesLike", "combine", "crc64", "format_crc", "prefix_crc", "shift"]

BytesLike = bytes | bytearray | memoryview

# Reflected form of the ECMA-182 polynomial 0x42F0E1EBA9EA3693.
_POLY_REFLECTED = 0xC96C5795D7870F42
_MASK = 0xFFFFFFFFFFFFFFFF


def crc64(data: BytesLike, crc: int = 0) -> int:
    """CRC of `data`, continuing from `crc` (the CRC of whatever came before, 0 for nothing).

    crc64(b, crc64(a)) == crc64(a + b), which is what lets a resumed download continue a
    running CRC instead of re-reading the bytes it already has.
    """
    return int(fastcrc.crc64.xz(data, initial=crc))


def _gf2_times(mat: list[int] | tuple[int, ...], vec: int) -> int:
    out = 0
    i = 0
    while vec:
        if vec & 1:
            out ^= mat[i]
        vec >>= 1
        i += 1
    return out


def _gf2_square(mat: list[int]) -> list[int]:
    return [_gf2_times(mat, mat[n]) for n in range(64)]


_ZERO_OPS: list[list[int]] = []  # _ZERO_OPS[k] advances a CRC register over 2**k zero bytes
# Held while _ZERO_OPS grows. Worker threads combine CRCs too (an upload's piece CRCs, a
# cache adoption's seal): two threads growing it at once appended the same power twice, so
# every later index was off by one and every CRC combined in the process after was wrong
# (seen as CompleteMultipartUpload mismatches). Reading a built entry needs no lock: the
# list only grows, and an entry is complete before it is appended.
_GROWING = threading.Lock()


def _zero_operator(k: int) -> list[int]:
    """The operator for 2**k zero bytes, squaring up from the last one built.

    Built lazily and only as far as needed: all 64 cost ~60 ms of pure Python, which a
    first verification on the event loop would feel; an 8 MiB part needs 24.
    """
    if len(_ZERO_OPS) <= k:
        with _GROWING:
            if not _ZERO_OPS:
                one_bit = [_POLY_REFLECTED] + [1 << n for n in range(63)]
                _ZERO_OPS.append(_gf2_square(_gf2_square(_gf2_square(one_bit))))  # one byte
            while len(_ZERO_OPS) <= k:
                _ZERO_OPS.append(_gf2_square(_ZERO_OPS[-1]))
    return _ZERO_OPS[k]


@functools.lru_cache(maxsize=64)
def zero_shift(length: int) -> tuple[int, ...]:
    """Operator (64 columns) advancing a CRC register over `length` zero bytes.

    Cached: an object's parts share one length, so verifying N parts costs one operator and
    N matrix-vector products.
    """
    columns = [1 << n for n in range(64)]
    k = 0
    while length:
        if length & 1:
            op = _zero_operator(k)
            columns = [_gf2_times(op, c) for c in columns]
        length >>= 1
        k += 1
    return tuple(columns)


def shift(crc: int, length: int) -> int:
    """`crc` advanced over `length` zero bytes (the linear part of appending data)."""
    return _gf2_times(zero_shift(length), crc) if length else crc


def combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC of A||B from crc1 = CRC(A), crc2 = CRC(B) and len2 = len(B) in bytes.

    Never touches the data: the cache uses it to get the whole-object CRC from per-part CRCs
    without a second pass over the file. Operators are cached per length (see zero_shift).
    """
    if len2 < 0:
        raise ValueError(f"negative length {len2}")
    return (_advance(crc1, len2) ^ crc2) & _MASK


def prefix_crc(whole: int, tail: int, tail_len: int) -> int:
    """CRC of A from CRC(A||B) = `whole`, CRC(B) = `tail` and len(B) = `tail_len`: `combine`
    solved for its first argument. Advancing over zero bytes is an invertible linear map (the
    polynomial's constant term is 1), so this is one 64x64 system over GF(2). It lets a file
    appended to be verified without reading its start: OSS states the whole object's CRC, the
    client reads the tail it rewrites (fs/staging.py `fill`)."""
    if tail_len < 0:
        raise ValueError(f"negative length {tail_len}")
    target = (whole ^ tail) & _MASK
    if not tail_len:
        return target
    # Gaussian elimination on the operator's columns: each pivot is a column combination,
    # `mix` records which columns; reducing `target` to zero names the preimage.
    pivots: dict[int, tuple[int, int]] = {}
    for n, column in enumerate(zero_shift(tail_len)):
        mix = 1 << n
        while column:
            top = column.bit_length() - 1
            if top not in pivots:
                pivots[top] = (column, mix)
                break
            column ^= pivots[top][0]
            mix ^= pivots[top][1]
    found = 0
    while target:
        column, mix = pivots[target.bit_length() - 1]  # complete: the map is invertible
        target ^= column
        found ^= mix
    return found


def _advance(crc: int, length: int) -> int:
    """`shift` for a length seen once (an object's last part): one matrix-vector product per
    set bit of `length` instead of building its 64-column operator (zero_shift: one product
    per column per set bit). Measured: 10-90 us against 1-7 ms per new length, on the event
    loop, once per object of 2 parts or more (`python -c` timing of combine, 2-core VM)."""
    k = 0
    while length:
        if length & 1:
            crc = _gf2_times(_zero_operator(k), crc)
        length >>= 1
        k += 1
    return crc


def format_crc(crc: int | None) -> str:
    """How OSS writes a CRC in `x-oss-hash-crc64ecma` (unsigned decimal), or '-' for none."""
    return "-" if crc is None else str(crc)
