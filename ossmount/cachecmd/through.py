"""Asking a running mount over its control socket (`CACHE_DIR/control.sock`, see
ossmount.service.control for the protocol): the one way to change a cache while mounted."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

from ossmount.cachecmd.codes import CommandError, Exit
from ossmount.service.control import SOCKET_NAME, proc_path

__all__ = ["MAX_ANSWER", "ask_mount"]

MAX_ANSWER = 64 * 1024
# Dropping a very large cache takes the daemon a while (it unlinks in batches between FUSE
# requests); a mount that has not answered by then is stuck, and saying so beats waiting on.
_TIMEOUT_S = 300.0


def ask_mount(root: Path, request: str, timeout: float = _TIMEOUT_S) -> dict[str, Any] | None:
    """The mount's answer to `request`, or None when no mount listens on `root`'s socket
    (none there, or a stale one of a daemon that is gone)."""
    try:
        dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    path = root / SOCKET_NAME
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            try:
                sock.connect(proc_path(dir_fd, SOCKET_NAME))
            except (FileNotFoundError, ConnectionRefusedError):
                return None
            sock.sendall(request.encode("ascii") + b"\n")
            raw = _read_all(sock)
    except TimeoutError:
        raise CommandError(
            f"the mount did not answer on {path} within {timeout:.0f} s", Exit.CACHE
        ) from None
    except OSError as exc:
        raise CommandError(
            f"cannot talk to the mount on {path}: {exc.strerror}", Exit.CACHE
        ) from exc
    finally:
        os.close(dir_fd)
    try:
        reply = json.loads(raw)
        if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
            raise ValueError("not an answer object")
    except ValueError:
        raise CommandError(
            f"the mount sent an answer that is not one (on {path}): {raw[:80]!r}", Exit.CACHE
        ) from None
    if not reply["ok"]:
        raise CommandError(f"the mount refused {request!r}: {reply.get('error')}", Exit.CACHE)
    return reply


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while len(data) <= MAX_ANSWER:
        chunk = sock.recv(MAX_ANSWER)
        if not chunk:
            return data
        data += chunk
    raise CommandError(f"the mount's answer is longer than {MAX_ANSWER} bytes", Exit.CACHE)
