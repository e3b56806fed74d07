"""How OSS keys become a directory tree: names, stable inode numbers, a TTL'd metadata cache.

Plain classes with no pyfuse3 import; the FUSE adapter drives `Namespace`. Design notes live in
the module docstrings: `names` (key → name rules, shadowing), `inodes` (numbering, lookup
counts), `listing` (requests, readdir snapshots, concurrency), `metacache` (TTLs, bound).
"""

from __future__ import annotations

from ossmount.tree.errors import NameInvalid, NameTooLong, NotADirectory, NotFound, TreeError
from ossmount.tree.inodes import ROOT_INODE, InodeTable, stable_hash
from ossmount.tree.lister import Lister
from ossmount.tree.listing import DirSnapshot, Namespace
from ossmount.tree.names import SHADOW_SUFFIX, split_key, valid_name
from ossmount.tree.node import Node

__all__ = [
    "ROOT_INODE",
    "SHADOW_SUFFIX",
    "DirSnapshot",
    "InodeTable",
    "Lister",
    "NameInvalid",
    "NameTooLong",
    "Namespace",
    "Node",
    "NotADirectory",
    "NotFound",
    "TreeError",
    "split_key",
    "stable_hash",
    "valid_name",
]
