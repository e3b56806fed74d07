"""OSS failures as typed exceptions, chosen by the service's `Code`, never by message text.

Tree::

    OssError                       status, code, message, request_id, ec, bucket, key
    ├── NoSuchKey, NoSuchBucket, SymlinkTargetNotExist            (404)
    ├── AccessDenied, InvalidAccessKeyId, SignatureDoesNotMatch,
    │   InvalidSecurityToken, InvalidObjectState, RequestTimeTooSkewed   (403)
    ├── InvalidArgument, InvalidRange                                 (400, 416)
    ├── PreconditionFailed (412) ── ObjectChanged   (our own fence: ETag differs from If-Match)
    ├── Throttled ── QpsLimitExceeded (429), ServiceUnavailable (503), *LimitExceeded (503)
    ├── InternalError                                                 (500)
    ├── BadResponse        the reply broke the protocol (hostile XML, wrong Content-Range, ...)
    └── OssTransportError  no usable reply after the retries (reset, timeout, stall)

Unknown codes become a plain `OssError`. Every `str()` names bucket, key, code and cause and
never a credential: signatures and StringToSign diagnostics stay out of the message.
"""

from __future__ import annotations

import base64
import binascii

from ._xml import XmlError, parse_error_xml

__all__ = [
    "AccessDenied",
    "BadResponse",
    "InternalError",
    "InvalidAccessKeyId",
    "InvalidArgument",
    "InvalidObjectState",
    "InvalidRange",
    "InvalidSecurityToken",
    "NoSuchBucket",
    "NoSuchKey",
    "ObjectChanged",
    "OssError",
    "OssTransportError",
    "PreconditionFailed",
    "QpsLimitExceeded",
    "RequestTimeTooSkewed",
    "ServiceUnavailable",
    "SignatureDoesNotMatch",
    "SymlinkTargetNotExist",
    "Throttled",
    "error_from_response",
    "is_retryable",
]


class OssError(Exception):
    """A failed OSS operation on `bucket`/`key` (key None for bucket-level calls)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        request_id: str | None = None,
        ec: str | None = None,
        bucket: str | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__(status, code, message)
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.ec = ec
        self.bucket = bucket
        self.key = key
        # Seconds the server asked us to wait (Retry-After), set by the client when present.
        self.retry_after_s: float | None = None

    def __str__(self) -> str:
        where = f"oss://{self.bucket or '?'}/{self.key or ''}"
        status = f"HTTP {self.status}" if self.status else "no HTTP status"
        extra = "".join(
            f", {name} {value}"
            for name, value in (("request id", self.request_id), ("EC", self.ec))
            if value
        )
        return f"{where}: {self.code} ({status}{extra}): {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self!s})"


class NoSuchKey(OssError):
    pass


class NoSuchBucket(OssError):
    pass


class SymlinkTargetNotExist(OssError):
    pass


class AccessDenied(OssError):
    pass


class InvalidAccessKeyId(OssError):
    pass


class SignatureDoesNotMatch(OssError):
    pass


class InvalidSecurityToken(OssError):
    pass


class InvalidObjectState(OssError):
    """Archive/cold object not restored: the bytes exist but cannot be read yet."""


class RequestTimeTooSkewed(OssError):
    pass


class InvalidArgument(OssError):
    pass


class InvalidRange(OssError):
    pass


class PreconditionFailed(OssError):
    pass


class ObjectChanged(PreconditionFailed):
    """The object's ETag is not the one pinned: the bytes belong to another version."""


class Throttled(OssError):
    """The service asks us to slow down (429 QpsLimitExceeded or a 503 *LimitExceeded)."""


class QpsLimitExceeded(Throttled):
    pass


class ServiceUnavailable(Throttled):
    pass


class InternalError(OssError):
    pass


class BadResponse(OssError):
    """The reply broke the protocol (unparsable XML, a Content-Range we did not ask for, ...)."""


class OssTransportError(OssError):
    """No usable reply: connection refused/reset, timeout or stall, after all retries."""

    def __init__(self, message: str, *, bucket: str | None = None, key: str | None = None) -> None:
        super().__init__(0, "TransportError", message, bucket=bucket, key=key)


_BY_CODE: dict[str, type[OssError]] = {
    cls.__name__: cls
    for cls in (
        NoSuchKey,
        NoSuchBucket,
        SymlinkTargetNotExist,
        AccessDenied,
        InvalidAccessKeyId,
        SignatureDoesNotMatch,
        InvalidSecurityToken,
        InvalidObjectState,
        RequestTimeTooSkewed,
        InvalidArgument,
        InvalidRange,
        PreconditionFailed,
        QpsLimitExceeded,
        ServiceUnavailable,
        InternalError,
    )
}
# 503 throttling variants named by the OSS 503 page (§4.2); OSS has no S3-style SlowDown.
for _code in (
    "DownloadTrafficRateLimitExceeded",
    "UploadTrafficRateLimitExceeded",
    "MetaOperationQpsLimitExceeded",
    "TotalQpsLimitExceeded",
    "ActiveRequestLimitExceeded",
    "CpuLimitExceeded",
):
    _BY_CODE[_code] = Throttled
_BY_CODE["AccessKeyIdAndSecurityTokenNotMatch"] = InvalidSecurityToken

# Used only when a reply carries no parsable code (e.g. an empty HEAD error without x-oss-err).
_BY_STATUS: dict[int, tuple[str, type[OssError]]] = {
    404: ("NoSuchKey", NoSuchKey),
    403: ("AccessDenied", AccessDenied),
    412: ("PreconditionFailed", PreconditionFailed),
    416: ("InvalidRange", InvalidRange),
    429: ("QpsLimitExceeded", QpsLimitExceeded),
    500: ("InternalError", InternalError),
    503: ("ServiceUnavailable", ServiceUnavailable),
}


def error_from_response(
    status: int,
    headers: dict[str, str],
    body: bytes,
    *,
    bucket: str | None,
    key: str | None,
) -> OssError:
    """Build the exception for a non-2xx reply.

    `headers` must have lower-case names. The body is the (capped) error XML; when it is
    empty, as on HEAD, the base64 XML in `x-oss-err` is used. Without any XML the class comes
    from the status, and the code says so (`HTTP404`-style codes are never invented).
    """
    fields: dict[str, str] = {}
    xml = body
    if not xml.strip() and headers.get("x-oss-err"):
        try:
            xml = base64.b64decode(headers["x-oss-err"], validate=True)
        except (binascii.Error, ValueError):
            xml = b""
    if xml.strip():
        try:
            fields = parse_error_xml(xml)
        except XmlError as exc:
            return BadResponse(
                status,
                "BadErrorResponse",
                f"unreadable error body: {exc}",
                request_id=headers.get("x-oss-request-id"),
                ec=headers.get("x-oss-ec"),
                bucket=bucket,
                key=key,
            )
    code = fields.get("Code", "").strip()
    message = fields.get("Message", "").strip()
    if code:
        cls = _BY_CODE.get(code, OssError)
    elif status in _BY_STATUS:
        code, cls = _BY_STATUS[status]
        message = message or "(no error body)"
    else:
        cls = InternalError if status >= 500 else OssError
        code = f"HTTP{status}"
        message = message or "(no error body)"
    return cls(
        status,
        code,
        message or "(no message)",
        request_id=fields.get("RequestId") or headers.get("x-oss-request-id"),
        ec=fields.get("EC") or headers.get("x-oss-ec"),
        bucket=bucket,
        key=key,
    )


_RETRYABLE_CODES = frozenset({"RequestTimeTooSkewed", "BadRequest"})


def is_retryable(exc: BaseException) -> bool:
    """Whether another attempt may succeed: 5xx, 408, 429, throttling, clock skew, transport.

    Never 403/404/412/416: repeating them only burns quota and delays the real error.
    """
    if isinstance(exc, OssTransportError):
        return True
    if isinstance(exc, BadResponse):
        return exc.status >= 500
    if isinstance(exc, OssError):
        if isinstance(exc, Throttled) or exc.code in _RETRYABLE_CODES:
            return True
        return exc.status >= 500 or exc.status in (408, 429)
    return False


def describe_cause(exc: BaseException) -> str:
    """`Type: message` of the exception and its causes, each distinct message once.

    httpx often raises a ConnectError with no text whose __cause__ (or an exception group
    inside it) says what happened: refused, DNS, CERTIFICATE_VERIFY_FAILED. The operator
    needs that part.
    """
    parts: list[str] = []
    texts: set[str] = set()
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current).strip()
        if text and text not in texts:
            texts.add(text)
            parts.append(f"{type(current).__name__}: {text}")
        if isinstance(current, BaseExceptionGroup) and current.exceptions:
            current = current.exceptions[0]
        else:
            current = current.__cause__ or current.__context__
    return " <- ".join(parts) or type(exc).__name__
