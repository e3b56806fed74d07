"""Cache commands for operators: `ossmount cache status|verify|clear` and `ossmount warmup`.

They work on a cache directory from outside the mount that owns it (status, verify, clear) or
on a mounted tree through the mount itself (warmup), and only through the cache package's
public pieces (checkpoint.decode/save_atomic, the store's layout version). `record_mount` is
the one hook the mount calls: it leaves the mount's settings where these commands find them.
"""

from __future__ import annotations

from ossmount.cachecmd.mountstate import record_mount

__all__ = ["record_mount"]
