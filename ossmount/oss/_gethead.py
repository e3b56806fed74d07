"""Request heads of ranged GETs, with the signed lines made once per key and second.

Why: a random reader pays one 64 KiB GET per read (issue 13, W8), and signing each one (V4:
the canonical request, a SHA-256 and an HMAC, plus the dicts that carry the headers) was the
largest single cost between "FUSE read arrived" and "GET sent": ~28 us of the daemon's
~330 us CPU per read (`bench/bench_mount.py --only randread`, 4 interleaved pairs).

Why it is safe: what a GET's signature covers does not change between two GETs of one key
within one second with the same credentials. V4 signs the method, the resource, the x-oss-*
headers (x-oss-date has whole seconds; x-oss-range-behavior and x-oss-content-sha256 are
constant) and nothing else of ours; V1 signs the method, `Date` (whole seconds), the x-oss-*
headers and the resource. Neither signs `Range` nor `If-Match`, the only lines that differ
between such GETs. So the memo hands out exactly the lines signing would compute again. A
new second, a clock correction (RequestTimeTooSkewed) or refreshed credentials make a new
memo key; a retry is re-signed with the time of that try like before.

Memory: only the current second's keys are kept (the memo is emptied when the second moves
on), so a walker that opens thousands of objects holds one head template per object it GETs
within one second, and nothing after.

Concurrency: trio thread only; `_memo` and `_second` change between awaits (the caller awaits
the credentials before calling `head`, which does not await).
"""

from __future__ import annotations

from collections.abc import Callable

from ._wire import request_head
from .credentials_types import Credentials

__all__ = ["GetHeads", "SignGet"]

# (credentials, key, now) -> the headers of a GET of `key` signed at `now`, from the headers
# given: every value the signature covers, plus the unsigned fixed ones.
SignGet = Callable[[Credentials, str, dict[str, str], float], dict[str, str]]


class GetHeads:
    """Builds ranged GET request heads for one bucket (see module docstring)."""

    def __init__(
        self,
        *,
        bucket: str,
        authority: str,
        fixed: dict[str, str],
        target: Callable[[str], str],
        sign: SignGet,
    ) -> None:
        """`fixed`: the headers every ranged GET carries besides Range and If-Match;
        `target`: a key's encoded request path; `sign`: signs a GET of a key."""
        self._bucket = bucket
        self._authority = authority
        self._fixed = fixed
        self._target = target
        self._sign = sign
        self._second = -1
        # (key, credentials) -> the head up to (without) the Range line, for `_second`
        self._memo: dict[tuple[str, Credentials], str] = {}

    def head(
        self, key: str, first: int, last: int, if_match: str | None, creds: Credentials, now: float
    ) -> bytes:
        """The head of a GET of `key`'s bytes first..last (inclusive), pinned to `if_match`
        when given, signed with `creds` at `now` (or taken from the memo)."""
        second = int(now)
        if second != self._second:
            self._memo.clear()
            self._second = second
        start = self._memo.get((key, creds))
        if start is None:
            signed = self._sign(creds, key, dict(self._fixed), now)
            what = f"GET oss://{self._bucket}/{key}"
            target = self._target(key)
            text = request_head("GET", target, self._authority, signed, what).decode("latin-1")
            start = self._memo[key, creds] = text[:-2]  # without the blank line
        if if_match is None:
            return f"{start}Range: bytes={first}-{last}\r\n\r\n".encode("latin-1")
        if "\r" in if_match or "\n" in if_match:
            raise ValueError(
                f"the If-Match value of GET oss://{self._bucket}/{key} has a line break"
            )
        text = f"{start}Range: bytes={first}-{last}\r\nIf-Match: {if_match}\r\n\r\n"
        return text.encode("latin-1")
