"""The list page scanner (oss._xml `_scan_list_v2`) against the tree parser.

The scanner must never decide a page differently from the parser: on every page it takes, the
result is the parser's; on every page the parser refuses, it steps aside (None). And it must
take the pages OSS and the emulator send, or it buys nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ossmount.oss._xml import XmlError, _parse_list_v2_tree, _scan_list_v2, parse_list_v2

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))


def tree_or_error(body: bytes) -> object:
    try:
        return _parse_list_v2_tree(body)
    except XmlError as exc:
        return exc


def agree(body: bytes) -> bool:
    """The scanner's answer is the parser's, or it stepped aside; whether it took the page."""
    scanned = _scan_list_v2(body)
    if scanned is None:
        return False
    assert scanned == tree_or_error(body), body
    return True


def test_the_emulators_pages_are_scanned() -> None:
    import bench_requests

    body = bench_requests.list_page_xml(1000)
    assert agree(body)
    assert len(parse_list_v2(body).objects) == 1000


TEXT = st.lists(
    st.sampled_from([*"ab é/%2F+ <>&\"'\t\n]" * 4, "\r", "]]>", "\x01", "€", "\u2003"]), max_size=12
).map("".join)
# Element text as a serializer would write it, or raw (possibly malformed) pieces.
ESCAPED = TEXT.map(lambda t: escape(t, {'"': "&quot;", "'": "&apos;"}))
RAW = st.sampled_from(["&amp;", "&#60;", "&#x3C;", "&bogus;", "&", "<![CDATA[x]]>", "<!-- c -->"])
TEXTS = st.one_of(
    ESCAPED, ESCAPED, ESCAPED, ESCAPED, RAW, st.sampled_from(["2020-06-22T11:42:32.000Z", "12", ""])
)
WS = st.sampled_from(["", "", "", " ", "\n  ", "\t", "", " ", "\n", "\r\n", "\u2003", "x"])
FIELDS = ["Key", "LastModified", "ETag", "Type", "Size", "StorageClass", "RestoreInfo", "ID"]


@st.composite
def contents(draw: st.DrawFn) -> str:
    names = draw(st.lists(st.sampled_from(FIELDS), max_size=8))
    if draw(st.booleans()):  # usually the usual shape
        names = ["Key", "LastModified", "ETag", "Type", "Size", "StorageClass"]
    values = {
        "Key": st.one_of(TEXTS, st.just("dir%2Fa%20b")),
        "LastModified": st.sampled_from(["2020-06-22T11:42:32.000Z", "2020-06-22T11:42:32Z", "x"]),
        "Size": st.sampled_from(["0", "12", " 7 ", "-1", "lots", "1_0"]),
    }
    parts = [f"{draw(WS)}<{n}>{draw(values.get(n, TEXTS))}</{n}>" for n in names]
    if draw(st.integers(0, 2)) == 0:
        inner = draw(st.sampled_from(["ID", "DisplayName", "Size", "Key"]))
        parts.insert(draw(st.integers(0, len(parts))), f"<Owner><{inner}>1</{inner}></Owner>")
    if draw(st.integers(0, 8)) == 0:
        parts.append("<Empty/>")
    return f"{draw(WS)}<Contents>{''.join(parts)}{draw(WS)}</Contents>"


@st.composite
def pages(draw: st.DrawFn) -> bytes:
    items = draw(
        st.lists(
            st.one_of(
                contents(),
                st.builds(
                    lambda ws, p: f"{ws}<CommonPrefixes><Prefix>{p}</Prefix></CommonPrefixes>",
                    WS,
                    TEXTS,
                ),
                st.builds(
                    lambda n, v: f"<{n}>{v}</{n}>",
                    st.sampled_from(
                        [
                            "Name",
                            "EncodingType",
                            "IsTruncated",
                            "NextContinuationToken",
                            "KeyCount",
                            "Contents",
                            "CommonPrefixes",
                            "Prefix",
                        ]
                    ),
                    st.one_of(TEXTS, st.sampled_from(["url", "true", "false", " URL "])),
                ),
            ),
            max_size=6,
        )
    )
    head = draw(
        st.sampled_from(
            ['<?xml version="1.0" encoding="UTF-8"?>\n'] * 6 + ["", " ", ' <?xml version="1.0"?>',
             "<?xml version='1.0'?>", '<?xml version="1.0" encoding="latin-1"?>']
        )
    )  # fmt: skip
    root = draw(st.sampled_from(["<ListBucketResult>"] * 4 + ['<ListBucketResult xmlns="urn:x">',
                                 "<ListBucketResult a='1'>", "<Other>"]))  # fmt: skip
    end = draw(
        st.sampled_from(["</ListBucketResult>"] * 4 + ["</ListBucketResult>\n", "</Other>", ""])
    )
    tail = draw(st.sampled_from(["", "", "", "\n", "x"]))
    text = head + root + "".join(items) + draw(WS) + end + tail
    body = text.encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 9)) == 0:
        cut = draw(st.integers(0, len(body)))
        body = body[:cut] + draw(st.binary(max_size=3)) + body[cut:]
    return body


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pages())
def test_the_scanner_never_decides_differently_from_the_parser(body: bytes) -> None:
    agree(body)


@pytest.mark.parametrize(
    "piece",
    [
        "<Key>a &amp; b &lt;c&gt; &quot;d&quot; &apos;e&apos;</Key>",
        "<Key>dir%2Fa%20b</Key>",
    ],
)
def test_usual_pages_with_entities_are_scanned(piece: str) -> None:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult>\n'
        "<EncodingType>url</EncodingType><IsTruncated>false</IsTruncated>"
        f"<Contents>{piece}<LastModified>2020-06-22T11:42:32.000Z</LastModified>"
        "<ETag>&quot;E&quot;</ETag><Type>Normal</Type><Size>3</Size>"
        "<StorageClass>Standard</StorageClass></Contents>"
        "<CommonPrefixes><Prefix>p%2F</Prefix></CommonPrefixes></ListBucketResult>"
    ).encode()
    assert agree(body)


USUAL = (
    "<Contents><Key>k</Key><LastModified>2020-06-22T11:42:32.000Z</LastModified>"
    "<ETag>E</ETag><Type>Normal</Type><Size>3</Size><StorageClass>Standard</StorageClass>"
    "</Contents>"
)


def page_with(contents: str = USUAL, head: str = "<ListBucketResult>", tail: str = "") -> str:
    return f"{head}{contents}</ListBucketResult>{tail}"


def usual_with(old: str, new: str) -> str:
    return page_with(USUAL.replace(old, new))


@pytest.mark.parametrize(
    ("page", "scanned"),
    [
        (page_with(), True),
        (page_with(head='<ListBucketResult xmlns="urn:x">\n  ', tail="\n"), True),
        # an Owner holding a field of the same name as one the entry needs
        (usual_with("</Contents>", "<Owner><Size>9</Size></Owner></Contents>"), False),
        (usual_with("</Contents>", "<Owner><ID>9</ID></Owner></Contents>"), True),
        (' <?xml version="1.0"?>' + page_with(), False),  # a declaration not at the start
        (page_with("<Contents>text</Contents>"), False),
        (usual_with(">k<", ">a&#60;b<"), False),
        (usual_with(">k<", ">a\rb<"), False),
        (usual_with(">k<", ">a & b<"), False),
        (page_with(tail="junk"), False),
    ],
)
def test_edges_of_the_scanned_subset(page: str, scanned: bool) -> None:
    assert agree(page.encode()) is scanned


def test_an_empty_object_has_the_crc_64_of_no_bytes_in_both_parsers() -> None:
    """Listings carry no CRC-64; an empty object's is 0 (what OSS sends for it), so its
    cache entry is verified, not unverifiable. Others stay unknown."""
    entry = ("<Contents><Key>{}</Key><LastModified>2020-06-22T11:42:32.000Z</LastModified>"
             "<ETag>\"E\"</ETag><Size>{}</Size></Contents>")  # fmt: skip
    body = (
        '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>b</Name>'
        "<IsTruncated>false</IsTruncated>"
        f"{entry.format('empty', 0)}{entry.format('full', 3)}</ListBucketResult>"
    ).encode()
    scanned, parsed = _scan_list_v2(body), _parse_list_v2_tree(body)
    assert scanned is not None
    for page in (scanned, parsed):
        assert [(o.key, o.crc64) for o in page.objects] == [("empty", 0), ("full", None)]
