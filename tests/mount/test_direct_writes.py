"""Write-only handles are FOPEN_DIRECT_IO (fs/attrs.direct_writes): the writer's bytes skip
the FUSE inode's page cache. Through a real `-o rw` mount: that they do skip it (mincore of a
mapping another descriptor holds), that other descriptors still see every write, that a
read-write handle can still be mapped MAP_SHARED and written through the mapping, and that
the bytes reach the server whole."""

from __future__ import annotations

import ctypes
import functools
import mmap
import os
import subprocess
import sys
from pathlib import Path

from ossmount.emulator import Emulator
from tests.mount.conftest import MountFactory
from tests.mount.harness import BUCKET
from tests.mount.test_write import RW, server_bytes
from tests.mount.test_write_features import staged_files, wait_until

PAGE = mmap.PAGESIZE
MiB = 1 << 20
_libc = ctypes.CDLL(None, use_errno=True)


def resident_pages(mapping: mmap.mmap, length: int) -> int:
    """How many pages of `mapping` the kernel holds in its page cache (mincore(2))."""
    pages = (length + PAGE - 1) // PAGE
    vec = (ctypes.c_ubyte * pages)()
    view = ctypes.c_char.from_buffer(mapping)
    try:
        status = _libc.mincore(ctypes.c_void_p(ctypes.addressof(view)), length, vec)
        if status != 0:
            raise OSError(ctypes.get_errno(), "mincore")
    finally:
        del view  # the mapping cannot be closed while a pointer into it is exported
    return sum(v & 1 for v in vec)


def test_a_write_only_handle_leaves_no_pages_in_the_page_cache(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    mount = make_mount(args=RW).start()
    path = mount.path / "w.bin"
    size = 64 * PAGE
    data = os.urandom(size)
    reader = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # page-cached: it may read
    try:
        os.ftruncate(reader, size)
        mapping = mmap.mmap(reader, size, mmap.MAP_SHARED)
        try:
            writer = os.open(path, os.O_WRONLY)
            try:
                assert os.pwrite(writer, data, 0) == size
            finally:
                os.close(writer)
            # Through the page cache the write would have left its 64 pages resident.
            assert resident_pages(mapping, size) == 0
            assert mapping[:size] == data  # read back through the mapping: our read handler
        finally:
            mapping.close()
    finally:
        os.close(reader)
    wait_until("the file is committed", lambda: not staged_files(mount.cache))
    assert server_bytes(emulator, "w.bin") == data


def test_another_descriptor_sees_each_direct_write(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    mount = make_mount(args=RW).start()
    path = mount.path / "c.bin"
    first, second = os.urandom(3 * PAGE), os.urandom(PAGE)
    writer = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(writer, first)
        reader = os.open(path, os.O_RDONLY)
        try:
            assert os.pread(reader, 3 * PAGE, 0) == first  # now cached for `reader`
            os.pwrite(writer, second, PAGE)
            assert os.pread(reader, 3 * PAGE, 0) == first[:PAGE] + second + first[2 * PAGE :]
            os.write(writer, b"tail")  # past the end: the size `reader` sees grows
            assert os.fstat(reader).st_size == 3 * PAGE + 4
        finally:
            os.close(reader)
    finally:
        os.close(writer)
    wait_until("the file is committed", lambda: not staged_files(mount.cache))
    assert server_bytes(emulator, "c.bin") == first[:PAGE] + second + first[2 * PAGE :] + b"tail"


def test_a_read_write_handle_can_still_be_written_through_a_shared_mapping(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    mount = make_mount(args=RW).start()
    # In a child process: msync holds its caller's GIL, and the emulator serves from a thread
    # of this one.
    script = """
import mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
os.write(fd, bytes(2 * mmap.PAGESIZE))
with mmap.mmap(fd, 2 * mmap.PAGESIZE, mmap.MAP_SHARED) as mapping:
    mapping[mmap.PAGESIZE : mmap.PAGESIZE + 5] = b"hello"
    mapping.flush()
os.close(fd)
"""
    subprocess.run([sys.executable, "-c", script, str(mount.path / "m.bin")], check=True)
    wait_until("the file is committed", lambda: not staged_files(mount.cache))
    assert server_bytes(emulator, "m.bin") == b"\0" * PAGE + b"hello" + b"\0" * (PAGE - 5)


def test_a_descriptor_opened_before_cp_replaced_the_file_reads_the_new_bytes(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    """As through a local file's descriptor: not the old version's bytes (its cached parts),
    nor ESTALE once the commit replaced it (fs/filesystem.py `_readers_follow`)."""
    old, new = os.urandom(3 * MiB + 5), os.urandom(2 * MiB + 7)
    emulator.put_object(BUCKET, "r.bin", old)
    mount = make_mount(args=RW).start()
    source = tmp_path / "new.bin"
    source.write_bytes(new)
    reader = os.open(mount.path / "r.bin", os.O_RDONLY)
    try:
        assert os.read(reader, PAGE) == old[:PAGE]
        subprocess.run(["cp", str(source), str(mount.path / "r.bin")], check=True)
        assert server_bytes(emulator, "r.bin") == new
        assert os.fstat(reader).st_size == len(new)
        got = b"".join(iter(functools.partial(os.read, reader, MiB), b""))
        assert os.pread(reader, len(old), 0) == new
        assert got == new[PAGE:]
    finally:
        os.close(reader)
