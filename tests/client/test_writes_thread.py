"""Bodies above `_upload_wire.MIN_BODY` go out in one worker thread on the client's own
connections (oss/_upload_wire.py): verified like the httpcore path, signed V1 or V4, the
connection kept alive, a stalled server bounded by the timeout (for sendfile too), a cancelled
upload's thread stopped before the call returns, and TLS left to httpcore. The body is hashed
first and then sent with sendfile from the staged file: a range rewritten or cut in between
must end in a resend or a StagingError, never in a part called good that the server does not
hold."""

from __future__ import annotations

import errno
import os
import random
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from ossmount.crc64 import combine, crc64
from ossmount.emulator import Emulator, FaultRule
from ossmount.oss import (
    Credentials,
    OssClient,
    OssConfig,
    OssTransportError,
    RetryPolicy,
    StaticCredentialsProvider,
    _upload_wire,
)
from ossmount.oss._upload_wire import BodySend
from ossmount.oss._writes import FileRange, OssWrites, StagingError
from tests.client._raw_server import RawServer, read_request
from tests.sdk import sdk_get

MiB = 1024 * 1024
DATA = random.Random(15).randbytes(3 * MiB + 5)


def _client(emu: Emulator, *, read_timeout: float = 5.0, version: str = "v4") -> OssClient:
    return OssClient(
        OssConfig(
            emu.endpoint, "bkt", region="cn-hangzhou", read_timeout_s=read_timeout,
            connect_timeout_s=5, signature_version=version,  # type: ignore[arg-type]
        ),
        StaticCredentialsProvider(Credentials("ak", "sk")),
        retry=RetryPolicy(max_attempts=2, base_delay_s=0.01, max_delay_s=0.02),
    )  # fmt: skip


@pytest.fixture
def jobs(monkeypatch: pytest.MonkeyPatch) -> list[_upload_wire.BodySend]:
    """Every BodySend made (so a test sees the thread path was taken, and how it ended)."""
    made: list[_upload_wire.BodySend] = []
    real = _upload_wire.BodySend

    def spy(*args: object, **kw: object) -> _upload_wire.BodySend:
        job = real(*args, **kw)  # type: ignore[arg-type]
        made.append(job)
        return job

    monkeypatch.setattr(_upload_wire, "BodySend", spy)
    return made


@pytest.fixture
def staged(tmp_path: Path) -> Iterator[int]:
    path = tmp_path / "staged"
    path.write_bytes(b"HEAD" + DATA + DATA)
    fd = os.open(path, os.O_RDONLY)
    yield fd
    os.close(fd)


@pytest.fixture
def staged_32m(tmp_path: Path) -> Iterator[FileRange]:
    """32 MiB staged: more than the socket buffers of both ends hold, so a send must wait."""
    path = tmp_path / "staged-32m"
    with path.open("wb") as f:
        for _ in range(32):
            f.write(os.urandom(MiB))
    fd = os.open(path, os.O_RDONLY)
    yield FileRange(fd, 0, 32 * MiB)
    os.close(fd)


@pytest.mark.parametrize("version", ["v4", "v1"])
async def test_put_and_parts_go_through_the_thread_verified(
    emu: Emulator, staged: int, jobs: list[_upload_wire.BodySend], version: str
) -> None:
    async with _client(emu, version=version) as client:
        writes = OssWrites(client)
        put = await writes.put_object("put", FileRange(staged, 4, len(DATA)))
        assert put.crc64 == crc64(DATA)
        uid = await writes.initiate_multipart("mp")
        one = await writes.upload_part("mp", uid, 1, FileRange(staged, 4, len(DATA)))
        two = await writes.upload_part("mp", uid, 2, FileRange(staged, 4 + len(DATA), len(DATA)))
        done = await writes.complete_multipart("mp", uid, [one, two])
        assert done.crc64 == combine(crc64(DATA), crc64(DATA), len(DATA))
        # Every request went on one kept-alive connection, now idle in the pool.
        assert len(client._wire.connections) == 1
        # ... with trio's TCP_NOTSENT_LOWAT back (lifted only while a body went).
        sock = client._wire.connections[0].sock
        assert sock.getsockopt(socket.IPPROTO_TCP, 25) == 16384
    assert [job.sent for job in jobs] == [len(DATA)] * 3
    assert all(job.keep_alive for job in jobs)
    assert sdk_get(emu, "put") == DATA
    assert sdk_get(emu, "mp") == DATA + DATA


async def test_a_wrong_crc_on_the_thread_path_is_resent(
    emu: Emulator, staged: int, jobs: list[_upload_wire.BodySend]
) -> None:
    emu.faults.add(FaultRule("wrong-crc", op="PutObject"))
    async with _client(emu) as client:
        put = await OssWrites(client).put_object("k", FileRange(staged, 4, len(DATA)))
    assert put.crc64 == crc64(DATA)
    assert len(jobs) == 2
    assert sdk_get(emu, "k") == DATA


async def test_a_server_that_stops_reading_times_the_send_out(
    emu: Emulator, staged_32m: FileRange, jobs: list[_upload_wire.BodySend]
) -> None:
    body = staged_32m
    emu.faults.add(FaultRule("stall", op="UploadPart", after=64 * 1024, seconds=30, times=None))
    async with _client(emu, read_timeout=0.5) as client:
        writes = OssWrites(client)
        uid = await writes.initiate_multipart("k")
        with pytest.raises(OssTransportError, match="oss://bkt/k") as caught:
            await writes.upload_part("k", uid, 1, body)
    assert "WriteTimeout" in str(caught.value)
    assert len(jobs) == 2  # both tries, each bounded by the timeout
    assert all(not job.keep_alive for job in jobs)


async def test_a_cancelled_upload_returns_only_once_its_thread_stopped(
    emu: Emulator, staged_32m: FileRange, jobs: list[_upload_wire.BodySend]
) -> None:
    body = staged_32m
    emu.faults.add(FaultRule("stall", op="UploadPart", after=64 * 1024, seconds=30))
    async with _client(emu, read_timeout=30) as client:
        writes = OssWrites(client)
        uid = await writes.initiate_multipart("k")
        with trio.move_on_after(1) as scope:
            await writes.upload_part("k", uid, 1, body)
        assert scope.cancelled_caught
        assert len(jobs) == 1
        job = jobs[0]
        assert job.cancelled
        with job._lock:
            assert job._finished  # the thread was done before upload_part returned
        assert client._wire.connections == []  # a shut-down connection is never reused


async def test_tls_keeps_the_httpcore_path() -> None:
    config = OssConfig("https://oss.example.com", "b", region="cn-hangzhou")
    async with OssClient(config, StaticCredentialsProvider(Credentials("a", "s"))) as client:
        big = FileRange(-1, 0, _upload_wire.MIN_BODY + 1)  # only the length is looked at
        assert not _upload_wire.usable(client, big)
    config = OssConfig("http://oss.example.com", "b", region="cn-hangzhou")
    async with OssClient(config, StaticCredentialsProvider(Credentials("a", "s"))) as client:
        assert _upload_wire.usable(client, big)
        small = FileRange(-1, 0, _upload_wire.MIN_BODY)
        assert not _upload_wire.usable(client, small)


class SilentServer(RawServer):
    """Takes a whole request, head and body, and never answers."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[int] = []

    def _one(self, conn: socket.socket) -> None:
        _, body, _ = read_request(conn)
        self.bodies.append(len(body))
        conn.recv(1)  # until the client gives up (EOF) or the server is shut


async def test_a_reply_that_never_comes_is_bounded_by_the_read_timeout(
    staged: int, jobs: list[_upload_wire.BodySend]
) -> None:
    with SilentServer() as server:
        config = OssConfig(server.endpoint, "b", region="cn-hangzhou", read_timeout_s=0.3)
        retry = RetryPolicy(max_attempts=2, base_delay_s=0.01, max_delay_s=0.02)
        creds = StaticCredentialsProvider(Credentials("a", "s"))
        async with OssClient(config, creds, retry=retry) as client:
            body = FileRange(staged, 4, len(DATA))
            with pytest.raises(OssTransportError, match="oss://b/k") as caught:
                await OssWrites(client).upload_part("k", "U", 1, body)
    assert "ReadTimeout" in str(caught.value)
    assert server.bodies == [len(DATA)] * 2  # each try sent the whole body, then waited
    assert len(jobs) == 2


@pytest.fixture
def rewritable(tmp_path: Path) -> Iterator[int]:
    path = tmp_path / "staged-rw"
    path.write_bytes(DATA)
    fd = os.open(path, os.O_RDWR)
    yield fd
    os.close(fd)


async def test_a_range_rewritten_after_it_was_hashed_is_sent_again(
    emu: Emulator, rewritable: int, jobs: list[BodySend], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A writer rewrites the part between the CRC pass and sendfile: the server gets bytes our
    # CRC is not of, so the reply's CRC differs and the part is sent again, hashed afresh.
    new = bytes(b ^ 0x5A for b in DATA[:MiB]) + DATA[MiB:]
    hash_once = BodySend._hash

    def hash_then_rewrite(job: BodySend, src: FileRange) -> bool:
        ok = hash_once(job, src)
        if len(jobs) == 1:
            os.pwrite(rewritable, new[:MiB], 0)
        return ok

    monkeypatch.setattr(BodySend, "_hash", hash_then_rewrite)
    async with _client(emu) as client:
        writes = OssWrites(client)
        uid = await writes.initiate_multipart("k")
        part = await writes.upload_part("k", uid, 1, FileRange(rewritable, 0, len(DATA)))
        await writes.complete_multipart("k", uid, [part])
    assert [job.crc for job in jobs] == [crc64(DATA), crc64(new)]
    assert part.crc64 == crc64(new)
    assert sdk_get(emu, "k") == new


async def test_a_range_cut_after_it_was_hashed_is_a_staging_error(
    emu: Emulator, rewritable: int, jobs: list[BodySend], monkeypatch: pytest.MonkeyPatch
) -> None:
    hash_once = BodySend._hash

    def hash_then_cut(job: BodySend, src: FileRange) -> bool:
        ok = hash_once(job, src)
        os.ftruncate(rewritable, MiB + 7)
        return ok

    monkeypatch.setattr(BodySend, "_hash", hash_then_cut)
    async with _client(emu) as client:
        writes = OssWrites(client)
        uid = await writes.initiate_multipart("k")
        with pytest.raises(StagingError, match="oss://bkt/k") as caught:
            await writes.upload_part("k", uid, 1, FileRange(rewritable, 0, len(DATA)))
    assert f"staged file ends at {MiB + 7}" in str(caught.value)
    assert len(jobs) == 1
    assert jobs[0].sent == MiB + 7
    assert not jobs[0].keep_alive


class CountingServer(RawServer):
    """Counts the bytes each connection brought, and never answers."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[int] = []

    def _one(self, conn: socket.socket) -> None:
        n = 0
        while chunk := conn.recv(65536):
            n += len(chunk)
        self.received.append(n)


async def test_a_short_staged_file_puts_nothing_on_the_wire(staged: int) -> None:
    # The CRC pass reads the whole range before the head goes: the server sees no request.
    with CountingServer() as server:
        config = OssConfig(server.endpoint, "b", region="cn-hangzhou", read_timeout_s=5)
        async with OssClient(config, StaticCredentialsProvider(Credentials("a", "s"))) as client:
            short = FileRange(staged, 4 + len(DATA), len(DATA) + 1)
            with pytest.raises(StagingError, match="oss://b/k"):
                await OssWrites(client).upload_part("k", "U", 1, short)
    assert server.received == [0]


async def test_a_staged_file_sendfile_cannot_read_is_sent_from_the_crc_buffer(
    emu: Emulator, staged: int, jobs: list[BodySend], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A staging filesystem without splice support: sendfile fails with EINVAL before a byte.
    def no_splice(out_fd: int, in_fd: int, offset: int, count: int) -> int:
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(_upload_wire, "_sendfile", no_splice)
    async with _client(emu) as client:
        writes = OssWrites(client)
        put = await writes.put_object("k", FileRange(staged, 4, len(DATA)))
    assert put.crc64 == crc64(DATA)
    assert len(jobs) == 1
    assert jobs[0].sent == len(DATA)
    assert jobs[0].keep_alive
    assert sdk_get(emu, "k") == DATA
