"""Progress for long commands: tqdm's bar on a terminal, plain lines otherwise.

tqdm does the figures (rate, ETA, human sizes) either way. On a terminal it draws its bar;
into a pipe or a log (`warmup ... | tee`, cron, systemd) a redrawn bar is noise, so the same
tqdm object draws into nowhere and its own one-line rendering (`str(bar)`) is printed every
`interval` seconds and once at the end.

Thread-safe: warmup's workers call `update` from several threads (one lock around tqdm's
counters and the line printer).
"""

from __future__ import annotations

import io
import shutil
import sys
import threading
import time
from typing import TextIO

from tqdm import tqdm

__all__ = ["Progress", "human"]


def human(n: float) -> str:
    """1536 -> '1.5 KiB': the sizes every command prints."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class Progress:
    def __init__(
        self,
        *,
        total: int,
        desc: str,
        stream: TextIO | None = None,
        interval: float = 2.0,
        postfix: str | None = None,
    ) -> None:
        self._stream = stream if stream is not None else sys.stdout
        self._plain = not self._stream.isatty()
        self._interval = interval
        self._next_line = time.monotonic() + interval
        self._lock = threading.Lock()
        self._sink = io.StringIO()
        size = shutil.get_terminal_size()
        self._bar = tqdm(
            total=total,
            desc=desc,
            unit="iB",  # with divisor 1024 tqdm prints "4.0MiB/s": binary units, said so
            unit_scale=True,
            unit_divisor=1024,
            file=self._sink if self._plain else self._stream,
            mininterval=0.2,
            # A terminal that reports a 0x0 size (script(1), some serial consoles) gets no bar
            # at all from tqdm's own sizing; shutil falls back to 80x24 there.
            ncols=size.columns,
            nrows=size.lines,
            leave=True,
            postfix=postfix,
        )

    def update(self, n: int, postfix: str | None = None) -> None:
        with self._lock:
            if postfix is not None:
                self._bar.set_postfix_str(postfix, refresh=False)
            self._bar.update(n)
            if self._plain:
                self._sink.seek(0)  # what tqdm drew: thrown away
                self._sink.truncate()
                now = time.monotonic()
                if now >= self._next_line:
                    self._next_line = now + self._interval
                    self._line()

    def _line(self) -> None:
        print(str(self._bar).strip(), file=self._stream, flush=True)

    def close(self) -> None:
        with self._lock:
            if self._plain:
                self._line()
            self._bar.close()
