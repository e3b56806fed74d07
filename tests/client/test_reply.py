"""Reply heads (the hand-written Last-Modified parser agrees with the stdlib's and falls back
to it; header dict; metadata) and the httpcore -> httpx error mapping."""

from __future__ import annotations

import random
from email.utils import formatdate, parsedate_to_datetime

import httpx
import pytest

from ossmount.oss._reply import header_dict, http_date_s, meta_from_headers
from ossmount.oss.carriedcrc import CARRIED_CRC, carried_crc, carry_crc


def test_fast_http_date_matches_the_stdlib() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        t = rng.randrange(0, 4_000_000_000)
        text = formatdate(t, usegmt=True)
        assert http_date_s(text) == t == int(parsedate_to_datetime(text).timestamp())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Sunday, 06-Nov-94 08:49:37 GMT", 784111777),  # RFC 850: the stdlib fallback
        ("Sun Nov  6 08:49:37 1994", 784111777),  # asctime: the stdlib fallback
        ("Sun, 06 Nov 1994 08:49:37 +0000", 784111777),
        ("Sun, 06 Foo 1994 08:49:37 GMT", None),
        ("Sun, 06 Nov 1994 8:x:37 GMT", None),
        ("garbage", None),
    ],
)
def test_other_forms_and_garbage(text: str, expected: int | None) -> None:
    assert http_date_s(text) == expected


def test_header_dict_and_meta() -> None:
    response = httpx.Response(
        200,
        headers=[
            (b"ETag", b'"AB"'),
            (b"Last-Modified", b"Sun, 06 Nov 1994 08:49:37 GMT"),
            (b"X-Oss-Hash-Crc64ecma", b"123"),
            (b"x-oss-object-type", b"Normal"),
        ],
    )
    headers = header_dict(response)
    assert headers["etag"] == '"AB"'
    meta = meta_from_headers("k", headers, 5)
    assert (meta.etag, meta.mtime_ns, meta.crc64, meta.object_type, meta.storage_class) == (
        '"AB"',
        784111777 * 1_000_000_000,
        123,
        "Normal",
        None,
    )


def test_replies_of_one_version_share_one_meta() -> None:
    """Memoised (a random reader gets one GET reply per read); any header that differs, or
    another key or size, makes another."""
    headers = {
        "etag": '"AB"',
        "last-modified": "Sun, 06 Nov 1994 08:49:37 GMT",
        "x-oss-hash-crc64ecma": "123",
        "date": "Sun, 06 Dec 2026 07:41:32 GMT",
        "x-oss-request-id": "1",
    }
    meta = meta_from_headers("k", headers, 5)
    again = {**headers, "date": "Sun, 06 Dec 2026 07:41:33 GMT", "x-oss-request-id": "2"}
    assert meta_from_headers("k", again, 5) is meta
    others = [
        meta_from_headers("k", {**headers, "etag": '"AC"'}, 5),
        meta_from_headers("k", {**headers, "x-oss-hash-crc64ecma": "124"}, 5),
        meta_from_headers("k", {**headers, "last-modified": "Mon, 07 Nov 1994 08:49:37 GMT"}, 5),
        meta_from_headers("k", {**headers, "x-oss-storage-class": "IA"}, 5),
        meta_from_headers("k2", headers, 5),
        meta_from_headers("k", headers, 6),
    ]
    assert all(other is not meta and other != meta for other in others)
    assert [o.etag for o in others] == ['"AC"', '"AB"', '"AB"', '"AB"', '"AB"', '"AB"']
    assert (others[1].crc64, others[2].mtime_ns, others[3].storage_class) == (
        124,
        784198177 * 1_000_000_000,
        "IA",
    )


def test_httpcore_errors_become_the_httpx_class_of_the_same_name() -> None:
    import httpcore

    from ossmount.oss._http import as_httpx_error

    err = as_httpx_error(httpcore.ReadTimeout("slow"))
    assert type(err) is httpx.ReadTimeout
    assert str(err) == "slow"
    assert isinstance(err.__cause__, httpcore.ReadTimeout)

    class Odd(httpcore.NetworkError):
        pass

    assert type(as_httpx_error(Odd("x"))) is httpx.TransportError


def test_a_crc_a_copy_carried_is_taken_for_the_version_it_names_when_the_server_sends_none() -> (
    None
):
    etag = '"D41D8CD98F00B204E9800998ECF8427E"'
    carried = carry_crc(123, etag)
    assert carried == {CARRIED_CRC: "123;D41D8CD98F00B204E9800998ECF8427E"}
    assert meta_from_headers("k", {"etag": etag, **carried}, 5).crc64 == 123
    server = {"etag": etag, "x-oss-hash-crc64ecma": "7", **carried}
    assert meta_from_headers("k", server, 5).crc64 == 7, "the server's own comes first"
    other = {"etag": '"0123456789ABCDEF0123456789ABCDEF"', **carried}
    assert meta_from_headers("k", other, 5).crc64 is None, "another version's: not believed"
    for bad in ("", "x;D41D8CD98F00B204E9800998ECF8427E", "123", "123;", f"{1 << 64};abc"):
        assert carried_crc(bad, "abc") is None, bad
