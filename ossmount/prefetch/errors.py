"""What a read of an object can fail with; each names the object (oss://bucket/key) and cause."""

from __future__ import annotations

__all__ = [
    "DownloadFailed",
    "ObjectArchived",
    "ObjectChanged",
    "ObjectCorrupt",
    "ReadError",
]


class ReadError(Exception):
    """A read could not be answered; names the object and the cause."""

    def __init__(self, bucket: str, key: str, cause: str) -> None:
        super().__init__(f"oss://{bucket}/{key}: {cause}")
        self.bucket = bucket
        self.key = key
        self.cause = cause


class ObjectCorrupt(ReadError):
    """The cached bytes' CRC-64 does not match the server's: never served as good."""


class ObjectChanged(ReadError):
    """The object was replaced or deleted while it was being read."""


class DownloadFailed(ReadError):
    """A part could not be fetched (after the client's retries)."""


class ObjectArchived(ReadError):
    """An Archive/ColdArchive object that is not restored: OSS refuses to serve its bytes."""
