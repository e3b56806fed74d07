"""Writing an upload into a store body: inline, or pipelined over two threads for big ones.

Split from store.py, whose bodies it produces (``FileBody`` under ``<data_dir>/.tmp``,
``MemoryBody`` without a data dir).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import queue
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from ossmount.crc64 import combine, crc64

from .store import Body, FileBody, FileRegion, MemoryBody, segment_bytes

__all__ = ["BodyWriter"]


def _copy_file(src: int, dst: int, size: int, start: int = 0) -> int:
    """Copy up to ``size`` bytes from ``start`` in the kernel; returns how many (0 where
    unsupported)."""
    off = 0
    while off < size:
        try:
            n = os.copy_file_range(src, dst, size - off, start + off)
        except OSError as exc:
            if exc.errno in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                os.lseek(dst, 0, os.SEEK_END)
                return off
            raise
        if n <= 0:
            break
        off += n
    return off


_PIPE_AFTER = 1 << 20  # bodies up to this size are hashed and written inline
_PIPE_DEPTH = 8  # chunks (≤ 1 MiB each) queued per upload stage
_PUMP_DEPTH = 8  # received pieces (≤ 1 MiB each) of one upload queued for MD5


_Job = tuple[Callable[[], None], Callable[[], None]]  # (the job, called once idle again)


class _Runners:
    """Long-lived threads that run stages, one stage at a time each: a stage per upload
    used to be a new ``threading.Thread``, whose ``start()`` blocks the event loop until the
    thread runs (py-spy, 1 GiB of 8 MiB parts x4: ~0.4 s of the loop per GiB in
    ``Thread.start``, on 2 busy cores). Here an idle runner takes the next stage at once; a
    new thread is started only when all are busy (the pool grows to the uploads in flight)
    and leaves after ``_IDLE_S`` without work.

    Invariant: a runner is in ``_idle`` exactly when it waits for a job and nobody has
    handed it one; taking it out of ``_idle`` (under ``_lock``) is what entitles a caller
    to give it a job, and a runner that times out leaves only if it is still in ``_idle``.
    """

    _IDLE_S = 30.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[queue.SimpleQueue[_Job]] = []

    def run_soon(self, job: Callable[[], None], done: Callable[[], None]) -> None:
        """Run ``job`` on a runner, then ``done`` once that runner is idle again (so a
        caller woken by ``done`` finds it idle for its next job)."""
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
        if inbox is not None:
            inbox.put((job, done))
            return
        inbox = queue.SimpleQueue()
        inbox.put((job, done))
        threading.Thread(
            target=self._serve, args=(inbox,), daemon=True, name="emulator-stage"
        ).start()

    def _serve(self, inbox: queue.SimpleQueue[_Job]) -> None:
        while True:
            try:
                job, done = inbox.get(timeout=self._IDLE_S)
            except queue.Empty:
                with self._lock:
                    if inbox in self._idle:
                        self._idle.remove(inbox)
                        return
                continue  # taken out of _idle just now: its job is on the way
            try:
                job()
            finally:
                del job
                with self._lock:
                    self._idle.append(inbox)
                done()


_runners = _Runners()


class _Stage:
    """One pipeline stage of an upload (MD5, or the file write) on a runner thread.

    Invariants: items are processed in the order given (one consumer, a FIFO); at most
    ``depth`` items are queued or running (the producer takes ``room`` before each put, the
    stage gives it back after), so a slow disk or hash bounds the memory held, never grows
    it. The first exception is kept and the remaining items are skipped, so the producer
    learns of it in ``BodyWriter.drain`` instead of hanging on ``room``. ``done`` is set
    once the stage has seen its end marker and its runner is idle again.
    """

    def __init__(self, fn: Callable[[bytes], object], depth: int) -> None:
        self.fn = fn
        self.room = threading.Semaphore(depth)
        self.items: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self.error: BaseException | None = None
        self.skip = False
        self.done = threading.Event()

    def start(self) -> None:
        _runners.run_soon(self.run, self.done.set)

    def join(self) -> None:
        self.done.wait()

    def run(self) -> None:
        while (item := self.items.get()) is not None:
            try:
                if self.error is None and not self.skip:
                    self.fn(item)
            except BaseException as exc:
                self.error = exc
            finally:
                del item
                self.room.release()

    async def put(self, item: bytes) -> None:
        if not self.room.acquire(blocking=False):
            await trio.to_thread.run_sync(self.room.acquire)
        self.items.put(item)

    def put_blocking(self, item: bytes) -> None:
        """From a pump thread: may wait for room."""
        self.room.acquire()
        self.items.put(item)

    def close(self) -> None:
        self.items.put(None)


class BodyWriter:
    """Accumulates an upload, hashing as it goes (MD5 for the ETag, CRC-64 for the header).

    ``write`` does everything inline (copies, small bodies). ``feed`` (the request-body path)
    does the CRC inline — fastcrc runs at >10 GB/s — and, once a body passes
    ``_PIPE_AFTER``, hands MD5 and the file write to one thread each, so the three run in
    parallel: MD5 alone is ~0.75 GB/s on this hardware (``openssl speed md5``) and was half
    the upload CPU. ``md5=False`` skips MD5 (multipart concatenation, ``--fast-etag``).
    Bytes given to ``feed`` must not be mutated afterwards (they are ``bytes``).
    """

    def __init__(
        self, tmp_dir: Path | None, *, md5: bool = True, region: tuple[Path, int] | None = None
    ) -> None:
        self.md5 = hashlib.md5()
        self.crc = 0
        self.size = 0
        self._hash_md5 = md5
        self._buf = bytearray()
        self._path: Path | None = None
        self._file: Any = None
        self._stages: list[_Stage] = []
        # region: write into an existing file from an offset (a multipart part straight into
        # its place in the upload's assembly file); finish() then gives a FileRegion and
        # abort() leaves the file, which is not ours, in place.
        self._region = region
        if region is not None:
            self._path = region[0]
            self._file = open(self._path, "r+b")  # noqa: SIM115 - closed in finish/abort
            self._file.seek(region[1])
        elif tmp_dir is not None:
            self._path = tmp_dir / uuid.uuid4().hex
            self._file = open(self._path, "wb")  # noqa: SIM115 - closed in finish/abort

    def reserve(self, size: int) -> None:
        """Allocate the blocks for ``size`` more bytes now (a body whose length is known):
        ext4 then writes into allocated space instead of reserving delayed allocation page by
        page (1 GiB of 1 MiB pwrites on this VM: 0.21-0.22 CPU s into a new file, 0.15 into
        an allocated one; whole uploads gain less, ~5 % of the emulator's CPU, within the
        noise of one run). Best effort: where the file system cannot, writes allocate."""
        if self._file is None or size < _PIPE_AFTER:
            return
        start = self._region[1] if self._region is not None else 0
        with contextlib.suppress(OSError):
            os.posix_fallocate(self._file.fileno(), start + self.size, size)

    def _sink(self, data: bytes | bytearray | memoryview) -> None:
        if self._file is not None:
            self._file.write(data)
        else:
            self._buf += data

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self._stages, "write() after feed() started the pipeline"
        if self._hash_md5:
            self.md5.update(data)
        self.crc = crc64(data, self.crc)
        self.size += len(data)
        self._sink(data)

    def append(self, body: Body, crc: int) -> None:
        """Append a whole stored body whose CRC is known: the CRC is combined, not recomputed,
        and a file is copied in the kernel (``copy_file_range``), so completing a 1 GiB
        multipart upload does not read it through Python on the event loop."""
        assert not self._stages
        assert not self._hash_md5
        if isinstance(body, (FileBody, FileRegion)) and self._file is not None:
            start = body.offset if isinstance(body, FileRegion) else 0
            self._file.flush()
            with open(body.path, "rb") as src:
                off = _copy_file(src.fileno(), self._file.fileno(), body.size, start)
                while off < body.size:  # no copy_file_range here: through user space
                    chunk = os.pread(src.fileno(), min(8 << 20, body.size - off), start + off)
                    if not chunk:
                        raise OSError(f"{body.path} is shorter than {body.size} bytes")
                    self._file.write(chunk)
                    off += len(chunk)
            self._file.flush()
            self._file.seek(0, os.SEEK_END)
        else:
            for seg in body.segments(0, body.size):
                self._sink(segment_bytes(seg))
        self.crc = combine(self.crc, crc, body.size)
        self.size += body.size

    async def feed(self, data: bytes) -> None:
        """Add request-body bytes; may wait (in a thread) when a stage is ``depth`` behind."""
        if not self._stages and self.size + len(data) <= _PIPE_AFTER:
            self.write(data)
            return
        if not self._stages:
            if self._hash_md5:
                self._stages.append(_Stage(self.md5.update, _PIPE_DEPTH))
            self._stages.append(_Stage(self._sink, _PIPE_DEPTH))
            for st in self._stages:
                st.start()
        self.crc = crc64(data, self.crc)
        self.size += len(data)
        for st in self._stages:
            await st.put(data)

    def start_pump(self) -> None:
        """Before a pump thread calls ``commit`` (trio side): MD5 gets its own stage, the
        CRC and the write happen in the pump thread itself. Idempotent, so a body pumped in
        pieces (fault offsets) keeps one stage and its order."""
        assert len(self._stages) <= 1, "start_pump() after feed() started the pipeline"
        if self._hash_md5 and not self._stages:
            self._stages.append(_Stage(self.md5.update, _PUMP_DEPTH))
            self._stages[0].start()

    def commit(self, data: bytes) -> None:
        """From the pump thread: ``data`` are the body's next bytes.

        CRC and write here (both release the GIL; the write is one copy into the page
        cache), then ``data`` goes to the MD5 stage, which may make this wait for room.
        Only one pump thread at a time.
        """
        self.crc = crc64(data, self.crc)
        self.size += len(data)
        self._sink(data)
        if self._stages:
            self._stages[0].put_blocking(data)

    async def drain(self) -> None:
        """Wait until every fed byte is hashed and written; re-raise a stage's error."""
        stages, self._stages = self._stages, []
        for st in stages:
            st.close()
        for st in stages:
            await trio.to_thread.run_sync(st.join)
        for st in stages:
            if st.error is not None:
                raise st.error

    def finish(self) -> Body:
        assert not self._stages, "finish() before drain()"
        if self._file is not None:
            assert self._path is not None
            self._file.close()
            if self._region is not None:
                return FileRegion(self._path, self._region[1], self.size)
            return FileBody(self._path, self.size)
        return MemoryBody(bytes(self._buf))

    def abort(self) -> None:
        """Drop the upload. Stages skip what is queued, so the join is short."""
        for st in self._stages:
            st.skip = True
            st.close()
        for st in self._stages:
            st.join()
        self._stages = []
        if self._file is not None:
            assert self._path is not None
            self._file.close()
            if self._region is None:
                self._path.unlink(missing_ok=True)
