"""Import boundaries that keep the layers honest (style.md §7.3), checked in a fresh process."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import ossmount.cache.partbook as partbook


def _modules_after_import(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_the_emulator_does_not_load_the_client_cache_tree_or_fuse_code() -> None:
    loaded = _modules_after_import("ossmount.emulator")
    forbidden = {
        "ossmount.oss._client",
        "ossmount.oss._body",
        "ossmount.cache",
        "ossmount.tree",
        "ossmount.prefetch",
        "ossmount.fs",
        "ossmount.mount",
        "pyfuse3",
        "httpx",
    }
    assert not loaded & forbidden


def test_only_the_adapter_and_the_runtime_load_pyfuse3() -> None:
    for module in (
        "ossmount.prefetch",
        "ossmount.tree.listing",
        "ossmount.cache.store",
        "ossmount.oss",
    ):
        assert "pyfuse3" not in _modules_after_import(module), module


PREFETCH_MODULES = (
    "ossmount.prefetch",
    "ossmount.prefetch.config",
    "ossmount.prefetch.download",
    "ossmount.prefetch.errors",
    "ossmount.prefetch.fence",
    "ossmount.prefetch.fetch",
    "ossmount.prefetch.flush",
    "ossmount.prefetch.parts",
    "ossmount.prefetch.prefetcher",
    "ossmount.prefetch.reader",
    "ossmount.prefetch.shed",
    "ossmount.prefetch.space",
    "ossmount.prefetch.tasks",
    "ossmount.prefetch.verdict",
)


def test_the_prefetcher_reports_through_an_observer_not_the_metrics_stack() -> None:
    """It is handed a PrefetchObserver (ossmount.observe); the mount wires the metrics in."""
    forbidden = {"ossmount.service", "ossmount.service.metrics", "prometheus_client", "pyfuse3"}
    for module in PREFETCH_MODULES:
        assert not _modules_after_import(module) & forbidden, module


def test_the_cache_loads_neither_the_read_path_nor_the_http_client() -> None:
    """The cache owns its file and gives out a body sink; it knows the client only by the
    Sink protocol and GetResult (ossmount.oss.models)."""
    forbidden = {"ossmount.prefetch", "ossmount.oss._client", "ossmount.oss._body", "httpx"}
    for module in (
        "ossmount.cache.store",
        "ossmount.cache.entry",
        "ossmount.cache.checks",
        "ossmount.cache.sink",
    ):
        assert not _modules_after_import(module) & forbidden, module


def test_the_part_book_does_no_io() -> None:
    """cache.partbook is an entry's in-memory bookkeeping, cheap on the trio thread because it
    never touches the disk: the I/O is CacheEntry's (cache.entry)."""
    tree = ast.parse(Path(partbook.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
    io_modules = {"os", "fcntl", "io", "mmap", "shutil", "socket", "subprocess"}
    io_modules |= {f"ossmount.cache.{m}" for m in ("holes", "recheck", "sink", "tail")}
    assert not imported & io_modules
    called = {
        n.func.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    }
    assert "open" not in called
