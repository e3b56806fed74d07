"""Where a running mount leaves its settings, so the cache commands can find them.

Two small JSON files, written once when the mount has locked its cache dir:

* `CACHE_DIR/mount.json`: this cache dir's last mount (pid, mountpoint, bucket, prefix, cap,
  floor, part size). `cache status` shows the cap and floor from it and names the mount that
  holds the lock. It stays after unmount: "the last mount used a 20 GiB cap" is still true.
* `REGISTRY/<sha256(mountpoint)[:16]>.json`: the same record, found by mountpoint. REGISTRY is
  /run/ossmount/mounts for root, else $XDG_RUNTIME_DIR/ossmount/mounts. `warmup PATH` needs the
  mount's cap and cache dir knowing only a path, and the cache dir may be anything
  (`use_cache=` in fstab), so the default-dir rule alone cannot find it. /run is a tmpfs: no
  record outlives a reboot, and a record is believed only while its pid is alive and its
  mountpoint is the one asked about. Without a registry (no /run, no runtime dir), warmup falls
  back to the default cache dir rule for the mount's bucket and prefix.

Neither file is needed for the mount to work: `record_mount` logs a failure and returns.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ossmount.config import MountConfig, default_cache_dir

__all__ = [
    "STATE_NAME",
    "MountRecord",
    "find_record",
    "pid_alive",
    "read_record",
    "record_mount",
    "registry_dir",
]

log = logging.getLogger(__name__)

STATE_NAME = "mount.json"
_FORMAT = 1


@dataclass(frozen=True, slots=True)
class MountRecord:
    pid: int
    mountpoint: str
    bucket: str
    prefix: str
    cache_dir: str
    max_cache_bytes: int | None
    min_free_bytes: int
    part_size: int
    started: float  # time.time() of the record

    @property
    def source(self) -> str:
        return f"{self.bucket}:/{self.prefix}" if self.prefix else self.bucket

    def to_json(self) -> dict[str, Any]:
        return {"format": _FORMAT, **dataclasses.asdict(self)}


def registry_dir() -> Path | None:
    if os.geteuid() == 0:
        return Path("/run/ossmount/mounts")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return Path(runtime) / "ossmount" / "mounts" if runtime else None


def _registry_path(mountpoint: str) -> Path | None:
    directory = registry_dir()
    if directory is None:
        return None
    return directory / (hashlib.sha256(mountpoint.encode()).hexdigest()[:16] + ".json")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def record_mount(config: MountConfig) -> None:
    """Leave this mount's settings for the cache commands (see the module docstring).

    Called by the mount once it holds its cache dir's lock, so it never overwrites the record
    of another live mount. Never raises: the files are a convenience, not a mount's duty.
    """
    record = MountRecord(
        pid=os.getpid(),
        mountpoint=os.path.abspath(config.mountpoint),
        bucket=config.bucket,
        prefix=config.prefix,
        cache_dir=os.path.abspath(config.cache_dir),
        max_cache_bytes=config.max_cache_bytes,
        min_free_bytes=config.min_free_bytes,
        part_size=config.part_size,
        started=time.time(),
    )
    text = json.dumps(record.to_json(), indent=1) + "\n"
    targets = [Path(record.cache_dir) / STATE_NAME]
    registry = _registry_path(record.mountpoint)
    if registry is not None:
        targets.append(registry)
    for path in targets:
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            if path == registry:
                _prune(path.parent)
            _write_atomic(path, text)
        except OSError as exc:
            log.warning(
                "could not write %s (ossmount warmup and cache status will not know this "
                "mount's settings): %s",
                path,
                exc.strerror or exc,
            )


def _prune(directory: Path) -> None:
    """Drop the records of mounts whose process is gone, so the registry holds live mounts
    (plus, at worst, one whose pid was reused: its mountpoint check then fails)."""
    for path in directory.glob("*.json"):
        record = _parse(path)
        if record is not None and not pid_alive(record.pid):
            path.unlink(missing_ok=True)


def _parse(path: Path) -> MountRecord | None:
    try:
        raw = json.loads(path.read_text())
        if raw.pop("format", None) != _FORMAT:
            return None
        return MountRecord(**raw)
    except (OSError, ValueError, TypeError):
        return None


def read_record(cache_dir: Path) -> MountRecord | None:
    """The last mount of `cache_dir`, or None if no mount recorded itself there."""
    return _parse(cache_dir / STATE_NAME)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    return True


def find_record(mountpoint: Path, bucket: str, prefix: str) -> MountRecord | None:
    """The record of the live mount at `mountpoint` (serving bucket/prefix), if any is found."""
    wanted = os.path.abspath(mountpoint)
    candidates = []
    registry = _registry_path(wanted)
    if registry is not None:
        candidates.append(registry)
    with contextlib.suppress(OSError):  # default_cache_dir may need $HOME
        candidates.append(default_cache_dir(bucket, prefix) / STATE_NAME)
    for path in candidates:
        record = _parse(path)
        if (
            record is not None
            and record.mountpoint == wanted
            and record.bucket == bucket
            and record.prefix == prefix
            and pid_alive(record.pid)
        ):
            return record
    return None
