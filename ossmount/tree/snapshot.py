"""`DirSnapshot`: the entries of one open directory, as the kernel pages through them.

Built by `Namespace.opendir` (tree/listing.py), which also describes why the snapshot pins its
entries' inode numbers until `Namespace.releasedir`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ossmount.tree.node import Node

__all__ = ["DirSnapshot"]


class DirSnapshot:
    """The entries of one open directory, frozen at `opendir` time.

    `entries` are sorted by name and carry their inode numbers. How `FileSystem` serves
    `readdir(fh, start_id, token)` with it::

        for next_id, node in snapshot.entries_from(start_id):
            if not pyfuse3.readdir_reply(token, os.fsencode(node.name), attrs(node), next_id):
                break
            namespace.remember(node.inode)  # an accepted entry is a lookup (readdirplus)

    pyfuse3 does not count lookups itself: its docs say that when `readdir_reply` returns True
    the filesystem must increase the entry's lookup count by one, and must not when it returns
    False. `.` and `..` are the filesystem's business (if it emits them, it must not count them).
    Cookies are 1..len(entries); start_id 0 means from the beginning.
    Call `Namespace.releasedir(snapshot)` when the kernel releases the handle.
    """

    __slots__ = ("_released", "entries", "inode", "path")

    def __init__(self, inode: int, path: str, entries: tuple[Node, ...]) -> None:
        self.inode = inode
        self.path = path
        self.entries: Sequence[Node] = entries
        self._released = False

    def entries_from(self, start_id: int) -> Iterator[tuple[int, Node]]:
        """(next_id, node) pairs after cookie `start_id`, to the end of the snapshot."""
        for i in range(max(start_id, 0), len(self.entries)):
            yield i + 1, self.entries[i]

    @property
    def released(self) -> bool:
        return self._released

    def __len__(self) -> int:
        return len(self.entries)
