"""`ossmount cache clear`: delete every entry of an unmounted cache dir.

Refuses while a mount holds the dir (its lock): deleting files under a mount would make it
re-download what a reader is using, and its in-memory accounting would go wrong. Going "through
the mount" needs a channel into the daemon (see README, cache commands); until it exists,
unmount first. Keeps VERSION, lock and mount.json: the dir stays a cache of the same mount.
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

__all__ = ["run_clear"]


def run_clear(root: Path) -> int:
    if not root.is_dir():
        print(f"cache directory {root} does not exist: nothing to clear")
        return Exit.OK
    check_layout(root)
    with exclusive(root, "clear"):
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
