"""The write engine below the FUSE layer (issue 15): staging journal, uploader, sweeper.

One job per module: `journal` (the durable, self-checksummed record beside a staging file),
`ledger` (which multipart uploads are ours), `uploader` (commit a staged file, with parts sent
while it is still being written, resumable after kill -9; unchanged parts of a patched object
copied server-side), `sweeper` (abort our stale uploads), `bigcopy` (a server-side copy of any
size: by parts above CopyObject's 1 GiB).
The OSS requests themselves are in `ossmount.oss._writes`.
"""

from __future__ import annotations

from .commit_types import CommitResult, CopySource, StagedFile, UnreadStart, UploadSettings
from .journal import CorruptJournal, JournalIOError, JournalRecord, PartRecord, WriteState
from .ledger import UploadLedger
from .sweeper import load_journals, sweep_stale_uploads
from .uploader import Uploader, UploadSession

__all__ = [
    "CommitResult",
    "CopySource",
    "CorruptJournal",
    "JournalIOError",
    "JournalRecord",
    "PartRecord",
    "StagedFile",
    "UnreadStart",
    "UploadLedger",
    "UploadSession",
    "UploadSettings",
    "Uploader",
    "WriteState",
    "load_journals",
    "sweep_stale_uploads",
]
