"""oss/_wire.py "syscalls first": a connection writes and reads with plain syscalls and asks
trio to wait only on EAGAIN. What must still hold: a write the socket buffer cannot take at
once is finished through trio in order, a read with nothing there waits for the bytes, a body
read with bytes already there gets them without waiting, and a free pool slot is taken without
a scheduler pass."""

from __future__ import annotations

import os
import socket

import trio
import trio.testing

from ossmount.oss._wire import Connection, Reply, WireBody, WirePool


class _Quiet(Connection):
    """`quiet()` would take a reply queued before the request for a closed connection."""

    def quiet(self) -> bool:
        return True


def _pair() -> tuple[Connection, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 * 1024)
    return Connection(trio.socket.from_stdlib_socket(a), None), b


async def test_send_all_finishes_a_partial_write_in_order() -> None:
    conn, peer = _pair()
    data = os.urandom(2 * 1024 * 1024)  # far more than the send buffer
    got = bytearray()
    peer_t = trio.socket.from_stdlib_socket(peer)

    async def drain() -> None:
        while len(got) < len(data):
            got.extend(await peer_t.recv(64 * 1024))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        await conn.send_all(data)
    assert bytes(got) == data
    conn.close()
    peer_t.close()


async def test_recv_into_waits_for_bytes_then_returns_them() -> None:
    conn, peer = _pair()
    view = memoryview(bytearray(100))
    result: list[int] = []

    async def read() -> None:
        result.append(await conn.recv_into(view))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        assert result == []  # nothing there yet: it waits, it does not spin or fail
        peer.send(b"hello")
    assert result == [5]
    assert bytes(view[:5]) == b"hello"
    conn.close()
    peer.close()


async def test_body_read_ready_takes_what_is_there_and_none_when_empty() -> None:
    conn, peer = _pair()
    head = b"HTTP/1.1 206 Partial Content\r\nContent-Length: 10"
    pool = WirePool("127.0.0.1", 1, pool_size=1, ssl_context=None, connect_timeout_s=1.0,
                    keepalive_s=1.0)  # fmt: skip
    body = WireBody(pool, Reply(conn, head, memoryview(b"")), stall_s=5.0, limiter=None)
    view = memoryview(bytearray(10))
    assert body._read_ready(view) is None  # nothing arrived: the caller waits
    peer.send(b"0123456789")
    assert body._read_ready(view) == 10
    assert bytes(view) == b"0123456789"
    conn.close()
    peer.close()


async def test_free_pool_slot_is_taken_without_a_scheduler_pass() -> None:
    """A pooled connection whose reply is already there: the request makes no checkpoint
    at all (before: one for the slot, one for the send)."""
    plain, peer = _pair()
    conn = _Quiet(plain.sock, None)
    pool = WirePool("127.0.0.1", 1, pool_size=1, ssl_context=None, connect_timeout_s=1.0,
                    keepalive_s=60.0)  # fmt: skip
    await pool._slots.acquire()
    pool.release(conn, True)  # now idle and reusable
    peer.send(b"HTTP/1.1 206 Partial Content\r\nContent-Length: 0\r\n\r\n")
    task = trio.lowlevel.current_task()
    before = task._schedule_points  # type: ignore[attr-defined]
    reply = await pool.request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", 5.0)
    assert task._schedule_points == before  # type: ignore[attr-defined]
    assert reply.status == 206
    pool.release(reply.conn, False)
    peer.close()
