"""Multipart parts received in place (multipart.py): the bytes, ETag and CRC of a completed
object are those of the parts whatever path Complete takes, and no file is left behind.

With ``--data-dir`` a part of at most the upload's stride is written straight into the
upload's assembly file; Complete then uses that file as the object when the chosen parts fill
it from the start, and copies otherwise. Each test below forces one of those paths and checks
which one ran (the object's file is, or is not, the assembly file).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from defusedxml import ElementTree

from ossmount.crc64 import combine, crc64
from ossmount.emulator import Emulator, FaultRule, writer
from ossmount.emulator.store import FileBody, FileRegion

KiB = 1024


@pytest.fixture
def disk_emu(tmp_path: Path) -> Iterator[tuple[Emulator, httpx.Client, Path]]:
    data_dir = tmp_path / "data"
    with (
        Emulator(buckets=["demo"], verify_signatures=False, data_dir=str(data_dir)) as emu,
        httpx.Client(base_url=emu.endpoint) as c,
    ):
        yield emu, c, data_dir


def _initiate(c: httpx.Client, key: str) -> str:
    uid = ElementTree.fromstring(c.post(f"/demo/{key}?uploads").content).findtext("UploadId")
    assert uid
    return uid


def _put_part(c: httpx.Client, key: str, uid: str, n: int, data: bytes) -> str:
    r = c.put(f"/demo/{key}?partNumber={n}&uploadId={uid}", content=data)
    assert r.status_code == 200, r.text
    assert r.headers["x-oss-hash-crc64ecma"] == str(crc64(data))
    return r.headers["etag"]


def _complete(c: httpx.Client, key: str, uid: str, etags: dict[int, str]) -> httpx.Response:
    xml = "<CompleteMultipartUpload>" + "".join(
        f"<Part><PartNumber>{n}</PartNumber><ETag>{etags[n]}</ETag></Part>" for n in sorted(etags)
    )
    r = c.post(f"/demo/{key}?uploadId={uid}", content=xml + "</CompleteMultipartUpload>")
    assert r.status_code == 200, r.text
    return r


def _check(c: httpx.Client, key: str, r: httpx.Response, parts: list[bytes]) -> None:
    whole = b"".join(parts)
    crc = 0
    for p in parts:
        crc = combine(crc, crc64(p), len(p))
    assert r.headers["x-oss-hash-crc64ecma"] == str(crc) == str(crc64(whole))
    md5s = b"".join(hashlib.md5(p).digest() for p in parts)
    assert r.headers["etag"] == f'"{hashlib.md5(md5s).hexdigest().upper()}-{len(parts)}"'
    assert c.get(f"/demo/{key}").content == whole


def _tmp_files(data_dir: Path) -> list[Path]:
    return list((data_dir / ".tmp").iterdir())


def _upload(emu: Emulator, uid: str) -> Any:
    return emu.app._uploads[uid]  # type: ignore[attr-defined]


def _object_file(emu: Emulator, key: str) -> Path:
    bucket = emu.store.bucket("demo")
    assert bucket is not None
    body = bucket.objects[key].body
    assert isinstance(body, FileBody)
    return body.path


def test_parts_in_any_order_complete_without_a_copy(
    disk_emu: tuple[Emulator, httpx.Client, Path],
) -> None:
    emu, c, data_dir = disk_emu
    parts = [os.urandom(200 * KiB), os.urandom(200 * KiB), os.urandom(70 * KiB)]
    uid = _initiate(c, "a.bin")
    etags = {n: _put_part(c, "a.bin", uid, n, parts[n - 1]) for n in (2, 1, 3)}
    up = _upload(emu, uid)
    assert all(isinstance(p.body, FileRegion) for p in up.parts.values())
    inode = up.assembly.stat().st_ino
    r = _complete(c, "a.bin", uid, etags)
    _check(c, "a.bin", r, parts)
    assert _object_file(emu, "a.bin").stat().st_ino == inode  # moved into place, not copied
    assert _tmp_files(data_dir) == []


def test_short_first_part_then_bigger_ones_are_copied(
    disk_emu: tuple[Emulator, httpx.Client, Path],
) -> None:
    """The stride comes from the first part to arrive; a bigger part gets a file of its own,
    and Complete copies (same bytes, ETag, CRC)."""
    emu, c, data_dir = disk_emu
    parts = [os.urandom(300 * KiB), os.urandom(300 * KiB), os.urandom(120 * KiB)]
    uid = _initiate(c, "b.bin")
    etags = {3: _put_part(c, "b.bin", uid, 3, parts[2])}
    etags |= {n: _put_part(c, "b.bin", uid, n, parts[n - 1]) for n in (1, 2)}
    up = _upload(emu, uid)
    assert isinstance(up.parts[3].body, FileRegion)
    assert isinstance(up.parts[1].body, FileBody)
    assembly = up.assembly
    r = _complete(c, "b.bin", uid, etags)
    _check(c, "b.bin", r, parts)
    assert not assembly.exists()  # copied from, then removed with the upload
    assert _tmp_files(data_dir) == []


def test_resent_part_never_overwrites_the_recorded_one(
    disk_emu: tuple[Emulator, httpx.Client, Path],
) -> None:
    """A part sent again (here cut mid-body, as a retry after a reset would be) must not
    touch the slot holding the recorded bytes; Complete of the recorded parts stays exact,
    and a good resend replaces the part."""
    emu, c, data_dir = disk_emu
    parts = [os.urandom(256 * KiB), os.urandom(256 * KiB)]
    uid = _initiate(c, "c.bin")
    etags = {n: _put_part(c, "c.bin", uid, n, parts[n - 1]) for n in (1, 2)}
    rule = emu.faults.add(FaultRule("reset", op="UploadPart", after=100 * KiB))
    with pytest.raises(httpx.TransportError):
        c.put(f"/demo/c.bin?partNumber=1&uploadId={uid}", content=os.urandom(256 * KiB))
    assert rule.fired == 1
    assert _upload(emu, uid).claimed == set()
    r = _complete(c, "c.bin", uid, etags)
    _check(c, "c.bin", r, parts)
    uid = _initiate(c, "d.bin")
    etags = {n: _put_part(c, "d.bin", uid, n, parts[n - 1]) for n in (1, 2)}
    newer = os.urandom(256 * KiB)
    etags[1] = _put_part(c, "d.bin", uid, 1, newer)
    assert isinstance(_upload(emu, uid).parts[1].body, FileBody)  # not into the old slot
    r = _complete(c, "d.bin", uid, etags)
    _check(c, "d.bin", r, [newer, parts[1]])
    assert _tmp_files(data_dir) == []


def test_complete_of_a_subset_and_abort_leave_no_files(
    disk_emu: tuple[Emulator, httpx.Client, Path],
) -> None:
    emu, c, data_dir = disk_emu
    parts = [os.urandom(128 * KiB) for _ in range(3)]
    uid = _initiate(c, "e.bin")
    etags = {n: _put_part(c, "e.bin", uid, n, parts[n - 1]) for n in (1, 2, 3)}
    r = _complete(c, "e.bin", uid, {1: etags[1], 3: etags[3]})  # a gap: copied
    _check(c, "e.bin", r, [parts[0], parts[2]])
    uid = _initiate(c, "f.bin")
    _put_part(c, "f.bin", uid, 1, parts[0])
    assert c.delete(f"/demo/f.bin?uploadId={uid}").status_code == 204
    assert _tmp_files(data_dir) == []
    with pytest.raises(KeyError):
        _upload(emu, uid)


def test_bodies_of_known_length_are_allocated_up_front(
    disk_emu: tuple[Emulator, httpx.Client, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PUT or a part with a Content-Length gets its blocks at once (writer.reserve), a part
    at its slot; the bytes stored are exactly the body's."""
    _emu, c, data_dir = disk_emu
    calls: list[tuple[int, int]] = []
    real = os.posix_fallocate

    def recording(fd: int, offset: int, length: int) -> None:
        calls.append((offset, length))
        real(fd, offset, length)

    monkeypatch.setattr(writer.os, "posix_fallocate", recording)
    body = os.urandom(3 << 20)
    assert c.put("/demo/whole.bin", content=body).status_code == 200
    assert calls == [(0, 3 << 20)]
    assert c.get("/demo/whole.bin").content == body
    uid = _initiate(c, "p.bin")
    parts = [os.urandom(2 << 20), os.urandom(1 << 20)]
    etags = {n: _put_part(c, "p.bin", uid, n, parts[n - 1]) for n in (1, 2)}
    assert calls[1:] == [(0, 2 << 20), (2 << 20, 1 << 20)]
    _check(c, "p.bin", _complete(c, "p.bin", uid, etags), parts)
    assert _tmp_files(data_dir) == []


def _copy_part(c: httpx.Client, key: str, uid: str, n: int, source: str, rng: str) -> str:
    r = c.put(
        f"/demo/{key}?partNumber={n}&uploadId={uid}",
        headers={"x-oss-copy-source": f"/demo/{source}", "x-oss-copy-source-range": rng},
    )
    assert r.status_code == 200, r.text
    etag = ElementTree.fromstring(r.content).findtext("ETag")
    assert etag
    return etag


def test_copied_parts_are_copied_into_place_and_complete_without_a_copy(
    disk_emu: tuple[Emulator, httpx.Client, Path],
) -> None:
    """UploadPartCopy writes its range into the part's slot (in a worker thread: 1.5 MiB is
    past the inline bound), so an append's upload (copied parts, then one sent) completes
    with nothing copied; each copied part's ETag is its bytes' MD5."""
    emu, c, data_dir = disk_emu
    half = 1536 * KiB
    source = os.urandom(2 * half + 5)
    assert c.put("/demo/src", content=source).status_code == 200
    parts = [source[:half], source[half : 2 * half], os.urandom(40 * KiB)]
    uid = _initiate(c, "c.bin")
    etags = {
        1: _copy_part(c, "c.bin", uid, 1, "src", f"bytes=0-{half - 1}"),
        2: _copy_part(c, "c.bin", uid, 2, "src", f"bytes={half}-{2 * half - 1}"),
        3: _put_part(c, "c.bin", uid, 3, parts[2]),
    }
    assert etags[1] == f'"{hashlib.md5(parts[0]).hexdigest().upper()}"'
    up = _upload(emu, uid)
    assert all(isinstance(p.body, FileRegion) for p in up.parts.values())
    inode = up.assembly.stat().st_ino
    r = _complete(c, "c.bin", uid, etags)
    _check(c, "c.bin", r, parts)
    assert _object_file(emu, "c.bin").stat().st_ino == inode
    assert _tmp_files(data_dir) == []


def _hold_copies(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """Copies in worker threads wait for `go` once they have `entered`."""
    from ossmount.emulator import objects

    entered, go = threading.Event(), threading.Event()
    real = objects.copy_range

    def held(*args: Any) -> None:
        entered.set()
        assert go.wait(10)
        real(*args)

    monkeypatch.setattr(objects, "copy_range", held)
    return entered, go


def _while_copying(
    emu: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    copy: Callable[[httpx.Client], Any],
    meanwhile: Callable[[], object],
) -> Any:
    """`copy` (a request whose copy runs in a thread), with `meanwhile` served while its
    copy is held; what `copy` returned."""
    entered, go = _hold_copies(monkeypatch)
    with (
        httpx.Client(base_url=emu.endpoint) as other,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        copying = pool.submit(copy, other)
        assert entered.wait(10)
        meanwhile()
        go.set()
        return copying.result(timeout=10)


def test_a_copy_reads_the_version_it_started_from(
    disk_emu: tuple[Emulator, httpx.Client, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The source is replaced (its file unlinked) while a CopyObject and an UploadPartCopy
    of it run in their threads: both copy the version they were asked for."""
    emu, c, _ = disk_emu
    versions = [os.urandom(2 * 1024 * KiB) for _ in range(3)]
    assert c.put("/demo/src", content=versions[0]).status_code == 200

    def replace_with(data: bytes) -> Callable[[], object]:
        return lambda: c.put("/demo/src", content=data).raise_for_status()

    r = _while_copying(
        emu,
        monkeypatch,
        lambda other: other.put("/demo/copy", headers={"x-oss-copy-source": "/demo/src"}),
        replace_with(versions[1]),
    )
    assert r.status_code == 200, r.text
    assert c.get("/demo/copy").content == versions[0]
    uid = _initiate(c, "p.bin")
    _while_copying(
        emu,
        monkeypatch,
        lambda other: _copy_part(other, "p.bin", uid, 1, "src", "bytes=0-1048576"),
        replace_with(versions[2]),
    )
    assert _upload(emu, uid).parts[1].md5 == hashlib.md5(versions[1][: 1024 * KiB + 1]).digest()


def test_a_copy_that_must_not_overwrite_is_refused_if_the_target_appears_meanwhile(
    disk_emu: tuple[Emulator, httpx.Client, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """x-oss-forbid-overwrite is checked again once the copy's bytes are in (the target may
    have been made while they were copied), and the copy's file is removed."""
    emu, c, data_dir = disk_emu
    assert c.put("/demo/src", content=os.urandom(2 * 1024 * KiB)).status_code == 200
    headers = {"x-oss-copy-source": "/demo/src", "x-oss-forbid-overwrite": "true"}
    r = _while_copying(
        emu,
        monkeypatch,
        lambda other: other.put("/demo/dst", headers=headers),
        lambda: c.put("/demo/dst", content=b"made meanwhile").raise_for_status(),
    )
    assert r.status_code == 409, r.text
    assert b"FileAlreadyExists" in r.content
    assert c.get("/demo/dst").content == b"made meanwhile"
    assert _tmp_files(data_dir) == []
