"""Pure rules turning OSS keys into file names: no I/O, no state.

A bucket is a flat sorted set of keys; the mount shows it as a tree by splitting keys on `/`.
The rules, in the order they apply:

Mount root
    A mount of `bucket:/some/prefix` is rooted at the key prefix `some/prefix/`
    (`normalize_root_prefix`). Keys outside it do not exist for the mount. The key equal to the
    root prefix (the root's own `some/prefix/` marker) is not an entry.

Directories
    Every prefix that ends in `/` and has at least one key under it is a directory, whether or
    not a `dir/` marker object exists ("implicit directories", gcsfuse `--implicit-dirs`). A
    marker `dir/` makes `dir` a directory even when nothing else is under it. A marker is never
    also shown as a file, whatever its size or content.

Invalid names
    A path component that cannot be a POSIX file name is skipped: empty (from `a//b` or a
    leading `/`), `.`, `..`, containing NUL, longer than 255 bytes in UTF-8, or not encodable as
    UTF-8 (lone surrogates). Skipping stops at the first bad component: for `a//b`, `a` is still a
    directory (the listing of the root shows the prefix `a/`), but `a` looks empty because its
    only child would be named "". The caller logs one DEBUG line per skipped name.

Same name as file and directory (shadowing)
    The keys `a` and `a/b` (or `a` and the marker `a/`) want the same name `a`. The directory
    keeps the name `a`, because everything under it is reachable only through it. The file is
    shown next to it as `a.ossfile` (`SHADOW_SUFFIX`), with the object's size and mtime, and
    reads return the object `a`. mountpoint-s3 hides such a file instead; we keep it reachable
    because hiding data is worse than an odd name.
    If the suffixed name is already taken by a real entry (a key `a.ossfile` or a prefix
    `a.ossfile/`), the real entry wins and the shadowed file stays hidden; the same happens when
    the suffixed name would exceed 255 bytes. Both cases are logged at DEBUG.
    The suffix starts with `.` (0x2E), which sorts below `/` (0x2F): the keys `d/a`, `d/a.ossfile`
    and the prefix `d/a/` all lie in the one ListObjectsV2 range `prefix=d/a`, so a single request
    decides both names (see `lookup_base`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

__all__ = [
    "MAX_KEY_BYTES",
    "MAX_NAME_BYTES",
    "SHADOW_SUFFIX",
    "join_path",
    "lookup_base",
    "name_problem",
    "normalize_root_prefix",
    "resolve_names",
    "split_key",
    "split_path",
    "valid_name",
]

MAX_NAME_BYTES = 255
MAX_KEY_BYTES = 1023  # OSS: a key is 1..1023 bytes of UTF-8
SHADOW_SUFFIX = ".ossfile"


def normalize_root_prefix(prefix: str) -> str:
    """`/some/prefix`, `some/prefix/` and `some/prefix` all become `some/prefix/`; "" and "/" → "".

    Leading and trailing slashes are how users spell a mount path, not part of the key.
    """
    stripped = prefix.strip("/")
    return f"{stripped}/" if stripped else ""


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a file name, or None when it can. The text goes into DEBUG lines."""
    if name == "":
        return "empty name"
    if name in (".", ".."):
        return "reserved name"
    if "/" in name:
        return "contains '/'"
    if "\0" in name:
        return "contains NUL"
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        return "not valid UTF-8"
    if len(encoded) > MAX_NAME_BYTES:
        return f"longer than {MAX_NAME_BYTES} bytes"
    return None


def valid_name(name: str) -> bool:
    """True when `name` can be one component of a path under the mount."""
    return name_problem(name) is None


def split_key(key: str, root_prefix: str) -> tuple[str, ...] | None:
    """Path components of `key` under the mount root, or None when the key has no entry.

    `root_prefix` must be normalized (`normalize_root_prefix`). A directory marker `a/b/` gives
    `("a", "b")` like the file `a/b`; tell them apart with `key.endswith("/")`. None for keys
    outside the root, for the root's own marker, and when any component is invalid.
    """
    if not key.startswith(root_prefix):
        return None
    rel = key[len(root_prefix) :]
    if rel.endswith("/"):
        rel = rel[:-1]
    if rel == "":
        return None
    parts = tuple(rel.split("/"))
    if not all(valid_name(p) for p in parts):
        return None
    return parts


def join_path(dir_path: str, name: str) -> str:
    """Path of `name` inside `dir_path` (both relative to the mount root, "" is the root)."""
    return f"{dir_path}/{name}" if dir_path else name


def split_path(path: str) -> tuple[str, str]:
    """`a/b/c` → (`a/b`, `c`); `c` → ("", `c`). The root "" has no parent: do not pass it."""
    head, _, tail = path.rpartition("/")
    return head, tail


def lookup_base(name: str) -> str:
    """The raw name whose ListObjectsV2 range (`prefix=dir/<base>`) decides `name`.

    For `x.ossfile` that is `x`: the range holds the object `x`, the prefix `x/`, the object
    `x.ossfile` and the prefix `x.ossfile/`, which are everything `resolve_names` needs to decide
    both `x` and `x.ossfile`. For any other name it is the name itself.
    """
    if name.endswith(SHADOW_SUFFIX) and len(name) > len(SHADOW_SUFFIX):
        return name[: -len(SHADOW_SUFFIX)]
    return name


def resolve_names(
    file_names: Iterable[str], dir_names: Collection[str]
) -> dict[str, tuple[bool, str | None]]:
    """Apply the shadowing rule to the raw names found directly in one directory.

    Args:
        file_names: names of objects directly in the directory (already validated).
        dir_names: names of sub-prefixes (already validated).

    Returns:
        display name → (is_dir, raw file name or None for directories). A shadowed file `a`
        appears as `a.ossfile` → (False, "a") unless that name is taken or too long.

    The result for a display name X depends only on the raw names X and `lookup_base(X)`; the
    one-request lookup relies on that locality.
    """
    files = set(file_names)
    out: dict[str, tuple[bool, str | None]] = dict.fromkeys(dir_names, (True, None))
    shadowed: list[str] = []
    for f in files:
        if f in out:
            shadowed.append(f)
        else:
            out[f] = (False, f)
    for f in shadowed:
        alias = f + SHADOW_SUFFIX
        if alias not in out and valid_name(alias):
            out[alias] = (False, f)
    return out
