"""Request heads of bodiless GETs and HEADs, parsed by hand; everything else goes to h11.

Why: h11's parse and event machinery was ~30 % of the emulator's time per ranged GET (cProfile
of the server thread under `bench/bench_requests.py --what floor`: one pre-built signed
request on a raw socket), and the referee serves every peer's reads from here, so a cheaper
GET is fair to all. Only the common, well-formed shape is taken: a GET or HEAD in origin form,
HTTP/1.1 or 1.0, token header names, no body framing, no Expect, one Host (required on 1.1),
no control bytes, no folded lines. Anything else returns None and h11 parses it (and answers
400/431 exactly as before). tests/emulator/test_plain_head.py checks both halves: the result
equals h11's for accepted heads, and unusual heads are left to h11.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["MAX_HEAD", "PlainHead", "parse_plain_head"]

MAX_HEAD = 64 * 1024  # larger request heads get 431/400, as real servers refuse them

_BAD_HEAD_CHAR = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class PlainHead(NamedTuple):
    method: str
    target: str  # raw, still percent-encoded
    http10: bool
    headers: dict[str, str]  # lower-case names, repeated headers joined with ","
    rest: bytes  # what followed the head (a pipelined next request)


def parse_plain_head(buf: bytes) -> PlainHead | None:
    """The head at the start of `buf` if it has the plain shape (module docstring), else None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0 or end > MAX_HEAD:
        return None
    head = buf[:end].decode("latin-1")
    lines = head.split("\r\n")
    parts = lines[0].split(" ")
    if (
        len(parts) != 3
        or parts[0] not in ("GET", "HEAD")
        or parts[2] not in ("HTTP/1.1", "HTTP/1.0")
        or not parts[1].startswith("/")
        or _BAD_HEAD_CHAR.search(head.replace("\r\n", " "))
    ):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name):
            return None
        n = name.lower()
        v = value.strip(" \t")
        if n in headers:
            if n == "host":
                return None
            v = headers[n] + "," + v
        headers[n] = v
    if (
        "transfer-encoding" in headers
        or headers.get("content-length", "0") not in ("0", "")
        or "expect" in headers
        or ("host" not in headers and parts[2] == "HTTP/1.1")
    ):
        return None
    return PlainHead(parts[0], parts[1], parts[2] == "HTTP/1.0", headers, buf[end + 4 :])
