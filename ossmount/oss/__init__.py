"""Alibaba Cloud OSS client: signing, credentials, typed errors, and the async `OssClient`.

`OssClient` and `resolve_credentials` (and with them httpx) load on first use: the
emulator imports `ossmount.oss.signing` for the shared canonicalization and must not load the
client with it, so that a client bug cannot hide behind a matching emulator bug.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._config import OssConfig
from ._errors import (
    AccessDenied,
    BadResponse,
    InternalError,
    InvalidAccessKeyId,
    InvalidArgument,
    InvalidObjectState,
    InvalidRange,
    InvalidSecurityToken,
    NoSuchBucket,
    NoSuchKey,
    ObjectChanged,
    OssError,
    OssTransportError,
    PreconditionFailed,
    QpsLimitExceeded,
    RequestTimeTooSkewed,
    ServiceUnavailable,
    SignatureDoesNotMatch,
    SymlinkTargetNotExist,
    Throttled,
)
from ._retry import RetryPolicy
from .credentials_types import (
    ANONYMOUS,
    Credentials,
    CredentialsError,
    CredentialsProvider,
    StaticCredentialsProvider,
)
from .models import BufferSink, GetResult, ListPage, ObjectMeta, ObjectVersion, Sink

__all__ = [
    "ANONYMOUS",
    "AccessDenied",
    "BadResponse",
    "BufferSink",
    "CrcMismatch",
    "Credentials",
    "CredentialsError",
    "CredentialsProvider",
    "FileAlreadyExists",
    "FileRange",
    "GetResult",
    "InternalError",
    "InvalidAccessKeyId",
    "InvalidArgument",
    "InvalidObjectState",
    "InvalidRange",
    "InvalidSecurityToken",
    "ListPage",
    "NoSuchBucket",
    "NoSuchKey",
    "NoSuchUpload",
    "ObjectChanged",
    "ObjectMeta",
    "ObjectVersion",
    "OssClient",
    "OssConfig",
    "OssError",
    "OssTransportError",
    "OssWrites",
    "PreconditionFailed",
    "QpsLimitExceeded",
    "RequestTimeTooSkewed",
    "RetryPolicy",
    "ServiceUnavailable",
    "SignatureDoesNotMatch",
    "Sink",
    "StaticCredentialsProvider",
    "SymlinkTargetNotExist",
    "Throttled",
    "posix_meta",
    "resolve_credentials",
]

if TYPE_CHECKING:
    from ._client import OssClient
    from ._writes import (
        CrcMismatch,
        FileAlreadyExists,
        FileRange,
        NoSuchUpload,
        OssWrites,
        posix_meta,
    )
    from .credentials import resolve_credentials

# Loaded on first use, as they load httpx (see the module docstring).
_LAZY = {
    "OssClient": "_client",
    "resolve_credentials": "credentials",
    **dict.fromkeys(
        (
            "CrcMismatch",
            "FileAlreadyExists",
            "FileRange",
            "NoSuchUpload",
            "OssWrites",
            "posix_meta",
        ),
        "_writes",
    ),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        return getattr(importlib.import_module(f".{module}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
