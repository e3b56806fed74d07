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

import fastcrc

__all__ = ["BytesLike", "combine", "crc64", "format_crc"]

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


def _gf2_times(mat: list[int], vec: int) -> int:
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


def _zero_operators() -> list[list[int]]:
    """Operators that advance a CRC register over 2**k zero *bytes*, for k = 0..63."""
    one_bit = [_POLY_REFLECTED] + [1 << n for n in range(63)]
    two_bits = _gf2_square(one_bit)
    four_bits = _gf2_square(two_bits)
    ops = [_gf2_square(four_bits)]  # 8 bits = 1 byte
    for _ in range(63):
        ops.append(_gf2_square(ops[-1]))
    return ops


_ZERO_OPS: list[list[int]] | None = None


def combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC of A||B from crc1 = CRC(A), crc2 = CRC(B) and len2 = len(B) in bytes.

    Costs O(64 * log2(len2)) small-int operations and never touches the data: the cache uses
    it to get the whole-object CRC from per-part CRCs without a second pass over the file.
    """
    if len2 < 0:
        raise ValueError(f"negative length {len2}")
    if len2 == 0:
        return crc1
    global _ZERO_OPS
    if _ZERO_OPS is None:
        _ZERO_OPS = _zero_operators()
    k = 0
    while len2:
        if len2 & 1:
            crc1 = _gf2_times(_ZERO_OPS[k], crc1)
        len2 >>= 1
        k += 1
    return (crc1 ^ crc2) & _MASK


def format_crc(crc: int | None) -> str:
    """How OSS writes a CRC in `x-oss-hash-crc64ecma` (unsigned decimal), or '-' for none."""
    return "-" if crc is None else str(crc)
