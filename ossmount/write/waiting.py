"""What a cache dir holds for the next `--rw` mount to send: files staged and closed (their
journals, write/journal.py) and modes, owners and times owed (write/owedlog.py). Read by
`ossmount cache status` and by a read-only mount's start-up WARNING (mount.py)."""

from __future__ import annotations

from pathlib import Path

from .owedlog import OwedLog, owed_logs, split_owed

__all__ = ["not_on_oss"]


def not_on_oss(root: Path) -> dict[str, int]:
    """What --rw mounts of the cache dir `root` acknowledged and OSS does not have yet, which
    the next --rw mount sends before it is ready: {"files": …, "attributes": …}."""
    staging = root / "staging"
    files = sum(1 for _ in staging.glob("*.journal")) if staging.is_dir() else 0
    # A staged file's ride with it (Staging.attrs_set): counted among the files.
    attrs = sum(len(split_owed(OwedLog.outstanding(path))[0]) for path in owed_logs(root))
    return {"files": files, "attributes": attrs}
