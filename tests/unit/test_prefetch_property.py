"""Property test of the prefetch engine against the in-memory source and a real cache directory.

Random read sequences (one or two handles, reading at random or in sequential runs) against
random part size, parallelism, GET limit, read-ahead and cache cap. Whatever the mix:

* every read returns exactly the object's bytes at that range;
* no part is fetched twice unless the cache dropped it (shed) meanwhile;
* GETs in flight never exceed `max_gets` overall nor `parallel_count` for the object;
* once the object was read whole, its entry is verified.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trio.testing import MockClock

from ossmount.cache.store import CacheStore
from ossmount.prefetch import ObjectReader, PrefetchConfig, Prefetcher
from ossmount.service.metrics import MountMetrics
from tests.unit.fake_source import BUCKET, FakeSource

KEY = "prop/object.bin"


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, object]:
    part = draw(st.sampled_from([512, 1024, 4096]))
    count = draw(st.integers(1, 12))
    size = draw(st.integers((count - 1) * part + 1, count * part))
    reads = st.lists(
        st.tuples(
            st.integers(0, 1),  # which handle
            st.integers(0, size + part),  # offset (past the end too)
            st.integers(1, 3 * part),  # size
            st.booleans(),  # continue sequentially from this handle's last read
        ),
        min_size=1,
        max_size=25,
    )
    return {
        "part": part,
        "size": size,
        "parallel": draw(st.integers(1, 4)),
        "max_gets": draw(st.integers(1, 6)),
        "readahead": part * draw(st.integers(1, 6)),
        "cap_parts": draw(st.one_of(st.none(), st.integers(2, 8))),
        "reads": draw(reads),
        "seed": draw(st.integers(0, 2**16)),
    }


async def read_whole(reader: ObjectReader, size: int, chunk: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        out += await reader.read(len(out), chunk)
    return bytes(out)


async def exercise(root: Path, s: dict[str, object]) -> None:
    part, size = int(str(s["part"])), int(str(s["size"]))
    data = random.Random(int(str(s["seed"]))).randbytes(size)
    source = FakeSource(part)
    meta = source.put(KEY, data)
    cap = s["cap_parts"]
    store = CacheStore(root, bucket=BUCKET, max_bytes=None if cap is None else int(str(cap)) * part)
    store.lock()
    config = PrefetchConfig(
        bucket=BUCKET,
        part_size=part,
        parallel_count=int(str(s["parallel"])),
        max_gets=int(str(s["max_gets"])),
        readahead_bytes=int(str(s["readahead"])),
        shed_margin=0,
    )
    metrics = MountMetrics(bucket=BUCKET)
    reads = s["reads"]
    assert isinstance(reads, list)
    try:
        async with trio.open_nursery() as nursery:
            p = Prefetcher(source, store, nursery, config, metrics)
            handles = [p.open(meta), p.open(meta)]
            last = [0, 0]
            for which, offset, length, sequential in reads:
                at = last[which] if sequential else offset
                got = await handles[which].read(at, length)
                assert got == data[at : at + length], (at, length)
                last[which] = at + len(got)
            assert await read_whole(handles[0], size, 3 * part // 2) == data
            await p.wait_idle()
            assert p.cached_state(meta)[0] == "verified"
            shed = metrics.registry.get_sample_value("ossmount_shed_bytes_total") or 0
            if not shed:
                assert max(source.part_calls(KEY).values()) == 1, source.part_calls(KEY)
            assert source.max_in_flight <= config.max_gets
            assert source.max_in_flight_by_key[KEY] <= config.parallel_count
            for handle in handles:
                await handle.aclose()
            await p.wait_idle()
            nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True):
                await p.aclose()
    finally:
        store.close()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenarios())
def test_any_read_sequence_gets_exact_bytes_within_the_limits(s: dict[str, object]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        trio.run(exercise, Path(tmp), s, clock=MockClock(autojump_threshold=0))
