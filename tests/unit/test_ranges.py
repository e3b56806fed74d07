"""Part arithmetic against a byte-by-byte reference model."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ossmount.cache.ranges import PartLayout

sizes = st.integers(min_value=0, max_value=10_000)
part_sizes = st.integers(min_value=1, max_value=700)


@st.composite
def layouts(draw: st.DrawFn) -> PartLayout:
    return PartLayout(draw(sizes), draw(part_sizes))


@given(layouts())
def test_parts_tile_the_object(layout: PartLayout) -> None:
    pos = 0
    for i in range(layout.count):
        start, length = layout.span(i)
        assert start == pos
        assert 1 <= length <= layout.part_size
        if i < layout.count - 1:
            assert length == layout.part_size
        pos += length
    assert pos == layout.size


@given(layouts(), st.integers(0, 12_000), st.integers(0, 12_000))
def test_parts_for_matches_reference(layout: PartLayout, offset: int, length: int) -> None:
    expected = sorted(
        {b // layout.part_size for b in range(offset, min(offset + length, layout.size))}
    )
    got = layout.parts_for(offset, length)
    assert list(got) == expected
    assert got.step == 1


@given(layouts(), st.sets(st.integers(0, 40)))
def test_contiguous_offset(layout: PartLayout, done: set[int]) -> None:
    n = 0
    while n < layout.count and n in done:
        n += 1
    assert layout.contiguous_parts(done) == n
    expected = layout.size if n == layout.count else n * layout.part_size
    assert layout.contiguous_offset(done) == expected


@given(
    st.integers(0, 3_000_000),
    st.sampled_from([1000, 256 * 1024, 1024 * 1024, 4096 * 1024]),
    st.data(),
)
def test_bytes_in_is_the_sum_of_the_spans(size: int, part_size: int, data: st.DataObject) -> None:
    layout = PartLayout(size, part_size)
    parts = data.draw(st.sets(st.integers(0, layout.count - 1)) if layout.count else st.just(set()))
    assert layout.bytes_in(parts) == sum(layout.span(i)[1] for i in parts)


def test_examples() -> None:
    empty = PartLayout(0, 8)
    assert empty.count == 0
    assert empty.parts_for(0, 100) == range(0)
    assert empty.contiguous_offset(set()) == 0
    one = PartLayout(1, 8)
    assert one.count == 1
    assert one.span(0) == (0, 1)
    exact = PartLayout(16, 8)
    assert exact.count == 2
    assert exact.span(1) == (8, 8)
    assert PartLayout(17, 8).span(2) == (16, 1)
    assert PartLayout(15, 8).span(1) == (8, 7)
    assert exact.parts_for(7, 2) == range(2)
    assert exact.parts_for(8, 0) == range(0)
    assert exact.parts_for(16, 5) == range(0)
    assert exact.parts_for(15, 100) == range(1, 2)


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="size"):
        PartLayout(-1, 8)
    with pytest.raises(ValueError, match="part size"):
        PartLayout(10, 0)
    layout = PartLayout(10, 4)
    with pytest.raises(IndexError):
        layout.span(3)
    with pytest.raises(IndexError):
        layout.span(-1)
    with pytest.raises(ValueError, match="negative"):
        layout.parts_for(-1, 4)
    with pytest.raises(ValueError, match="negative"):
        layout.parts_for(0, -4)


@given(
    size=st.integers(0, 1 << 36),
    part_size=st.integers(1, 64 << 20),
    probes=st.lists(st.floats(0, 1, exclude_max=True), max_size=20),
)
def test_spans_tile_the_object_with_a_small_head_part(
    size: int, part_size: int, probes: list[float]
) -> None:
    layout = PartLayout(size, part_size)
    head = min(part_size, 256 << 10)
    ends = 0
    for index in range(min(layout.count, 50)):
        start, length = layout.span(index)
        assert start == ends
        if index == 0:
            assert length == min(size, head)
        elif index < layout.count - 1:
            assert length == part_size
        assert length > 0
        ends = start + length
    if layout.count:
        last_start, last_length = layout.span(layout.count - 1)
        assert last_start + last_length == size
    for probe in probes:
        if size == 0:
            break
        offset = int(probe * size)
        [index] = layout.parts_for(offset, 1)
        start, length = layout.span(index)
        assert start <= offset < start + length
