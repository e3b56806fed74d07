"""`ossmount cache clear`: delete every entry of a cache dir.

Without `--through-mount` it refuses while a mount holds the dir (its lock): deleting files
under a mount would make it re-download what a reader is using, and its in-memory accounting
would go wrong. With it, the running mount is asked over its control socket
(ossmount.service.control) to drop its idle entries itself, by the path eviction takes; entries
open for reading or downloading stay and are counted. When no mount listens, `--through-mount`
clears the dir directly, as without it. Keeps VERSION, lock and mount.json: the dir stays a
cache of the same mount.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from ossmount.cachecmd.codes import Exit
from ossmount.cachecmd.layout import (
    check_layout,
    exclusive,
    iter_entries,
    leftovers,
    read_entry,
    remove_entry,
)
from ossmount.cachecmd.progress import human
from ossmount.cachecmd.through import ask_mount

__all__ = ["run_clear"]

_HINT = (
    "add --through-mount to have the mount drop what no reader is using, or unmount it first "
    "(fusermount3 -u MOUNTPOINT)"
)


def run_clear(root: Path, *, through_mount: bool = False) -> int:
    if not root.is_dir():
        print(f"cache directory {root} does not exist: nothing to clear")
        return Exit.OK
    check_layout(root)
    if through_mount:
        reply = ask_mount(root, "clear")
        if reply is not None:
            print(
                f"cleared {reply['dropped_entries']} entries ({human(reply['dropped_bytes'])} "
                f"on disk) from {root} through its mount; kept {reply['kept_entries']} in use "
                f"({human(reply['kept_bytes'])})"
            )
            return Exit.OK
        print(f"no mount answers on {root}: clearing it directly")
    with exclusive(root, "clear", _HINT):
        count = held = 0
        for files in iter_entries(root):
            held += read_entry(files).disk_bytes
            remove_entry(files)
            count += 1
        for path in leftovers(root):
            path.unlink(missing_ok=True)
        for bucket_dir in root.iterdir():
            if bucket_dir.is_dir():
                for sub in bucket_dir.iterdir():
                    with contextlib.suppress(OSError):  # not empty, or not ours: leave it
                        sub.rmdir()
    print(f"cleared {count} entries ({human(held)} on disk) from {root}")
    return Exit.OK
