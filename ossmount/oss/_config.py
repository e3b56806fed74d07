"""`OssConfig`: how to reach one bucket - endpoint, addressing, signing, timeouts, retries.

Apart from the client so that it loads no HTTP library (the mount builds one from its options
before anything connects).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .addressing import (
    Addressing,
    SignatureVersion,
    auto_addressing,
    region_from_endpoint,
    with_scheme,
)

__all__ = ["OssConfig"]


@dataclass(frozen=True, slots=True)
class OssConfig:
    """How to reach one bucket. Immutable: a client is built for one config.

    `endpoint` without a scheme gets `https://`. `region` may be omitted for
    `oss-<region>[-internal].aliyuncs.com` endpoints (it is derived), required otherwise for V4.
    `addressing="auto"` is path-style for an IP endpoint (the emulator), virtual-hosted else.
    Timeouts: `connect_timeout_s` to open a connection, `read_timeout_s` to wait for a HEAD or
    LIST reply (head or body), `stall_timeout_s` for a GET reply head or body byte that does
    not come. `max_attempts` tries per request, counting the first (a resumed GET body is a
    try). `fetch_timeout_s` bounds one ranged GET as a whole, whatever the server does; unset,
    it is `max_attempts` x (`connect_timeout_s` + `stall_timeout_s`) plus the backoff caps
    between tries (0.2, 0.4, 0.8, ... s, at most 20 each): with the defaults 5 x 40 + 3 =
    203 s, with `--stall-timeout 3 --max-attempts 3` 3 x 13 + 0.6 = 39.6 s.
    """

    endpoint: str
    bucket: str
    region: str | None = None
    addressing: Addressing = "auto"
    signature_version: SignatureVersion = "v4"
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 30.0
    stall_timeout_s: float = 30.0
    max_attempts: int = 5
    # Total seconds for one ranged GET, all tries and waits included; None: derived (see
    # `OssClient.fetch_deadline_s`).
    fetch_timeout_s: float | None = None
    pool_size: int = 16
    chunk_size: int = 1024 * 1024
    verify_tls: bool = True
    ca_file: str | None = None  # trust this CA bundle instead of the system's (private endpoints)
    product: str = "oss"

    def resolved_region(self) -> str:
        region = self.region or region_from_endpoint(self.endpoint)
        if region:
            return region
        raise ValueError(
            f"cannot derive the OSS region from endpoint {self.endpoint!r}; pass region "
            "(e.g. cn-hangzhou), which V4 signing needs"
        )

    def base_url(self) -> str:
        return with_scheme(self.endpoint)

    def resolved_addressing(self) -> Literal["virtual", "path", "cname"]:
        if self.addressing != "auto":
            return self.addressing
        return auto_addressing(self.endpoint)
