"""OTLP/HTTP `POST /v1/traces`, protobuf and JSON, gzip bodies (stdlib threading HTTP server).

Status codes follow the OTLP/HTTP specification: 200 (with partial_success when spans were
rejected), 400 undecodable, 413 too large, 415 unsupported content type, 429/503 with
Retry-After when the bus cannot take the data. Error bodies are `google.rpc.Status` in the
request's encoding.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import zlib
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler

from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from pipeline.bus.base import BusRefused
from pipeline.receiver.auth import Authenticator, Caller, TenantDenied, Unauthenticated
from pipeline.receiver.intake import Intake, InvalidRequest
from pipeline.receiver.otlp_json import parse_json, response_json
from pipeline.receiver.tls import HttpTlsEndpoint, TlsCapableServer

log = logging.getLogger("tracelake.receiver.http")

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


class RequestTooLarge(Exception):
    pass


class UnsupportedMedia(Exception):
    """415: the route does not speak this content type."""


# Extra routes (e.g. /v1/feedback) plug in here: path -> handler(body, content_type, caller) -> (status, body,
# ctype). They are JSON endpoints: their errors (400, 401, 403, 413, 415, 429, 503) are answered as JSON too.
Route = Callable[[bytes, str, Caller | None], tuple[int, bytes, str]]


class HttpReceiver:
    def __init__(
        self,
        intake: Intake,
        host: str,
        port: int,
        max_request_bytes: int,
        tls: HttpTlsEndpoint | None = None,
        auth: Authenticator | None = None,
    ) -> None:
        """`tls`: every connection is TLS (pipeline/receiver/tls.py). `auth`: bearer tokens required on every route."""
        self.intake = intake
        self.max_request_bytes = max_request_bytes
        self.auth = auth
        self.routes: dict[str, Route] = {}
        receiver = self

        class Handler(_OtlpHandler):
            owner = receiver

        try:
            self._server = TlsCapableServer((host, port), Handler, tls)
        except OSError as e:
            raise OSError(f"cannot listen for OTLP/HTTP on {host}:{port}: {e.strerror}") from None
        self.port = self._server.server_address[1]
        self.address = f"{host}:{self.port}"
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join()


class _OtlpHandler(BaseHTTPRequestHandler):
    owner: HttpReceiver
    protocol_version = "HTTP/1.1"
    server_version = "tracelake"

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    # -- plumbing ---------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, ctype: str, headers: dict[str, str] | None = None) -> None:
        if ctype == JSON:
            body = json.dumps({"code": _grpc_code(status), "message": message}).encode()
        else:
            ctype = PROTOBUF
            body = Status(code=_grpc_code(status), message=message).SerializeToString()
        self._send(status, body, ctype, headers)

    def _read_body(self) -> bytes:
        limit = self.owner.max_request_bytes
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = self._read_chunked(limit)
        else:
            length = int(self.headers.get("Content-Length") or 0)
            if length > limit:
                # drain nothing: tell the client and close, rather than read an oversized body
                self.close_connection = True
                raise RequestTooLarge(f"request body of {length} bytes exceeds max_request_bytes={limit}")
            body = self.rfile.read(length)
        encoding = self.headers.get("Content-Encoding", "").lower().strip()
        if encoding in ("", "identity"):
            return body
        if encoding != "gzip":
            raise InvalidRequest(f"unsupported Content-Encoding {encoding!r} (gzip and identity are)")
        dec = zlib.decompressobj(wbits=31)
        try:
            out = dec.decompress(body, limit + 1)
        except zlib.error as e:
            raise InvalidRequest(f"invalid gzip body: {e}") from None
        if len(out) > limit:
            raise RequestTooLarge(f"decompressed body exceeds max_request_bytes={limit}")
        return out

    def _read_chunked(self, limit: int) -> bytes:
        parts: list[bytes] = []
        size = 0
        while True:
            line = self.rfile.readline(65537)
            try:
                n = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                raise InvalidRequest("malformed chunked body") from None
            if n == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            size += n
            if size > limit:
                self.close_connection = True
                raise RequestTooLarge(f"request body exceeds max_request_bytes={limit}")
            parts.append(self.rfile.read(n))
            self.rfile.readline(3)

    # -- routes -----------------------------------------------------------------------------
    def _caller(self, reply_type: str, feedback: bool) -> tuple[bool, Caller | None]:
        """(go on?, who sent the request). Without a valid token: 401, the body read and dropped unparsed."""
        auth = self.owner.auth
        if auth is None:
            return True, None
        peer = f"{self.client_address[0]}:{self.client_address[1]}"
        try:
            caller = auth.authenticate(
                self.headers.get("Authorization"), self.headers.get("X-Scope-OrgID"), "http", peer
            )
            return True, caller
        except Unauthenticated as e:
            self.owner.intake.unauthenticated("http", feedback)
            self._discard_body()
            self._error(401, str(e), reply_type, {"WWW-Authenticate": 'Bearer realm="tracelake"'})
            return False, None

    def _discard_body(self) -> None:
        """Read an unwanted body (up to max_request_bytes) so the client reads the answer rather than a reset."""
        length = self.headers.get("Content-Length", "")
        if self.headers.get("Transfer-Encoding") or not length.isdigit() or int(length) > self.owner.max_request_bytes:
            self.close_connection = True
            return
        remaining = int(length)
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 16))
            if not chunk:
                break
            remaining -= len(chunk)

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        route = self.owner.routes.get(path)
        # OTLP answers in the request's encoding; the extra routes are JSON endpoints and always answer in JSON
        reply_type = JSON if ctype == JSON or route is not None else PROTOBUF
        if path != "/v1/traces" and route is None:
            self._error(404, f"no such endpoint {path}; OTLP traces go to /v1/traces", reply_type)
            return
        go_on, caller = self._caller(reply_type, feedback=route is not None)
        if not go_on:
            return
        try:
            body = self._read_body()
            if route is not None:
                status, payload, out_type = route(body, ctype, caller)
                self._send(status, payload, out_type)
                return
            self._export(body, ctype, caller)
        except TenantDenied as e:
            if self.owner.auth is not None:
                self.owner.auth.denied("http", f"{self.client_address[0]}:{self.client_address[1]}")
            self._error(403, str(e), reply_type)
        except RequestTooLarge as e:
            self._error(413, str(e), reply_type)
        except UnsupportedMedia as e:
            self._error(415, str(e), reply_type)
        except InvalidRequest as e:
            self.owner.intake.invalid("http", feedback=route is not None)
            self._error(400, str(e), reply_type)
        except BusRefused as e:
            retry = str(max(1, math.ceil(e.retry_after)))
            self._error(429 if e.exhausted else 503, e.reason, reply_type, {"Retry-After": retry})
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception as e:
            log.exception("unexpected error handling OTLP/HTTP export")
            self._error(500, f"internal error: {type(e).__name__}", reply_type)

    def _export(self, body: bytes, ctype: str, caller: Caller | None) -> None:
        intake = self.owner.intake
        rejected: list[str] = []
        if ctype == PROTOBUF:
            request = intake.parse(body)
            raw: bytes | None = body
        elif ctype == JSON:
            parsed = parse_json(body)
            request, rejected, raw = parsed.request, parsed.rejected, None
        else:
            self._error(415, f"unsupported Content-Type {ctype or '(none)'!r}; use {PROTOBUF} or {JSON}", PROTOBUF)
            return
        result = intake.accept(request, raw, "http", rejected_earlier=rejected, caller=caller)
        resp = ExportTraceServiceResponse()
        if result.rejected:
            resp.partial_success.rejected_spans = result.rejected
            resp.partial_success.error_message = result.message
        if ctype == JSON:
            self._send(200, response_json(resp), JSON)
        else:
            self._send(200, resp.SerializeToString(), PROTOBUF)

    def do_GET(self) -> None:
        self._error(405, "use POST", PROTOBUF, {"Allow": "POST"})


def _grpc_code(http_status: int) -> int:
    return {
        400: 3,  # INVALID_ARGUMENT
        401: 16,  # UNAUTHENTICATED
        403: 7,  # PERMISSION_DENIED
        404: 5,  # NOT_FOUND
        405: 12,  # UNIMPLEMENTED
        413: 8,  # RESOURCE_EXHAUSTED
        415: 3,
        429: 8,
        503: 14,  # UNAVAILABLE
    }.get(http_status, 13 if http_status >= 500 else 2)
