"""Which ossmount mount a path is on, from /proc/self/mountinfo (the kernel's own answer)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["OssMount", "mount_of", "parse_mountinfo"]

FSTYPE = "fuse.ossmount"
_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as \\040 and the like."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


@dataclass(frozen=True, slots=True)
class OssMount:
    mountpoint: Path
    bucket: str
    prefix: str  # "" or "a/b/", as the mount's config has it


def parse_mountinfo(text: str) -> list[OssMount]:
    mounts = []
    for line in text.splitlines():
        fields = line.split(" ")
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if len(fields) < sep + 3 or fields[sep + 1] != FSTYPE:
            continue
        source = _unescape(fields[sep + 2]).removeprefix("ossmount#")
        bucket, _, prefix = source.partition(":")
        prefix = prefix.strip("/")
        mounts.append(OssMount(Path(_unescape(fields[4])), bucket, prefix + "/" if prefix else ""))
    return mounts


def mount_of(path: Path, mountinfo: str | None = None) -> OssMount | None:
    """The innermost ossmount mount holding `path` (made absolute, symlinks not followed)."""
    if mountinfo is None:
        with open("/proc/self/mountinfo") as f:
            mountinfo = f.read()
    target = Path(os.path.abspath(path))
    best: OssMount | None = None
    for mount in parse_mountinfo(mountinfo):
        holds = target == mount.mountpoint or mount.mountpoint in target.parents
        if holds and (best is None or len(mount.mountpoint.parts) > len(best.mountpoint.parts)):
            best = mount
    return best
