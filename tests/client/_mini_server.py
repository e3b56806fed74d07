"""A small OSS-shaped HTTP/1.1 server for the client tests, on 127.0.0.1 in a thread.

Why a thread and the stdlib server: the client under test runs on the test's trio loop; a
server on the same loop would be starved by a client that never yields mid-body. It verifies
V4 signatures (so a client that signs the wrong resource fails), serves ranges with OSS's
`x-oss-range-behavior: standard` rules, ListObjectsV2 with url encoding and pagination, error
XML (and the base64 `x-oss-err` header on HEAD), and counted faults:

    server.faults.append(Fault(op="GET", key="k", status=503, code="ServiceUnavailable"))
    server.faults.append(Fault(op="GET", key="k", reset_after=1000))   # close mid-body
    server.faults.append(Fault(op="GET", key="k", ignore_range=True))  # 200, whole object
    server.faults.append(Fault(op="GET", key="k", drip=65536, drip_s=0.02))  # slow body

Each fault fires `times` times (default once), in order of addition.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from ossmount.crc64 import crc64
from ossmount.oss import signing


@dataclass
class Fault:
    op: str
    key: str | None = None
    status: int = 0
    code: str = ""
    times: int = 1
    reset_after: int | None = None  # close after N body bytes: FIN, or RST if `rst`
    rst: bool = False
    stall_after: int | None = None
    stall_s: float = 0.0
    ignore_range: bool = False
    retry_after: str | None = None
    cap_range: int | None = None  # answer a Range with at most this many bytes (valid 206)
    date_offset_s: float = 0.0  # the server's Date header runs this far ahead of us
    replace_with: bytes | None = None  # after firing, the object gets these bytes (new ETag)
    drip: int = 0  # send the body in writes of this many bytes...
    drip_s: float = 0.0  # ...with this pause before each


@dataclass
class Obj:
    data: bytes
    etag: str
    mtime: float
    crc: int


@dataclass
class Logged:
    method: str
    key: str | None
    query: dict[str, str]
    headers: dict[str, str]
    status: int = 0
    peer: tuple[str, int] | None = None


@dataclass
class State:
    bucket: str
    ak: str
    sk: str
    objects: dict[str, Obj] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    requests: list[Logged] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _xml_error(code: str, message: str, rid: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
        f"<Message>{message}</Message><RequestId>{rid}</RequestId>"
        f"<HostId>127.0.0.1</HostId><EC>0000-00000000</EC></Error>"
    ).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def date_time_string(self, timestamp: float | None = None) -> str:
        return formatdate(time.time() + getattr(self, "_date_offset", 0.0), usegmt=True)

    # -- plumbing ---------------------------------------------------------------------------

    def _parse(self) -> tuple[str | None, str | None, list[tuple[str, str]]]:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = parse_qsl(parts.query, keep_blank_values=True)
        bucket, _, key = path.lstrip("/").partition("/")
        return bucket or None, key or None, query

    def _send(
        self,
        status: int,
        headers: dict[str, str],
        body: bytes = b"",
        *,
        head: bool = False,
        length: int | None = None,
    ) -> None:
        self.send_response(status)
        rid = headers.pop("x-oss-request-id", "5F0000000000000000000001")
        self.send_header("x-oss-request-id", rid)
        self.send_header("Server", "AliyunOSS")  # send_response already sent Date
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def _error(
        self,
        status: int,
        code: str,
        message: str,
        *,
        head: bool,
        extra: dict[str, str] | None = None,
    ) -> None:
        xml = _xml_error(code, message, "5F0000000000000000000002")
        headers = {"Content-Type": "application/xml", "x-oss-ec": "0000-00000000"}
        headers.update(extra or {})
        if head:
            headers["x-oss-err"] = base64.b64encode(xml).decode()
            self._send(status, headers, b"", head=True, length=0)
        else:
            self._send(status, headers, xml)
        self._logged.status = status

    def _check_auth(
        self, bucket: str | None, key: str | None, query: list[tuple[str, str]]
    ) -> str | None:
        st = self.server.state
        auth = self.headers.get("Authorization", "")
        if not auth:
            return "AccessDenied"
        if not auth.startswith("OSS4-HMAC-SHA256 "):
            return "InvalidArgument"
        fields = dict(p.strip().split("=", 1) for p in auth[len("OSS4-HMAC-SHA256 ") :].split(","))
        ak, _, scope = fields.get("Credential", "").partition("/")
        if ak != st.ak:
            return "InvalidAccessKeyId"
        _date, region, product, _ = scope.split("/")
        headers = dict(self.headers.items())
        canonical = signing.v4_canonical_request(
            self.command,
            bucket,
            key,
            query,
            headers,
            [h for h in fields.get("AdditionalHeaders", "").split(";") if h],
        )
        timestamp = self.headers.get("x-oss-date", "")
        expected = signing.v4_signature(st.sk, timestamp, region, canonical, product)
        if expected != fields.get("Signature"):
            return "SignatureDoesNotMatch"
        return None

    def _fault(self, op: str, key: str | None) -> Fault | None:
        st = self.server.state
        with st.lock:
            for f in st.faults:
                if f.op == op and (f.key is None or f.key == key) and f.times > 0:
                    f.times -= 1
                    return f
        return None

    def _handle(self, head: bool = False) -> None:
        bucket, key, query = self._parse()
        st = self.server.state
        self._logged = Logged(
            self.command, key, dict(query), dict(self.headers.items()), peer=self.client_address
        )
        with st.lock:
            st.requests.append(self._logged)
        if bucket != st.bucket:
            self._error(404, "NoSuchBucket", "The specified bucket does not exist.", head=head)
            return
        problem = self._check_auth(bucket, key, query)
        if problem:
            status = 400 if problem == "InvalidArgument" else 403
            self._error(status, problem, "auth failed", head=head)
            return
        op = "LIST" if key is None else self.command
        fault = self._fault(op, key)
        if fault is not None and fault.status:
            self._date_offset = fault.date_offset_s
            extra = {"Retry-After": fault.retry_after} if fault.retry_after else None
            self._error(fault.status, fault.code, "injected", head=head, extra=extra)
            return
        if key is None:
            self._list(query)
            return
        obj = st.objects.get(key)
        if obj is None:
            self._error(404, "NoSuchKey", "The specified key does not exist.", head=head)
            return
        if_match = self.headers.get("If-Match")
        if if_match is not None and if_match != obj.etag:
            self._error(
                412,
                "PreconditionFailed",
                "At least one of the pre-conditions you specified did not hold.",
                head=head,
            )
            return
        meta = {
            "ETag": obj.etag,
            "Last-Modified": formatdate(obj.mtime, usegmt=True),
            "x-oss-hash-crc64ecma": str(obj.crc),
            "x-oss-object-type": "Normal",
            "x-oss-storage-class": "Standard",
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        size = len(obj.data)
        rng = self.headers.get("Range")
        status, first, last = 200, 0, size - 1
        if rng and not (fault and fault.ignore_range) and not head:
            spec = rng.removeprefix("bytes=")
            a, _, b = spec.partition("-")
            first = int(a)
            last = min(int(b), size - 1) if b else size - 1
            if fault is not None and fault.cap_range is not None:
                last = min(last, first + fault.cap_range - 1)
            if first >= size:
                self._error(
                    416, "InvalidRange", "The requested range cannot be satisfied", head=head
                )
                return
            status = 206
            meta["Content-Range"] = f"bytes {first}-{last}/{size}"
        self._logged.status = status
        body = obj.data[first : last + 1]
        if head:
            self._send(200, meta, b"", head=True, length=size)
            return
        if fault is not None and (fault.reset_after is not None or fault.stall_after is not None):
            cut = fault.reset_after if fault.reset_after is not None else fault.stall_after
            assert cut is not None
            self._send(status, meta, b"", length=len(body))
            self.wfile.write(body[:cut])
            self.wfile.flush()
            if fault.stall_after is not None:
                time.sleep(fault.stall_s)
            if fault.replace_with is not None:  # before the close, so the resume sees it
                self.server.owner.put_object(key, fault.replace_with)
            if fault.rst:  # RST: the kernel may drop bytes the client had not read yet
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            self.connection.close()
            return
        self._send(status, meta, b"", length=len(body))
        view = memoryview(body)
        if fault is not None and fault.drip:
            self.wfile.flush()
            for i in range(0, len(view), fault.drip):
                time.sleep(fault.drip_s)
                self.wfile.write(view[i : i + fault.drip])
                self.wfile.flush()
            return
        for i in range(0, len(view), 1 << 20):
            self.wfile.write(view[i : i + (1 << 20)])

    def _list(self, query: list[tuple[str, str]]) -> None:
        st = self.server.state
        q = dict(query)
        prefix = q.get("prefix", "")
        delimiter = q.get("delimiter", "")
        max_keys = int(q.get("max-keys", "100"))
        if not 1 <= max_keys <= 1000:
            self._error(400, "InvalidArgument", "max-keys", head=False)
            return
        after = q.get("continuation-token") or q.get("start-after") or ""
        entries: list[tuple[str, bool]] = []
        seen_prefixes: set[str] = set()
        for key in sorted(st.objects):
            if not key.startswith(prefix) or key <= after:
                continue
            if delimiter:
                cut = key.find(delimiter, len(prefix))
                if cut >= 0:
                    cp = key[: cut + len(delimiter)]
                    if cp in seen_prefixes or cp <= after:
                        continue
                    seen_prefixes.add(cp)
                    entries.append((cp, True))
                    continue
            entries.append((key, False))
        page, rest = entries[:max_keys], entries[max_keys:]

        def enc(s: str) -> str:
            return quote(s, safe="")

        xml = ['<?xml version="1.0" encoding="UTF-8"?><ListBucketResult>']
        xml.append(f"<Name>{st.bucket}</Name><Prefix>{enc(prefix)}</Prefix>")
        xml.append(f"<MaxKeys>{max_keys}</MaxKeys><EncodingType>url</EncodingType>")
        xml.append(f"<IsTruncated>{'true' if rest else 'false'}</IsTruncated>")
        if rest:
            xml.append(f"<NextContinuationToken>{enc(page[-1][0])}</NextContinuationToken>")
        for name, is_prefix in page:
            if is_prefix:
                xml.append(f"<CommonPrefixes><Prefix>{enc(name)}</Prefix></CommonPrefixes>")
            else:
                o = st.objects[name]
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(o.mtime))
                xml.append(
                    f"<Contents><Key>{enc(name)}</Key><LastModified>{stamp}</LastModified>"
                    f"<ETag>{o.etag}</ETag><Type>Normal</Type><Size>{len(o.data)}</Size>"
                    f"<StorageClass>Standard</StorageClass></Contents>"
                )
        xml.append(f"<KeyCount>{len(page)}</KeyCount></ListBucketResult>")
        self._logged.status = 200
        self._send(200, {"Content-Type": "application/xml"}, "".join(xml).encode())

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle(head=True)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: State
    owner: MiniServer

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that hang up mid-reply are what the fault tests are about


class MiniServer:
    """Start with `with MiniServer(...) as srv:`; `srv.endpoint` is http://127.0.0.1:PORT."""

    def __init__(self, bucket: str = "b", ak: str = "ak", sk: str = "sk") -> None:
        self.state = State(bucket, ak, sk)
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = self.state
        self._server.owner = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def faults(self) -> list[Fault]:
        return self.state.faults

    @property
    def requests(self) -> list[Logged]:
        return self.state.requests

    def put_object(self, key: str, data: bytes, mtime: float = 1_700_000_000.0) -> Obj:
        etag = '"' + hashlib.md5(data).hexdigest().upper() + '"'
        obj = Obj(data, etag, mtime, crc64(data))
        self.state.objects[key] = obj
        return obj

    def start(self) -> MiniServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> MiniServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
