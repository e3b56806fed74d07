"""OSS XML: error bodies to typed exceptions, list pages, and hostile or broken input."""

from __future__ import annotations

import base64
import time

import pytest

from ossmount.oss import (
    BadResponse,
    NoSuchKey,
    OssError,
    QpsLimitExceeded,
    SignatureDoesNotMatch,
    Throttled,
)
from ossmount.oss._errors import error_from_response
from ossmount.oss._xml import (
    MAX_ERROR_XML_BYTES,
    XmlError,
    parse_error_xml,
    parse_iso8601_ns,
    parse_iso8601_s,
    parse_list_v2,
)

ERROR = b"""<?xml version="1.0" encoding="UTF-8"?>
<Error xmlns="http://doc.oss-cn-hangzhou.aliyuncs.com">
  <Code>NoSuchKey</Code>
  <Message>The specified key does not exist.</Message>
  <RequestId>534B371674E88A4D8906ABCD</RequestId>
  <HostId>b.oss-cn-hangzhou.aliyuncs.com</HostId>
  <EC>0026-00000001</EC>
</Error>"""

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<Error><Code>&lol3;</Code></Error>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]><Error><Code>&x;</Code></Error>"""


def test_error_xml_with_namespace() -> None:
    fields = parse_error_xml(ERROR)
    assert fields["Code"] == "NoSuchKey"
    assert fields["EC"] == "0026-00000001"


def test_error_from_body() -> None:
    exc = error_from_response(404, {}, ERROR, bucket="b", key="dir/k")
    assert type(exc) is NoSuchKey
    assert (exc.status, exc.code, exc.request_id, exc.ec) == (
        404,
        "NoSuchKey",
        "534B371674E88A4D8906ABCD",
        "0026-00000001",
    )
    text = str(exc)
    assert "oss://b/dir/k" in text
    assert "NoSuchKey" in text
    assert "does not exist" in text


def test_mapping_is_by_code_not_message_or_status() -> None:
    body = ERROR.replace(b"NoSuchKey", b"QpsLimitExceeded")
    assert type(error_from_response(503, {}, body, bucket="b", key="k")) is QpsLimitExceeded
    body = b"<Error><Code>TotalQpsLimitExceeded</Code><Message>NoSuchKey</Message></Error>"
    assert type(error_from_response(503, {}, body, bucket="b", key="k")) is Throttled
    body = b"<Error><Code>BrandNewCode</Code><Message>x</Message></Error>"
    exc = error_from_response(400, {}, body, bucket="b", key="k")
    assert type(exc) is OssError
    assert exc.code == "BrandNewCode"


def test_head_error_from_x_oss_err_header() -> None:
    headers = {"x-oss-err": base64.b64encode(ERROR).decode(), "x-oss-request-id": "HDR"}
    exc = error_from_response(404, headers, b"", bucket="b", key="k")
    assert type(exc) is NoSuchKey
    assert exc.request_id == "534B371674E88A4D8906ABCD"


def test_head_error_without_any_xml_falls_back_to_status() -> None:
    exc = error_from_response(404, {"x-oss-request-id": "R1"}, b"", bucket="b", key="k")
    assert type(exc) is NoSuchKey
    assert exc.request_id == "R1"


def test_signature_mismatch_never_echoes_string_to_sign() -> None:
    body = (
        b"<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we "
        b"calculated does not match</Message><StringToSign>OSS4-HMAC-SHA256\nsecretish"
        b"</StringToSign><SignatureProvided>abcdef0123</SignatureProvided></Error>"
    )
    exc = error_from_response(403, {}, body, bucket="b", key="k")
    assert type(exc) is SignatureDoesNotMatch
    assert "abcdef0123" not in str(exc)
    assert "secretish" not in str(exc)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (BILLION_LAUGHS, "refused"),
        (EXTERNAL_ENTITY, "refused"),
        (b"<Error><Code>x</Code>", "malformed"),
        (b"\xff\xfe garbage", "malformed"),
        (b"<NotAnError/>", "expected <Error>"),
        (b"<Error>" + b"<M>x</M>" * (MAX_ERROR_XML_BYTES // 8) + b"</Error>", "limit"),
    ],
)
def test_hostile_or_broken_error_xml(body: bytes, why: str) -> None:
    with pytest.raises(XmlError, match=why):
        parse_error_xml(body)
    exc = error_from_response(500, {}, body, bucket="b", key="k")
    assert type(exc) is BadResponse
    assert exc.code == "BadErrorResponse"
    assert "oss://b/k" in str(exc)


LIST = b"""<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult>
  <Name>b</Name><Prefix>photos%2F</Prefix><MaxKeys>2</MaxKeys><Delimiter>%2F</Delimiter>
  <EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>
  <NextContinuationToken>photos%2Fb%2Bc</NextContinuationToken>
  <Contents><Key>photos%2Fa%20b%2Bc%C3%A9.jpg</Key><LastModified>2020-06-22T11:42:32.123Z</LastModified>
    <ETag>"5B3C1A2E053D763E1B002CC607C5A0FE"</ETag><Type>Normal</Type><Size>344606</Size>
    <StorageClass>Standard</StorageClass></Contents>
  <CommonPrefixes><Prefix>photos%2F2024%2F</Prefix></CommonPrefixes>
  <KeyCount>2</KeyCount>
</ListBucketResult>"""


def test_list_page() -> None:
    page = parse_list_v2(LIST)
    assert page.is_truncated
    assert page.next_token == "photos/b+c"
    (obj,) = page.objects
    assert obj.key == "photos/a b+cé.jpg"
    assert obj.size == 344606
    assert obj.etag == '"5B3C1A2E053D763E1B002CC607C5A0FE"'
    # whole seconds, as HEAD and GET give (the listing said .123): one mtime precision
    assert obj.mtime_ns == 1592826152_000_000_000
    assert obj.crc64 is None
    assert (obj.object_type, obj.storage_class) == ("Normal", "Standard")
    assert page.prefixes == ("photos/2024/",)


def test_list_without_encoding_is_not_decoded() -> None:
    body = LIST.replace(b"<EncodingType>url</EncodingType>", b"")
    assert parse_list_v2(body).objects[0].key == "photos%2Fa%20b%2Bc%C3%A9.jpg"


def test_truncated_page_without_token_is_an_error() -> None:
    body = LIST.replace(b"<NextContinuationToken>photos%2Fb%2Bc</NextContinuationToken>", b"")
    with pytest.raises(XmlError, match="NextContinuationToken"):
        parse_list_v2(body)


def test_list_entry_with_bad_size() -> None:
    with pytest.raises(XmlError, match="bad field"):
        parse_list_v2(LIST.replace(b"<Size>344606</Size>", b"<Size>lots</Size>"))


def test_list_billion_laughs() -> None:
    with pytest.raises(XmlError, match="refused"):
        parse_list_v2(BILLION_LAUGHS.replace(b"Error", b"ListBucketResult"))


def test_iso8601() -> None:
    assert parse_iso8601_ns("1970-01-01T00:00:01.000Z") == 1_000_000_000
    with pytest.raises(XmlError):
        parse_iso8601_ns("yesterday")


@pytest.mark.parametrize("body", [BILLION_LAUGHS, EXTERNAL_ENTITY])
def test_list_dtd_refused_before_any_entity(body: bytes) -> None:
    with pytest.raises(XmlError, match="refused"):
        parse_list_v2(body.replace(b"Error", b"ListBucketResult"))


def test_list_with_namespaces_and_nested_fields() -> None:
    body = LIST.replace(
        b"<ListBucketResult>", b'<ListBucketResult xmlns="http://doc.oss-cn-hangzhou.aliyuncs.com">'
    ).replace(b"<Type>", b"<Owner><ID>1</ID><Size>9</Size></Owner><Type>")
    page = parse_list_v2(body)
    assert page.next_token == "photos/b+c"
    (obj,) = page.objects
    assert (obj.key, obj.size, obj.object_type) == ("photos/a b+cé.jpg", 344606, "Normal")
    assert page.prefixes == ("photos/2024/",)


def test_list_malformed_and_wrong_root() -> None:
    with pytest.raises(XmlError, match="malformed"):
        parse_list_v2(LIST[:-20])
    with pytest.raises(XmlError, match="expected <ListBucketResult>"):
        parse_list_v2(b"<Other/>")


def test_iso8601_whole_seconds_fast_path_agrees() -> None:
    import random

    rng = random.Random(3)
    for _ in range(500):
        ns = rng.randrange(0, 4_000_000_000) * 1_000_000_000 + rng.randrange(0, 10**9)
        secs = ns // 1_000_000_000
        text = (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{ns % 10**9 // 10**6:03d}Z"
        )
        assert parse_iso8601_s(text) == secs == parse_iso8601_ns(text) // 1_000_000_000
    assert parse_iso8601_s("2020-06-22T11:42:32+08:00") == 1592797352  # other forms: datetime
    for bad in ("2020-02-30T00:00:00.000Z", "yesterday"):
        with pytest.raises(XmlError):
            parse_iso8601_s(bad)


def test_unquote_fast_path_agrees_with_urllib() -> None:
    import random
    from urllib.parse import unquote

    from ossmount.oss._xml import _unquote

    rng = random.Random(5)
    pieces = ["%", "2", "F", "f", "0", "%2F", "%20", "%25", "%C3%A9", "a", "/", " ", "%2"]
    for _ in range(5000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randrange(0, 12)))
        assert _unquote(text) == unquote(text), text
