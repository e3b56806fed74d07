"""OSS error type and response XML, written as text (the shapes are small and fixed).

Why hand-written XML: element order and empty elements matter to SDK fixtures, and building
strings is cheaper than an ElementTree round trip for a 1000-entry listing. Request XML
(CompleteMultipartUpload, Delete) is parsed with defusedxml in the handlers.
"""

from __future__ import annotations

import base64
import time
from xml.sax.saxutils import escape

__all__ = ["EC", "OssError", "error_xml", "iso8601", "xml_doc", "xml_text"]

# Fine-grained error codes (§4.1/§4.2); "may change, do not build logic on them".
EC: dict[str, str] = {
    "NoSuchKey": "0026-00000001",
    "NoSuchBucket": "0015-00000101",
    "SymlinkTargetNotExist": "0026-00000012",
    "InvalidObjectState": "0016-00000404",
    "SignatureDoesNotMatch": "0002-00000040",
    "SignatureDoesNotMatchV4": "0002-00000201",
    "InvalidAccessKeyId": "0002-00000030",
    "RequestTimeTooSkewed": "0002-00000504",
    "AccessDenied": "0003-00000001",
    "InvalidArgument": "0015-00000402",
    "InvalidRange": "0016-00000416",
    "PreconditionFailed": "0016-00000412",
    "FileAlreadyExists": "0026-00000002",
    "InvalidPart": "0042-00000208",
    "InvalidPartOrder": "0042-00000209",
    "EntityTooSmall": "0042-00000213",
    "NoSuchUpload": "0042-00000002",
    "MalformedXML": "0016-00000608",
    "InvalidDigest": "0016-00000105",
    "InvalidObjectName": "0016-00000005",
    "InvalidBucketName": "0015-00000001",
    "PositionNotEqualToLength": "0026-00000015",
    "ObjectNotAppendable": "0026-00000014",
    "InvalidTargetType": "0026-00000013",
    "MethodNotAllowed": "0016-00000301",
    "NotImplemented": "0016-00000001",
    "QpsLimitExceeded": "0003-00001302",
    "ServiceUnavailable": "0012-00000503",
    "InternalError": "0012-00000500",
    "SecondLevelDomainForbidden": "0003-00000101",
}

_MESSAGES: dict[str, str] = {
    "NoSuchKey": "The specified key does not exist.",
    "NoSuchBucket": "The specified bucket does not exist.",
    "SymlinkTargetNotExist": "The symlink target object does not exist.",
    "InvalidObjectState": "The operation is not valid for the object's state",
    "SignatureDoesNotMatch": "The request signature we calculated does not match the signature "
    "you provided. Check your key and signing method.",
    "InvalidAccessKeyId": "The OSS Access Key Id you provided does not exist in our records.",
    "RequestTimeTooSkewed": "The difference between the request time and the current time is "
    "too large.",
    "AccessDenied": "You have no right to access this object because of bucket acl.",
    "InvalidRange": "The requested range cannot be satisfied",
    "PreconditionFailed": "At least one of the pre-conditions you specified did not hold",
    "QpsLimitExceeded": "Please reduce your request rate.",
    "ServiceUnavailable": "Thread pool is almost full, please retry later",
    "InternalError": "We encountered an internal error. Please try again.",
    "MalformedXML": "The XML you provided was not well-formed or did not validate against our "
    "published schema.",
    "InvalidPart": "One or more of the specified parts could not be found or the specified "
    "entity tag might not have matched the part's entity tag.",
    "NoSuchUpload": "The specified upload does not exist. The upload ID may be invalid, or the "
    "upload may have been aborted or completed.",
    "FileAlreadyExists": "The object you specified already exists and can not be overwritten.",
    "PositionNotEqualToLength": "Position is not equal to file length",
    "ObjectNotAppendable": "The object is not appendable",
    "InvalidObjectName": "The specified object is not valid.",
    "InvalidBucketName": "The specified bucket is not valid.",
    "MethodNotAllowed": "The specified method is not allowed against this resource.",
    "NotImplemented": "A header you provided implies functionality that is not implemented.",
    "SecondLevelDomainForbidden": "Please use virtual hosted style to access.",
}


class OssError(Exception):
    """An OSS-shaped error response. ``extra`` becomes additional XML elements, in order."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str | None = None,
        *,
        extra: dict[str, str] | None = None,
        ec: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message if message is not None else _MESSAGES.get(code, code)
        self.extra = extra or {}
        self.ec = ec or EC.get(code, "0000-00000000")
        self.headers = headers or []
        super().__init__(f"{status} {code}: {self.message}")


def xml_text(value: str) -> str:
    return escape(value)


def xml_doc(body: str) -> bytes:
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + body).encode("utf-8")


def error_xml(err: OssError, request_id: str, host_id: str) -> bytes:
    parts = [
        f"<Code>{xml_text(err.code)}</Code>",
        f"<Message>{xml_text(err.message)}</Message>",
        f"<RequestId>{request_id}</RequestId>",
        f"<HostId>{xml_text(host_id)}</HostId>",
    ]
    parts += [f"<{k}>{xml_text(v)}</{k}>" for k, v in err.extra.items()]
    parts.append(f"<EC>{err.ec}</EC>")
    parts.append(f"<RecommendDoc>https://api.aliyun.com/troubleshoot?q={err.ec}</RecommendDoc>")
    return xml_doc("<Error>\n  " + "\n  ".join(parts) + "\n</Error>\n")


def error_header(body: bytes) -> str:
    """HEAD errors carry the XML base64-encoded in ``x-oss-err`` (§3.2)."""
    return base64.b64encode(body).decode("ascii")


def iso8601(t: float) -> str:
    """XML timestamps as OSS writes them: whole seconds, always ``.000Z`` (§8.5).

    OSS keeps object times to the second (the RFC 1123 ``Last-Modified`` header has no finer
    unit), and tools that parse the fixed format (ossfs2) reject real milliseconds; so the
    fraction is dropped, never rounded up, and a listing agrees with HEAD to the second.
    """
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(int(t)))
