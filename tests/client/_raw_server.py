"""A raw-socket HTTP/1.1 server on 127.0.0.1 in a thread, for upload tests that need to misbehave
at the byte level (reset mid-body, never answer), which `_mini_server` cannot. A subclass says
what to do with each accepted connection (`_one`); `read_request` takes a request's head and up
to `limit` body bytes."""

from __future__ import annotations

import socket
import threading
from typing import Self

__all__ = ["RawServer", "read_request"]


def read_request(conn: socket.socket, limit: int | None = None) -> tuple[bytes, bytes, int]:
    """(head, body, Content-Length) of one request: the body read up to its length, or up to
    `limit` bytes (give or take one 64 KiB read), or until the client stops sending. An empty
    head: the client sent none."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return b"", b"", 0
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    want = length if limit is None else min(limit, length)
    while len(body) < want and (chunk := conn.recv(65536)):
        body += chunk
    return head, body, length


class RawServer:
    """Accepts connections one after another and hands each to `_one` (subclasses)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self._one(conn)

    def _one(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
        self.sock.close()
        self.thread.join(5)
