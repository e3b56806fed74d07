"""The OSS emulator: a faithful local Alibaba Cloud OSS server for tests, the demo and benchmarks.

``Emulator`` is the handle: it runs the server in its own thread with its own ``trio.run`` (a
test that blocks in ``cp`` or the official SDK must not starve it), bound to 127.0.0.1 port 0
by default.

    with Emulator(buckets=["demo"]) as emu:
        emu.put_object("demo", "a.txt", b"hello")
        emu.faults.add(FaultRule("reset", op="GetObject", after=100))
        ... emu.endpoint ... emu.requests ...

Thread-safety: ``put_*``/``faults``/``requests``/``shaping`` may be used from any thread while
the server runs (the store publishes versions under its lock; faults count under theirs; the
log is a list appended to by the server thread).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Iterable
from types import TracebackType

import trio

from .app import App, RequestLog, RequestRecord
from .auth import Verifier
from .faults import FaultRule, Faults, parse_rule
from .response import Response
from .server import serve_connection
from .shaping import Shaping
from .store import (
    MemoryBody,
    ObjectVersion,
    Store,
    SyntheticBody,
    guess_content_type,
    md5_etag,
)
from .xml import OssError

__all__ = ["Emulator", "FaultRule", "Faults", "RequestLog", "RequestRecord", "parse_rule"]

log = logging.getLogger(__name__)


class Emulator:
    """Handle for one emulator server (see module docstring)."""

    def __init__(
        self,
        buckets: Iterable[str] = ("demo",),
        access_key_id: str = "ak",
        access_key_secret: str = "sk",
        region: str = "cn-hangzhou",
        data_dir: str | None = None,
        public_read: bool = False,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        verify_signatures: bool = True,
        path_style: bool | None = None,
        cname: dict[str, str] | None = None,
        admin: bool = True,
        skew_s: float = 900.0,
        fast_etag: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.region = region
        self.access_key_id = access_key_id
        self.access_key_secret = access_key_secret
        self.store = Store(data_dir)
        for b in buckets:
            self.store.create_bucket(b)
        self.faults = Faults()
        self.shaping = Shaping()
        self.requests = RequestLog()
        self.verifier = Verifier(
            access_key_id,
            access_key_secret,
            region,
            public_read=public_read,
            enabled=verify_signatures,
            skew_s=skew_s,
        )
        self.app = App(
            self.store,
            self.verifier,
            self.faults,
            self.shaping,
            self.requests,
            region=region,
            path_style=path_style,
            cname=cname,
            admin=admin,
            fast_etag=fast_etag,
        )
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._cancel: trio.CancelScope | None = None
        self._token: trio.lowlevel.TrioToken | None = None

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> Emulator:
        """Start the server thread; returns once the socket listens (raises if it cannot)."""
        if self._thread is not None:
            raise RuntimeError("emulator already started")
        self._thread = threading.Thread(target=self._run, name="oss-emulator", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise RuntimeError("emulator failed to start") from self._error
        return self

    def _run(self) -> None:
        try:
            trio.run(self.serve)
        except BaseException as exc:  # reported to start() or logged at stop()
            self._error = exc
            self._ready.set()

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled (the CLI runs this in the main thread's trio.run)."""
        async with trio.open_nursery() as nursery:
            self._cancel = nursery.cancel_scope
            self._token = trio.lowlevel.current_trio_token()
            listeners = await trio.open_tcp_listeners(self.port, host=self.host)
            self.port = listeners[0].socket.getsockname()[1]
            self._ready.set()
            task_status.started()
            await trio.serve_listeners(self._connection, listeners, handler_nursery=nursery)

    async def _connection(self, stream: trio.SocketStream) -> None:
        await serve_connection(stream, self.app.handle, self._bad_request, self.shaping)

    def _bad_request(self, status: int, code: str, message: str) -> Response:
        return self.app.error_response(
            OssError(status, code, message), self.app.request_id(), "", False
        )

    def stop(self) -> None:
        """Stop serving and join the thread. Open connections are cut."""
        if self._thread is None:
            return
        if self._token is not None and self._cancel is not None:
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._cancel.cancel, trio_token=self._token)
        self._thread.join(timeout=10)
        self._thread = None
        if self._error is not None:
            log.error("emulator thread failed: %r", self._error)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- direct store access for tests ---------------------------------------------------
    def put_object(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        crc64: bool = True,
        content_type: str | None = None,
        storage_class: str = "Standard",
        meta: dict[str, str] | None = None,
        object_type: str = "Normal",
    ) -> str:
        """Store an object directly (no HTTP); returns its ETag. ``crc64=False``: no CRC header."""
        from ossmount.crc64 import crc64 as crc

        self._bucket(bucket)
        etag = md5_etag(hashlib.md5(data).digest())
        obj = ObjectVersion(
            key=key,
            body=MemoryBody(bytes(data)),
            etag=etag,
            mtime=time.time(),
            crc64=crc(data) if crc64 else None,
            content_type=content_type or guess_content_type(key),
            object_type=object_type,
            storage_class=storage_class,
            meta=tuple(sorted((f"x-oss-meta-{k.lower()}", v) for k, v in (meta or {}).items())),
        )
        self.store.publish(bucket, obj)
        return etag

    def put_symlink(self, bucket: str, key: str, target: str) -> None:
        self._bucket(bucket)
        etag = md5_etag(hashlib.md5(target.encode()).digest())
        obj = ObjectVersion(
            key=key,
            body=MemoryBody(b""),
            etag=etag,
            mtime=time.time(),
            crc64=None,
            content_type=guess_content_type(key),
            object_type="Symlink",
            symlink_target=target,
        )
        self.store.publish(bucket, obj)

    def put_synthetic(self, bucket: str, key: str, size: int, seed: int = 0) -> str:
        """A ``size``-byte object whose bytes are f(seed, offset); costs no memory or disk."""
        self._bucket(bucket)
        body = SyntheticBody(seed, size)
        etag = md5_etag(hashlib.md5(f"synthetic:{seed}:{size}".encode()).digest())
        obj = ObjectVersion(
            key=key,
            body=body,
            etag=etag,
            mtime=time.time(),
            crc64=body.crc(),
            content_type=guess_content_type(key),
        )
        self.store.publish(bucket, obj)
        return etag

    def synthetic_bytes(self, bucket: str, key: str, offset: int, length: int) -> bytes:
        obj = self.head(bucket, key)
        if obj is None or not isinstance(obj.body, SyntheticBody):
            raise KeyError(f"{bucket}/{key} is not a synthetic object")
        length = max(0, min(length, obj.size - offset))
        return obj.body.read(offset, length)

    def get_bytes(self, bucket: str, key: str) -> bytes:
        obj = self.head(bucket, key)
        if obj is None:
            raise KeyError(f"{bucket}/{key}")
        return obj.body.read(0, obj.size)

    def head(self, bucket: str, key: str) -> ObjectVersion | None:
        b = self.store.bucket(bucket)
        return None if b is None else b.objects.get(key)

    def delete_object(self, bucket: str, key: str) -> None:
        self.store.delete(bucket, key)

    def create_bucket(self, bucket: str) -> None:
        self.store.create_bucket(bucket)

    def _bucket(self, bucket: str) -> None:
        if self.store.bucket(bucket) is None:
            self.store.create_bucket(bucket)
