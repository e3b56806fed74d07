"""Alias of `ossmount.tree.listing` under the name the FUSE adapter imports."""

from __future__ import annotations

from ossmount.tree.listing import DirSnapshot, Namespace
from ossmount.tree.node import Node

__all__ = ["DirSnapshot", "Namespace", "Node"]
