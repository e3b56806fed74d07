"""ListObjectsV2 / ListObjects semantics (oss-protocol.md §3.7-3.8, §8.11)."""

from __future__ import annotations

import re
from urllib.parse import unquote

import httpx
import pytest
from defusedxml import ElementTree

from ossmount.emulator import Emulator

KEYS = [
    "a.txt",
    "dir/",
    "dir/x 1.txt",
    "dir/y+2.txt",
    "dir/sub/z.txt",
    "dir2/q",
    "é.txt",
    "z/deep/deeper/f",
]


@pytest.fixture
def filled(open_emu: Emulator) -> Emulator:
    for k in KEYS:
        open_emu.put_object("demo", k, k.encode())
    return open_emu


def _list(http: httpx.Client, **params: str) -> ElementTree.Element:  # type: ignore[name-defined]
    r = http.get("/demo/", params={"list-type": "2", **params})
    assert r.status_code == 200, r.text
    return ElementTree.fromstring(r.content)


def _all_pages(http: httpx.Client, **params: str) -> tuple[list[str], list[str], int]:
    keys: list[str] = []
    prefixes: list[str] = []
    pages = 0
    token = None
    while True:
        p = dict(params)
        if token:
            p["continuation-token"] = token
        root = _list(http, **p)
        pages += 1
        url = root.findtext("EncodingType") == "url"
        dec = unquote if url else (lambda s: s)
        keys += [dec(c.findtext("Key") or "") for c in root.findall("Contents")]
        prefixes += [dec(c.findtext("Prefix") or "") for c in root.findall("CommonPrefixes")]
        count = len(root.findall("Contents")) + len(root.findall("CommonPrefixes"))
        assert root.findtext("KeyCount") == str(count)
        if root.findtext("IsTruncated") == "false":
            assert root.find("NextContinuationToken") is None
            return keys, prefixes, pages
        assert root.findtext("IsTruncated") == "true"
        token = dec(root.findtext("NextContinuationToken") or "")


def test_flat_listing_sorted_by_utf8(filled: Emulator, http: httpx.Client) -> None:
    keys, prefixes, pages = _all_pages(http)
    assert keys == sorted(KEYS, key=lambda k: k.encode())
    assert prefixes == []
    assert pages == 1


@pytest.mark.parametrize("max_keys", ["1", "2", "3", "1000"])
def test_delimiter_pagination(filled: Emulator, http: httpx.Client, max_keys: str) -> None:
    keys, prefixes, pages = _all_pages(http, delimiter="/", **{"max-keys": max_keys})
    assert keys == ["a.txt", "é.txt"]
    assert prefixes == ["dir/", "dir2/", "z/"]
    assert pages == -(-5 // int(max_keys))  # each prefix counts once against max-keys
    keys, prefixes, _ = _all_pages(http, delimiter="/", prefix="dir/", **{"max-keys": max_keys})
    assert keys == ["dir/", "dir/x 1.txt", "dir/y+2.txt"]
    assert prefixes == ["dir/sub/"]


def test_start_after_and_encoding(filled: Emulator, http: httpx.Client) -> None:
    keys, _, _ = _all_pages(http, **{"start-after": "dir/sub/z.txt"})
    assert keys == ["dir/x 1.txt", "dir/y+2.txt", "dir2/q", "z/deep/deeper/f", "é.txt"]
    root = _list(http, prefix="dir/", delimiter="/", **{"encoding-type": "url"})
    raw = [c.findtext("Key") for c in root.findall("Contents")]
    assert raw == ["dir%2F", "dir%2Fx%201.txt", "dir%2Fy%2B2.txt"]
    assert root.findtext("Prefix") == "dir%2F"
    assert root.findtext("Delimiter") == "%2F"
    assert root.findtext("CommonPrefixes/Prefix") == "dir%2Fsub%2F"
    assert root.find("Contents/Owner") is None
    root = _list(http, **{"fetch-owner": "true", "max-keys": "1"})
    assert root.find("Contents/Owner/ID") is not None
    c = root.find("Contents")
    assert c is not None
    assert c.findtext("ETag", "").startswith('"')
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", c.findtext("LastModified", ""))
    assert c.findtext("Type") == "Normal"


@pytest.mark.parametrize("bad", ["0", "1001", "-1", "abc"])
def test_max_keys_limits(filled: Emulator, http: httpx.Client, bad: str) -> None:
    r = http.get("/demo/", params={"list-type": "2", "max-keys": bad})
    assert r.status_code == 400
    assert ElementTree.fromstring(r.content).findtext("Code") == "InvalidArgument"


def test_bad_continuation_token(filled: Emulator, http: httpx.Client) -> None:
    r = http.get("/demo/", params={"list-type": "2", "continuation-token": "!!!notatoken"})
    assert r.status_code == 400
    assert ElementTree.fromstring(r.content).findtext("Code") == "InvalidArgument"


def test_default_max_keys_is_100(open_emu: Emulator, http: httpx.Client) -> None:
    for i in range(150):
        open_emu.put_object("demo", f"k{i:04d}", b"")
    root = _list(http)
    assert root.findtext("MaxKeys") == "100"
    assert len(root.findall("Contents")) == 100
    keys, _, pages = _all_pages(http, **{"max-keys": "1000"})
    assert len(keys) == 150
    assert pages == 1


def test_list_v1(filled: Emulator, http: httpx.Client) -> None:
    marker = ""
    keys: list[str] = []
    prefixes: list[str] = []
    while True:
        r = http.get("/demo/", params={"delimiter": "/", "max-keys": "2", "marker": marker})
        root = ElementTree.fromstring(r.content)
        assert root.find("Marker") is not None
        assert all(c.find("Owner") is not None for c in root.findall("Contents"))
        keys += [c.findtext("Key") or "" for c in root.findall("Contents")]
        prefixes += [c.findtext("Prefix") or "" for c in root.findall("CommonPrefixes")]
        if root.findtext("IsTruncated") == "false":
            break
        marker = root.findtext("NextMarker") or ""
    assert keys == ["a.txt", "é.txt"]
    assert prefixes == ["dir/", "dir2/", "z/"]
    assert filled.requests[-1].op == "ListObjects"


def test_last_modified_is_whole_seconds_like_oss(open_emu: Emulator, http: httpx.Client) -> None:
    """Real OSS writes ``.000Z``; a fraction of a second must not leak into any listing."""
    from dataclasses import replace

    open_emu.put_object("demo", "frac.txt", b"x")
    b = open_emu.store.bucket("demo")
    assert b is not None
    open_emu.store.publish("demo", replace(b.objects["frac.txt"], mtime=1700000000.987))
    for q in ({"list-type": "2"}, {}):
        root = ElementTree.fromstring(http.get("/demo/", params=q).content)
        assert root.findtext("Contents/LastModified") == "2023-11-14T22:13:20.000Z"
    head = http.head("/demo/frac.txt")
    assert head.headers["last-modified"] == "Tue, 14 Nov 2023 22:13:20 GMT"
