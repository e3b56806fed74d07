"""ossmount as a systemd service: the notify protocol of a real mount, SIGHUP, the unit file,
and the exit codes that `--help`, the README and the unit agree on.

systemd's side of `Type=notify` is a datagram socket named by `$NOTIFY_SOCKET`; the tests bind
one in tmp_path and read exactly what systemd would read.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ossmount.emulator import Emulator
from ossmount.errors import EXIT_CODE_HELP, ExitCode
from ossmount.mount import _WRITEBACK_DRAIN_S
from tests.mount.conftest import MountFactory
from tests.mount.harness import AK, BUCKET, SK, MiB, Mount

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "ossmount@.service"
README = ROOT / "README.md"


class Systemd:
    """The receiving end of $NOTIFY_SOCKET, keeping every message in order."""

    def __init__(self, path: Path) -> None:
        assert len(os.fsencode(path)) < 108, "tmp_path too long for an AF_UNIX address"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.env = {"NOTIFY_SOCKET": str(path)}
        self.messages: list[str] = []

    def poll(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(65536).decode())
            except BlockingIOError:
                return self.messages

    def wait_for(
        self, predicate: Callable[[str], bool], what: str, timeout: float = 20, after: int = 0
    ) -> int:
        """Index of the first message from `after` on matching `predicate`."""
        deadline = time.monotonic() + timeout
        while True:
            for index, message in enumerate(self.poll()[after:], start=after):
                if predicate(message):
                    return index
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout} s; got {self.messages}")
            time.sleep(0.02)

    def statuses(self) -> list[str]:
        return [
            line.removeprefix("STATUS=")
            for m in self.poll()
            for line in m.splitlines()
            if line.startswith("STATUS=")
        ]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[Systemd]:
    listener = Systemd(tmp_path / "notify")
    try:
        yield listener
    finally:
        listener.close()


def _launch(mount: Mount) -> subprocess.Popen[bytes]:
    """Start the daemon without waiting for the mount (the harness's stop() still applies)."""
    mount.proc = subprocess.Popen(
        mount.command(), env=mount.environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    return mount.proc


def _wait_log(mount: Mount, needle: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while needle not in mount.log():
        if time.monotonic() > deadline:
            raise AssertionError(f"{needle!r} not logged within {timeout} s: {mount.log()}")
        time.sleep(0.02)
    return mount.log()


# ----------------------------------------------------------------- the notify protocol


def test_a_mount_speaks_the_notify_protocol(
    emulator: Emulator, make_mount: MountFactory, systemd: Systemd
) -> None:
    emulator.put_object(BUCKET, "data/one.bin", os.urandom(MiB))
    mount = make_mount(source=f"{BUCKET}:/data", env={**systemd.env, "WATCHDOG_USEC": "400000"})
    proc = _launch(mount)

    ready = systemd.wait_for(lambda m: m.startswith("READY=1"), "READY=1")
    # READY=1 only once the kernel mount answers (the stat that proves it happened first).
    assert os.path.ismount(mount.path)
    before = systemd.messages[:ready]
    # The bucket LIST and the cache scan each extended the start timeout before READY.
    assert before.count("EXTEND_TIMEOUT_USEC=30000000") >= 2, before
    assert not [m for m in before if m.startswith("STATUS=")]
    first_status = systemd.messages[ready].split("\n")[1]
    assert first_status == (
        f"STATUS=mounted {BUCKET}:/data/ at {mount.path}; 0 downloads; cache 0 B in 0 files "
        "(0% of 20 GiB)"
    )

    # WATCHDOG=1 every 0.2 s from the event loop.
    start = len(systemd.messages)
    time.sleep(1.0)
    pings = systemd.poll()[start:].count("WATCHDOG=1")
    assert 3 <= pings <= 7, systemd.messages[start:]

    # STATUS follows the cache, at most once a second.
    assert (mount.path / "one.bin").stat().st_size == MiB
    (mount.path / "one.bin").read_bytes()
    systemd.wait_for(lambda m: "cache 1.0 MiB in 1 file " in m, "STATUS with the cached file")
    statuses = systemd.statuses()
    assert len(statuses) == len(set(statuses)), "an unchanged STATUS was sent again"

    # SIGTERM: STOPPING=1 first, then the daemon unmounts and exits 0.
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0, mount.log()
    tail = systemd.poll()[
        systemd.messages.index(next(m for m in systemd.messages if m == "STOPPING=1")) :
    ]
    assert tail.count("STOPPING=1") == 1
    assert "READY=1" not in "".join(tail)
    assert not os.path.ismount(mount.path)
    assert "SIGTERM received: unmounting" in mount.log()


def test_no_ready_when_the_first_list_fails(
    emulator: Emulator, make_mount: MountFactory, systemd: Systemd
) -> None:
    mount = make_mount(source="no-such-bucket", env=systemd.env)
    proc = _launch(mount)
    assert proc.wait(timeout=30) == ExitCode.BUCKET, mount.log()
    mount.proc = None
    assert proc.stdout is not None
    proc.stdout.close()
    messages = systemd.poll()
    assert messages == ["EXTEND_TIMEOUT_USEC=30000000"], messages


def test_watchdog_only_for_our_pid(
    emulator: Emulator, make_mount: MountFactory, systemd: Systemd
) -> None:
    env = {**systemd.env, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}
    mount = make_mount(env=env)
    _launch(mount)
    systemd.wait_for(lambda m: m.startswith("READY=1"), "READY=1")
    time.sleep(0.5)
    assert "WATCHDOG=1" not in systemd.poll()


def test_without_notify_socket_nothing_changes(make_mount: MountFactory) -> None:
    mount = make_mount(env={"NOTIFY_SOCKET": ""}).start()
    assert os.listdir(mount.path) == []
    assert "systemd" not in mount.log()


# ----------------------------------------------------------------- SIGHUP


def test_sighup_drops_metadata_and_rereads_the_passwd_file(
    emulator: Emulator, make_mount: MountFactory, systemd: Systemd, tmp_path: Path
) -> None:
    passwd = tmp_path / "passwd-ossfs"
    passwd.write_text(f"{BUCKET}:{AK}:{SK}\n")
    passwd.chmod(0o600)
    emulator.put_object(BUCKET, "a.txt", b"a")
    emulator.put_object(BUCKET, "b.txt", b"b")
    mount = make_mount(
        args=("-o", f"passwd_file={passwd},stat_cache_expire=3600"),
        # empty environment keys: the passwd file is the source
        env={**systemd.env, "OSS_ACCESS_KEY_ID": "", "OSS_ACCESS_KEY_SECRET": ""},
    ).start()
    assert mount.proc is not None
    assert sorted(os.listdir(mount.path)) == ["a.txt", "b.txt"]
    emulator.put_object(BUCKET, "c.txt", b"c")
    assert sorted(os.listdir(mount.path)) == ["a.txt", "b.txt"]  # cached for an hour

    # A rotated secret the server does not know: after SIGHUP the mount signs with it.
    passwd.write_text(f"{BUCKET}:{AK}:rotated-wrong-secret\n")
    mark = len(systemd.poll())
    mount.proc.send_signal(signal.SIGHUP)
    log = _wait_log(mount, "SIGHUP received")
    [line] = [x for x in log.splitlines() if "SIGHUP received" in x]
    assert "INFO" in line
    assert "dropped" in line
    assert f"passwd file {passwd}" in line
    assert "rotated-wrong-secret" not in log
    with pytest.raises(PermissionError):
        os.listdir(mount.path)  # the listing cache was dropped; the new LIST is refused
    reloading = systemd.wait_for(lambda m: m.startswith("RELOADING=1"), "RELOADING", after=mark)
    assert re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=\d+", systemd.messages[reloading])
    systemd.wait_for(lambda m: m == "READY=1", "READY=1 after the reload", after=reloading)

    passwd.write_text(f"{BUCKET}:{AK}:{SK}\n")
    mount.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while mount.log().count("SIGHUP received") < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sorted(os.listdir(mount.path)) == ["a.txt", "b.txt", "c.txt"]
    assert (mount.path / "c.txt").read_bytes() == b"c"


def test_sighup_drops_the_kernels_cached_names_and_attributes_too(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    """With an hour of attr/entry timeout, a replaced object's new size and a deleted one's
    absence show right after SIGHUP, not an hour later."""
    emulator.put_object(BUCKET, "d/grows.txt", b"short")
    emulator.put_object(BUCKET, "d/goes.txt", b"bye")
    mount = make_mount(args=("-o", "stat_cache_expire=3600")).start()
    assert mount.proc is not None
    grows, goes = mount.path / "d" / "grows.txt", mount.path / "d" / "goes.txt"
    assert grows.stat().st_size == 5
    assert goes.exists()
    with open(grows, "rb") as held:  # an open file's attributes are refreshed as well
        emulator.put_object(BUCKET, "d/grows.txt", b"much longer now")
        emulator.delete_object(BUCKET, "d/goes.txt")
        assert grows.stat().st_size == 5  # the kernel's cached attributes
        mount.proc.send_signal(signal.SIGHUP)
        _wait_log(mount, "SIGHUP received")
        deadline = time.monotonic() + 5
        while grows.stat().st_size != 15 and time.monotonic() < deadline:
            time.sleep(0.02)  # names are invalidated by pyfuse3's notification thread
        assert grows.stat().st_size == 15
        assert os.fstat(held.fileno()).st_size == 15
    assert not goes.exists()
    assert grows.read_bytes() == b"much longer now"


def test_sighup_keeps_the_credentials_when_rereading_fails(
    emulator: Emulator, make_mount: MountFactory, tmp_path: Path
) -> None:
    passwd = tmp_path / "passwd-ossfs"
    passwd.write_text(f"{BUCKET}:{AK}:{SK}\n")
    passwd.chmod(0o600)
    emulator.put_object(BUCKET, "a.txt", b"a")
    mount = make_mount(
        args=("-o", f"passwd_file={passwd}"),
        env={"OSS_ACCESS_KEY_ID": "", "OSS_ACCESS_KEY_SECRET": ""},
    ).start()
    assert mount.proc is not None
    passwd.chmod(0o644)  # refused as unsafe
    mount.proc.send_signal(signal.SIGHUP)
    log = _wait_log(mount, "SIGHUP received")
    assert "WARNING" in log
    assert "keeping the current ones" in log
    assert "chmod 600" in log
    assert (mount.path / "a.txt").read_bytes() == b"a"


# ----------------------------------------------------------------- the unit file


def _unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    return parser


# Settings that give a service its own mount namespace: the FUSE mount would then exist only
# inside the service (systemd.exec(5), MountFlags=: propagation to the host is off).
NAMESPACING = {
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "PrivateDevices",
    "PrivateMounts",
    "ReadWritePaths",
    "ReadOnlyPaths",
    "InaccessiblePaths",
    "ExecPaths",
    "NoExecPaths",
    "TemporaryFileSystem",
    "BindPaths",
    "BindReadOnlyPaths",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectProc",
    "ProcSubset",
    "RootDirectory",
    "RootImage",
    "MountAPIVFS",
    "MountFlags",
    "PrivateUsers",
    "DynamicUser",
    "StateDirectory",  # fine on its own, but not needed: keep the list simple
}


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.fail("systemd-analyze missing: `./dev.sh test` installs the systemd package")
    # verify checks that ExecStart's program exists: point it at this venv's ossmount.
    text = UNIT.read_text().replace(
        "/usr/local/bin/ossmount", str(Path(sys.executable).parent / "ossmount")
    )
    for name in ("ossmount@.service", "ossmount@demo.service"):
        (tmp_path / name).write_text(text)
        result = subprocess.run(
            [tool, "verify", "--man=no", str(tmp_path / name)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        # warnings (unknown keys, bad values) exit 0 too: require silence
        assert result.returncode == 0, result.stderr
        assert not result.stderr.strip(), result.stderr
    # and the check has teeth
    (tmp_path / "ossmount@bad.service").write_text(text.replace("WatchdogSec=30s", "WatchdogSec=x"))
    bad = subprocess.run(
        [tool, "verify", "--man=no", str(tmp_path / "ossmount@bad.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "WatchdogSec" in bad.stderr or "sec value" in bad.stderr


def test_unit_is_a_notify_service_with_no_mount_namespace() -> None:
    unit = _unit()
    service = unit["Service"]
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert service["EnvironmentFile"] == "/etc/ossmount/%i.conf"
    assert " -f " in service["ExecStart"]
    assert "fusermount3 -u" in service["ExecStop"]
    assert service["Restart"] == "on-failure"
    assert service["WatchdogSec"]
    assert service["LimitNOFILE"]
    assert service["NoNewPrivileges"] == "yes"
    assert service["DeviceAllow"] == "/dev/fuse rw"
    assert "network-online.target" in unit["Unit"]["After"]
    assert "network-online.target" in unit["Unit"]["Wants"]
    assert not NAMESPACING & set(service), "these would hide the mount from the host"


def test_the_unit_waits_for_an_unmount_s_drains_before_a_kill() -> None:
    """An unmount may drain write-back uploads, then owed attributes, each for up to
    _WRITEBACK_DRAIN_S (mount.py): systemd must not SIGKILL the daemon sooner."""
    stop = _unit()["Service"]["TimeoutStopSec"]
    assert stop.endswith("s")
    assert int(stop[:-1]) > 2 * _WRITEBACK_DRAIN_S


def test_the_units_restart_exceptions_are_the_unfixable_exit_codes() -> None:
    codes = {int(c) for c in _unit()["Service"]["RestartPreventExitStatus"].split()}
    assert codes == {ExitCode.USAGE, ExitCode.CREDENTIALS, ExitCode.BUCKET, ExitCode.ACCESS}


def test_a_mount_works_under_the_units_privilege_limits(
    emulator: Emulator, make_mount: MountFactory
) -> None:
    """CapabilityBoundingSet and NoNewPrivileges, applied with setpriv(1) as systemd would."""
    setpriv = shutil.which("setpriv")
    assert setpriv is not None, "setpriv (util-linux) is missing"
    service = _unit()["Service"]
    assert service["NoNewPrivileges"] == "yes"
    caps = [c.removeprefix("CAP_").lower() for c in service["CapabilityBoundingSet"].split()]
    limits = [
        setpriv,
        "--no-new-privs",
        "--bounding-set",
        "-all," + ",".join(f"+{c}" for c in caps),
        "--inh-caps",
        "-all",
        "--",
    ]

    class Limited(Mount):
        def command(self) -> list[str]:
            return [*limits, *super().command()]

    emulator.put_object(BUCKET, "f.bin", b"x" * 3 * MiB)
    mount = make_mount()
    limited = Limited(mount.emulator, mount.path.parent)
    mount.proc = _launch(limited)  # the factory's teardown stops it
    deadline = time.monotonic() + 20
    while not os.path.ismount(mount.path):
        assert mount.proc.poll() is None, limited.log()
        assert time.monotonic() < deadline, limited.log()
        time.sleep(0.05)
    assert (mount.path / "f.bin").read_bytes() == b"x" * 3 * MiB
    status = Path(f"/proc/{mount.proc.pid}/status").read_text()
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.M)
    effective = re.search(r"^CapEff:\s+([0-9a-f]+)$", status, re.M)
    assert effective is not None
    assert int(effective.group(1), 16) == 1 << 21  # CAP_SYS_ADMIN, nothing else
    # ExecStop runs under the same limits.
    stop = subprocess.run(
        [*limits, "fusermount3", "-u", str(mount.path)], capture_output=True, text=True
    )
    assert stop.returncode == 0, stop.stderr
    assert mount.proc.wait(timeout=20) == 0, limited.log()


# ----------------------------------------------------------------- exit codes, documented


def _readme_exit_codes() -> dict[int, str]:
    text = README.read_text()
    section = text.split("\n## Exit codes\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\|\s*(\d+)\s*\|\s*(.+?)\s*\|\s*$", section, re.M)
    return {int(code): meaning for code, meaning in rows}


def _help_exit_codes(text: str) -> dict[int, str]:
    section = text.split("exit codes:\n", 1)[1]
    return {int(c): m for c, m in re.findall(r"^\s+(\d+)\s+(.+)$", section, re.M)}


def _words(meaning: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", meaning.lower()))


def test_exit_codes_in_readme_help_and_enum_agree() -> None:
    enum_codes = {int(code) for code in ExitCode}
    readme = _readme_exit_codes()
    result = subprocess.run(
        [sys.executable, "-m", "ossmount", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    help_codes = _help_exit_codes(result.stdout)
    assert help_codes == _help_exit_codes(EXIT_CODE_HELP)
    assert set(readme) == enum_codes == set(help_codes)
    for code in enum_codes:
        # the README may say less than --help, never something else
        assert _words(readme[code]) <= _words(help_codes[code]), (code, readme[code])
