"""Abort multipart uploads of ours that nobody will complete, so none is leaked (and billed).

"Ours" means: its id is in our ledger (write/ledger.py), or the ledger holds an intent for its
key recorded within `INTENT_WINDOW_NS` of its Initiated time (an Initiate whose id never
reached the ledger: a crash right after the reply, a lost reply; write/ledger.py). The window
covers the Initiate's own retries and the skew between our clock and the server's; the one
upload of another client it could take for ours is one of the very same key, initiated within
those minutes and still open when this mount next starts. "Nobody will complete it" means: no
journal in UPLOADING state names it and no session of this process is running it
(`ledger.active`). Uploads of other mounts or tools under the same prefix are never touched,
even when they look abandoned. Run at mount start after the journals are loaded (before
resuming them is fine: resumed uploads are named by their journals).

The ledger is then rewritten to the ids still worth remembering: the live ones, plus any whose
key is outside the prefix we listed (we could not see them, so we cannot judge them); intents
likewise, only those outside the prefix.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import trio

from ..oss._writes import ListedUpload, OssWrites
from .journal import JournalRecord, WriteState, load
from .ledger import UploadLedger

__all__ = ["INTENT_WINDOW_NS", "load_journals", "sweep_stale_uploads"]

log = logging.getLogger(__name__)

INTENT_WINDOW_NS = 300 * 10**9


def load_journals(directory: Path, suffix: str = ".journal") -> dict[Path, JournalRecord]:
    """Every usable journal in `directory` (damaged ones are moved aside by `load`)."""
    out: dict[Path, JournalRecord] = {}
    for path in sorted(Path(directory).glob(f"*{suffix}")):
        record = load(path)
        if record is not None:
            out[path] = record
    return out


async def sweep_stale_uploads(
    writes: OssWrites,
    ledger: UploadLedger,
    journals: Iterable[JournalRecord],
    prefix: str = "",
) -> list[ListedUpload]:
    """Abort our stale uploads under `prefix`; returns the ones aborted."""
    live = {r.upload_id for r in journals if r.state is WriteState.UPLOADING} | ledger.active
    ours, intents = await trio.to_thread.run_sync(ledger.contents)
    intended: dict[str, list[int]] = {}
    for key, ns in intents:
        intended.setdefault(key, []).append(ns)
    if not ours and not intents:
        return []
    aborted: list[ListedUpload] = []
    for upload in await writes.list_multipart_uploads(prefix):
        if upload.upload_id in live:
            continue
        near = intended.get(upload.key, ())
        if upload.upload_id in ours or any(
            abs(upload.initiated_ns - ns) <= INTENT_WINDOW_NS for ns in near
        ):
            await writes.abort_multipart(upload.key, upload.upload_id)
            log.info(
                "aborted stale multipart upload %s of oss://%s/%s",
                upload.upload_id, writes.bucket, upload.key,
            )  # fmt: skip
            aborted.append(upload)
    keep = {
        uid: key
        for uid, key in ours.items()
        if uid in live or uid in ledger.active or not key.startswith(prefix)
    }
    unseen = [(key, ns) for key, ns in intents if not key.startswith(prefix)]
    await trio.to_thread.run_sync(ledger.rewrite, keep, unseen)
    return aborted
