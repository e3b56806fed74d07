"""Going to the background only once the mount answers.

`mount(8)`, fstab and scripts need the parent to exit 0 only when the filesystem really
answers, and non-zero with a one-line reason otherwise. So the parent forks before anything
starts (no trio loop, no threads exist yet), and waits on a pipe: the child writes `OK` once the
mountpoint answers a stat, or `ERR <exit code> <message>` when start-up fails, then detaches
from the terminal. If the child dies without a word, the parent reports that and its status.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from ossmount.errors import ExitCode

__all__ = ["Readiness", "daemonize"]


class Readiness:
    """The child's end of the pipe: `ready()` once, or `failed(code, message)` once."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def _send(self, text: str) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.write(fd, text.encode("utf-8", "replace"))
        finally:
            os.close(fd)

    def ready(self) -> None:
        if self._fd is None:
            return
        self._send("OK\n")
        # The parent is gone now; nobody reads our stdout/stderr any more.
        devnull = os.open(os.devnull, os.O_RDWR)
        for target in (0, 1, 2):
            os.dup2(devnull, target)
        os.close(devnull)

    def failed(self, code: int, message: str) -> None:
        self._send(f"ERR {int(code)} {message}\n")


def daemonize(child: Callable[[Readiness], int]) -> int:
    """Fork; run `child(readiness)` in the child; the parent returns the exit code to use."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        os.setsid()
        readiness = Readiness(write_fd)
        code: int = ExitCode.INTERNAL
        try:
            code = child(readiness)
        finally:
            readiness.failed(code, "the daemon exited before the mount was ready")
            os._exit(code)
    os.close(write_fd)
    chunks = []
    while chunk := os.read(read_fd, 4096):
        chunks.append(chunk)
    os.close(read_fd)
    answer = b"".join(chunks).decode("utf-8", "replace").strip()
    if answer == "OK":
        return ExitCode.OK
    if answer.startswith("ERR "):
        _, code_text, message = [*answer.split(" ", 2), ""][:3]
        print(f"ossmount: {message}", file=sys.stderr)
        return int(code_text)
    _, status = os.waitpid(pid, 0)
    print(f"ossmount: the daemon died during start-up (wait status {status})", file=sys.stderr)
    return ExitCode.INTERNAL
