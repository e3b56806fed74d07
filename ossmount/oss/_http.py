"""One HTTP/1.1 request to the endpoint: httpcore's connection pool, httpx's response model.

Why not `httpx.AsyncHTTPTransport.handle_async_request(httpx.Request(...))`: for a small GET
that path builds an `httpx.Request` (parsing the URL string again, normalizing every header)
and then converts it into the `httpcore.Request` that the pool really sends. Measured on the
2 vCPU VM (timeit, 9 request headers): 33 us per request for the httpx route, 5.5 us for an
`httpcore.Request` built from bytes we already hold, out of ~700 us of client CPU per 8 KiB
GET (`bench/bench_requests.py`). httpx's transport is a thin wrapper over exactly this pool
(`httpcore.AsyncConnectionPool`, public API), so we hold the pool ourselves, built as httpx
builds it (`httpx.create_ssl_context`, the same limits, no retries, no proxy from the
environment), and wrap its response in an `httpx.Response` just as httpx's transport does, so
`_body_h11.H11Body` and the rest of the client see what they saw before. (Ranged GETs, the hot
path, no longer come here: `_wire` has them.)

The response stream keeps httpx's attribute name for the httpcore stream (`_httpcore_stream`),
which `_body_h11._h11_connection` walks; httpcore's exceptions are raised as httpx's
(`httpx.TransportError` family) both from `send` and from the body iterator.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterable, AsyncIterator

import httpcore
import httpx

from ._config import OssConfig

__all__ = ["CORE_ERRORS", "CoreSender", "tls_verify"]

# httpcore's transport-level failures (PoolTimeout, ConnectError, ReadError, ... derive from these).
CORE_ERRORS: tuple[type[Exception], ...] = (
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
    httpcore.ProxyError,
)


def as_httpx_error(exc: Exception) -> httpx.TransportError:
    """httpcore's exception as the httpx class of the same name (what httpx itself raises)."""
    cls = getattr(httpx, type(exc).__name__, None)
    if not (isinstance(cls, type) and issubclass(cls, httpx.TransportError)):
        cls = httpx.TransportError
    err = cls(str(exc))
    err.__cause__ = exc
    return err


def _host_bytes(host: str) -> bytes:
    return host.encode("ascii") if host.isascii() else host.encode("idna")


class _CoreStream(httpx.AsyncByteStream):
    """httpcore's response stream as httpx's, as httpx's own transport wraps it."""

    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._httpcore_stream = stream  # the name `_body_h11._h11_connection` walks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._httpcore_stream:
                yield part
        except CORE_ERRORS as exc:
            raise as_httpx_error(exc) from exc

    async def aclose(self) -> None:
        aclose = getattr(self._httpcore_stream, "aclose", None)
        if aclose is not None:
            await aclose()


class CoreSender:
    """Sends requests for one endpoint (scheme, port) through one httpcore connection pool.

    Concurrency: shared by all tasks; httpcore's pool does its own locking, and this class
    holds no mutable state of its own.
    """

    def __init__(
        self,
        scheme: str,
        host: str,
        authority: str,
        port: int | None,
        *,
        pool_size: int,
        verify: ssl.SSLContext | bool,
    ) -> None:
        """`host` to connect to (no port, no IPv6 brackets), `authority` for the Host header."""
        self._scheme = scheme.encode("ascii")
        self._host = _host_bytes(host)
        self._authority = _host_bytes(authority)
        self._port = port
        self.pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify),
            max_connections=pool_size,
            max_keepalive_connections=pool_size,
            keepalive_expiry=httpx.Limits().keepalive_expiry,  # httpx's default, as before
            http1=True,
            http2=False,
            retries=0,
        )

    async def aclose(self) -> None:
        await self.pool.aclose()

    async def send(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        timeouts: dict[str, float | None],
        content: bytes | AsyncIterable[bytes] | None = None,
    ) -> httpx.Response:
        """Send one request; returns the streaming response (any status).

        `target` is the encoded path and query; header values must be latin-1. `content` is
        the body (writes), sent as given: the caller sets Content-Length. Raises the
        httpx.TransportError subclass named like httpcore's exception.
        """
        raw_headers = [(b"Host", self._authority)]
        raw_headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        request = httpcore.Request(
            method.encode("ascii"),
            httpcore.URL(
                scheme=self._scheme, host=self._host, port=self._port, target=target.encode()
            ),
            headers=raw_headers,
            content=content,
            extensions={"timeout": timeouts},
        )
        try:
            response = await self.pool.handle_async_request(request)
        except CORE_ERRORS as exc:
            raise as_httpx_error(exc) from exc
        assert isinstance(response.stream, AsyncIterable)  # what the async pool returns
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_CoreStream(response.stream),
            extensions=response.extensions,
        )


def tls_verify(config: OssConfig) -> ssl.SSLContext | bool:
    """What httpx verifies server certificates with: a private CA bundle, the default, or off."""
    if config.ca_file is not None and config.verify_tls:
        return ssl.create_default_context(cafile=config.ca_file)
    return config.verify_tls
