"""CRC-64/ECMA (OSS's x-oss-hash-crc64ecma): vectors from oss-protocol.md §5, combine, crcmod."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import crcmod
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ossmount.crc64 import combine, crc64, format_crc, prefix_crc, shift

# crcmod with OSS's parameters (PY2 crc.py): poly 0x142F0E1EBA9EA3693, reflected, init 0
# (crcmod's user-visible 0 is an all-ones register), xorOut all ones.
_reference = crcmod.mkCrcFun(0x142F0E1EBA9EA3693, initCrc=0, rev=True, xorOut=0xFFFFFFFFFFFFFFFF)

PATTERN = bytes(range(256))
A = b"123456789"
B = b"This is a test of the emergency broadcast system."


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", 0),
        (A, 11051210869376104954),
        (B, 2871916124362751090),
        (A + B, 7672622622872733320),
        (b"a", 3675645893302102789),
        (bytes(1024), 14085117335336199948),
        (PATTERN * 4096, 12198584541786614250),
        (PATTERN * 40000, 2211069619137792260),
        ((PATTERN * 40000)[:8388608], 13391375243009268986),
    ],
    ids=["empty", "check", "49-bytes", "concat", "a", "1024-zeros", "1MiB", "10240000", "8MiB"],
)
def test_vectors_from_the_protocol_sheet(data: bytes, expected: int) -> None:
    assert crc64(data) == expected
    assert crc64(memoryview(bytearray(data))) == expected


def test_the_vectors_combine() -> None:
    assert combine(crc64(A), crc64(B), len(B)) == 7672622622872733320
    assert combine(crc64(A), 0, 0) == crc64(A)


@given(st.binary(max_size=2000), st.binary(max_size=2000))
def test_combine_of_parts_equals_crc_of_the_whole(a: bytes, b: bytes) -> None:
    assert combine(crc64(a), crc64(b), len(b)) == crc64(a + b)


@given(st.binary(max_size=3000), st.binary(max_size=3000))
def test_continuing_a_running_crc_equals_crc_of_the_whole(a: bytes, b: bytes) -> None:
    assert crc64(b, crc64(a)) == crc64(a + b)


@given(st.binary(max_size=4000))
def test_fastcrc_agrees_with_crcmod(data: bytes) -> None:
    assert crc64(data) == _reference(data)


@given(st.integers(0, (1 << 64) - 1), st.integers(0, 5000))
def test_shift_is_appending_zeros_without_their_own_crc(crc: int, length: int) -> None:
    assert shift(crc, length) ^ crc64(bytes(length)) == combine(crc, crc64(bytes(length)), length)


@given(st.binary(max_size=2000), st.binary(max_size=2000))
def test_prefix_crc_undoes_combine(a: bytes, b: bytes) -> None:
    """The CRC of a file's start from the whole file's and its tail's (an append's unread
    start, fs/staging.py)."""
    assert prefix_crc(crc64(a + b), crc64(b), len(b)) == crc64(a)


def test_prefix_crc_over_a_tail_of_parts() -> None:
    rnd = random.Random(7)
    a, b = rnd.randbytes(100_000), rnd.randbytes(8 << 20)
    assert prefix_crc(crc64(a + b), crc64(b), len(b)) == crc64(a)
    with pytest.raises(ValueError, match="negative"):
        prefix_crc(1, 2, -1)


def test_combine_rejects_a_negative_length() -> None:
    with pytest.raises(ValueError, match="negative"):
        combine(1, 2, -1)


def test_header_format_is_plain_decimal() -> None:
    assert format_crc(11051210869376104954) == "11051210869376104954"
    assert format_crc(None) == "-"


def _spinner_rate_during(work: Callable[[], object]) -> float:
    """Ticks per ms a pure-Python thread makes while `work` runs in this thread."""
    ticks = 0
    stop = threading.Event()

    def spin() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1

    spinner = threading.Thread(target=spin)
    spinner.start()
    time.sleep(0.01)
    before, start = ticks, time.perf_counter()
    work()
    during, elapsed = ticks - before, time.perf_counter() - start
    stop.set()
    spinner.join()
    return during / (elapsed * 1000)


def test_crc_of_a_large_buffer_releases_the_gil() -> None:
    """Measured, so the client may fold CRCs into its receive loop (and its body thread).

    While this thread hashes 256 MiB, a pure-Python counter in another thread must run at a
    good fraction of its speed next to a sleep; crcmod, which holds the GIL, stands in as
    the negative control.
    """
    # Not bytes(n): zeros map to the one zero page, and fastcrc then runs at ~100 GB/s, over
    # in 2 ms, before the spinner has even woken (it measured 0 ticks). Ours runs for >= 0.2 s
    # so its rate is an average, not scheduler luck; crcmod gets one long call (~0.1 s), since
    # between calls the interpreter hands the GIL over.
    data = random.Random(3).randbytes(16 * 1024 * 1024) * 16

    def for_a_while(work: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            end = time.perf_counter() + 0.2
            while time.perf_counter() < end:
                work()

        return run

    # On a loaded machine one 0.2 s window may find the spinner without a core (CI has two):
    # up to five tries, each pairing a fresh baseline with a fresh measurement. Holding the
    # GIL keeps the spinner near 0 in every try, so this cannot pass by luck.
    tries: list[tuple[float, float]] = []
    for _ in range(5):
        free = _spinner_rate_during(lambda: time.sleep(0.2))
        ours = _spinner_rate_during(for_a_while(lambda: crc64(data)))
        tries.append((ours, free))
        if ours > 0.3 * free:
            break
    else:
        raise AssertionError(f"the spinner stalled while crc64 ran: (ours, free) {tries}")
    held = _spinner_rate_during(lambda: _reference(data[: 48 * 1024 * 1024]))
    assert held < 0.5 * ours, (held, ours)  # the measurement can tell the difference


def test_threads_that_build_the_zero_operators_at_once_all_combine_right(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The operator table grows lazily; two threads growing it at once appended the same power
    twice, and every CRC combined after was wrong (19 trials of 20 failed before the lock)."""
    import sys

    from ossmount import crc64 as module

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(10):
            monkeypatch.setattr(module, "_ZERO_OPS", [])
            got: list[int] = []
            threads = [
                threading.Thread(
                    target=lambda out=got: out.append(combine(12345, 0, (1 << 40) - 1))
                )
                for _ in range(8)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            monkeypatch.setattr(module, "_ZERO_OPS", [])
            assert got == [combine(12345, 0, (1 << 40) - 1)] * 8
    finally:
        sys.setswitchinterval(old)
