"""`FileSystem`'s write operations in-process, over a real client against the emulator (in a
thread): what lookups, getattr and the namespace answer around a commit, and that a mount
without staging refuses every write itself (ReadOnly, EROFS), not only through the kernel."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import trio

from ossmount.cache.store import CacheStore
from ossmount.emulator import Emulator, FaultRule
from ossmount.fs.errors import ReadOnly
from ossmount.fs.filesystem import FileSystem
from ossmount.fs.stagedspace import StagedSpace
from ossmount.fs.staging import Staging
from ossmount.oss import OssClient, OssWrites
from ossmount.oss._errors import OssError
from ossmount.prefetch import PrefetchConfig
from ossmount.tree.errors import NotFound
from ossmount.tree.inodes import ROOT_INODE
from ossmount.tree.listing import Namespace
from ossmount.write import StagedFile, Uploader, UploadLedger, UploadSettings
from tests.fs.conftest import LOOK, RecordingKernel
from tests.unit.prefetch_helpers import prefetcher_over
from tests.unit.test_write_uploader import make_client

BUCKET = "bkt"


@dataclass
class WriteRig:
    fs: FileSystem
    emu: Emulator
    staging: Staging | None
    store: CacheStore

    async def stored(self) -> None:
        """Send the attributes the mount owes now (fs/owedattrs.py), as an unmount does."""
        assert self.staging is not None
        await self.staging.owed.store_all()


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(buckets=[BUCKET], access_key_id="ak", access_key_secret="sk") as e:
        yield e


async def write_rig(
    emu: Emulator, tmp_path: Path, *, rw: bool, read_timeout: float = 5.0, part_mib: int = 1,
    max_idle: int | None = None, writeback_delay_s: float | None = None,
    cache_cap: int | None = None,
) -> AsyncIterator[WriteRig]:  # fmt: skip
    """A FileSystem over the emulator; `writeback_delay_s` given: -o writeback, with uploads
    held back that long after a close (and every file journaled, as mount.py sets it).
    `cache_cap`: the cache's cap in bytes, which staged files count against."""
    writeback = writeback_delay_s is not None
    store = CacheStore(tmp_path / "cache", bucket=BUCKET)
    store.lock()
    cfg = PrefetchConfig(BUCKET, 1 << 20, parallel_count=2, max_gets=4, readahead_bytes=2 << 20)
    client: OssClient
    async with (
        make_client(emu.endpoint, read_timeout) as client,
        prefetcher_over(client, store, cfg) as prefetcher,
        trio.open_nursery() as nursery,  # the staging's background commits
    ):
        staging = None
        if rw:
            uploader = Uploader(
                OssWrites(client),
                UploadLedger(tmp_path / "uploads.ledger"),
                UploadSettings(
                    part_size=part_mib << 20,
                    single_put_max=part_mib << 20,
                    journal_small_puts=writeback,
                    fsync_staged=writeback,
                ),
            )
            staging = Staging(
                uploader,
                tmp_path / "staging",
                nursery,
                bucket=BUCKET,
                writeback=writeback,
                writeback_delay_s=writeback_delay_s or 0.0,
            )
        fs = FileSystem(
            Namespace(client, ttl_s=60, max_idle_inodes=max_idle),
            prefetcher,
            LOOK,
            symlinks=client,
            kernel=RecordingKernel(),
            bucket=BUCKET,
            staging=staging,
        )
        if cache_cap is not None and staging is not None:
            store.max_bytes = cache_cap
            staging.space = StagedSpace(store)
        try:
            yield WriteRig(fs, emu, staging, store)
        finally:
            nursery.cancel_scope.cancel()


@pytest.fixture
async def rw(emu: Emulator, tmp_path: Path) -> AsyncIterator[WriteRig]:
    async for rig in write_rig(emu, tmp_path, rw=True):
        yield rig


@pytest.fixture
async def ro(emu: Emulator, tmp_path: Path) -> AsyncIterator[WriteRig]:
    async for rig in write_rig(emu, tmp_path, rw=False):
        yield rig


def _lists(emu: Emulator) -> int:
    return sum(1 for r in emu.requests if r.op == "ListObjectsV2")


async def test_a_new_file_is_found_by_lookup_and_stat_before_and_after_its_commit(
    rw: WriteRig,
) -> None:
    fs = rw.fs
    opened, attr = await fs.create(ROOT_INODE, "new", os.O_WRONLY | os.O_CREAT, 0o644)
    assert fs.write(opened.fh, 0, b"hello") == 5
    assert (await fs.getattr(attr.inode)).size == 5
    assert (await fs.lookup(ROOT_INODE, "new")).inode == attr.inode
    assert rw.emu.head(BUCKET, "new") is None, "nothing on OSS before close"
    assert await fs.read(opened.fh, 1, 3) == b"ell"
    await fs.flush(opened.fh)
    await fs.release(opened.fh)
    assert rw.emu.get_bytes(BUCKET, "new") == b"hello"
    lists = _lists(rw.emu)
    found = await fs.lookup(ROOT_INODE, "new")
    assert found.inode == attr.inode
    assert found.size == 5
    assert _lists(rw.emu) == lists, "the namespace learned the commit: no LIST to find it"


async def test_a_renamed_file_keeps_its_inode_and_the_old_name_is_gone(rw: WriteRig) -> None:
    rw.emu.put_object(BUCKET, "a", b"A")
    fs = rw.fs
    attr = await fs.lookup(ROOT_INODE, "a")
    await fs.rename(ROOT_INODE, "a", ROOT_INODE, "b", 0)
    assert (await fs.getattr(attr.inode)).size == 1
    assert (await fs.lookup(ROOT_INODE, "b")).inode == attr.inode
    with pytest.raises(NotFound):
        await fs.lookup(ROOT_INODE, "a")
    assert rw.emu.get_bytes(BUCKET, "b") == b"A"
    assert rw.emu.head(BUCKET, "a") is None


async def test_without_staging_every_write_is_refused_read_only(ro: WriteRig) -> None:
    ro.emu.put_object(BUCKET, "f", b"x")
    fs = ro.fs
    inode = (await fs.lookup(ROOT_INODE, "f")).inode
    with pytest.raises(ReadOnly):
        await fs.open(inode, os.O_RDWR)
    with pytest.raises(ReadOnly):
        await fs.create(ROOT_INODE, "n", os.O_WRONLY | os.O_CREAT)
    with pytest.raises(ReadOnly):
        await fs.setattr(inode, size=0, mtime_ns=None, fh=None)
    with pytest.raises(ReadOnly):
        await fs.unlink(ROOT_INODE, "f")
    with pytest.raises(ReadOnly):
        await fs.mkdir(ROOT_INODE, "d")
    with pytest.raises(ReadOnly):
        await fs.rmdir(ROOT_INODE, "d")
    with pytest.raises(ReadOnly):
        await fs.rename(ROOT_INODE, "f", ROOT_INODE, "g", 0)
    with pytest.raises(ReadOnly):
        await fs.symlink(ROOT_INODE, "l", "f")
    assert ro.emu.get_bytes(BUCKET, "f") == b"x"


@pytest.fixture
async def rw_short(emu: Emulator, tmp_path: Path) -> AsyncIterator[WriteRig]:
    """`rw` whose client waits 0.3 s for a reply."""
    async for rig in write_rig(emu, tmp_path, rw=True, read_timeout=0.3):
        yield rig


async def test_an_exclusive_create_whose_failed_commit_landed_commits_again_as_ours(
    emu: Emulator, rw_short: WriteRig
) -> None:
    """fsync of an O_EXCL file fails although OSS stored it (the one reply that would have
    said so came too late, every retry was refused); the close then meets its own object: ours,
    since it has our CRC-64, so the close succeeds (it used to fail with EEXIST)."""
    emu.faults.add(FaultRule(op="PutObject", key="x", action="latency", seconds=1.5))
    emu.faults.add(
        FaultRule(op="PutObject", key="x", action="error", status=503,
                  code="ServiceUnavailable", skip=1, times=3)
    )  # fmt: skip
    fs = rw_short.fs
    opened, _ = await fs.create(ROOT_INODE, "x", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    fs.write(opened.fh, 0, b"exclusive")
    with pytest.raises(OssError):
        await fs.fsync(opened.fh)
    assert emu.get_bytes(BUCKET, "x") == b"exclusive"  # stored all the same
    await fs.flush(opened.fh)  # the close: no EEXIST
    await fs.release(opened.fh)
    puts = [r for r in emu.requests if r.op == "PutObject"]
    assert [r.status for r in puts][-1] == 409  # the forbid-overwrite PUT met our object


async def test_an_exclusive_multipart_file_whose_failed_completion_landed_commits_as_ours(
    emu: Emulator, rw_short: WriteRig
) -> None:
    """The same for a file sent in parts: the CompleteMultipartUpload that stored it answered
    too late and its retries were refused, so fsync failed; the close meets the object and
    takes it for its own (our CRC-64 and size) instead of failing with EEXIST."""
    body = os.urandom((2 << 20) + 12345)  # three 1 MiB parts
    op = "CompleteMultipartUpload"
    emu.faults.add(FaultRule(op=op, key="m", action="latency", seconds=1.5))
    emu.faults.add(
        FaultRule(op=op, key="m", action="error", status=503, code="ServiceUnavailable",
                  skip=1, times=3)
    )  # fmt: skip
    fs = rw_short.fs
    opened, _ = await fs.create(ROOT_INODE, "m", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    fs.write(opened.fh, 0, body)
    with pytest.raises(OssError):
        await fs.fsync(opened.fh)
    assert emu.get_bytes(BUCKET, "m") == body  # stored all the same
    await fs.flush(opened.fh)  # the close: no EEXIST
    await fs.release(opened.fh)
    assert emu.get_bytes(BUCKET, "m") == body


async def test_a_failed_multipart_commit_aborts_its_upload_and_the_close_sends_again(
    emu: Emulator, rw: WriteRig
) -> None:
    """Every CompleteMultipartUpload of the fsync is refused: the upload it began is aborted
    (not left holding its parts until the next mount's sweep), and the close commits anew."""
    body = os.urandom((2 << 20) + 1)
    emu.faults.add(
        FaultRule(op="CompleteMultipartUpload", key="f", action="error", status=503,
                  code="ServiceUnavailable", times=4)
    )  # fmt: skip
    fs = rw.fs
    opened, _ = await fs.create(ROOT_INODE, "f", os.O_WRONLY | os.O_CREAT)
    fs.write(opened.fh, 0, body)
    with pytest.raises(OssError):
        await fs.fsync(opened.fh)
    with trio.fail_after(10):  # the abort runs in the background: wait for it
        while not [r for r in emu.requests.ops("AbortMultipartUpload") if r.status == 204]:
            await trio.sleep(0.01)
    await fs.flush(opened.fh)
    await fs.release(opened.fh)
    assert emu.get_bytes(BUCKET, "f") == body


async def test_an_exclusive_create_still_refuses_another_clients_object(
    emu: Emulator, rw: WriteRig
) -> None:
    emu.faults.add(FaultRule(op="PutObject", key="y", action="reset", times=4))
    fs = rw.fs
    opened, _ = await fs.create(ROOT_INODE, "y", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    fs.write(opened.fh, 0, b"ours")
    with pytest.raises(OssError):
        await fs.fsync(opened.fh)  # nothing stored: every attempt cut
    emu.put_object(BUCKET, "y", b"theirs")
    with pytest.raises(OssError) as info:
        await fs.flush(opened.fh)
    assert info.value.code == "FileAlreadyExists"
    await fs.release(opened.fh)
    assert emu.get_bytes(BUCKET, "y") == b"theirs"


async def test_a_file_truncated_while_its_commit_reads_it_is_committed_again_not_failed(
    emu: Emulator, tmp_path: Path
) -> None:
    """The server stops reading the first 8 MiB part, so its send is still reading the staged
    file when another handle truncates it: the send comes up short, and the commit is made
    again, of what the file holds now (it failed with a StagingError, EIO at close)."""
    held = FaultRule(op="UploadPart", key="t", action="stall", seconds=1.0, times=1)
    emu.faults.add(held)
    async for rig in write_rig(emu, tmp_path, rw=True, part_mib=8):
        fs = rig.fs
        body = os.urandom(24 << 20)
        opened, attr = await fs.create(ROOT_INODE, "t", os.O_RDWR | os.O_CREAT)
        fs.write(opened.fh, 0, body)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fs.fsync, opened.fh)
            with trio.fail_after(10):
                while held.seen < 1:
                    await trio.sleep(0.01)
            await fs.setattr(attr.inode, size=3 << 20, mtime_ns=None, fh=opened.fh)
        assert emu.get_bytes(BUCKET, "t") == body[: 3 << 20]
        await fs.release(opened.fh)


async def test_bytes_written_while_a_new_file_commits_are_sent_not_copied_from_that_commit(
    emu: Emulator, rw: WriteRig
) -> None:
    """The first commit of a new file becomes the source the next commit copies unchanged
    parts from; a part written while that first commit ran is not in it, so it must be sent.
    It was copied, and the next commit failed on the final CRC-64 (EIO)."""
    held = FaultRule(op="CompleteMultipartUpload", key="n", action="latency", seconds=0.5)
    emu.faults.add(held)
    fs = rw.fs
    body = bytearray(os.urandom((3 << 20) + 5))
    opened, _ = await fs.create(ROOT_INODE, "n", os.O_RDWR | os.O_CREAT)
    fs.write(opened.fh, 0, bytes(body))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fs.fsync, opened.fh)
        with trio.fail_after(10):
            while held.seen < 1:
                await trio.sleep(0.01)
        fs.write(opened.fh, 10, b"written during the commit")
    body[10:35] = b"written during the commit"
    await fs.flush(opened.fh)
    await fs.release(opened.fh)
    assert emu.get_bytes(BUCKET, "n") == bytes(body)


async def test_statfs_reports_room_to_write_on_a_writable_mount(rw: WriteRig) -> None:
    stats = rw.fs.statfs()
    assert stats.free_bytes >= 1 << 40
    assert stats.free_files > 0
    assert stats.block_size == LOOK.block_size


async def test_statfs_reports_no_room_on_a_read_only_mount(ro: WriteRig) -> None:
    stats = ro.fs.statfs()
    assert (stats.free_bytes, stats.free_files) == (0, 0)


@pytest.fixture
async def rw_one_idle(emu: Emulator, tmp_path: Path) -> AsyncIterator[WriteRig]:
    """Its inode table keeps one idle entry: a listing drops the others."""
    async for rig in write_rig(emu, tmp_path, rw=True, max_idle=1):
        yield rig


async def test_a_file_left_unsent_by_the_recovery_is_shown_and_its_entry_never_goes_idle(
    rw_one_idle: WriteRig,
) -> None:
    """FileSystem.show_unsent: the file a previous process sealed is shown with its staged
    bytes and attributes; no kernel reference and no handle hold its table entry, but the
    staging pins it (Staging.pins): a listing that drops idle entries keeps it."""
    fs, staging, emu = rw_one_idle.fs, rw_one_idle.staging, rw_one_idle.emu
    for name in ("x", "y", "z"):
        emu.put_object(BUCKET, name, b"listed")
    assert staging is not None
    files = StagedFile.beside(staging.directory / "left.data")
    files.data.write_bytes(b"sealed by the last mount")
    record = staging.uploader.new_record("early", mtime_ns=5 * 10**18, mode=0o100600)
    record = replace(record, size=files.data.stat().st_size, sealed=True)
    fs.show_unsent([(files, record)])
    found = await fs.lookup(ROOT_INODE, "early")
    assert (found.size, found.mode, found.mtime_ns) == (24, 0o100600, 5 * 10**18)
    fs.forget(found.inode, 1)
    fh = await fs.opendir(ROOT_INODE)  # pins early, x, y, z; idle again in that order
    fs.releasedir(fh)
    assert found.inode in fs._ns.table, "pinned while staged, not dropped as idle"
    assert fs._ns.table.find("x", False) is None, "x went idle first and was dropped"
    again = await fs.lookup(ROOT_INODE, "early")
    assert again.inode == found.inode
    assert (await fs.getattr(found.inode)).size == 24
    opened = await fs.open(found.inode, os.O_RDONLY)
    assert await fs.read(opened.fh, 0, 100) == b"sealed by the last mount"
    assert emu.head(BUCKET, "early") is None, "not uploaded before its last close"
    await fs.release(opened.fh)
    assert emu.get_bytes(BUCKET, "early") == b"sealed by the last mount"
    assert not files.journal.exists()
