"""oss/_wire.py "syscalls first": a connection writes and reads with plain syscalls and asks
trio to wait only on EAGAIN. What must still hold: a write the socket buffer cannot take at
once is finished through trio in order, a read with nothing there waits for the bytes, a body
read with bytes already there gets them without waiting, and a free pool slot is taken without
a scheduler pass."""

from __future__ import annotations

import os
import socket

import pytest
import trio
import trio.testing

from ossmount.oss._wire import Connection, Reply, WireBody, WireError, WirePool


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
        sent = conn.send_nowait(data)
        assert 0 < sent < len(data)  # the buffer took part of it without waiting
        await conn.send_all(data, sent)
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


def _pooled(conn: Connection) -> WirePool:
    pool = WirePool("127.0.0.1", 1, pool_size=1, ssl_context=None, connect_timeout_s=1.0,
                    keepalive_s=60.0)  # fmt: skip
    pool._slots.acquire_nowait()
    pool.release(conn, True)  # now idle and reusable
    return pool


def _count_scopes(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Deadlines of the cancel scopes `_wire` opens from now on."""
    opened: list[float] = []
    real = trio.move_on_at

    def counted(deadline: float, *, shield: bool = False) -> trio.CancelScope:
        opened.append(deadline)
        return real(deadline, shield=shield)

    def counted_after(seconds: float, *, shield: bool = False) -> trio.CancelScope:
        return counted(trio.current_time() + seconds, shield=shield)

    monkeypatch.setattr(trio, "move_on_at", counted)
    monkeypatch.setattr(trio, "move_on_after", counted_after)
    return opened


async def test_a_reply_there_after_the_write_costs_no_cancel_scope(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 13: a scope costs ~11 us, and about half of the spot GETs find their reply
    head there when the write returns."""
    plain, peer = _pair()
    pool = _pooled(_Quiet(plain.sock, None))
    peer.send(b"HTTP/1.1 206 Partial Content\r\nContent-Length: 0\r\n\r\n")
    opened = _count_scopes(monkeypatch)
    reply = await pool.request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", 5.0)
    assert reply.status == 206
    assert opened == []
    pool.release(reply.conn, False)
    peer.close()


async def test_a_reply_head_wait_ends_at_the_deadline_or_the_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A reply not there yet is waited for under one scope, whichever comes first of the
    head timeout and the request's deadline; no reply at all is a ReadTimeout."""
    plain, peer = _pair()
    pool = _pooled(_Quiet(plain.sock, None))
    opened = _count_scopes(monkeypatch)
    now = trio.current_time()
    with trio.fail_after(5), pytest.raises(WireError, match="ReadTimeout"):
        await pool.request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", 30.0, now + 0.05)
    assert len(opened) == 1
    assert opened[0] == pytest.approx(now + 0.05)
    assert trio.current_time() >= now + 0.05
    peer.close()
