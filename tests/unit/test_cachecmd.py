"""The cache commands' pieces that need no mount: mountinfo, argv ownership, progress lines,
and verify on hand-made cache dirs (cases a real mount does not produce on demand)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ossmount.cache.checkpoint import Checkpoint, EntryState, save_atomic
from ossmount.cache.layout import LAYOUT_VERSION
from ossmount.cache.ranges import PartLayout
from ossmount.cache.store import key_hash
from ossmount.cachecmd.findmount import mount_of, parse_mountinfo
from ossmount.cachecmd.layout import resolve_cache_dir
from ossmount.cachecmd.main import is_ours
from ossmount.cachecmd.progress import Progress
from ossmount.config import build_config
from ossmount.crc64 import combine, crc64
from ossmount.fs.shown import Posix, ShownAttrs
from ossmount.fs.shownfile import encode_shown

MOUNTINFO = (
    "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
    "90 22 0:50 / /mnt/my\\040data rw,nosuid,nodev,noatime - fuse.ossmount "
    "ossmount#bkt:/a/b/ ro,user_id=0,group_id=0\n"
    "91 90 0:51 / /mnt/my\\040data/inner rw - fuse.ossmount ossmount#other ro\n"
    "92 22 0:52 / /mnt/s3 rw - fuse.s3fs s3fs ro\n"
)


def test_mountinfo_finds_the_innermost_ossmount_mount_with_escaped_names() -> None:
    mounts = parse_mountinfo(MOUNTINFO)
    assert [(str(m.mountpoint), m.bucket, m.prefix) for m in mounts] == [
        ("/mnt/my data", "bkt", "a/b/"),
        ("/mnt/my data/inner", "other", ""),
    ]
    found = mount_of(Path("/mnt/my data/x/y"), MOUNTINFO)
    assert found is not None
    assert found.bucket == "bkt"
    inner = mount_of(Path("/mnt/my data/inner/z"), MOUNTINFO)
    assert inner is not None
    assert inner.bucket == "other"
    assert mount_of(Path("/mnt/my datum"), MOUNTINFO) is None
    assert mount_of(Path("/mnt/s3/k"), MOUNTINFO) is None


def test_cache_and_warmup_claim_an_argv_only_where_no_mount_could_mean_it(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "file").write_bytes(b"x")
    assert is_ours(["cache", "status"])
    assert is_ours(["cache", "--help"])
    assert is_ours(["cache"])
    assert not is_ours(["cache", str(empty)])  # mount the bucket "cache" there
    assert not is_ours(["warmup", str(empty)])
    assert not is_ours(["warmup", str(tmp_path / "missing")])
    assert is_ours(["warmup", str(tmp_path / "file")])
    assert is_ours(["warmup", str(tmp_path)])  # not empty: no mount could go there
    assert is_ours(["warmup", "-j", "2"])
    assert not is_ours(["demo"])
    assert not is_ours([])


def test_progress_writes_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    progress = Progress(total=4 << 20, desc="warmup", stream=out, interval=0)
    progress.update(1 << 20, "files 1/4")
    progress.update(3 << 20, "files 4/4")
    progress.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == 3  # one per update (interval 0) and the last one at close
    assert lines[-1].startswith("warmup: 100%")
    assert "files 4/4" in lines[-1]
    assert "iB/s" in lines[-1]


_DRAW = """
from ossmount.fs.shown import Posix, ShownAttrs
from ossmount.fs.shownfile import encode_shown
from ossmount.cachecmd.progress import Progress
progress = Progress(total=2 << 20, desc="verify", postfix="files 0/2")
progress.update(2 << 20, "files 2/2")
progress.close()
"""


def test_progress_draws_a_bar_on_a_terminal_even_one_of_unknown_size() -> None:
    """On stdout (where tqdm asks the terminal its size) of a fresh pty, which says 0x0 as
    under script(1): tqdm alone draws nothing at all there."""
    master, slave = os.openpty()
    try:
        subprocess.run([sys.executable, "-c", _DRAW], stdout=slave, check=True, timeout=60)
        drawn = os.read(master, 65536).decode()
    finally:
        os.close(slave)
        os.close(master)
    assert "\r" in drawn  # redrawn in place
    assert "verify: 100%|" in drawn
    assert "files 2/2" in drawn


def _entry(root: Path, key: str, data: bytes, *, server_crc: int | None, part: int) -> Path:
    """A cache entry as the store writes it; returns its checkpoint path."""
    (root / "VERSION").write_text(f"{LAYOUT_VERSION}\n")
    h = key_hash(key)
    directory = root / "bkt" / h[:2]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{h}.data").write_bytes(data)
    layout = PartLayout(len(data), part)
    crcs = {}
    for i in range(layout.count):
        start, length = layout.span(i)
        crcs[i] = crc64(data[start : start + length])
    state = EntryState.VERIFIED if server_crc is not None else EntryState.UNVERIFIABLE
    cp = Checkpoint("bkt", key, '"etag"', len(data), 0, server_crc, part, crcs, state)
    save_atomic(directory / f"{h}.ckpt", cp)
    return directory / f"{h}.ckpt"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ossmount", *args], capture_output=True, text=True, timeout=60
    )


def test_verify_drops_an_entry_whose_parts_do_not_combine_to_the_server_crc(
    tmp_path: Path,
) -> None:
    """Every part matches its own recorded CRC, but the server's CRC disagrees: no part can be
    blamed, so the entry goes whole."""
    data = os.urandom(700_000)
    layout = PartLayout(len(data), 256 * 1024)
    true_crc = 0
    for i in range(layout.count):
        start, length = layout.span(i)
        true_crc = combine(true_crc, crc64(data[start : start + length]), length)
    assert true_crc == crc64(data)
    bad = _entry(tmp_path, "wrong.bin", data, server_crc=true_crc ^ 1, part=256 * 1024)
    good = _entry(tmp_path, "right.bin", data, server_crc=true_crc, part=256 * 1024)
    result = _cli("cache", "verify", "--cache-dir", str(tmp_path))
    assert result.returncode == 11, result.stdout + result.stderr
    assert "oss://bkt/wrong.bin: its parts combine to CRC-64" in result.stdout
    assert "dropped the entry" in result.stdout
    assert not bad.exists()
    assert not bad.with_suffix(".data").exists()
    assert good.exists()


def test_status_reports_a_damaged_checkpoint_and_verify_drops_it(tmp_path: Path) -> None:
    ckpt = _entry(tmp_path, "k", os.urandom(1000), server_crc=None, part=1 << 20)
    raw = bytearray(ckpt.read_bytes())
    raw[40] ^= 1
    ckpt.write_bytes(bytes(raw))
    status = json.loads(_cli("cache", "status", "--cache-dir", str(tmp_path), "--json").stdout)
    assert status["states"]["damaged"] == 1
    assert ckpt.exists()  # status changes nothing
    result = _cli("cache", "verify", "--cache-dir", str(tmp_path))
    assert result.returncode == 11
    assert "damaged checkpoint: checkpoint checksum mismatch: dropped the entry" in result.stdout
    assert not ckpt.exists()


@pytest.mark.parametrize("action", ["status", "verify", "clear"])
def test_a_dir_that_is_not_a_cache_is_refused_with_exit_8(tmp_path: Path, action: str) -> None:
    (tmp_path / "precious.txt").write_text("mine")
    result = _cli("cache", action, "--cache-dir", str(tmp_path))
    assert result.returncode == 8
    assert "is not an ossmount cache directory" in result.stderr
    assert (tmp_path / "precious.txt").exists()


@pytest.mark.parametrize("source", ["bkt", "bkt:/a/b/", "bkt:a/b", "bkt:/a/b"])
def test_a_bucket_names_the_same_cache_dir_the_mount_would_use(source: str) -> None:
    mount = build_config(source, "/mnt", {}, foreground=True, ignored=[])
    assert resolve_cache_dir(None, source) == mount.cache_dir


def test_status_counts_the_kept_attributes_and_clear_leaves_them(tmp_path: Path) -> None:
    _entry(tmp_path, "k", os.urandom(1000), server_crc=None, part=1 << 20)
    table = ShownAttrs()
    for i in range(3):
        table.learn(f"f{i}", '"e"', Posix(0o100755))
    (tmp_path / "shown.attrs").write_bytes(encode_shown(table.packed()))
    status = json.loads(_cli("cache", "status", "--cache-dir", str(tmp_path), "--json").stdout)
    assert status["kept_attrs"]["objects"] == 3
    text = _cli("cache", "status", "--cache-dir", str(tmp_path)).stdout
    assert "modes, owners and times of 3 objects kept for the next mount" in text
    assert _cli("cache", "clear", "--cache-dir", str(tmp_path)).returncode == 0
    assert (tmp_path / "shown.attrs").exists(), "not a cache entry: clear leaves it"
    (tmp_path / "shown.attrs").write_bytes(b"junk")
    text = _cli("cache", "status", "--cache-dir", str(tmp_path)).stdout
    assert "shown.attrs is damaged and the next mount ignores it" in text
