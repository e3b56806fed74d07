"""`ossmount cache verify`: re-hash every cached byte against the CRC-64 it came with.

What is checked: each recorded part's bytes against the part's CRC-64 in the checkpoint; each
complete entry's part CRCs, combined (PartLayout.combined_crc), against the server's CRC-64;
each checkpoint's own SHA-256 and its fit to its place and its data file (layout.read_entry).

What is dropped, and why at that grain:
* a bad part: only that part leaves the checkpoint (rewritten atomically, state back to
  partial, its mtime kept so the LRU order does not change). The rest were just proven good,
  so a 100 GiB object with one rotten 8 MiB part costs one ranged GET at its next read, not
  100 GiB. The invariant "a checkpoint names only parts whose bytes are right" holds after.
* the whole entry (checkpoint first, then data file): when the checkpoint is damaged or does
  not fit its data file, when the data file cannot be read, or when every part matches its
  own CRC but their combination does not match the server's (then no part can be blamed).

Runs only while no mount holds the cache dir (it takes the same lock): a mount changes
checkpoints and data files under it, and drops parts of its own on the next read anyway.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from ossmount.cache.checkpoint import Checkpoint, EntryState, save_atomic
from ossmount.cache.recheck import hash_span
from ossmount.cachecmd.codes import Exit
from ossmount.cachecmd.layout import (
    Entry,
    check_layout,
    exclusive,
    read_entries,
    remove_entry,
)
from ossmount.cachecmd.progress import Progress, human
from ossmount.crc64 import format_crc

__all__ = ["run_verify"]


class _Unreadable(Exception):
    pass


def _bad_parts(entry: Entry, cp: Checkpoint, progress: Progress) -> dict[int, str]:
    """Part index -> what is wrong, for parts whose bytes do not match their CRC-64."""
    layout = cp.layout
    bad: dict[int, str] = {}
    fd = os.open(entry.files.data, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        if size < layout.size:
            raise _Unreadable(f"its data file ends at byte {size}")
        for index, recorded in sorted(cp.part_crcs.items()):
            start, length = layout.span(index)
            try:
                actual = hash_span(fd, start, length, progress.update)
            except OSError as exc:
                raise _Unreadable(f"cannot read its data file: {exc.strerror}") from exc
            if actual != recorded:
                bad[index] = (
                    f"part {index} (bytes {start}..{start + length - 1}) has CRC-64 "
                    f"{format_crc(actual)}, the checkpoint says {format_crc(recorded)}"
                )
    finally:
        os.close(fd)
    return bad


def _drop_parts(entry: Entry, cp: Checkpoint, bad: set[int]) -> None:
    keep = {i: c for i, c in cp.part_crcs.items() if i not in bad}
    assert entry.files.ckpt is not None  # a .one entry holds one part: dropped whole
    st = entry.files.ckpt.stat()
    save_atomic(entry.files.ckpt, dataclasses.replace(cp, part_crcs=keep, state=EntryState.PARTIAL))
    os.utime(entry.files.ckpt, ns=(st.st_atime_ns, st.st_mtime_ns))


def _check(entry: Entry, progress: Progress) -> str | None:
    """Verify one entry, drop what fails; a line for the report, None when all was good."""
    cp = entry.checkpoint
    if cp is None:
        remove_entry(entry.files)
        return f"{entry.problem}: dropped the entry"
    try:
        bad = _bad_parts(entry, cp, progress)
    except (OSError, _Unreadable) as exc:
        remove_entry(entry.files)
        return f"{entry.name}: {exc}: dropped the entry"
    if bad:
        what = f"{entry.name}: " + "; ".join(bad.values())
        if len(bad) == len(cp.part_crcs) or entry.files.ckpt is None:  # .one: one part
            remove_entry(entry.files)
            return f"{what}: dropped the entry (no good part)"
        _drop_parts(entry, cp, set(bad))
        return (
            f"{what}: dropped {len(bad)} of "
            f"{len(cp.part_crcs)} parts (fetched again at the next read)"
        )
    if not cp.complete or cp.server_crc64 is None:
        return None
    combined = cp.layout.combined_crc(cp.part_crcs)
    if combined == cp.server_crc64:
        return None
    remove_entry(entry.files)
    return (
        f"{entry.name}: its parts combine to CRC-64 {format_crc(combined)}, the "
        f"server's is {format_crc(cp.server_crc64)}: dropped the entry"
    )


def run_verify(root: Path) -> int:
    if not root.is_dir():
        print(f"cache directory {root} does not exist: nothing to verify")
        return Exit.OK
    check_layout(root)
    with exclusive(root, "verify"):
        entries = read_entries(root)
        total = sum(e.cached_bytes for e in entries)
        progress = Progress(total=total, desc="verify")
        try:
            findings = [line for e in entries if (line := _check(e, progress)) is not None]
        finally:
            progress.close()
    for line in findings:
        print(line)
    summary = f"verified {len(entries)} entries, {human(total)} in {root}"
    if findings:
        print(f"{summary}: {len(findings)} damaged, dropped as said above")
        return Exit.FAILED
    print(f"{summary}: all good")
    return Exit.OK
