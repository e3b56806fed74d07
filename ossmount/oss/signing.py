"""OSS request signing (V4 `OSS4-HMAC-SHA256` and legacy V1), as pure functions.

Why pure: the client signs with them and the emulator verifies with the very same
canonicalization, so both are checked against the published vectors (oss-protocol.md §1.7)
instead of against each other. Nothing here does I/O, reads the clock or holds state; the
caller passes the time, so a retry re-signs simply by calling again with a new `now`. (Two
memo caches of pure results, the V4 day key and the date strings of a second, keep the
per-request cost down; they change no result.)

Inputs are always *decoded* strings: query pairs as `(name, value)` after URL-decoding, bucket
and key as the logical names. The canonical forms re-encode them with strict RFC 3986, which
reproduces every SDK vector (PY2 signs the already-encoded URL, GO2 first rewrites `+` to
`%20`; decoding then re-encoding agrees with both). The bucket is part of the V4 canonical URI
whatever the addressing style (virtual-hosted, path or CNAME), because OSS signs the logical
resource, not the URL path.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from email.utils import formatdate
from urllib.parse import quote

__all__ = [
    "UNSIGNED_PAYLOAD",
    "V1_SUBRESOURCES",
    "V4_ALGORITHM",
    "format_http_date",
    "format_v4_date",
    "sign_v1_headers",
    "sign_v4_headers",
    "uri_encode",
    "v1_canonical_resource",
    "v1_signature",
    "v1_string_to_sign",
    "v4_additional_headers",
    "v4_canonical_request",
    "v4_scope",
    "v4_signature",
    "v4_signing_key",
    "v4_string_to_sign",
]

V4_ALGORITHM = "OSS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_V4_TERMINATOR = "aliyun_v4_request"

# Sub-resources PY2 (`signer/v1.py`) puts in the V1 CanonicalizedResource. Everything else in the
# query (list-type, prefix, max-keys, ...) is not signed in V1 (vector V1-6).
V1_SUBRESOURCES: frozenset[str] = frozenset(
    {
        "acl",
        "bucketInfo",
        "location",
        "stat",
        "delete",
        "append",
        "tagging",
        "objectMeta",
        "uploads",
        "uploadId",
        "partNumber",
        "security-token",
        "position",
        "response-content-type",
        "response-content-language",
        "response-expires",
        "response-cache-control",
        "response-content-disposition",
        "response-content-encoding",
        "restore",
        "callback",
        "callback-var",
        "versions",
        "versioning",
        "versionId",
        "sequential",
        "continuation-token",
        "regionList",
        "cloudboxes",
        "symlink",
        "resourceGroup",
    }
)

_V4_DEFAULT_SIGNED = frozenset({"content-type", "content-md5"})


def uri_encode(s: str, *, keep_slash: bool) -> str:
    """RFC 3986 percent-encoding of the UTF-8 bytes of `s`, upper-case hex.

    Only `A-Z a-z 0-9 - . _ ~` (and `/` when `keep_slash`) stay literal; in particular space is
    `%20` and `+` is `%2B`, never `+`.
    """
    # quote() always keeps the unreserved set "A-Za-z0-9_.-~" and emits upper-case hex.
    return quote(s, safe="/" if keep_slash else "")


def format_v4_date(now: float) -> str:
    """ISO-8601 basic UTC timestamp for `x-oss-date` (e.g. 20231216T162057Z)."""
    return _dates(int(now))[0]


def format_http_date(now: float) -> str:
    """RFC 1123 GMT date for `Date` (e.g. Sat, 16 Dec 2023 16:20:57 GMT)."""
    return _dates(int(now))[1]


@functools.lru_cache(maxsize=4)
def _dates(second: int) -> tuple[str, str]:
    """Both request dates of one second, computed once: requests come many per second and
    formatting them cost ~5 us per request (bench/bench_requests.py)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second)), formatdate(second, usegmt=True)


# ---------------------------------------------------------------------------------------------
# V4


def v4_scope(date: str, region: str, product: str = "oss") -> str:
    """`YYYYMMDD/region/product/aliyun_v4_request`; `date` may be a full x-oss-date."""
    return f"{date[:8]}/{region}/{product}/{_V4_TERMINATOR}"


def _hmac256(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def v4_signing_key(secret: str, date: str, region: str, product: str = "oss") -> bytes:
    """The derived key chain of §1.1; `date` may be YYYYMMDD or a full x-oss-date."""
    return _signing_key(secret, date[:8], region, product)


@functools.lru_cache(maxsize=8)
def _signing_key(secret: str, day: str, region: str, product: str) -> bytes:
    """Memoized: the key changes once a UTC day (or with the credentials), and deriving it is
    four HMACs, ~10 us, a third of the cost of signing a request."""
    k = _hmac256(("aliyun_v4" + secret).encode(), day)
    k = _hmac256(k, region)
    k = _hmac256(k, product)
    return _hmac256(k, _V4_TERMINATOR)


def _canonical_uri(bucket: str | None, key: str | None) -> str:
    if not bucket:
        return "/"
    return uri_encode(f"/{bucket}/{key or ''}", keep_slash=True)


def _canonical_query(query: Sequence[tuple[str, str]]) -> str:
    encoded = sorted(
        (uri_encode(name, keep_slash=False), uri_encode(value, keep_slash=False))
        for name, value in query
    )
    return "&".join(f"{n}={v}" if v else n for n, v in encoded)


def _is_default_signed_v4(lname: str) -> bool:
    return lname.startswith("x-oss-") or lname in _V4_DEFAULT_SIGNED


def v4_additional_headers(headers: Mapping[str, str], additional_headers: Sequence[str]) -> str:
    """The AdditionalHeaders list as signed: lower-case, sorted, `;`-joined.

    Names already signed by default (x-oss-*, content-type, content-md5) and names absent from
    the request are dropped, as the SDKs do (vector T-B's second variant).
    """
    if not additional_headers:
        return ""  # the common case: skip the scan of every header
    present = {name.lower() for name in headers}
    names = {
        a.lower()
        for a in additional_headers
        if a.strip() and not _is_default_signed_v4(a.lower()) and a.lower() in present
    }
    return ";".join(sorted(names))


def v4_canonical_request(
    method: str,
    bucket: str | None,
    key: str | None,
    query: Sequence[tuple[str, str]],
    headers: Mapping[str, str],
    additional_headers: Sequence[str] = (),
) -> str:
    """The six-line V4 canonical request of §1.1.

    `query` holds decoded pairs and must not contain `x-oss-signature`. Header names may be in
    any case; values are trimmed. The payload line is the `x-oss-content-sha256` header or
    UNSIGNED-PAYLOAD.
    """
    additional = v4_additional_headers(headers, additional_headers)
    wanted = set(additional.split(";")) if additional else set()
    signed: dict[str, str] = {}
    for name, value in headers.items():
        lname = name.lower()
        if _is_default_signed_v4(lname) or lname in wanted:
            signed[lname] = value.strip()
    canonical_headers = "".join(f"{n}:{signed[n]}\n" for n in sorted(signed))
    payload = signed.get("x-oss-content-sha256", UNSIGNED_PAYLOAD)
    return "\n".join(
        [
            method.upper(),
            _canonical_uri(bucket, key),
            _canonical_query(query),
            canonical_headers,
            additional,
            payload,
        ]
    )


def v4_string_to_sign(timestamp: str, scope: str, canonical_request: str) -> str:
    digest = hashlib.sha256(canonical_request.encode()).hexdigest()
    return f"{V4_ALGORITHM}\n{timestamp}\n{scope}\n{digest}"


def v4_signature(
    secret: str, timestamp: str, region: str, canonical_request: str, product: str = "oss"
) -> str:
    """Lower-case hex HMAC-SHA256 of the string to sign with the derived key."""
    sts = v4_string_to_sign(timestamp, v4_scope(timestamp, region, product), canonical_request)
    key = v4_signing_key(secret, timestamp, region, product)
    return hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()


def sign_v4_headers(
    method: str,
    bucket: str | None,
    key: str | None,
    query: Sequence[tuple[str, str]],
    headers: Mapping[str, str],
    *,
    access_key_id: str,
    secret: str,
    region: str,
    now: float,
    security_token: str | None = None,
    additional_headers: Sequence[str] = (),
    product: str = "oss",
) -> dict[str, str]:
    """Headers to add to a request so it carries a V4 Authorization header.

    Returns the caller's headers plus `x-oss-date`, `Date`, `x-oss-content-sha256` (unless
    given), `x-oss-security-token` (when a token is given) and `Authorization`. A header the
    caller already set with one of these names (any case) is replaced, so re-signing the
    previous attempt's headers is safe.
    """
    timestamp = format_v4_date(now)
    replaced = {"x-oss-date", "date", "authorization", "x-oss-security-token"}
    out = {k: v for k, v in headers.items() if k.lower() not in replaced}
    out["x-oss-date"] = timestamp
    out["Date"] = format_http_date(now)
    if not any(k.lower() == "x-oss-content-sha256" for k in out):
        out["x-oss-content-sha256"] = UNSIGNED_PAYLOAD
    if security_token:
        out["x-oss-security-token"] = security_token
    canonical = v4_canonical_request(method, bucket, key, query, out, additional_headers)
    signature = v4_signature(secret, timestamp, region, canonical, product)
    credential = f"{access_key_id}/{v4_scope(timestamp, region, product)}"
    additional = v4_additional_headers(out, additional_headers)
    parts = [f"Credential={credential}"]
    if additional:
        parts.append(f"AdditionalHeaders={additional}")
    parts.append(f"Signature={signature}")
    out["Authorization"] = f"{V4_ALGORITHM} " + ",".join(parts)
    return out


# ---------------------------------------------------------------------------------------------
# V1


def _header(headers: Mapping[str, str], lname: str) -> str:
    for name, value in headers.items():
        if name.lower() == lname:
            return value.strip()
    return ""


def v1_canonical_resource(
    bucket: str | None, key: str | None, query: Sequence[tuple[str, str]]
) -> str:
    """`/bucket/key` with the key raw (not encoded) plus sorted signed sub-resources."""
    resource = f"/{bucket}/{key or ''}" if bucket else "/"
    subs = sorted((n, v) for n, v in query if n in V1_SUBRESOURCES)
    if subs:
        resource += "?" + "&".join(f"{n}={v}" if v else n for n, v in subs)
    return resource


def v1_string_to_sign(
    method: str,
    bucket: str | None,
    key: str | None,
    query: Sequence[tuple[str, str]],
    headers: Mapping[str, str],
    date_value: str,
) -> str:
    """V1 StringToSign; `date_value` is x-oss-date/Date for headers, Expires for presign."""
    oss_headers = sorted(
        (name.lower(), value.strip())
        for name, value in headers.items()
        if name.lower().startswith("x-oss-")
    )
    canonical_headers = "".join(f"{n}:{v}\n" for n, v in oss_headers)
    return (
        f"{method.upper()}\n{_header(headers, 'content-md5')}\n"
        f"{_header(headers, 'content-type')}\n{date_value}\n"
        f"{canonical_headers}{v1_canonical_resource(bucket, key, query)}"
    )


def v1_signature(secret: str, string_to_sign: str) -> str:
    digest = hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def sign_v1_headers(
    method: str,
    bucket: str | None,
    key: str | None,
    query: Sequence[tuple[str, str]],
    headers: Mapping[str, str],
    *,
    access_key_id: str,
    secret: str,
    now: float,
    security_token: str | None = None,
) -> dict[str, str]:
    """The caller's headers plus `Date`, `x-oss-security-token` and a V1 Authorization."""
    replaced = {"date", "authorization", "x-oss-security-token"}
    out = {k: v for k, v in headers.items() if k.lower() not in replaced}
    out["Date"] = format_http_date(now)
    if security_token:
        out["x-oss-security-token"] = security_token
    date_value = _header(out, "x-oss-date") or out["Date"]
    sts = v1_string_to_sign(method, bucket, key, query, out, date_value)
    out["Authorization"] = f"OSS {access_key_id}:{v1_signature(secret, sts)}"
    return out
