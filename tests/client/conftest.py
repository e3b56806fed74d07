from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from ossmount.emulator import Emulator
from ossmount.oss import (
    Credentials,
    ListPage,
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


def make_client(
    server: MiniServer | Emulator, *, max_delay_s: float = 0.05, **overrides: object
) -> OssClient:
    """A client of `server` (bucket "b" unless `bucket=` says otherwise) with short timeouts
    and backoff, so failures show fast; `max_delay_s` caps the backoff between tries."""
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
            max_attempts=int(cfg["max_attempts"]), base_delay_s=0.01, max_delay_s=max_delay_s
        ),  # type: ignore[call-overload]
    )


@pytest.fixture
async def client(server: MiniServer) -> AsyncIterator[OssClient]:
    async with make_client(server) as c:
        yield c


async def all_pages(
    client: OssClient, prefix: str, delimiter: str = "/", max_keys: int = 1000
) -> list[ListPage]:
    """Every ListObjectsV2 page under `prefix`, following the continuation tokens (what the
    tree's lister does with `list_page`)."""
    pages: list[ListPage] = []
    token: str | None = None
    while True:
        page = await client.list_page(prefix, delimiter, token, max_keys)
        pages.append(page)
        if page.next_token is None:
            return pages
        token = page.next_token
