"""Import boundaries that keep the layers honest (style.md §7.3), checked in a fresh process."""

from __future__ import annotations

import subprocess
import sys


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
        "ossmount.prefetch.scheduler",
        "ossmount.tree.listing",
        "ossmount.cache.store",
        "ossmount.oss",
    ):
        assert "pyfuse3" not in _modules_after_import(module), module
