"""Bucket-level operations: ListObjectsV2/V1, ListBuckets, bucket create/delete/info, DeleteObjects.

Listing rules (§3.7-3.8, §8.11): keys in UTF-8 byte order (== Python str order); max-keys
1..1000, default 100, else 400 InvalidArgument; each CommonPrefix counts once against
max-keys; continuation tokens are opaque (base64 of the last item returned, marked as key or
prefix) and a bad one is 400 InvalidArgument; with ``encoding-type=url`` every key-like
element is percent-encoded with ``%20`` for space and ``%2B`` for ``+``.
"""

from __future__ import annotations

import base64
import binascii
import bisect
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException

from .response import Response, xml_response
from .store import Bucket, ObjectVersion
from .xml import OssError, iso8601, xml_text

if TYPE_CHECKING:
    from .app import Ctx, Op

__all__ = ["OPS", "decode_token", "encode_token", "list_page"]

OWNER_ID = "1234567890123456"


def encode_token(kind: str, value: str) -> str:
    raw = (kind + value).encode("utf-8", "surrogatepass")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_token(token: str) -> tuple[str, str]:
    try:
        padded = token + "=" * (-len(token) % 4)
        raw = base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True)
        text = raw.decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        raise OssError(
            400,
            "InvalidArgument",
            "The continuation token provided is incorrect",
            extra={"ArgumentName": "continuation-token", "ArgumentValue": token},
        ) from None
    if not text or text[0] not in "kp":
        raise OssError(
            400,
            "InvalidArgument",
            "The continuation token provided is incorrect",
            extra={"ArgumentName": "continuation-token", "ArgumentValue": token},
        )
    return text[0], text[1:]


def _max_keys(ctx: Ctx) -> int:
    v = ctx.req.qget("max-keys")
    if v is None or v == "":
        return 100
    try:
        n = int(v)
    except ValueError:
        n = -1
    if not 1 <= n <= 1000:
        raise OssError(
            400,
            "InvalidArgument",
            "Argument max-keys must be an integer between 1 and 1000.",
            extra={"ArgumentName": "max-keys", "ArgumentValue": v},
            ec="0015-00000402",
        )
    return n


def _after_prefix(keys: list[str], prefix: str) -> int:
    """Index of the first key that does not start with ``prefix`` and sorts after it."""
    return bisect.bisect_left(keys, prefix + "\U0010ffff\U0010ffff")


def list_page(
    bucket: Bucket, prefix: str, delimiter: str, after: str, after_is_prefix: bool, max_keys: int
) -> tuple[list[ObjectVersion], list[str], bool, tuple[str, str] | None]:
    """(objects, common prefixes, truncated, last item as (kind, value)) of one page."""
    keys = bucket.keys
    if after_is_prefix:
        i = _after_prefix(keys, after)
    else:
        i = bisect.bisect_right(keys, after) if after else 0
    i = max(i, bisect.bisect_left(keys, prefix))
    objs: list[ObjectVersion] = []
    prefixes: list[str] = []
    last: tuple[str, str] | None = None
    while i < len(keys):
        key = keys[i]
        if not key.startswith(prefix):
            break
        if delimiter:
            j = key.find(delimiter, len(prefix))
            if j >= 0:
                cp = key[: j + len(delimiter)]
                if len(objs) + len(prefixes) >= max_keys:
                    return objs, prefixes, True, last
                prefixes.append(cp)
                last = ("p", cp)
                i = _after_prefix(keys, cp)
                continue
        if len(objs) + len(prefixes) >= max_keys:
            return objs, prefixes, True, last
        obj = bucket.objects.get(key)
        if obj is not None:
            objs.append(obj)
            last = ("k", key)
        i += 1
    return objs, prefixes, False, last


def _enc(value: str, url: bool) -> str:
    return quote(value, safe="") if url else xml_text(value)


def _contents(obj: ObjectVersion, url: bool, owner: bool) -> str:
    parts = [
        f"<Key>{_enc(obj.key, url)}</Key>",
        f"<LastModified>{iso8601(obj.mtime)}</LastModified>",
        f"<ETag>{xml_text(obj.etag)}</ETag>",
        f"<Type>{obj.object_type}</Type>",
        f"<Size>{obj.size}</Size>",
        f"<StorageClass>{obj.storage_class}</StorageClass>",
    ]
    if owner:
        parts.append(f"<Owner><ID>{OWNER_ID}</ID><DisplayName>{OWNER_ID}</DisplayName></Owner>")
    if obj.restore:
        parts.append(f"<RestoreInfo>{xml_text(obj.restore)}</RestoreInfo>")
    return "  <Contents>\n    " + "\n    ".join(parts) + "\n  </Contents>"


def _encoding(ctx: Ctx) -> bool:
    enc = ctx.req.qget("encoding-type")
    if enc is None or enc == "":
        return False
    if enc != "url":
        raise OssError(
            400,
            "InvalidArgument",
            "Invalid Encoding Method specified in Request",
            extra={"ArgumentName": "encoding-type", "ArgumentValue": enc},
        )
    return True


async def list_objects_v2(ctx: Ctx) -> Response:
    bucket = ctx.bucket()
    q = ctx.req.qget
    url = _encoding(ctx)
    max_keys = _max_keys(ctx)
    prefix, delimiter = q("prefix") or "", q("delimiter") or ""
    start_after = q("start-after") or ""
    token = q("continuation-token")
    after, after_is_prefix = start_after, False
    if token:
        kind, value = decode_token(token)
        if value >= after:
            after, after_is_prefix = value, kind == "p"
    objs, prefixes, truncated, last = list_page(
        bucket, prefix, delimiter, after, after_is_prefix, max_keys
    )
    owner = (q("fetch-owner") or "").lower() == "true"
    out = [
        f"<Name>{bucket.name}</Name>",
        f"<Prefix>{_enc(prefix, url)}</Prefix>",
    ]
    if token:
        out.append(f"<ContinuationToken>{_enc(token, url)}</ContinuationToken>")
    if start_after:
        out.append(f"<StartAfter>{_enc(start_after, url)}</StartAfter>")
    out.append(f"<MaxKeys>{max_keys}</MaxKeys>")
    if delimiter:
        out.append(f"<Delimiter>{_enc(delimiter, url)}</Delimiter>")
    if url:
        out.append("<EncodingType>url</EncodingType>")
    out.append(f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>")
    if truncated and last is not None:
        out.append(
            f"<NextContinuationToken>{_enc(encode_token(*last), url)}</NextContinuationToken>"
        )
    out.append(f"<KeyCount>{len(objs) + len(prefixes)}</KeyCount>")
    return _list_result(out, objs, prefixes, url, owner)


def _list_result(
    fields: list[str], objs: list[ObjectVersion], prefixes: list[str], url: bool, owner: bool
) -> Response:
    """The ListBucketResult document shared by ListObjects V1 and V2."""
    body = "<ListBucketResult>\n  " + "\n  ".join(fields) + "\n"
    body += "".join(_contents(o, url, owner) + "\n" for o in objs)
    body += "".join(
        f"  <CommonPrefixes>\n    <Prefix>{_enc(p, url)}</Prefix>\n  </CommonPrefixes>\n"
        for p in prefixes
    )
    body += "</ListBucketResult>\n"
    return xml_response(body)


async def list_objects_v1(ctx: Ctx) -> Response:
    bucket = ctx.bucket()
    q = ctx.req.qget
    url = _encoding(ctx)
    max_keys = _max_keys(ctx)
    prefix, delimiter, marker = q("prefix") or "", q("delimiter") or "", q("marker") or ""
    # A marker naming a common prefix skips that whole prefix, as the V1 NextMarker intends.
    after_is_prefix = bool(delimiter) and marker.endswith(delimiter) and marker.startswith(prefix)
    objs, prefixes, truncated, last = list_page(
        bucket, prefix, delimiter, marker, after_is_prefix, max_keys
    )
    out = [
        f"<Name>{bucket.name}</Name>",
        f"<Prefix>{_enc(prefix, url)}</Prefix>",
        f"<Marker>{_enc(marker, url)}</Marker>",
        f"<MaxKeys>{max_keys}</MaxKeys>",
        f"<Delimiter>{_enc(delimiter, url)}</Delimiter>",
    ]
    if url:
        out.append("<EncodingType>url</EncodingType>")
    out.append(f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>")
    if truncated and last is not None:
        out.append(f"<NextMarker>{_enc(last[1], url)}</NextMarker>")
    return _list_result(out, objs, prefixes, url, True)


async def list_buckets(ctx: Ctx) -> Response:
    region = ctx.app.region
    items = "".join(
        "    <Bucket>\n"
        f"      <CreationDate>{iso8601(b.created)}</CreationDate>\n"
        f"      <ExtranetEndpoint>oss-{region}.aliyuncs.com</ExtranetEndpoint>\n"
        f"      <IntranetEndpoint>oss-{region}-internal.aliyuncs.com</IntranetEndpoint>\n"
        f"      <Location>oss-{region}</Location>\n"
        f"      <Name>{name}</Name>\n"
        f"      <Region>{region}</Region>\n"
        "      <StorageClass>Standard</StorageClass>\n"
        "    </Bucket>\n"
        for name, b in sorted(ctx.store.buckets.items())
    )
    body = (
        "<ListAllMyBucketsResult>\n"
        f"  <Owner><ID>{OWNER_ID}</ID><DisplayName>{OWNER_ID}</DisplayName></Owner>\n"
        f"  <Buckets>\n{items}  </Buckets>\n"
        "</ListAllMyBucketsResult>\n"
    )
    return xml_response(body)


async def put_bucket(ctx: Ctx) -> Response:
    async for _ in ctx.req.body():
        pass
    if ctx.store.bucket(ctx.bucket_name) is None:
        ctx.store.create_bucket(ctx.bucket_name)
    return Response(200, [("Location", f"/{ctx.bucket_name}")])


async def delete_bucket(ctx: Ctx) -> Response:
    bucket = ctx.bucket()
    if bucket.keys:
        raise OssError(409, "BucketNotEmpty", "The bucket you tried to delete is not empty.")
    with ctx.store.lock:
        ctx.store.buckets.pop(ctx.bucket_name, None)
    return Response(204, [])


async def head_bucket(ctx: Ctx) -> Response:
    ctx.bucket()
    return Response(200, [])


async def bucket_info(ctx: Ctx) -> Response:
    b = ctx.bucket()
    region = ctx.app.region
    body = (
        "<BucketInfo>\n  <Bucket>\n"
        f"    <CreationDate>{iso8601(b.created)}</CreationDate>\n"
        f"    <ExtranetEndpoint>oss-{region}.aliyuncs.com</ExtranetEndpoint>\n"
        f"    <IntranetEndpoint>oss-{region}-internal.aliyuncs.com</IntranetEndpoint>\n"
        f"    <Location>oss-{region}</Location>\n"
        f"    <Name>{b.name}</Name>\n"
        "    <StorageClass>Standard</StorageClass>\n"
        f"    <Owner><ID>{OWNER_ID}</ID><DisplayName>{OWNER_ID}</DisplayName></Owner>\n"
        "    <AccessControlList><Grant>private</Grant></AccessControlList>\n"
        "  </Bucket>\n</BucketInfo>\n"
    )
    return xml_response(body)


async def bucket_location(ctx: Ctx) -> Response:
    ctx.bucket()
    body = f"<LocationConstraint>oss-{ctx.app.region}</LocationConstraint>\n"
    return xml_response(body)


def local_name(tag: object) -> str:
    """An element's name without its namespace (``{http://s3...}Part`` → ``Part``)."""
    return str(tag).rsplit("}", 1)[-1]


def parse_xml(data: bytes) -> object:
    try:
        return ElementTree.fromstring(data)
    except (ElementTree.ParseError, DefusedXmlException, ValueError):
        raise OssError(400, "MalformedXML") from None


async def delete_objects(ctx: Ctx) -> Response:
    ctx.bucket()
    try:
        data = await ctx.req.read_all(2 << 20)
    except ValueError:
        raise OssError(400, "MalformedXML", "The request body is too large.") from None
    root: Any = parse_xml(data)
    if local_name(getattr(root, "tag", "")) != "Delete":
        raise OssError(400, "MalformedXML")
    quiet = False
    keys = []
    for el in root:  # by local names: S3 clients send the S3 namespace, which OSS accepts
        name = local_name(el.tag)
        if name == "Quiet":
            quiet = (el.text or "false").strip().lower() == "true"
        elif name == "Object":
            keys += [c.text or "" for c in el if local_name(c.tag) == "Key"]
    if len(keys) > 1000:
        raise OssError(400, "MalformedXML", "Too many objects (max 1000).")
    url = _encoding(ctx)
    deleted = []
    from urllib.parse import unquote

    for key in keys:
        k = unquote(key) if url else key
        if not k:
            raise OssError(400, "InvalidObjectName")
        ctx.store.delete(ctx.bucket_name, k)
        deleted.append(k)
    body = "<DeleteResult>\n"
    if url:
        body += "  <EncodingType>url</EncodingType>\n"
    if not quiet:
        body += "".join(f"  <Deleted><Key>{_enc(k, url)}</Key></Deleted>\n" for k in deleted)
    body += "</DeleteResult>\n"
    return xml_response(body)


OPS: dict[str, Op] = {
    "ListObjectsV2": list_objects_v2,
    "ListObjects": list_objects_v1,
    "ListBuckets": list_buckets,
    "PutBucket": put_bucket,
    "DeleteBucket": delete_bucket,
    "HeadBucket": head_bucket,
    "GetBucketInfo": bucket_info,
    "GetBucketLocation": bucket_location,
    "DeleteObjects": delete_objects,
}
