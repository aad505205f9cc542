"""The UI's HTTP server: the standard library's threading server, as for the OTLP/HTTP receiver.

The UI is a handful of server-rendered pages for a few people at a time; a web framework would add
dependencies and nothing this needs. What the server owns is the safety of serving span data, which is
user input, to a browser:
- access: on a loopback address anyone on this machine may look; elsewhere every request needs the
  token (`Authorization: Bearer …`, or a browser opens `/?token=…` once and gets an HttpOnly cookie);
- DNS rebinding: without a token, a request whose `Host` is not this machine's loopback name is refused,
  so a web page on another origin cannot read the UI through a name it points at 127.0.0.1;
- cross-site requests: a POST must come from the UI's own origin (`Origin` / `Referer`);
- every page is sent with a Content-Security-Policy that runs only the UI's own script files, so
  even markup that escaped escaping could not run script.
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

log = logging.getLogger("tracelake.ui")

COOKIE = "tracelake_ui_token"
MAX_BODY = 1 << 20
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:;"
    " connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    form: dict[str, list[str]] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def arg(self, name: str, default: str = "") -> str:
        values = self.query.get(name) or self.form.get(name)
        return values[-1] if values else default


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def redirect(cls, location: str, status: int = 303) -> Response:
        return cls(status, b"", "text/plain", {"Location": location})

    @classmethod
    def text(cls, status: int, text: str) -> Response:
        return cls(status, text.encode(), "text/plain; charset=utf-8")


Handler = Callable[[Request], Response]


class UiServer:
    """Serves `handle` on host:port in a background thread."""

    def __init__(self, handle: Handler, host: str, port: int, auth_token: str | None = None) -> None:
        self.handle = handle
        self.auth_token = auth_token
        owner = self

        class Handler_(_UiHandler):
            server_owner = owner

        try:
            self._server = _Server((host, port), Handler_)
        except OSError as e:
            raise OSError(f"cannot listen for the UI on {host}:{port}: {e.strerror}") from None
        self.host = host
        self.port = self._server.server_address[1]
        self.address = f"{host}:{self.port}"
        self._thread: threading.Thread | None = None
        self.on_stop: Callable[[], None] | None = None  # releases what the pages hold (DuckDB, temp dirs)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="ui-http", daemon=True)
        self._thread.start()
        log.info("tracelake ui listening on %s", self.url)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join()
        if self.on_stop is not None:
            self.on_stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _UiHandler(BaseHTTPRequestHandler):
    server_owner: UiServer
    protocol_version = "HTTP/1.1"
    server_version = "tracelake-ui"

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        owner = self.server_owner
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            refusal = self._refusal(method, headers, query)
            if refusal is not None:
                self._send(refusal)
                return
            token = query.pop("token", None)
            if token and owner.auth_token:  # a browser's first visit: keep the token in a cookie, drop it from the URL
                target = url.path + ("?" + urlencode(query, doseq=True) if query else "")
                response = Response.redirect(target, 303)
                response.headers["Set-Cookie"] = f"{COOKIE}={owner.auth_token}; HttpOnly; SameSite=Strict; Path=/"
                self._send(response)
                return
            form: dict[str, list[str]] = {}
            if method == "POST":
                length = int(headers.get("content-length") or 0)
                if length > MAX_BODY:
                    self._send(Response.text(413, "request body too large"))
                    return
                form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"), keep_blank_values=True)
            response = owner.handle(Request(method, url.path, query, form, headers))
        except (ConnectionError, TimeoutError):
            self.close_connection = True
            return
        except Exception:
            log.exception("ui: error serving %s %s", method, url.path)
            response = Response.text(500, "internal error (see the server's log)")
        self._send(response, head=method == "HEAD")

    def _refusal(self, method: str, headers: dict[str, str], query: dict[str, list[str]]) -> Response | None:
        owner = self.server_owner
        token = owner.auth_token
        if token:
            offered = _offered_token(headers, query)
            if offered is None or not hmac.compare_digest(offered.encode(), token.encode()):
                return Response.text(401, "this UI needs its token: open /?token=<ui.auth_token>")
        else:
            host = headers.get("host", "")
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name not in LOOPBACK_NAMES and not name.startswith("127."):
                return Response.text(421, f"unexpected Host {host!r}: open the UI on 127.0.0.1 or localhost")
        if method == "POST":
            origin = headers.get("origin") or headers.get("referer") or ""
            mine = {f"http://{headers.get('host', '')}", f"https://{headers.get('host', '')}"}
            parts = urlsplit(origin)
            if f"{parts.scheme}://{parts.netloc}" not in mine:
                return Response.text(403, "cross-site POST refused")
        return None

    def _send(self, response: Response, head: bool = False) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "same-origin")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Frame-Options", "DENY")
        if "Cache-Control" not in response.headers:
            self.send_header("Cache-Control", "no-store")
        for k, v in response.headers.items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(response.body)


def _offered_token(headers: dict[str, str], query: dict[str, list[str]]) -> str | None:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    if query.get("token"):
        return query["token"][-1]
    cookie = SimpleCookie()
    try:
        cookie.load(headers.get("cookie", ""))
    except Exception:
        return None
    morsel = cookie.get(COOKIE)
    return morsel.value if morsel else None
