"""The one thing the tree needs from the OSS client: ListObjectsV2 pages.

A Protocol rather than `OssClient`, so tests use an in-memory fake and the tree never imports
the client (style §7.3).
"""

from __future__ import annotations

from typing import Protocol

from ossmount.oss.models import ListPage

__all__ = ["Lister"]


class Lister(Protocol):
    """ListObjectsV2 with its exact semantics.

    Results are sorted by key (UTF-8 byte order); objects and common prefixes together count
    toward `max_keys`; `start_after` is exclusive; `continuation` is the opaque `next_token` of
    the previous page. Keys and prefixes in the page are URL-decoded. Errors propagate as the
    client's own exceptions; the tree passes them through unchanged.
    """

    async def list_page(
        self,
        prefix: str,
        delimiter: str = "/",
        continuation: str | None = None,
        max_keys: int = 1000,
        start_after: str | None = None,
    ) -> ListPage: ...
