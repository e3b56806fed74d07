from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from ossmount.oss import (
    Credentials,
    OssClient,
    OssConfig,
    RetryPolicy,
    StaticCredentialsProvider,
)
from tests.client._mini_server import MiniServer


@pytest.fixture
def server() -> Iterator[MiniServer]:
    with MiniServer(bucket="b", ak="ak", sk="sk") as srv:
        yield srv


def make_client(server: MiniServer, **overrides: object) -> OssClient:
    cfg: dict[str, object] = {
        "endpoint": server.endpoint,
        "bucket": "b",
        "region": "cn-hangzhou",
        "connect_timeout_s": 5.0,
        "read_timeout_s": 5.0,
        "stall_timeout_s": 5.0,
        "max_attempts": 4,
    }
    creds = overrides.pop("credentials", Credentials("ak", "sk"))
    cfg.update(overrides)
    return OssClient(
        OssConfig(**cfg),  # type: ignore[arg-type]
        StaticCredentialsProvider(creds),  # type: ignore[arg-type]
        retry=RetryPolicy(
            max_attempts=int(cfg["max_attempts"]), base_delay_s=0.01, max_delay_s=0.05
        ),  # type: ignore[call-overload]
    )


@pytest.fixture
async def client(server: MiniServer) -> AsyncIterator[OssClient]:
    async with make_client(server) as c:
        yield c
