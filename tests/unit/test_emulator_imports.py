"""The emulator must not import the mount's client, cache, tree, prefetch, fuse or mount code
(issue 4), so a client bug cannot hide behind a matching emulator bug."""

from __future__ import annotations

import ast
from pathlib import Path

import ossmount.emulator

# Pure rules and data shared with the client, never the client itself.
ALLOWED = {
    "ossmount.crc64",
    "ossmount.oss.signing",
    "ossmount.oss.models",
    "ossmount.oss.addressing",
    "ossmount.threadjob",  # a worker thread's cancel handshake: plumbing, no protocol
}


def test_emulator_imports_only_allowed_ossmount_modules() -> None:
    pkg = Path(ossmount.emulator.__file__).parent
    seen: set[str] = set()
    for path in sorted(pkg.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            seen.update(n for n in names if n.startswith("ossmount"))
    assert seen <= ALLOWED, seen - ALLOWED
    assert "ossmount.oss.signing" in seen  # the shared canonicalization is really used
