"""Alibaba Cloud OSS client: signing, credentials, typed errors, and the async `OssClient`."""

from __future__ import annotations

from ._client import OssClient, OssConfig
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
from .credentials import (
    ANONYMOUS,
    Credentials,
    CredentialsError,
    CredentialsProvider,
    StaticCredentialsProvider,
    resolve_credentials,
)
from .models import GetResult, ListPage, ObjectMeta

__all__ = [
    "ANONYMOUS",
    "AccessDenied",
    "BadResponse",
    "Credentials",
    "CredentialsError",
    "CredentialsProvider",
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
    "ObjectChanged",
    "ObjectMeta",
    "OssClient",
    "OssConfig",
    "OssError",
    "OssTransportError",
    "PreconditionFailed",
    "QpsLimitExceeded",
    "RequestTimeTooSkewed",
    "RetryPolicy",
    "ServiceUnavailable",
    "SignatureDoesNotMatch",
    "StaticCredentialsProvider",
    "SymlinkTargetNotExist",
    "Throttled",
    "resolve_credentials",
]
