"""Commit a staged file to OSS: one PutObject when small, else a journaled multipart upload.

`Uploader` holds what every file's commit shares: the OSS writes, the ledger of our
multipart uploads (write/ledger.py), the settings and the limit on parts in flight across
all files. Each file's commit is an `UploadSession` (write/session.py, which says how parts
go early, how the journal is kept and how a crashed upload is resumed); `commit` runs one
for a file written at once, `resume` one for a file a previous process left.
"""

from __future__ import annotations

import logging
import os

import trio

from ..oss._writes import OssWrites
from .boot import current_boot_id
from .commit_types import CommitResult, StagedFile, UploadSettings
from .journal import JournalRecord, WriteState, load
from .ledger import UploadLedger
from .session import UploadSession

__all__ = ["UploadSession", "Uploader"]

log = logging.getLogger(__name__)


class Uploader:
    def __init__(
        self, writes: OssWrites, ledger: UploadLedger, settings: UploadSettings | None = None
    ) -> None:
        self.writes = writes
        self.ledger = ledger
        self.settings = settings or UploadSettings()
        self.limiter = trio.CapacityLimiter(self.settings.parallel)
        self.copy_limiter = trio.CapacityLimiter(self.settings.copy_parallel)  # unread starts

    def new_record(
        self,
        key: str,
        *,
        base_etag: str = "",
        forbid_overwrite: bool = False,
        mtime_ns: int = 0,
        mode: int = 0o100644,
        uid: int | None = None,
        gid: int | None = None,
        keep_mode: bool = False,
        atime_ns: int | None = None,
        ctime_ns: int | None = None,
        part_size: int | None = None,
    ) -> JournalRecord:
        """`part_size`: the file's upload part size, if not the settings' (an appender's,
        fs/unread.py `upload_part_size`)."""
        return JournalRecord(
            bucket=self.writes.bucket,
            key=key,
            size=0,
            part_size=part_size or self.settings.part_size,
            mtime_ns=mtime_ns,
            mode=mode,
            base_etag=base_etag,
            forbid_overwrite=forbid_overwrite,
            uid=uid,
            gid=gid,
            keep_mode=keep_mode,
            atime_ns=atime_ns,
            ctime_ns=ctime_ns,
        )

    async def abort(self, key: str, upload_id: str) -> None:
        """Abort our multipart upload `upload_id` of `key`, which nothing will complete. Only
        logs: the sweep of the next mount aborts what this could not, and an upload that
        completed after all is gone already (NoSuchUpload counts as aborted)."""
        try:
            await self.writes.abort_multipart(key, upload_id)
        except Exception as exc:
            log.warning("oss://%s/%s: aborting upload %s failed (%s); the next mount's "
                        "sweeper will", self.writes.bucket, key, upload_id, exc)  # fmt: skip
        else:
            self.ledger.active.discard(upload_id)

    def session(
        self,
        staged: StagedFile,
        record: JournalRecord,
        nursery: trio.Nursery | None,
        save_lock: trio.Lock | None = None,
    ) -> UploadSession:
        """A session; `nursery` hosts the parts `part_ready` sends early (None: no early parts).
        `save_lock`: shared by every session of one staged file (see the module docstring)."""
        return UploadSession(self, staged, record, nursery, save_lock)

    async def commit(self, staged: StagedFile, record: JournalRecord) -> CommitResult:
        """Upload the whole staged file now (no parts were sent early)."""
        session = self.session(staged, record, None)
        try:
            return await session.finish(os.stat(staged.data).st_size)
        finally:
            session.close()

    async def resume(
        self, staged: StagedFile, record: JournalRecord | None = None
    ) -> CommitResult | None:
        """Finish what a previous process left (after kill -9 or a remount). None when there
        is no usable journal (nothing to do, or it was damaged and moved aside), the file
        was never sealed by close/fsync, or a newer version is on the server
        (`UploadSession.overtaken`). `record`: the journal's, already loaded (fs/recovery.py,
        which lays attributes set after the seal over it); else it is loaded here."""
        if record is None:
            record = await trio.to_thread.run_sync(load, staged.journal)
        if record is None:
            return None
        if not record.sealed:
            # Never closed nor fsynced: the bytes were not acknowledged and, after a power
            # loss, may not even be the ones written. Uploading them could replace a good
            # object with a torn one, so they are kept for the FUSE layer to decide.
            log.warning(
                "oss://%s/%s: staged file %s was never closed; not uploaded (kept)",
                record.bucket, record.key, staged.data,
            )  # fmt: skip
            return None
        if record.state is WriteState.COMMITTED:
            assert record.result_crc64 is not None
            return CommitResult(
                record.key, record.result_etag, record.result_crc64, record.size, len(record.parts)
            )
        if record.boot_id and record.boot_id != current_boot_id():
            # Sealed without an fsync before the machine restarted: the staged bytes may be
            # torn, and their close never returned success (it waited for this commit). The
            # caller drops the file; the sweeper aborts its multipart upload.
            log.warning(
                "oss://%s/%s: staged file %s was sealed unsynced before a reboot and never "
                "committed; not uploaded (its writer was told nothing was stored)",
                record.bucket, record.key, staged.data,
            )  # fmt: skip
            return None
        session = self.session(staged, record, None)
        try:
            await session.reconcile()
            if await session.overtaken():
                return None
            return await session.finish(record.size)
        finally:
            session.close()
