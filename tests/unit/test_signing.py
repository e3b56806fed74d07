"""Every signing vector of oss-protocol.md §1.7, through the public pure functions."""

from __future__ import annotations

import hashlib
from urllib.parse import parse_qsl

import pytest

from ossmount.oss import signing

COMMON_QUERY = parse_qsl(
    "param1=value1&%2Bparam1=value3&%7Cparam1=value4&%2Bparam2=&%7Cparam2=&param2=",
    keep_blank_values=True,
)
KEY = "1234+-/123/1.txt"


def common_headers(content_type: str, *, with_sha: bool) -> dict[str, str]:
    h = {
        "x-oss-head1": "value",
        "abc": "value",
        "ZAbc": "value",
        "XYZ": "value",
        "content-type": content_type,
    }
    if with_sha:
        h["x-oss-content-sha256"] = "UNSIGNED-PAYLOAD"
    return h


def v4_auth(**kw: object) -> str:
    defaults: dict[str, object] = {
        "method": "PUT",
        "bucket": "bucket",
        "key": KEY,
        "query": COMMON_QUERY,
        "headers": common_headers("text/plain", with_sha=True),
        "access_key_id": "ak",
        "secret": "sk",
        "region": "cn-hangzhou",
    }
    defaults.update(kw)
    return signing.sign_v4_headers(**defaults)["Authorization"]  # type: ignore[arg-type]


def test_uri_encode() -> None:
    assert signing.uri_encode("a b+c/é~_.-", keep_slash=True) == "a%20b%2Bc/%C3%A9~_.-"
    assert signing.uri_encode("a/b", keep_slash=False) == "a%2Fb"
    assert signing.uri_encode("*'()!", keep_slash=False) == "%2A%27%28%29%21"


def test_t_a_intermediates() -> None:
    headers = common_headers("text/plain", with_sha=True)
    headers["x-oss-date"] = "20231216T162057Z"
    canonical = signing.v4_canonical_request("PUT", "bucket", KEY, COMMON_QUERY, headers)
    assert canonical == (
        "PUT\n/bucket/1234%2B-/123/1.txt\n"
        "%2Bparam1=value3&%2Bparam2&%7Cparam1=value4&%7Cparam2&param1=value1&param2\n"
        "content-type:text/plain\nx-oss-content-sha256:UNSIGNED-PAYLOAD\n"
        "x-oss-date:20231216T162057Z\nx-oss-head1:value\n\n\nUNSIGNED-PAYLOAD"
    )
    scope = signing.v4_scope("20231216", "cn-hangzhou")
    assert scope == "20231216/cn-hangzhou/oss/aliyun_v4_request"
    assert signing.v4_string_to_sign("20231216T162057Z", scope, canonical) == (
        "OSS4-HMAC-SHA256\n20231216T162057Z\n20231216/cn-hangzhou/oss/aliyun_v4_request\n"
        "f4613657f1b108998e8dbd10a1aa5da621dc2c6e02c9ddec0f163664848704c4"
    )
    assert signing.v4_signature("sk", "20231216T162057Z", "cn-hangzhou", canonical) == (
        "e21d18daa82167720f9b1047ae7e7f1ce7cb77a31e8203a7d5f4624fa0284afe"
    )


def test_t_a() -> None:
    assert v4_auth(now=1702743657) == (
        "OSS4-HMAC-SHA256 Credential=ak/20231216/cn-hangzhou/oss/aliyun_v4_request,"
        "Signature=e21d18daa82167720f9b1047ae7e7f1ce7cb77a31e8203a7d5f4624fa0284afe"
    )


@pytest.mark.parametrize(
    "additional", [("ZAbc", "abc"), ("x-oss-no-exist", "ZAbc", "x-oss-head1", "abc")]
)
def test_t_b(additional: tuple[str, ...]) -> None:
    assert v4_auth(now=1702747512, additional_headers=additional) == (
        "OSS4-HMAC-SHA256 Credential=ak/20231216/cn-hangzhou/oss/aliyun_v4_request,"
        "AdditionalHeaders=abc;zabc,"
        "Signature=4a4183c187c07c8947db7620deb0a6b38d9fbdd34187b6dbaccb316fa251212f"
    )


def test_t_c_token() -> None:
    headers = signing.sign_v4_headers(
        "PUT",
        "bucket",
        KEY,
        COMMON_QUERY,
        common_headers("text/plain", with_sha=True),
        access_key_id="ak",
        secret="sk",
        region="cn-hangzhou",
        now=1702784856,
        security_token="token",
    )
    assert headers["x-oss-security-token"] == "token"
    assert headers["Authorization"] == (
        "OSS4-HMAC-SHA256 Credential=ak/20231217/cn-hangzhou/oss/aliyun_v4_request,"
        "Signature=b94a3f999cf85bcdc00d332fbd3734ba03e48382c36fa4d5af5df817395bd9ea"
    )


def test_t_cb_cloudbox() -> None:
    assert v4_auth(now=1702743657, region="cb-123", product="oss-cloudbox") == (
        "OSS4-HMAC-SHA256 Credential=ak/20231216/cb-123/oss-cloudbox/aliyun_v4_request,"
        "Signature=94ce1f12c17d148ea681030275a94449d3357f5b5b21133996eec80af3e08a43"
    )


def test_n_e_ranged_get() -> None:
    base = {"Range": "bytes=0-1023", "x-oss-range-behavior": "standard"}
    signed = signing.sign_v4_headers(
        "GET",
        "examplebucket",
        "dir/a b+cé.txt",
        [],
        base,
        access_key_id="ak",
        secret="sk",
        region="cn-hangzhou",
        now=1735689600,
    )
    canonical = signing.v4_canonical_request("GET", "examplebucket", "dir/a b+cé.txt", [], signed)
    assert canonical == (
        "GET\n/examplebucket/dir/a%20b%2Bc%C3%A9.txt\n\nx-oss-content-sha256:UNSIGNED-PAYLOAD\n"
        "x-oss-date:20250101T000000Z\nx-oss-range-behavior:standard\n\n\nUNSIGNED-PAYLOAD"
    )
    expected_hash = "af695ba3dd5b388f6a642bf6398716003d81d1bd475d020fd25a5fb586f42c85"
    assert hashlib.sha256(canonical.encode()).hexdigest() == expected_hash
    assert signed["Authorization"] == (
        "OSS4-HMAC-SHA256 Credential=ak/20250101/cn-hangzhou/oss/aliyun_v4_request,"
        "Signature=5e12340f5eb36800ce972ad4f40d4f0f7accc6aad96d0dbd6f62f455016df9c0"
    )


def test_n_f_head_with_token() -> None:
    signed = signing.sign_v4_headers(
        "HEAD",
        "examplebucket",
        "a.txt",
        [],
        {},
        access_key_id="ak",
        secret="sk",
        region="cn-hangzhou",
        now=1735689600,
        security_token="STS.token/with+chars=",
    )
    assert signed["Authorization"].endswith(
        "Credential=ak/20250101/cn-hangzhou/oss/aliyun_v4_request,"
        "Signature=2ebd362b6a57ca801bda535fcbe268b455d4f6f9a0187d0eb37a3caf592acd82"
    )


def test_n_g_list() -> None:
    query = parse_qsl(
        "continuation-token=CgJiYw--&delimiter=%2F&encoding-type=url&list-type=2"
        "&max-keys=1000&prefix=photos%2F2024%2F",
        keep_blank_values=True,
    )
    headers = {
        "Content-Type": "application/octet-stream",
        "Content-MD5": "1B2M2Y8AsgTpgAmY7PhCfg==",
    }
    signed = signing.sign_v4_headers(
        "GET",
        "examplebucket",
        None,
        query,
        headers,
        access_key_id="ak",
        secret="sk",
        region="cn-hangzhou",
        now=1735689600,
    )
    canonical = signing.v4_canonical_request("GET", "examplebucket", None, query, signed)
    lines = canonical.split("\n")
    assert lines[1] == "/examplebucket/"
    assert lines[2] == (
        "continuation-token=CgJiYw--&delimiter=%2F&encoding-type=url&list-type=2"
        "&max-keys=1000&prefix=photos%2F2024%2F"
    )
    assert [line.split(":")[0] for line in lines[3:7]] == [
        "content-md5",
        "content-type",
        "x-oss-content-sha256",
        "x-oss-date",
    ]
    assert signed["Authorization"].endswith(
        "Signature=195b5902027958803eb73b52492446767a1886ea40757ac93f98592a36a0e31a"
    )


def test_n_h_service_level() -> None:
    signed = signing.sign_v4_headers(
        "GET",
        None,
        None,
        [],
        {},
        access_key_id="ak",
        secret="sk",
        region="cn-hangzhou",
        now=1735689600,
    )
    assert signed["Authorization"].endswith(
        "Signature=0095141840ca64ae2473706b3d84f2c8a2712caa58a398624bd617270363437c"
    )


def test_signing_key() -> None:
    key = signing.v4_signing_key("sk", "20250101", "cn-hangzhou", "oss")
    assert key.hex() == "74d437fe697878fd3b3ab6731c40fe852cba837ce6e937aff897d1cb04414a1c"


def test_t_d_canonical_query_of_a_presigned_url() -> None:
    """§1.7 T-D: the canonical query and request hash of a presigned URL (the emulator
    verifies presigned URLs with these functions; the client does not presign)."""
    params = [
        *COMMON_QUERY,
        ("x-oss-signature-version", "OSS4-HMAC-SHA256"),
        ("x-oss-date", "20231217T025437Z"),
        ("x-oss-expires", "599"),
        ("x-oss-credential", "ak/20231217/cn-hangzhou/oss/aliyun_v4_request"),
    ]
    headers = common_headers("application/octet-stream", with_sha=False)
    canonical = signing.v4_canonical_request("PUT", "bucket", KEY, params, headers)
    assert canonical.split("\n")[2] == (
        "%2Bparam1=value3&%2Bparam2&%7Cparam1=value4&%7Cparam2&param1=value1&param2"
        "&x-oss-credential=ak%2F20231217%2Fcn-hangzhou%2Foss%2Faliyun_v4_request"
        "&x-oss-date=20231217T025437Z&x-oss-expires=599"
        "&x-oss-signature-version=OSS4-HMAC-SHA256"
    )
    assert hashlib.sha256(canonical.encode()).hexdigest() == (
        "48814c11f278d51662015bf2f896b66ca10b6de0187ed8d952e341bbce0aa336"
    )
    assert signing.v4_signature("sk", "20231217T025437Z", "cn-hangzhou", canonical) == (
        "a39966c61718be0d5b14e668088b3fa07601033f6518ac7b523100014269c0fe"
    )


# --- V1 --------------------------------------------------------------------------------------

V1_DATE = "Wed, 28 Dec 2022 10:27:41 GMT"
V1_PUT_HEADERS = {
    "Content-MD5": "eB5eJF1ptWaXm4bijSPyxw==",
    "Content-Type": "text/html",
    "x-oss-meta-author": "alice",
    "x-oss-meta-magic": "abracadabra",
    "x-oss-date": V1_DATE,
}


@pytest.mark.parametrize(
    ("query", "resource", "auth"),
    [
        ([], "/examplebucket/nelson", "OSS ak:kSHKmLxlyEAKtZPkJhG9bZb5k7M="),
        ([("acl", "")], "/examplebucket/nelson?acl", "OSS ak:/afkugFbmWDQ967j1vr6zygBLQk="),
    ],
)
def test_v1_put(query: list[tuple[str, str]], resource: str, auth: str) -> None:
    sts = signing.v1_string_to_sign(
        "PUT", "examplebucket", "nelson", query, V1_PUT_HEADERS, V1_DATE
    )
    assert sts == (
        f"PUT\neB5eJF1ptWaXm4bijSPyxw==\ntext/html\n{V1_DATE}\nx-oss-date:{V1_DATE}\n"
        f"x-oss-meta-author:alice\nx-oss-meta-magic:abracadabra\n{resource}"
    )
    signed = signing.sign_v1_headers(
        "PUT", "examplebucket", "nelson", query, V1_PUT_HEADERS,
        access_key_id="ak", secret="sk", now=0,
    )  # fmt: skip
    assert signed["Authorization"] == auth  # x-oss-date wins over the Date we set


@pytest.mark.parametrize(
    ("query", "resource", "auth"),
    [
        (
            [("resourceGroup", ""), ("non-resousce", "null")],
            "/examplebucket/?resourceGroup",
            "OSS ak:vkQmfuUDyi1uDi3bKt67oemssIs=",
        ),
        (
            [("resourceGroup", ""), ("acl", "")],
            "/examplebucket/?acl&resourceGroup",
            "OSS ak:x3E5TgOvl/i7PN618s5mEvpJDYk=",
        ),
    ],
)
def test_v1_bucket_level(query: list[tuple[str, str]], resource: str, auth: str) -> None:
    headers = {"x-oss-date": V1_DATE}
    sts = signing.v1_string_to_sign("GET", "examplebucket", None, query, headers, V1_DATE)
    assert sts == f"GET\n\n\n{V1_DATE}\nx-oss-date:{V1_DATE}\n{resource}"
    assert f"OSS ak:{signing.v1_signature('sk', sts)}" == auth


def test_v1_5_raw_key() -> None:
    date = "Wed, 01 Jan 2025 00:00:00 GMT"
    signed = signing.sign_v1_headers(
        "GET", "examplebucket", "dir/a b.txt", [], {"Range": "bytes=0-99"},
        access_key_id="ak", secret="sk", now=1735689600,
    )  # fmt: skip
    assert signed["Date"] == date
    sts = signing.v1_string_to_sign("GET", "examplebucket", "dir/a b.txt", [], signed, date)
    assert sts == f"GET\n\n\n{date}\n/examplebucket/dir/a b.txt"
    assert signed["Authorization"] == "OSS ak:7KM1bFMCzhCDs8yByIRhQEpmBsY="


def test_v1_6_list_params_unsigned() -> None:
    date = "Wed, 01 Jan 2025 00:00:00 GMT"
    query = [("list-type", "2"), ("prefix", "a/"), ("continuation-token", "abc")]
    sts = signing.v1_string_to_sign("GET", "examplebucket", None, query, {}, date)
    assert sts == f"GET\n\n\n{date}\n/examplebucket/?continuation-token=abc"
    assert signing.v1_signature("sk", sts) == "V0bXRACC2PAB5t8W3I5s3/ck06o="


def test_v1_q1_q2_presign_string_to_sign() -> None:
    """V1 presign vectors Q1/Q2 through the functions the emulator verifies them with."""
    q1 = [("versionId", "versionId"), ("OSSAccessKeyId", "ak"), ("Expires", "1699807420")]
    sts = signing.v1_string_to_sign("GET", "bucket", "key", q1, {}, "1699807420")
    assert sts == "GET\n\n\n1699807420\n/bucket/key?versionId=versionId"
    assert signing.v1_signature("sk", sts) == "dcLTea+Yh9ApirQ8o8dOPqtvJXQ="
    q2 = [("versionId", "versionId"), ("security-token", "token")]
    sts = signing.v1_string_to_sign("GET", "bucket", "key+123", q2, {}, "1699808204")
    assert sts == "GET\n\n\n1699808204\n/bucket/key+123?security-token=token&versionId=versionId"
    assert signing.v1_signature("sk", sts) == "jzKYRrM5y6Br0dRFPaTGOsbrDhY="


def test_resign_replaces_previous_auth_headers() -> None:
    first = signing.sign_v4_headers(
        "GET", "b", "k", [], {}, access_key_id="ak", secret="sk", region="r", now=1735689600
    )
    second = signing.sign_v4_headers(
        "GET", "b", "k", [], first, access_key_id="ak", secret="sk", region="r", now=1735689660
    )
    fresh = signing.sign_v4_headers(
        "GET", "b", "k", [], {}, access_key_id="ak", secret="sk", region="r", now=1735689660
    )
    assert second == fresh
    assert second["Authorization"] != first["Authorization"]


def test_memoized_day_key_and_dates_change_no_result() -> None:
    """The day-key and date caches: a new day or second gives a new key or date."""
    day1 = signing.v4_signing_key("sk", "20250101T000000Z", "cn-hangzhou")
    assert day1 == signing.v4_signing_key("sk", "20250101", "cn-hangzhou")
    assert day1 != signing.v4_signing_key("sk", "20250102", "cn-hangzhou")
    assert day1 != signing.v4_signing_key("sk2", "20250101", "cn-hangzhou")
    assert signing.format_v4_date(1735689600.9) == "20250101T000000Z"
    assert signing.format_v4_date(1735689601) == "20250101T000001Z"
    assert signing.format_http_date(1735689601) == "Wed, 01 Jan 2025 00:00:01 GMT"
