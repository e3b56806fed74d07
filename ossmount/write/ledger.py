"""The ledger of multipart uploads we started, so the sweeper aborts ours and only ours.

A journal names the upload it is working on, but once the journal is gone (committed and
removed, or its staged file deleted) nothing would say that an upload left open on the server
was ours; another mount or tool may have uploads open under the same prefix. So every upload
id goes into this ledger, durably, right after InitiateMultipartUpload answers and before any
journal records it.

That leaves the upload the Initiate made before its id was recorded: a crash between the
reply and the fsync (the crash walk, tests/mount/test_write_crashwalk.py, hit it about once
in 20 kills), a failed `add`, or a reply lost on the wire whose retry made a second upload.
So before each Initiate an *intent* is recorded (`intend`: the key and our clock), and the
sweeper (write/sweeper.py) also takes for ours an upload of that key initiated near that time.

Format: one line per upload, `<upload id> TAB <hex of the UTF-8 key> TAB <crc32 hex>\\n`, the
CRC over the first two fields; an intent's first field is `@<ns since the epoch>` (never an
upload id: OSS's are hex, and a reader that took one for an id would match no upload).
Appends are `O_APPEND` + fsync; a torn or damaged line (a crash mid-append) is skipped with a
warning, which can only forget an upload, never invent one (write/checkedlines.py).
`rewrite` replaces the file atomically (temp, fsync, rename, fsync dir).

Concurrency: used from the trio thread; `active` (ids of uploads running in this process) is
plain in-memory state read by the sweeper so it never aborts an upload in progress whose
journal has not been written yet.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ossmount.sealed import replace_durably

from .checkedlines import checked_line, read_checked
from .journal import JournalIOError

__all__ = ["UploadLedger"]

_INTENT = "@"


def _line(upload_id: str, key: str) -> bytes:
    return checked_line(f"{upload_id}\t{key.encode('utf-8', 'surrogatepass').hex()}")


def _parse(body: str) -> tuple[str, str]:
    """(upload id or intent, key) of one line's body; ValueError if it is not one."""
    first, key_hex = body.split("\t")
    if first[0] == _INTENT:
        int(first[1:])
    return first, bytes.fromhex(key_hex).decode("utf-8", "surrogatepass")


class UploadLedger:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.active: set[str] = set()

    def add(self, upload_id: str, key: str) -> None:
        """Record `upload_id` durably (blocking: fsync). Raises JournalIOError."""
        if not upload_id or upload_id[0] == _INTENT or "\t" in upload_id or "\n" in upload_id:
            raise ValueError(f"unusable upload id {upload_id!r}")
        self.active.add(upload_id)
        self._append(upload_id, key, f"recording upload {upload_id} of {key!r}")

    def intend(self, key: str) -> None:
        """Record durably (blocking: fsync) that an upload of `key` is about to be initiated;
        see the module docstring. Raises JournalIOError, and then nothing must be initiated."""
        self._append(f"{_INTENT}{time.time_ns()}", key, f"recording an upload of {key!r}")

    def _append(self, first: str, key: str, what: str) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, _line(first, key))
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise JournalIOError(exc.errno, f"{what} in {self.path} failed: {exc}") from exc

    def entries(self) -> dict[str, str]:
        """upload id -> key of every whole line."""
        return self.contents()[0]

    def intents(self) -> list[tuple[str, int]]:
        """(key, ns since the epoch) of every intent recorded since the last `rewrite`."""
        return self.contents()[1]

    def contents(self) -> tuple[dict[str, str], list[tuple[str, int]]]:
        """`entries` and `intents`, from one read of the file."""
        ids: dict[str, str] = {}
        intents: list[tuple[str, int]] = []
        for first, key in read_checked(self.path, _parse):
            if first[0] == _INTENT:
                intents.append((key, int(first[1:])))
            else:
                ids[first] = key
        return ids, intents

    def rewrite(self, keep: dict[str, str], intents: list[tuple[str, int]] | None = None) -> None:
        """Replace the ledger with exactly `keep` (upload id -> key) and `intents`,
        atomically. Not while an upload may be recorded: its line could be lost."""
        lines = [_line(uid, key) for uid, key in sorted(keep.items())]
        lines += [_line(f"{_INTENT}{ns}", key) for key, ns in intents or ()]
        try:
            replace_durably(self.path, b"".join(lines))
        except OSError as exc:
            raise JournalIOError(exc.errno, f"rewriting {self.path} failed: {exc}") from exc
