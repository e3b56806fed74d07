"""`ossmount cache status`: what a cache dir holds, read without changing anything.

Safe while mounted: checkpoints are replaced by rename, so each read sees one whole version;
the figures may lag the mount's memory by one checkpoint flush (about a second).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ossmount.cachecmd.layout import (
    Entry,
    check_layout,
    describe_holder,
    holder_pid,
    leftovers,
    read_entries,
)
from ossmount.cachecmd.mountstate import read_record
from ossmount.cachecmd.progress import human
from ossmount.fs.shownfile import SHOWN_FILE, ShownFileCorrupt, read_shown
from ossmount.write.waiting import not_on_oss

__all__ = ["STATES", "collect", "run_status"]

# "dirty" (written locally, not uploaded yet) is reserved for read-write mounts: always 0 now.
STATES = ("verified", "unverifiable", "partial", "damaged", "dirty")


def _when(ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ns / 1e9))


def _end(entry: Entry | None) -> dict[str, Any] | None:
    if entry is None:
        return None
    return {"last_used": _when(entry.last_used_ns), "object": entry.name}


def _kept_attrs(path: Path) -> dict[str, Any] | None:
    """The attribute table a mount keeps for the next one (fs/shownfile.py): how many
    objects and bytes, or why the next mount will ignore it; None when there is none."""
    try:
        objects: int | None = len(read_shown(path))
        damaged = None
    except FileNotFoundError:
        return None
    except (OSError, ShownFileCorrupt) as exc:
        objects, damaged = None, str(exc)
    try:
        size: int | None = path.stat().st_size
    except OSError:
        size = None
    return {"objects": objects, "bytes": size, "damaged": damaged}


def collect(root: Path) -> dict[str, Any]:
    """Every figure status shows, as the --json document."""
    report: dict[str, Any] = {"cache_dir": str(root), "exists": root.is_dir()}
    if not report["exists"]:
        report.update(entries=0, states=dict.fromkeys(STATES, 0), cached_bytes=0, disk_bytes=0)
        return report
    check_layout(root)
    in_use, pid = holder_pid(root)
    record = read_record(root)
    entries = read_entries(root)
    states = Counter(entry.state for entry in entries)
    by_age = sorted(entries, key=lambda e: e.last_used_ns)
    st = os.statvfs(root)
    report.update(
        in_use=in_use,
        holder=describe_holder(root, pid) if in_use else None,
        holder_pid=pid if in_use else None,
        last_mount=record.to_json() if record is not None else None,
        entries=len(entries),
        states={state: states.get(state, 0) for state in STATES},
        cached_bytes=sum(e.cached_bytes for e in entries),
        disk_bytes=sum(e.disk_bytes for e in entries),
        oldest=_end(by_age[0] if by_age else None),
        newest=_end(by_age[-1] if by_age else None),
        leftover_files=len(leftovers(root)),
        free_bytes=st.f_bavail * st.f_frsize,
        filesystem_bytes=st.f_blocks * st.f_frsize,
        cap_bytes=record.max_cache_bytes if record is not None else None,
        floor_bytes=record.min_free_bytes if record is not None else None,
        kept_attrs=_kept_attrs(root / SHOWN_FILE),
        not_on_oss=not_on_oss(root),
    )
    return report


def _text(r: dict[str, Any]) -> str:
    lines = [f"cache directory {r['cache_dir']}"]
    if not r["exists"]:
        return lines[0] + ": does not exist (nothing cached yet)"
    lines.append(f"  in use by {r['holder']}" if r["in_use"] else "  not in use by a mount")
    states = ", ".join(f"{n} {s}" for s, n in r["states"].items() if n or s != "dirty")
    lines.append(f"  entries:  {r['entries']} ({states})")
    lines.append(
        f"  cached:   {human(r['cached_bytes'])} in recorded parts, "
        f"{human(r['disk_bytes'])} on disk"
    )
    for end in ("oldest", "newest"):
        if r[end] is not None:
            lines.append(f"  {end}:   {r[end]['last_used']}  {r[end]['object']}")
    free = f"  free:     {human(r['free_bytes'])} of {human(r['filesystem_bytes'])}"
    if r["floor_bytes"] is not None:
        free += f"; the mount keeps {human(r['floor_bytes'])} free (--min-free-mb)"
    lines.append(free)
    cap = r["cap_bytes"]
    if r["last_mount"] is None:
        lines.append("  cap:      unknown (no mount recorded its settings here)")
    elif cap is None:
        lines.append("  cap:      none (--max-cache-size-mb 0)")
    else:
        used = 100 * r["disk_bytes"] / cap if cap else 0
        lines.append(f"  cap:      {human(cap)} (--max-cache-size-mb), {used:.0f} % used")
    if r["last_mount"] is not None and not r["in_use"]:
        m = r["last_mount"]
        source = f"{m['bucket']}:/{m['prefix']}" if m["prefix"] else m["bucket"]
        lines.append(f"  last mount: {source} at {m['mountpoint']} (process {m['pid']})")
    kept = r["kept_attrs"]
    if kept is not None and kept["damaged"] is None:
        lines.append(f"  attributes: modes, owners and times of {kept['objects']} objects kept "
                     f"for the next mount ({SHOWN_FILE}, {human(kept['bytes'])})")  # fmt: skip
    elif kept is not None:
        lines.append(f"  attributes: {SHOWN_FILE} is damaged and the next mount ignores it: "
                     f"{kept['damaged']}")  # fmt: skip
    waiting = r["not_on_oss"]
    if waiting["files"] or waiting["attributes"]:
        lines.append(f"  not on OSS yet: {waiting['files']} files written and "
                     f"{waiting['attributes']} objects' modes, owners or times set through a "
                     "--rw mount; the next --rw mount of this cache dir sends them before it "
                     "is ready")  # fmt: skip
    if r["leftover_files"]:
        lines.append(
            f"  {r['leftover_files']} leftover files (temp files, halves of entries): the "
            "next mount removes them"
        )
    return "\n".join(lines)


def run_status(root: Path, *, as_json: bool) -> int:
    report = collect(root)
    print(json.dumps(report, indent=1) if as_json else _text(report))
    return 0
