"""An entry discarded under a running download (another open of its key found a newer version
and discarded the old one's files: CacheStore.open_entry): the download ends as if the object
changed, its readers get ObjectChanged (ESTALE), and the mount goes on. An EntryStateError that
escaped a worker took the whole mount down (the random walk, seed 646 with appends).

Set-up and synchronisation as tests/unit/prefetch_helpers.py describes."""

from __future__ import annotations

from pathlib import Path

import trio

from ossmount.prefetch import ObjectChanged
from ossmount.prefetch.errors import ReadError
from tests.unit.fake_source import FakeSource
from tests.unit.prefetch_helpers import KEY, PART, blob, part_of, running


async def test_an_entry_discarded_under_a_download_fails_its_reads_not_the_mount(
    source: FakeSource, cache_dir: Path
) -> None:
    data = blob()
    meta = source.put(KEY, data)
    gate = source.gate(KEY, 1)
    async with running(source, cache_dir) as p:
        reader = p.open(meta)
        got: list[bytes | ReadError] = []

        async def read() -> None:
            try:
                got.append(await reader.read(PART, PART))  # part 1, no read-ahead
            except ReadError as exc:
                got.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            with trio.fail_after(10):
                await gate.arrived.wait()
            reader._download.entry.discard()  # what an open of a newer version does
            gate.release.set()
        assert len(got) == 1
        assert isinstance(got[0], ObjectChanged), got
        await reader.aclose()
        again = p.open(meta)  # a new download, in a new entry
        assert await again.read(PART, PART) == part_of(1, data)
        await again.aclose()
