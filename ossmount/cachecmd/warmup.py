"""`ossmount warmup PATH...`: read every file under PATH through its mount, so it is cached.

Reading through the mount, rather than fetching beside it, is what makes the result the
mount's own cache: the same downloader (parallel ranged GETs, read-ahead), the same
checkpoints, the same verification. So an interrupted warmup resumes: files the mount already
reports `verified`/`unverifiable` (user.ossmount.state) are skipped unread, and a half-read
file's recorded parts are not fetched again.

Before any byte is fetched, the tree's size is held against the mount's cache (its record,
ossmount.cachecmd.mountstate): bigger than the cap, or than what the cache filesystem can give
above the floor, and the cache would evict the start of the tree while fetching its end.

Concurrency: `jobs` worker threads each read one file at a time with plain blocking reads
(the kernel and the mount do the parallel work; a few files at once keep small files' round
trips overlapped); the main thread waits for them and owns the summary. A stop event, set on
Ctrl-C, makes the workers quit between reads.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ossmount.cachecmd.codes import CommandError, Exit
from ossmount.cachecmd.findmount import OssMount, mount_of
from ossmount.cachecmd.layout import read_entries
from ossmount.cachecmd.mountstate import MountRecord, find_record
from ossmount.cachecmd.progress import Progress, human

__all__ = ["run_warmup"]

_XATTR = "user.ossmount.state"
_DONE = ("verified", "unverifiable")
_READ = 1 << 20


@dataclass(frozen=True, slots=True)
class _File:
    path: Path
    size: int
    state: str  # as the mount reported it before the warmup


def _state(path: Path) -> str:
    try:
        return os.getxattr(path, _XATTR).decode()
    except OSError:
        return "unknown"


def _walk(path: Path) -> Iterable[Path]:
    st = os.lstat(path)
    if stat.S_ISREG(st.st_mode):
        yield path
        return
    if not stat.S_ISDIR(st.st_mode):
        return  # a symlink or other: not ours to follow
    for top, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            candidate = Path(top) / name
            if stat.S_ISREG(os.lstat(candidate).st_mode):
                yield candidate


def _collect(paths: list[str]) -> tuple[OssMount, list[_File]]:
    mount: OssMount | None = None
    seen: dict[Path, _File] = {}
    for raw in paths:
        path = Path(os.path.abspath(raw))
        found = mount_of(path)
        if found is None:
            raise CommandError(f"{raw} is not on an ossmount mount", Exit.NOT_A_MOUNT)
        if mount is not None and found != mount:
            raise CommandError(
                f"{raw} is on the mount at {found.mountpoint}, not {mount.mountpoint}: run "
                "warmup once per mount",
                Exit.USAGE,
            )
        mount = found
        try:
            for file in _walk(path):
                if file not in seen:
                    seen[file] = _File(file, os.lstat(file).st_size, _state(file))
        except FileNotFoundError:
            raise CommandError(f"{raw} does not exist", Exit.USAGE) from None
        except OSError as exc:
            raise CommandError(f"cannot list {raw}: {exc.strerror}", Exit.FAILED) from exc
    assert mount is not None  # argparse requires one PATH at least
    return mount, list(seen.values())


def _check_fits(record: MountRecord, total: int) -> None:
    cap = record.max_cache_bytes
    if cap is not None and total > cap:
        raise CommandError(
            f"the files to warm up hold {human(total)}, more than the cache cap of the mount "
            f"at {record.mountpoint} ({human(cap)}, --max-cache-size-mb): the first files "
            "would be evicted to make room for the last; warm up less, or raise the cap",
            Exit.TOO_BIG,
        )
    root = Path(record.cache_dir)
    try:
        st = os.statvfs(root)
        held = sum(entry.disk_bytes for entry in read_entries(root))
    except OSError:
        return  # a cache dir we may not read (another user's): the cap check must do
    room = st.f_bavail * st.f_frsize + held - record.min_free_bytes
    if total > room:
        raise CommandError(
            f"the files to warm up hold {human(total)}, but the cache filesystem of the mount "
            f"at {record.mountpoint} can hold only {human(max(0, room))} of cache while "
            f"keeping {human(record.min_free_bytes)} free (--min-free-mb)",
            Exit.TOO_BIG,
        )


class _Run:
    """The shared state of one warmup: counters under `lock`, the progress, the stop flag."""

    def __init__(self, todo: list[_File], progress: Progress) -> None:
        self.todo = len(todo)
        self.done = 0
        self.progress = progress
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def fetch(self, file: _File) -> tuple[str, str | None]:
        """(verified | unverifiable | failed | stopped, why it failed)."""
        buf = bytearray(_READ)
        got = 0
        try:
            with open(file.path, "rb", buffering=0) as f:
                while not self.stop.is_set():
                    n = f.readinto(buf)
                    if not n:
                        break
                    got += n
                    self.progress.update(n)
        except OSError as exc:
            if exc.errno == errno.ESTALE:
                return "failed", "changed on the server while being read; run warmup again"
            return "failed", f"{exc.strerror} (errno {exc.errno}); the mount's log says more"
        finally:
            with self.lock:
                self.done += 1
                self.progress.update(0, f"files {self.done}/{self.todo}")
        if self.stop.is_set():
            return "stopped", None
        if got != file.size:
            return "failed", f"read {got} bytes, expected {file.size} (changed?); run again"
        state = _state(file.path)
        if state in _DONE:
            return state, None
        return "failed", f"read whole, but the mount reports it {state}, not kept whole"


def _report(
    mount: OssMount,
    files: list[_File],
    results: dict[Path, tuple[str, str | None]],
    fetched: int,
    seconds: float,
) -> int:
    counts = Counter(state for state, _ in results.values())
    for path, (state, why) in sorted(results.items()):
        if state == "failed":
            print(f"failed: {path}: {why}", file=sys.stderr)
    total = sum(f.size for f in files)
    skipped = sum(1 for f in files if f.state in _DONE)
    rate = fetched / seconds / (1 << 20) if seconds > 0 else 0.0
    print(
        f"warmup of {len(files)} files ({human(total)}) on {mount.mountpoint}: "
        f"{counts['verified']} verified, {counts['unverifiable']} unverifiable, "
        f"{counts['failed']} failed"
    )
    print(
        f"  {len(files) - skipped} read now ({human(fetched)} in {seconds:.1f} s, "
        f"{rate:.1f} MiB/s), {skipped} already cached"
    )
    return Exit.FAILED if counts["failed"] else Exit.OK


def run_warmup(paths: list[str], *, jobs: int, check_size: bool = True) -> int:
    mount, files = _collect(paths)
    record = find_record(mount.mountpoint, mount.bucket, mount.prefix)
    if record is None:
        print(
            f"ossmount warmup: the settings of the mount at {mount.mountpoint} were not found "
            "(it records them when it starts): the cache size check is skipped",
            file=sys.stderr,
        )
    elif check_size:
        _check_fits(record, sum(f.size for f in files))
    results: dict[Path, tuple[str, str | None]] = {
        f.path: (f.state, None) for f in files if f.state in _DONE
    }
    todo = [f for f in files if f.state not in _DONE]
    progress = Progress(
        total=sum(f.size for f in todo), desc="warmup", postfix=f"files 0/{len(todo)}"
    )
    run = _Run(todo, progress)
    started = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="warmup")
    futures: dict[Future[tuple[str, str | None]], _File] = {}
    try:
        futures = {pool.submit(run.fetch, f): f for f in todo}
        for future, file in futures.items():
            results[file.path] = future.result()
    except KeyboardInterrupt:
        run.stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        progress.close()
        print("interrupted: run the same command again to go on", file=sys.stderr)
        return Exit.INTERRUPTED
    pool.shutdown()
    progress.close()
    seconds = time.monotonic() - started
    fetched = sum(f.size for f in todo if results[f.path][0] in _DONE)
    return _report(mount, files, results, fetched, seconds)
