"""The ledger of multipart uploads we started, so the sweeper aborts ours and only ours.

A journal names the upload it is working on, but once the journal is gone (committed and
removed, or its staged file deleted) nothing would say that an upload left open on the server
was ours; another mount or tool may have uploads open under the same prefix. So every upload
id goes into this ledger, durably, right after InitiateMultipartUpload answers and before any
journal records it.

Format: one line per upload, `<upload id> TAB <hex of the UTF-8 key> TAB <crc32 hex>\\n`, the
CRC over the first two fields. Appends are `O_APPEND` + fsync; a torn or damaged line (a
crash mid-append) is skipped with a warning, which can only forget an upload, never invent
one. `rewrite` replaces the file atomically (temp, fsync, rename, fsync dir).

Concurrency: used from the trio thread; `active` (ids of uploads running in this process) is
plain in-memory state read by the sweeper so it never aborts an upload in progress whose
journal has not been written yet.
"""

from __future__ import annotations

import contextlib
import logging
import os
import zlib
from pathlib import Path

from .journal import JournalIOError, fsync_dir

__all__ = ["UploadLedger"]

log = logging.getLogger(__name__)


def _line(upload_id: str, key: str) -> bytes:
    body = f"{upload_id}\t{key.encode('utf-8', 'surrogatepass').hex()}"
    return f"{body}\t{zlib.crc32(body.encode()):08x}\n".encode()


class UploadLedger:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.active: set[str] = set()

    def add(self, upload_id: str, key: str) -> None:
        """Record `upload_id` durably (blocking: fsync). Raises JournalIOError."""
        if not upload_id or "\t" in upload_id or "\n" in upload_id:
            raise ValueError(f"unusable upload id {upload_id!r}")
        self.active.add(upload_id)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, _line(upload_id, key))
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise JournalIOError(
                exc.errno, f"recording upload {upload_id} of {key!r} in {self.path} failed: {exc}"
            ) from exc

    def entries(self) -> dict[str, str]:
        """upload id -> key of every whole line."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        out: dict[str, str] = {}
        for raw in data.split(b"\n"):
            if not raw:
                continue
            try:
                upload_id, key_hex, crc = raw.decode("ascii").split("\t")
                body = f"{upload_id}\t{key_hex}"
                if int(crc, 16) != zlib.crc32(body.encode()):
                    raise ValueError("CRC mismatch")
                out[upload_id] = bytes.fromhex(key_hex).decode("utf-8", "surrogatepass")
            except ValueError as exc:
                log.warning("skipping a damaged line of upload ledger %s: %s", self.path, exc)
        return out

    def rewrite(self, keep: dict[str, str]) -> None:
        """Replace the ledger with exactly `keep` (upload id -> key), atomically."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        data = b"".join(_line(uid, key) for uid, key in sorted(keep.items()))
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            fsync_dir(self.path.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise JournalIOError(exc.errno, f"rewriting {self.path} failed: {exc}") from exc
