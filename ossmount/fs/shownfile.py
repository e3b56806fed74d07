"""The modes, owners and times the mount stored (fs/shown.py `ShownAttrs`), kept across remounts.

Why: the table lived in memory only, so after a remount (a reboot, a restart of the service)
every object the mount had stored attributes on showed the defaults again:
  * a second `rsync -a src/ mnt/` found every mtime different (the upload time, not the
    source's) and sent every file again: a nightly backup re-uploaded the whole tree after
    each reboot;
  * a script or a venv's `bin/` installed 0755 through the mount no longer ran (EACCES);
  * `git status` in a repository on the mount listed every executable as changed.
Kept in the cache dir, the table comes back with the mount. Nothing about trust changes: an
entry still answers only while the listing shows the ETag it was learnt with (a `dir/`
marker's: until this mount removes or renames it), so an object replaced by another client
since shows the defaults, as before. What widens is the time: a metadata-only change by
another client (which keeps the ETag) went unseen for the life of one mount, now for as long
as the cache dir keeps the entry (SEMANTICS.md says so); with --own-attrs, until a listing
shows a Last-Modified later than the entry was stored (`ShownAttrs.changed_since_stored`).

File `CACHE_DIR/shown.attrs`: one sealed record (ossmount/sealed.py; magic `OSSMATTR`,
version 1) whose payload is a u32 count, then per entry the object key (u32 length, UTF-8 with
surrogates passed through) and the table's packed value (u16 length, bytes), oldest learnt
first. Written whole (temp file, then rename; no fsync: a file a power loss tore fails its
digest, and a lost or stale one costs only defaults shown, never wrong data) when the table
changed: every `interval_s`, and at unmount after the write-back uploads drained. Read once at
mount start. A damaged, truncated or foreign-version file is logged (WARNING, naming the file
and the damage), ignored, and replaced by the next save. A read-only mount stores nothing,
so it writes the file only with `--own-attrs` (fs/ownattrs.py), whose HEADs add to the table.

Cost, for a full table (100,000 entries, 50-byte keys; measured with timeit-style timers on
the 2-vCPU VM): an 11 MB file, a 15 ms snapshot on the trio thread, 80 ms of encoding in a
worker thread, 146 ms to load at mount start (in a thread, before the mount exists).

Concurrency: `ShownAttrs` is trio-thread only, so the snapshot is taken there (a list copy);
encoding and writing run in a worker thread, one save at a time
(`_lock`: the periodic saver and the unmount's final save may overlap, and both write the
same temp file).
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Callable, Collection
from pathlib import Path

import trio

from ossmount.fs.shown import ShownAttrs, well_packed
from ossmount.sealed import Format, pack_str, replace_durably

__all__ = [
    "SHOWN_FILE",
    "SHOWN_FORMAT",
    "ShownFileCorrupt",
    "ShownSaver",
    "decode_shown",
    "encode_shown",
    "load_shown",
    "read_shown",
]

log = logging.getLogger(__name__)

SHOWN_FILE = "shown.attrs"


class ShownFileCorrupt(Exception):
    """The saved table cannot be read back as it was written."""


# 100,000 entries of a 1,023-byte key and a ~130-byte value, with room to spare.
SHOWN_FORMAT = Format(
    magic=b"OSSMATTR",
    version=1,
    max_payload=256 << 20,
    corrupt=ShownFileCorrupt,
    what="saved attribute table",
)
_COUNT = struct.Struct(">I")
_VALUE_LEN = struct.Struct(">H")


def encode_shown(packed: list[tuple[str, bytes]]) -> bytes:
    parts = [_COUNT.pack(len(packed))]
    for key, value in packed:
        parts += (pack_str(key), _VALUE_LEN.pack(len(value)), value)
    return SHOWN_FORMAT.seal(b"".join(parts))


def decode_shown(data: bytes) -> list[tuple[str, bytes]]:
    """The entries of a saved table; ShownFileCorrupt on any damage."""
    cursor = SHOWN_FORMAT.open(data)
    (count,) = cursor.unpack(_COUNT)
    entries = []
    for _ in range(count):
        key = cursor.string()
        (length,) = cursor.unpack(_VALUE_LEN)
        value = cursor.take(length)
        if not well_packed(value):
            raise ShownFileCorrupt(f"saved attribute table: malformed entry for key {key!r}")
        entries.append((key, value))
    if not cursor.at_end():
        raise ShownFileCorrupt("saved attribute table: bytes after its last entry")
    return entries


def read_shown(path: Path) -> list[tuple[str, bytes]]:
    """The entries saved at `path`: FileNotFoundError, another OSError or ShownFileCorrupt
    when there are none to read (`ossmount cache status` reports which)."""
    size = os.stat(path).st_size
    if size > SHOWN_FORMAT.max_payload + 4096:
        raise ShownFileCorrupt(f"saved attribute table too large ({size} bytes)")
    return decode_shown(path.read_bytes())


def load_shown(path: Path, capacity: int = 100_000) -> ShownAttrs:
    """The table saved at `path`, or an empty one (see the module docstring). Blocking: call
    it in a thread."""
    shown = ShownAttrs(capacity)
    try:
        shown.restore(read_shown(path))
    except FileNotFoundError:
        return shown
    except (OSError, ShownFileCorrupt) as exc:
        log.warning("ignoring %s (files this mount stored show default modes and times "
                    "until stored again): %s", path, exc)  # fmt: skip
        return ShownAttrs(capacity)
    log.debug("%s: kept attributes of %d object(s)", path, len(shown))
    return shown


class ShownSaver:
    """Saves `shown` at `path` whenever it changed (see the module docstring)."""

    def __init__(self, shown: ShownAttrs, path: Path) -> None:
        self._shown, self._path = shown, path
        self._saved = shown.changes
        # Keys whose entry is not on OSS yet (attributes owed, fs/owedattrs.py): left out,
        # so a crash before they are sent never brings back attributes OSS does not have.
        self.leave_out: Callable[[], Collection[str]] = frozenset
        self._left_out = False  # the last save left some out
        self._lock = trio.Lock()
        self._failing = False  # a failure is logged once, until a save succeeds again

    async def save(self) -> None:
        async with self._lock:
            changes = self._shown.changes
            if changes == self._saved and not self._left_out:
                return
            packed = self._shown.packed()
            left_out = self.leave_out()
            if left_out:
                packed = [entry for entry in packed if entry[0] not in left_out]
            # Saved again next time even if nothing changes: a debt sent meanwhile is not a
            # change to the table (it showed the attributes already), but belongs in the file.
            self._left_out = bool(left_out)
            try:
                await trio.to_thread.run_sync(self._write, packed)
            except OSError as exc:
                if not self._failing:
                    log.warning("cannot save the attribute table to %s (after a remount, "
                                "files this mount stored show default modes and times): %s",
                                self._path, exc)  # fmt: skip
                self._failing = True
                return
            self._saved, self._failing = changes, False

    def _write(self, packed: list[tuple[str, bytes]]) -> None:
        replace_durably(self._path, encode_shown(packed), fsync=False)

    async def run(self, interval_s: float) -> None:
        """Save every `interval_s` while the mount runs (a `kill -9` loses at most that)."""
        while True:
            await trio.sleep(interval_s)
            await self.save()
