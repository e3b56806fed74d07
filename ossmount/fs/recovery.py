"""Mount start: finish what a previous process left in the staging directory.

Sealed files are uploaded again (a multipart upload resumes where it stopped), files never
sealed are dropped (their writer was never told they were stored), checkpoints of adoptions
cut short are removed, and our stale multipart uploads are aborted. Runs before the mount is
ready (fs/staging.py), so nothing else uses the files. A sealed file whose upload fails here
is kept, and returned: the mount shows it and tries again (FileSystem.show_unsent).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import trio

from ossmount.fs.attrstore import store_attrs
from ossmount.fs.shown import Posix, posix_of
from ossmount.fs.staging import SPARE
from ossmount.oss.models import ObjectMeta
from ossmount.write import StagedFile, Uploader, load_journals, sweep_stale_uploads
from ossmount.write.commit_types import CommitResult
from ossmount.write.journal import JournalRecord

__all__ = ["Recovered", "recover_staged"]

log = logging.getLogger("ossmount.fs.staging")


@dataclass
class Recovered:
    """What `recover_staged` did: objects committed, and the sealed files whose upload
    failed (kept on disk with their journal's record)."""

    done: int = 0
    unsent: list[tuple[StagedFile, JournalRecord]] = field(default_factory=list)


async def recover_staged(
    directory: Path,
    uploader: Uploader,
    prefix: str,
    attrs: Mapping[str, Mapping[str, str]] | None = None,
) -> Recovered:
    """Commit what `directory` holds (see the module docstring). `attrs`: journal name ->
    the headers a chmod, chown or utimens set after its file was sealed (the owed
    attributes' log, Staging.attrs_set), laid over its record's."""
    bucket = uploader.writes.bucket
    journals = await trio.to_thread.run_sync(load_journals, directory)
    recovered = Recovered()
    for journal, record in journals.items():
        staged = StagedFile(journal.with_name(journal.name[: -len(".journal")]), journal)
        later = (attrs or {}).get(journal.name)
        if later is not None:
            record = _with_attrs(record, later)
        try:
            result = await uploader.resume(staged, record)
        except Exception as exc:
            log.error("oss://%s/%s: uploading the file staged before the restart failed (%s); "
                      "it stays staged in %s, shown in the mount and uploaded before it "
                      "changes, at its next close or by the next mount", bucket, record.key,
                      exc, staged.data)  # fmt: skip
            if record.sealed:
                recovered.unsent.append((staged, record))
            continue
        if result is not None:
            log.info("oss://%s/%s: committed after the restart (%d bytes, CRC-64 %016x)",
                     bucket, result.key, result.size, result.crc64)  # fmt: skip
            recovered.done += 1
            if result.parts:
                await _store_sealed_attrs(uploader, record, result)
        for path in (staged.data, staged.journal):
            path.unlink(missing_ok=True)
    left = await trio.to_thread.run_sync(_drop_leftovers, directory)
    await sweep_stale_uploads(uploader.writes, uploader.ledger, left, prefix)
    return recovered


async def _store_sealed_attrs(
    uploader: Uploader, record: JournalRecord, result: CommitResult
) -> None:
    """A multipart upload resumed here was initiated with the attributes its file had when
    its first part went, not the ones its close sealed (a write-back close's mtime, a
    utimens or chmod after the first part): those are stored now, as the commit would have
    after it completed (Staging._late_attrs), by a copy onto itself if the object lacks
    them (one HEAD to know). A failure is logged: the bytes are committed."""
    mode = None if record.keep_mode else record.mode
    want = Posix(mode, record.uid, record.gid, record.mtime_ns or None, record.atime_ns,
                 record.ctime_ns)  # fmt: skip
    meta = ObjectMeta(result.key, result.size, result.etag, 0, result.crc64)
    try:
        await store_attrs(uploader.writes, meta, want)
    except Exception as exc:
        log.warning("oss://%s/%s: committed after the restart, but storing its mode/mtime "
                    "failed: %s", uploader.writes.bucket, result.key, exc)  # fmt: skip


def _with_attrs(record: JournalRecord, headers: Mapping[str, str]) -> JournalRecord:
    """`record` with the attributes in `headers` (those it sets) instead of its own."""
    mode, uid, gid, mtime_ns, atime_ns, ctime_ns = posix_of(headers)
    return replace(
        record,
        mode=record.mode if mode is None else mode,
        keep_mode=record.keep_mode and mode is None,
        mtime_ns=record.mtime_ns if mtime_ns is None else mtime_ns,
        uid=record.uid if uid is None else uid,
        gid=record.gid if gid is None else gid,
        atime_ns=record.atime_ns if atime_ns is None else atime_ns,
        ctime_ns=record.ctime_ns if ctime_ns is None else ctime_ns,
    )


def _drop_leftovers(directory: Path) -> list[JournalRecord]:
    """Remove what no journal keeps; the records still there (kept for the next mount)."""
    for data in directory.glob("*.data"):
        if not data.with_name(data.name + ".journal").exists():
            data.unlink(missing_ok=True)  # never sealed nor journaled: never acknowledged
    for checkpoint in directory.glob("*.data.ckpt"):
        checkpoint.unlink(missing_ok=True)  # an adoption cut short (cache/adopt.py)
    for tmp in directory.glob("*.journal.tmp"):
        tmp.unlink(missing_ok=True)  # a journal save cut short: the record it replaces holds
    for spare in directory.glob(f"*{SPARE}"):
        spare.unlink(missing_ok=True)  # made ahead by the process that died (fs/staging.py)
    return list(load_journals(directory).values())
