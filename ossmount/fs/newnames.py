"""Whether a new entry's name can become an OSS key, checked before anything is staged or sent.

The kernel already refuses a component over 255 bytes. What it cannot know: OSS keys are UTF-8
of at most 1023 bytes, and a key is the mount's prefix plus the whole path (plus `/` for a
directory marker). Without this check `touch` of a deep path succeeded, the bytes were staged,
and only the close failed, with EIO and an InvalidObjectName from the server.
"""

from __future__ import annotations

from ossmount.fs.errors import Unstorable
from ossmount.tree.errors import NameTooLong
from ossmount.tree.names import MAX_KEY_BYTES, join_path, name_problem

__all__ = ["check_key_length", "new_entry"]


def new_entry(root_prefix: str, parent_path: str, name: str, suffix: str = "") -> tuple[str, str]:
    """(path, key) of a new entry `name` in `parent_path`; `suffix` is "/" for a directory
    marker. Raises NameTooLong (ENAMETOOLONG) or Unstorable (EINVAL: not UTF-8)."""
    path = join_path(parent_path, name)
    problem = name_problem(name)
    if problem is not None:
        if problem.startswith("longer"):
            raise NameTooLong(path, problem)
        raise Unstorable(path, f"cannot be an OSS key: {problem}")
    key = root_prefix + path + suffix
    check_key_length(key, path)
    return path, key


def check_key_length(key: str, what: str) -> None:
    """NameTooLong naming `what` when `key` is over OSS's limit."""
    size = len(key.encode("utf-8", "surrogatepass"))
    if size > MAX_KEY_BYTES:
        raise NameTooLong(what, f"its key would be {size} bytes, over OSS's {MAX_KEY_BYTES}")
