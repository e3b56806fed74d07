"""Bodiless GET/HEAD heads are parsed by hand (emulator/request.py `plain_request`): the result
must be what h11's path makes of the same bytes, and anything unusual must go to h11."""

from __future__ import annotations

from typing import Any

import h11
import pytest

from ossmount.emulator.request import make_request as _make_request
from ossmount.emulator.request import plain_request as _plain_request

STREAM: Any = object()  # never touched while parsing

HEADS = [
    b"GET /bkt/dir/a%20b.txt HTTP/1.1\r\nHost: 127.0.0.1:9000\r\nRange: bytes=0-9\r\n"
    b"x-oss-date: 20261206T010203Z\r\nAuthorization: OSS4-HMAC-SHA256 Credential=ak/x,"
    b"Signature=00\r\n\r\n",
    b"HEAD /bkt/k?versionId=3&x=a%2Fb&flag HTTP/1.1\r\nhost: h\r\nX-Twice: 1\r\n"
    b"x-twice:  2 \r\nContent-Length: 0\r\n\r\n",
    b"GET /?list-type=2&prefix=d%2F HTTP/1.0\r\nHost: h\r\n\r\n",
    b"GET /k HTTP/1.1\r\nHost: h\r\nEmpty:\r\n\r\nGET /next HTTP/1.1\r\n",
]


def via_h11(raw: bytes) -> Any:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(raw)
    ev = conn.next_event()
    assert isinstance(ev, h11.Request)
    return _make_request(ev, conn, STREAM, "peer"), ev.http_version == b"1.0"


@pytest.mark.parametrize("raw", HEADS)
def test_plain_parse_agrees_with_h11(raw: bytes) -> None:
    plain = _plain_request(raw, STREAM, "peer")
    assert plain is not None
    req, http10, rest = plain
    want, want10 = via_h11(raw)
    fields = ("method", "target", "path", "query_string", "query", "headers", "peer")
    assert {f: getattr(req, f) for f in fields} == {f: getattr(want, f) for f in fields}
    assert http10 == want10
    assert req.body_done
    assert rest == raw[raw.index(b"\r\n\r\n") + 4 :]  # a pipelined next request is kept


@pytest.mark.parametrize(
    "raw",
    [
        b"PUT /k HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",  # a method with a body
        b"GET /k HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",  # a GET with a body
        b"GET /k HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET /k HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n",
        b"GET /k HTTP/1.1\r\nHost : h\r\n\r\n",  # space before the colon: h11 refuses it
        b"GET /k HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n",  # obsolete line folding
        b"GET /k HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",  # two Hosts
        b"GET /k HTTP/1.1\r\nX: 1\r\n\r\n",  # HTTP/1.1 without Host
        b"GET /k HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n",  # a control byte
        b"GET  /k HTTP/1.1\r\nHost: h\r\n\r\n",  # two spaces in the request line
        b"GET k HTTP/1.1\r\nHost: h\r\n\r\n",  # not an origin-form target
        b"GET /k HTTP/1.1\r\nHost: h\r\n",  # head not complete yet
    ],
)
def test_unusual_heads_go_to_h11(raw: bytes) -> None:
    assert _plain_request(raw, STREAM, "peer") is None
