"""How a bucket is named and reached: the bucket-name rule, endpoints, regions, addressing style.

One rule per fact, shared by the mount's option parsing (`ossmount.config`), the client's
`OssConfig` and the emulator (which may import this module: it is pure rules, no I/O and no
HTTP library, so a client bug still cannot hide behind a matching emulator bug).

* Bucket names follow OSS's rule: 3-63 characters of lowercase letters, digits and hyphens,
  starting and ending with a letter or digit.
* An endpoint without a scheme is `https://`; a valid one is `http(s)://HOST[:PORT]` with no
  path. The region is derived from an `oss-REGION[-internal].aliyuncs.com` host; without one,
  the default endpoint of a region is `https://oss-REGION.aliyuncs.com`.
* `auto` addressing is path-style for an IP endpoint (the emulator), virtual-hosted otherwise.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal
from urllib.parse import urlsplit

__all__ = [
    "BUCKET_NAME_RULE",
    "DEFAULT_REGION",
    "Addressing",
    "SignatureVersion",
    "auto_addressing",
    "default_endpoint",
    "is_http_url",
    "normalize_endpoint",
    "region_from_endpoint",
    "valid_bucket_name",
    "with_scheme",
]

Addressing = Literal["auto", "virtual", "path", "cname"]
SignatureVersion = Literal["v4", "v1", "anonymous"]

DEFAULT_REGION = "cn-hangzhou"
BUCKET_NAME_RULE = "3-63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit"

_BUCKET = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
_REGION_FROM_HOST = re.compile(r"oss-([a-z0-9-]+?)(?:-internal)?\.aliyuncs\.com")
_ENDPOINT = re.compile(r"https?://[^/\s]+/?")


def valid_bucket_name(name: str) -> bool:
    return _BUCKET.fullmatch(name) is not None


def with_scheme(endpoint: str) -> str:
    return endpoint if "://" in endpoint else f"https://{endpoint}"


def is_http_url(text: str) -> bool:
    """`http(s)://HOST[:PORT][/]`: a server's root, as endpoints are named."""
    return _ENDPOINT.fullmatch(text) is not None


def normalize_endpoint(endpoint: str) -> str:
    """`host` or `scheme://host[:port][/]` → `scheme://host[:port]`; ValueError otherwise."""
    url = with_scheme(endpoint)
    if not is_http_url(url):
        raise ValueError(
            f"bad endpoint {url!r}: expected a URL such as https://oss-cn-hangzhou.aliyuncs.com"
        )
    return url.rstrip("/")


def region_from_endpoint(endpoint: str) -> str | None:
    """`cn-hangzhou` for `oss-cn-hangzhou[-internal].aliyuncs.com`; None for other hosts."""
    host = urlsplit(with_scheme(endpoint)).hostname or ""
    match = _REGION_FROM_HOST.fullmatch(host)
    return match.group(1) if match else None


def default_endpoint(region: str) -> str:
    return f"https://oss-{region}.aliyuncs.com"


def auto_addressing(endpoint: str) -> Literal["virtual", "path"]:
    host = urlsplit(with_scheme(endpoint)).hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return "virtual"
    return "path"
