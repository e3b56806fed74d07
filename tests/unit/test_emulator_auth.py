"""The emulator's verifier against the published vectors (oss-protocol.md §1.7, §8.2)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import pytest

from ossmount.emulator.auth import Verifier
from ossmount.emulator.request import Request
from ossmount.emulator.xml import OssError

QUERY = "param1=value1&%2Bparam1=value3&%7Cparam1=value4&%2Bparam2=&%7Cparam2=&param2="
HEADERS = {"x-oss-head1": "value", "abc": "value", "zabc": "value", "xyz": "value"}


def _req(method: str, path: str, query: str, headers: dict[str, str]) -> Request:
    none: Any = None
    return Request(
        method=method,
        target=path + ("?" + query if query else ""),
        path=path,
        query_string=query,
        query=parse_qsl(query, keep_blank_values=True),
        headers={k.lower(): v for k, v in headers.items()},
        peer="127.0.0.1",
        _conn=none,
        _stream=none,
    )


V = Verifier("ak", "sk", "cn-hangzhou")
KEY = "1234+-/123/1.txt"


def test_v4_header_vector_t_a() -> None:
    auth = (
        "OSS4-HMAC-SHA256 Credential=ak/20231216/cn-hangzhou/oss/aliyun_v4_request,"
        "Signature=e21d18daa82167720f9b1047ae7e7f1ce7cb77a31e8203a7d5f4624fa0284afe"
    )
    h = {
        **HEADERS,
        "content-type": "text/plain",
        "x-oss-content-sha256": "UNSIGNED-PAYLOAD",
        "x-oss-date": "20231216T162057Z",
        "authorization": auth,
    }
    req = _req("PUT", "/bucket/1234%2B-/123/1.txt", QUERY, h)
    assert V.verify(req, "bucket", KEY, "PutObject", 1702743657) == "v4"
    # far from the signing time → skew error; tampered → mismatch
    with pytest.raises(OssError) as ei:
        V.verify(req, "bucket", KEY, "PutObject", 1702743657 + 901)
    assert ei.value.code == "RequestTimeTooSkewed"
    h["x-oss-head1"] = "other"
    with pytest.raises(OssError) as ei:
        V.verify(_req("PUT", "/", QUERY, h), "bucket", KEY, "PutObject", 1702743657)
    assert ei.value.code == "SignatureDoesNotMatch"
    assert "StringToSign" in ei.value.extra


@pytest.mark.parametrize(
    "auth",
    [
        "OSS4-HMAC-SHA256 Credential=ak/20231216/cn-hangzhou/oss/aliyun_v4_request,"
        "AdditionalHeaders=abc;zabc,Signature=4a4183c187c07c8947db7620deb0a6b38d9fbdd34187b6dbaccb316fa251212f",
        # OSS2 order with spaces (§1.1: parse order-independently)
        "OSS4-HMAC-SHA256 Credential=ak/20231216/cn-hangzhou/oss/aliyun_v4_request, "
        "Signature=4a4183c187c07c8947db7620deb0a6b38d9fbdd34187b6dbaccb316fa251212f, "
        "AdditionalHeaders=abc;zabc",
    ],
)
def test_v4_header_vector_t_b_additional_headers(auth: str) -> None:
    h = {
        **HEADERS,
        "content-type": "text/plain",
        "x-oss-content-sha256": "UNSIGNED-PAYLOAD",
        "x-oss-date": "20231216T172512Z",
        "authorization": auth,
    }
    assert V.verify(_req("PUT", "/", QUERY, h), "bucket", KEY, "PutObject", 1702747512) == "v4"


def test_v4_presign_vector_t_d() -> None:
    q = (
        QUERY + "&x-oss-signature-version=OSS4-HMAC-SHA256&x-oss-date=20231217T025437Z"
        "&x-oss-expires=599&x-oss-credential=ak%2F20231217%2Fcn-hangzhou%2Foss%2Faliyun_v4_request"
        "&x-oss-signature=a39966c61718be0d5b14e668088b3fa07601033f6518ac7b523100014269c0fe"
    )
    h = {**HEADERS, "content-type": "application/octet-stream"}
    req = _req("PUT", "/", q, h)
    assert V.verify(req, "bucket", KEY, "PutObject", 1702781677 + 10) == "presign-v4"
    with pytest.raises(OssError) as ei:
        V.verify(req, "bucket", KEY, "PutObject", 1702781677 + 600)
    assert (ei.value.code, ei.value.message) == ("AccessDenied", "Request has expired.")


def test_v4_n_e_get_with_range() -> None:
    h = {
        "range": "bytes=0-1023",
        "x-oss-range-behavior": "standard",
        "x-oss-content-sha256": "UNSIGNED-PAYLOAD",
        "x-oss-date": "20250101T000000Z",
        "authorization": "OSS4-HMAC-SHA256 Credential=ak/20250101/cn-hangzhou/oss/"
        "aliyun_v4_request,Signature=5e12340f5eb36800ce972ad4f40d4f0f7accc6aad96d0dbd6f62f455016df9c0",
    }
    req = _req("GET", "/dir/a%20b%2Bc%C3%A9.txt", "", h)
    assert V.verify(req, "examplebucket", "dir/a b+cé.txt", "GetObject", 1735689600) == "v4"


def test_v1_header_vector_and_presign() -> None:
    h = {
        "content-md5": "eB5eJF1ptWaXm4bijSPyxw==",
        "content-type": "text/html",
        "x-oss-meta-author": "alice",
        "x-oss-meta-magic": "abracadabra",
        "x-oss-date": "Wed, 28 Dec 2022 10:27:41 GMT",
        "authorization": "OSS ak:kSHKmLxlyEAKtZPkJhG9bZb5k7M=",
    }
    now = 1672223261  # Wed, 28 Dec 2022 10:27:41 GMT
    req = _req("PUT", "/nelson", "", h)
    assert V.verify(req, "examplebucket", "nelson", "PutObject", now) == "v1"
    q = "versionId=versionId&OSSAccessKeyId=ak&Expires=1699807420"
    q += "&Signature=dcLTea%2BYh9ApirQ8o8dOPqtvJXQ%3D"
    req = _req("GET", "/key", q, {})
    assert V.verify(req, "bucket", "key", "GetObject", 1699807000) == "presign-v1"
    with pytest.raises(OssError) as ei:
        V.verify(req, "bucket", "key", "GetObject", 1699807421)
    assert ei.value.code == "AccessDenied"


def test_refusals() -> None:
    with pytest.raises(OssError) as ei:
        V.verify(_req("GET", "/k", "", {}), "b", "k", "GetObject", 0)
    assert (ei.value.status, ei.value.code) == (403, "AccessDenied")
    pub = Verifier("ak", "sk", "cn-hangzhou", public_read=True)
    assert pub.verify(_req("GET", "/k", "", {}), "b", "k", "GetObject", 0) == "anon"
    with pytest.raises(OssError):
        pub.verify(_req("PUT", "/k", "", {}), "b", "k", "PutObject", 0)
    bad = {
        "authorization": "OSS4-HMAC-SHA256 Credential=ak/2022-12-20/cn-hangzhou/oss/"
        "aliyun_v4_request,Signature=00"
    }
    bad["x-oss-date"] = "20221220T000000Z"
    with pytest.raises(OssError) as ei:
        V.verify(_req("GET", "/k", "", bad), "b", "k", "GetObject", 1671494400)
    assert (ei.value.status, ei.value.code) == (400, "InvalidArgument")
    other = {"authorization": "OSS other:abc=", "date": "Tue, 20 Dec 2022 00:00:00 GMT"}
    with pytest.raises(OssError) as ei:
        V.verify(_req("GET", "/k", "", other), "b", "k", "GetObject", 1671494400)
    assert ei.value.code == "InvalidAccessKeyId"
