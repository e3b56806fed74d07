"""The startup scan of one bucket's cache directory (layout: cache.layout): what is there.

Kept apart from the store, which runs it once in `lock()`: it removes what no checkpoint
vouches for, and lists the rest for space accounting without decoding a single checkpoint
(that would read every one; a damaged one is found when its key is next opened).
"""

from __future__ import annotations

import logging
from pathlib import Path

__all__ = ["CKPT", "DATA", "ONE", "scan"]

log = logging.getLogger(__name__)

DATA = ".data"
CKPT = ".ckpt"
ONE = ".one"


def scan(bucket_dir: Path) -> list[tuple[str, int]]:
    """(stem, bytes held) of every entry under `bucket_dir`, least recently used first (the
    checkpoint's mtime, or the `.one` file's).

    Deleted on the way: temp files, data files without a checkpoint (a download that never
    flushed), checkpoints without a data file, and both kinds of one key (a `.one` beside a
    `.ckpt`: a crash while one version replaced the other, and which is newer is unknown, so
    neither is trusted: a fetch, never a mix). Held bytes are min(size, allocated blocks).
    """
    found: list[tuple[int, str, int]] = []
    for sub in sorted(bucket_dir.iterdir()):
        if not sub.is_dir():
            continue
        names = {p.name: p for p in sub.iterdir()}
        for name, path in names.items():
            stem, _, ext = name.partition(".")
            if name.endswith(".tmp"):
                path.unlink(missing_ok=True)
            elif ext in ("one", "ckpt") and stem + ONE in names and stem + CKPT in names:
                log.debug("removing both kinds of cache entry %s in %s", stem, sub)
                for gone in (CKPT, DATA, ONE):
                    (sub / (stem + gone)).unlink(missing_ok=True)
            elif ext == "one":
                st = path.stat()
                found.append((st.st_mtime_ns, stem, min(st.st_size, st.st_blocks * 512)))
            elif ext == "data" and stem + CKPT not in names:
                log.debug("removing data file without checkpoint %s", path)
                path.unlink(missing_ok=True)
            elif ext == "ckpt" and stem + DATA not in names:
                log.debug("removing checkpoint without data file %s", path)
                path.unlink(missing_ok=True)
            elif ext == "ckpt":
                mtime = path.stat().st_mtime_ns
                data = (sub / (stem + DATA)).stat()
                found.append((mtime, stem, min(data.st_size, data.st_blocks * 512)))
    return [(stem, held) for _, stem, held in sorted(found)]
