"""Running as a system service: systemd's notify protocol, status lines, reload on SIGHUP."""

from __future__ import annotations
