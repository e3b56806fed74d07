"""The log of owed attributes, so a chmod, chown or utimens acknowledged is not lost by a crash.

A chmod, chown or utimens of a file this mount just wrote is owed: shown at once, stored on
OSS a moment later (fs/owedattrs.py). Until this log, a `kill -9` (or an OOM kill, or a
crash) within that moment lost it, although the caller had been told it was done: a local
disk keeps metadata through a crash of the process that set it. So every debt is appended
here when it begins (`owe`) and marked paid when it ends (`paid`: stored, carried by a commit
or a rename's copy, replaced, deleted, or given up); the next `-o rw` mount of the cache dir
reads what is still owed (`outstanding`) and sends it before it reports ready (mount.py).

A debt is marked paid as soon as this process learns how it ended. One whose end was on the
wire at a crash (a commit or a copy that landed, its reply unread), or whose paid line a
power loss kept from the disk, is replayed. That is safe as far as the ETag goes: its
copy is fenced on the ETag the attributes were set on, so a version committed since is
refused with 412 and the debt dropped, unless it has the very same bytes (an ETag is the
bytes' MD5), whose newer attributes the old ones would then replace.

Durability: appends are plain writes to the page cache, not fsynced (a chmod does not wait
for the disk, as on a local filesystem), so the log survives any crash of the process and,
after a power loss, holds what the kernel had written back; a torn or damaged line is
skipped with a warning, which can only forget a debt, never invent one
(write/checkedlines.py).

Format: one line per event, `<JSON> TAB <crc32 hex of the JSON>\\n`; the JSON is
`["o", key, etag, {header: value}]` for a debt (the full set of headers the copy REPLACEs
with) or `["p", key]` for a paid one (ASCII only: keys keep their surrogates as escapes).
Attributes set on a file whose write-back upload waits are logged the same way under
`STAGED` + its journal's name, with the object's key in place of the ETag (see `STAGED`).
A later line for a key replaces what earlier ones said. The file is emptied whenever nothing is
owed, and rewritten (temp, rename) when it grows past `COMPACT_BYTES` while debts remain, so it
stays the size of the debts, not of the history.

Concurrency: trio thread only, no awaits: each call is one small write.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from ossmount.sealed import replace_durably

from .checkedlines import checked_line, read_checked

__all__ = ["COMPACT_BYTES", "STAGED", "OwedLog", "owed_logs", "owed_path", "split_owed"]

log = logging.getLogger(__name__)

COMPACT_BYTES = 1 << 20

# A debt owed by a staged file's upload, not by a version on OSS, is logged under STAGED and
# the name of its journal instead of a key (no key is this), with the object's key in place
# of the ETag (Staging.attrs_set; laid over that journal's record by the next mount,
# fs/recovery.py). So it is paid apart from any debt of a version of that key.
STAGED = "\x00staged:"

Debt = tuple[str, dict[str, str]]  # ETag, headers


def owed_path(cache_dir: Path, bucket: str) -> Path:
    """The log of `bucket`'s mounts of `cache_dir` (cache/layout.py)."""
    return cache_dir / f"owed-{bucket}.attrs"


def owed_logs(cache_dir: Path) -> list[Path]:
    """Every bucket's log in `cache_dir`."""
    return sorted(cache_dir.glob("owed-*.attrs"))


def split_owed(
    owed: dict[str, Debt],
) -> tuple[dict[str, Debt], dict[str, tuple[str, dict[str, str]]]]:
    """`outstanding`'s debts as versions' (key -> (ETag, headers)) and staged files'
    (journal name -> (key, headers))."""
    versions: dict[str, Debt] = {}
    staged: dict[str, tuple[str, dict[str, str]]] = {}
    for name, (etag, headers) in owed.items():
        if name.startswith(STAGED):
            staged[name.removeprefix(STAGED)] = (etag, headers)
        else:
            versions[name] = (etag, headers)
    return versions, staged


def _line(event: list[object]) -> bytes:
    return checked_line(json.dumps(event, ensure_ascii=True, separators=(",", ":")))


def _parse(body: str) -> tuple[str, Debt | None]:
    """key, and its debt (None: paid), of one line's body; ValueError if it is not one."""
    event = json.loads(body)
    if isinstance(event, list) and len(event) == 2 and event[0] == "p":
        key = event[1]
        if isinstance(key, str):
            return key, None
    elif isinstance(event, list) and len(event) == 4 and event[0] == "o":
        key, etag, headers = event[1:]
        if (
            isinstance(key, str)
            and isinstance(etag, str)
            and isinstance(headers, dict)
            and all(isinstance(v, str) for v in headers.values())
        ):
            return key, (etag, dict(headers))
    raise ValueError("not an owed-attributes event")


class OwedLog:
    """The log at `path` (see the module docstring). Errors writing it are logged, never
    raised: the attributes are still owed and sent as before, only not kept through a crash."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._open: dict[str, Debt] = {}  # what the log says is owed, as written
        self._size = 0
        self._fd: int | None = None
        self._failed = False

    @staticmethod
    def outstanding(path: Path) -> dict[str, Debt]:
        """key -> (ETag, headers) of every debt the log at `path` holds unpaid."""
        owed: dict[str, Debt] = {}
        for key, debt in read_checked(Path(path), _parse):
            owed.pop(key, None)
            if debt is not None:
                owed[key] = debt
        return owed

    @classmethod
    def resume(cls, path: Path) -> tuple[OwedLog, dict[str, Debt]]:
        """The log at `path`, compacted to what it still holds owed, and that. Raises
        OSError when it cannot be written (a cache dir that refuses files)."""
        owed_log = cls(path)
        owed = cls.outstanding(path)
        owed_log._open = dict(owed)
        owed_log._write_whole()
        return owed_log, owed

    def __len__(self) -> int:
        """How many keys the log holds owed."""
        return len(self._open)

    def owe(self, key: str, etag: str, headers: Mapping[str, str]) -> None:
        self._open[key] = (etag, dict(headers))
        self._append(_line(["o", key, etag, dict(headers)]))

    def paid(self, key: str) -> None:
        """`key` owes nothing any more (a no-op when the log holds no debt of it)."""
        if self._open.pop(key, None) is None:
            return
        if not self._open:
            self._empty()
        else:
            self._append(_line(["p", key]))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _append(self, line: bytes) -> None:
        if self._size + len(line) > COMPACT_BYTES:
            self._rewrite()  # the debts alone, then this line
        if self._fd is None and not self._reopen():
            return
        assert self._fd is not None
        try:
            os.write(self._fd, line)
        except OSError as exc:
            self._trouble(exc)
            return
        self._size += len(line)

    def _empty(self) -> None:
        """Nothing owed: an empty file (appends go to its new end, O_APPEND)."""
        if self._fd is None:
            self._rewrite()
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError as exc:
            self._trouble(exc)
            return
        self._size = 0

    def _rewrite(self) -> None:
        try:
            self._write_whole()
        except OSError as exc:
            self._trouble(exc)

    def _write_whole(self) -> None:
        """Replace the file with one line per debt still open (temp, rename: a crash leaves
        the old file or the new one), and append to that. Raises OSError."""
        data = b"".join(_line(["o", k, e, h]) for k, (e, h) in self._open.items())
        replace_durably(self.path, data, fsync=False)  # not fsynced: see the docstring
        self.close()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self._size = len(data)

    def _reopen(self) -> bool:
        """After a failure: the file as it is, appended to."""
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                               0o600)  # fmt: skip
            self._size = os.fstat(self._fd).st_size
        except OSError as exc:
            self._trouble(exc)
            return False
        return True

    def _trouble(self, exc: OSError) -> None:
        if not self._failed:  # once, not once per chmod of a tree
            log.warning("cannot keep owed attributes in %s (%s): a crash before they are sent "
                        "loses them", self.path, exc)  # fmt: skip
        self._failed = True
