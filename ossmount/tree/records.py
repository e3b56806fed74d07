"""The namespace's cache records: what one listed entry is, a cached name or listing, a miss,
and a shared in-flight lookup. Apart from tree.listing only to keep that module one job and
readable (`WalkOrder` is re-exported there for the directory read-ahead)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Generic, Literal, NamedTuple, TypeVar

import trio

from ossmount.oss.models import ObjectMeta

T = TypeVar("T")

WalkOrder = Literal["name", "inode"]


def walk_key(order: WalkOrder, name: str, inode: int) -> str:
    """Where a file sorts in `order`; one type for both, so both walks bisect alike."""
    return f"{inode:020d}" if order == "inode" else name


class Info(NamedTuple):
    """One displayed entry as learned from OSS; `meta` is the real object for files.

    A NamedTuple: one is built per listed file, and a tuple is several times cheaper to build
    than a frozen dataclass."""

    is_dir: bool
    meta: ObjectMeta | None


DIR_INFO: Final = Info(True, None)


@dataclass(slots=True)
class CachedName:
    info: Info | None  # None: known absent
    fetched_at: float


Walk = list[tuple[str, int, ObjectMeta]]  # (walk_key, inode, meta) of files, sorted by key
Walks = dict[WalkOrder, Walk]


@dataclass(slots=True)
class CachedListing:
    entries: dict[str, Info]
    fetched_at: float
    walks: Walks = field(default_factory=dict)


class Miss:
    pass


MISS: Final = Miss()


class Flight(Generic[T]):
    __slots__ = ("done", "error", "ok", "result")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.ok = False
        self.result: T | None = None
        self.error: Exception | None = None
