"""OSS request dispatch: addressing, operation naming, auth, faults, common headers, the log.

Each request goes: resolve (bucket, key) from Host + path → name the operation → verify the
signature (auth.py) → count fault rules (faults.py) → run the operation (objects.py,
listing.py, multipart.py) → add the headers every OSS response carries (§8.1) → record.

Errors are ``OssError`` exceptions turned into the §4.1 XML here; HEAD errors have no body and
carry the XML base64-encoded in ``x-oss-err`` (§8.4).

The request log is appended to *before* the response is written, with the planned body size,
and corrected if sending stops short; so a client that has its response can already see the
record (no race in tests), and ``bytes_sent`` is final once the connection has moved on.
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from urllib.parse import unquote_to_bytes

import trio

from .auth import Verifier
from .faults import FaultRule, Faults, parse_rule
from .receive import upload_faults
from .request import ConnectionDone, Request
from .response import Response, SendPlan, http_date
from .shaping import Shaping
from .store import Bucket, Store, valid_bucket_name, valid_key
from .xml import OssError, error_header, error_xml

__all__ = ["App", "Ctx", "RequestLog", "RequestRecord"]

ADMIN_PREFIX = "/_emulator/"


@dataclass
class RequestRecord:
    """One request as the emulator saw it. ``range`` is the served (first, last) byte pair."""

    op: str
    bucket: str
    key: str
    range: tuple[int, int] | None
    status: int
    bytes_sent: int
    sig: str
    method: str = ""
    code: str | None = None
    request_id: str = ""
    range_header: str | None = None
    completed: bool = True
    time: float = 0.0


class RequestLog(list[RequestRecord]):
    """The list of records; ``clear()`` resets it. Appends come from the emulator thread."""

    def ops(self, op: str | None = None) -> list[RequestRecord]:
        return [r for r in self if op is None or r.op == op]


@dataclass
class Ctx:
    """What an operation handler gets: the request, the resolved target and shared state."""

    app: App
    req: Request
    op: str
    bucket_name: str
    key: str
    request_id: str
    now: float
    sig: str = "anon"
    faults: list[FaultRule] = field(default_factory=list)
    served_range: tuple[int, int] | None = None

    @property
    def store(self) -> Store:
        return self.app.store

    def bucket(self) -> Bucket:
        b = self.app.store.bucket(self.bucket_name)
        if b is None:
            raise OssError(404, "NoSuchBucket", extra={"BucketName": self.bucket_name})
        return b


Op = Callable[[Ctx], Awaitable[Response]]


@functools.lru_cache(maxsize=64)  # one parse per Host value, not per request (~2 us each)
def _is_ip_host(host: str) -> bool:
    h = host.strip("[]")
    if h == "localhost":
        return True
    try:
        ipaddress.ip_address(h)
    except ValueError:
        return False
    return True


# S3 spellings OSS accepts for the same request headers (rclone, s3fs: AWS SDKs).
_S3_ALIASES = (
    "copy-source",
    "copy-source-range",
    "copy-source-if-match",
    "copy-source-if-none-match",
    "copy-source-if-modified-since",
    "copy-source-if-unmodified-since",
    "metadata-directive",
)


def s3_aliases(req: Request) -> None:
    """Give ``x-amz-*`` request headers their ``x-oss-*`` names, unless those are present.

    Run after the signature check (which must see the headers as sent). User metadata
    ``x-amz-meta-*`` becomes ``x-oss-meta-*``: one namespace, read back under either name.
    """
    h = req.headers
    for name in _S3_ALIASES:
        v = h.get("x-amz-" + name)
        if v is not None and ("x-oss-" + name) not in h:
            h["x-oss-" + name] = v
    for name, v in list(h.items()):
        if name.startswith("x-amz-meta-"):
            h.setdefault("x-oss-meta-" + name[len("x-amz-meta-") :], v)


def _is_copy(req: Request) -> bool:
    return "x-oss-copy-source" in req.headers or "x-amz-copy-source" in req.headers


def name_operation(method: str, has_key: bool, has_bucket: bool, req: Request) -> str:
    """The OSS API name of a request, as used in fault rules and the log."""
    q = req.has_q
    if not has_bucket:
        return "ListBuckets" if method == "GET" else "Unknown"
    if not has_key:
        if method == "GET":
            if req.qget("list-type") == "2":
                return "ListObjectsV2"
            if q("uploads"):
                return "ListMultipartUploads"
            if q("bucketInfo"):
                return "GetBucketInfo"
            if q("location"):
                return "GetBucketLocation"
            return "ListObjects"
        if method == "HEAD":
            return "HeadBucket"
        if method == "PUT":
            return "PutBucket"
        if method == "DELETE":
            return "DeleteBucket"
        if method == "POST" and q("delete"):
            return "DeleteObjects"
        return "Unknown"
    if method == "GET":
        if q("symlink"):
            return "GetSymlink"
        if q("uploadId"):
            return "ListParts"
        return "GetObject"
    if method == "HEAD":
        return "GetObjectMeta" if q("objectMeta") else "HeadObject"
    if method == "PUT":
        if q("symlink"):
            return "PutSymlink"
        if q("partNumber") and q("uploadId"):
            return "UploadPartCopy" if _is_copy(req) else "UploadPart"
        if _is_copy(req):
            return "CopyObject"
        return "PutObject"
    if method == "POST":
        if q("uploads"):
            return "InitiateMultipartUpload"
        if q("uploadId"):
            return "CompleteMultipartUpload"
        if q("append"):
            return "AppendObject"
        if q("restore"):
            return "RestoreObject"
        return "PostObject"
    if method == "DELETE":
        return "AbortMultipartUpload" if q("uploadId") else "DeleteObject"
    return "Unknown"


class App:
    """OSS semantics over a ``Store``. Configuration is read-only after construction."""

    def __init__(
        self,
        store: Store,
        verifier: Verifier,
        faults: Faults,
        shaping: Shaping,
        requests: RequestLog,
        *,
        region: str = "cn-hangzhou",
        path_style: bool | None = None,
        cname: dict[str, str] | None = None,
        admin: bool = True,
        fast_etag: bool = False,
    ) -> None:
        self.store = store
        self.verifier = verifier
        self.faults = faults
        self.shaping = shaping
        self.requests = requests
        self.region = region
        self.path_style = path_style
        self.cname = dict(cname or {})
        self.admin = admin
        self.fast_etag = fast_etag  # see receive.py
        # Server-side copies (objects.copy_in_thread) run on as many threads as there are
        # CPUs: they are CPU-bound, and more threads only thrash (128 copies of 8 MiB: 0.87
        # s/GiB on 2 threads, 1.17 on 4, 1.40 on 16, median of 3 on 2 cores).
        self.copiers = trio.CapacityLimiter(os.cpu_count() or 1)
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(4).hex().upper()
        # the op tables; they import Ctx from here
        from . import listing, multipart, objects, uploads

        self.ops: dict[str, Op] = {
            **objects.OPS,
            **listing.OPS,
            **multipart.OPS,
            **uploads.OPS,
        }

    def request_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids):016X}"

    # -- addressing ----------------------------------------------------------------------
    def resolve(self, req: Request) -> tuple[str, str]:
        """(bucket, key) from Host and path: virtual-hosted, CNAME or path-style (§8.3)."""
        host = req.header("host").rsplit(":", 1)[0] if "]" not in req.header("host") else ""
        host = host.lower()
        try:
            raw = unquote_to_bytes(req.path)
            path = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise OssError(
                400, "InvalidObjectName", "The object name is not valid UTF-8."
            ) from None
        if not path.startswith("/"):
            raise OssError(400, "InvalidRequest", "Bad request target.")
        rest = path[1:]
        if host in self.cname:
            return self.cname[host], rest
        if host and not _is_ip_host(host):
            first, _, remainder = host.partition(".")
            if remainder and (
                self.store.bucket(first) is not None or remainder.startswith(("oss-", "localhost"))
            ):
                return first, rest  # virtual-hosted: bucket.endpoint/key
            if self.path_style is not True:
                # A named service endpoint: real OSS refuses path-style bucket access there.
                if rest:
                    raise OssError(403, "SecondLevelDomainForbidden")
                return "", ""
        elif self.path_style is False:
            raise OssError(403, "SecondLevelDomainForbidden")
        bucket, _, key = rest.partition("/")
        return bucket, key

    # -- the request ---------------------------------------------------------------------
    async def handle(self, req: Request) -> Response:
        rid = self.request_id()
        now = time.time()
        if self.admin and req.path.startswith(ADMIN_PREFIX):
            return await self._admin(req, rid)
        ctx = Ctx(self, req, "Unknown", "", "", rid, now)
        try:
            bucket, key = self.resolve(req)
            ctx.bucket_name, ctx.key = bucket, key
            ctx.op = name_operation(req.method, bool(key), bool(bucket), req)
            if bucket and not valid_bucket_name(bucket):
                raise OssError(400, "InvalidBucketName", extra={"BucketName": bucket})
            if key and not valid_key(key):
                raise OssError(400, "InvalidObjectName")
            if self.verifier.needs_body_hash(req):
                try:
                    await req.prebuffer(64 << 20)
                except ValueError:
                    raise OssError(400, "InvalidArgument", "Body too large to hash.") from None
            ctx.sig = self.verifier.verify(req, bucket, key, ctx.op, now)
            s3_aliases(req)
            ctx.faults = self.faults.fire(ctx.op, bucket, key)
            latency = 0.0
            for rule in ctx.faults:
                if rule.action == "error":
                    raise OssError(rule.status, rule.code, rule.message)
                if rule.action == "latency":
                    latency += rule.seconds
                if rule.action == "replace":
                    from .objects import replace_object

                    replace_object(ctx)
            op = self.ops.get(ctx.op)
            if op is None:
                raise OssError(501, "NotImplemented", f"{ctx.op} is not implemented")
            try:
                resp = await op(ctx)
            except ConnectionDone:
                # an upload fault ended the connection mid-request: log it, answer nothing
                cut = Response(0, [], error_code="ConnectionCut")
                self._finish(ctx, cut)
                cut.on_sent(0, False)  # type: ignore[misc]
                raise
            resp.latency_s += latency
            self._apply_body_faults(ctx, resp)
        except OssError as err:
            resp = self.error_response(err, rid, req.header("host"), req.method == "HEAD")
        self._finish(ctx, resp)
        return resp

    def _apply_body_faults(self, ctx: Ctx, resp: Response) -> None:
        plan = SendPlan()
        on_request = {id(r) for r in upload_faults(ctx)}  # they acted on the request body
        for rule in ctx.faults:
            if id(rule) in on_request:
                continue
            a = rule.action
            if a in ("reset", "truncate"):
                plan.cut_at, plan.cut_kind = rule.after, a
            elif a == "stall":
                plan.stall_at, plan.stall_s = rule.after, rule.seconds
            elif a == "flip":
                plan.flip_at = rule.after
            elif a in ("wrong-crc", "missing-crc"):
                hs = [(k, v) for k, v in resp.headers if k != "x-oss-hash-crc64ecma"]
                if a == "wrong-crc":
                    old = dict(resp.headers).get("x-oss-hash-crc64ecma", "0")
                    hs.append(("x-oss-hash-crc64ecma", str(int(old) ^ 0x5A5A)))
                resp.headers = hs
            elif a == "gzip":
                from .objects import gzip_response

                gzip_response(ctx, resp)
        if plan.cut_at is not None or plan.stall_at is not None or plan.flip_at is not None:
            if resp.stream is None and not resp.head_only and resp.body:
                # small bodies (XML) get the same treatment through a memory body
                from .store import MemoryBody

                resp.stream, resp.offset, resp.length = MemoryBody(resp.body), 0, len(resp.body)
                resp.body = b""
            resp.plan = plan

    def error_response(self, err: OssError, rid: str, host: str, head: bool) -> Response:
        body = error_xml(err, rid, host or "localhost")
        headers = [("Content-Type", "application/xml"), ("x-oss-ec", err.ec), *err.headers]
        if head:
            headers.append(("x-oss-err", error_header(body)))
            body = b""
        return Response(err.status, headers, body, error_code=err.code)

    def _finish(self, ctx: Ctx, resp: Response) -> None:
        resp.headers[:0] = [
            ("Server", "AliyunOSS"),
            ("Date", http_date()),
            ("x-oss-request-id", ctx.request_id),
            ("x-oss-server-time", str(int((time.time() - ctx.now) * 1000))),
        ]
        if "aws" in ctx.sig:
            # An S3 client reads its metadata back as x-amz-meta-*; OSS answers it so.
            resp.headers += [
                ("x-amz-meta-" + k[len("x-oss-meta-") :], v)
                for k, v in resp.headers
                if k.startswith("x-oss-meta-")
            ]
        planned = len(resp.body) if resp.stream is None else (0 if resp.head_only else resp.length)
        rec = RequestRecord(
            op=ctx.op,
            bucket=ctx.bucket_name,
            key=ctx.key,
            range=ctx.served_range,
            status=resp.status,
            bytes_sent=planned,
            sig=ctx.sig,
            method=ctx.req.method,
            code=resp.error_code,
            request_id=ctx.request_id,
            range_header=ctx.req.headers.get("range"),
            time=ctx.now,
        )
        prev = resp.on_sent

        def on_sent(n: int, completed: bool) -> None:
            rec.bytes_sent = n
            rec.completed = completed
            if prev is not None:
                prev(n, completed)

        resp.on_sent = on_sent
        self.requests.append(rec)

    # -- admin endpoint ------------------------------------------------------------------
    async def _admin(self, req: Request, rid: str) -> Response:
        """``/_emulator/faults`` (GET list, POST add spec, DELETE clear), ``/requests``,
        ``/shaping`` (POST ?latency_s=&conn_bps=&total_bps=), ``/health``. No auth: it is a
        test tool; bind to loopback."""
        what = req.path[len(ADMIN_PREFIX) :].strip("/")
        status, out = 200, {}  # type: tuple[int, object]
        try:
            if what == "faults" and req.method == "GET":
                out = [r.to_dict() for r in self.faults]
            elif what == "faults" and req.method in ("POST", "PUT"):
                spec = (await req.read_all()).decode("utf-8").strip() or req.qget("rule") or ""
                rules = []
                for line in spec.splitlines():
                    if line.strip():
                        rules.append(self.faults.add(parse_rule(line)).to_dict())
                out = rules
            elif what == "faults" and req.method == "DELETE":
                self.faults.clear()
                out = []
            elif what == "requests" and req.method == "GET":
                out = [asdict(r) for r in list(self.requests)]
            elif what == "requests" and req.method == "DELETE":
                self.requests.clear()
                out = []
            elif what == "shaping":
                if req.method in ("POST", "PUT"):
                    vals = {k: float(v) for k, v in req.query}
                    self.shaping.set(**vals)
                out = {
                    "latency_s": self.shaping.latency_s,
                    "conn_bps": self.shaping.conn_bps,
                    "total_bps": self.shaping.total_bps,
                }
            elif what == "health":
                out = {"ok": True}
            else:
                status, out = 404, {"error": f"no admin resource {what!r}"}
        except (ValueError, TypeError) as exc:
            status, out = 400, {"error": str(exc)}
        body = (json.dumps(out) + "\n").encode()
        return Response(
            status,
            [("Content-Type", "application/json"), ("x-oss-request-id", rid)],
            body,
        )
