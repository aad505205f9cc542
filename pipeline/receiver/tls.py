"""TLS and mTLS for the receivers and the telemetry endpoint, with certificates that rotate.

One `ServerCertificates` per `tls` block holds what its files say. The files are read at start
(a bad file stops the start, naming the key and the file) and again when they change, checked at
most every `reload_interval` when a client connects: connections already open keep the certificate
they shook hands with, new ones get the new one. Files that do not load (a rotation caught half
written: a new certificate with the old key) leave the previous certificate in place and are tried
again at the next check.

- gRPC: `grpc.dynamic_ssl_server_credentials` asks `fetch()` before every handshake.
- HTTP (`HttpTlsEndpoint`): the listening socket stays plain; each accepted connection is wrapped
  with the current `ssl.SSLContext` in its own thread, so a slow handshake never holds up the
  accept loop. A client speaking plain HTTP to a TLS port gets a plain-text 400 saying so.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import socket
import ssl
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc

from core import metrics
from pipeline.config.model import TlsConfig
from pipeline.receiver.watched_files import WatchedFiles

log = logging.getLogger("tracelake.tls")

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
# How long a client may take to start and finish its handshake before the connection is dropped.
HANDSHAKE_TIMEOUT = 10.0


class TlsError(Exception):
    """A `tls` block whose files cannot be used; the message names the key and the file."""


@dataclass(frozen=True)
class CertificateMaterial:
    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None
    context: ssl.SSLContext  # a server context built from exactly these files
    fingerprint: str  # SHA-256 of the leaf certificate, for the log


def _read(path: str, key: str, where: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as e:
        raise TlsError(f"{where}.{key}: cannot read {path}: {e.strerror}") from None


def _fingerprint(cert_chain: bytes) -> str:
    pem = cert_chain.decode("ascii", "replace")
    start = pem.find("-----BEGIN CERTIFICATE-----")
    end = pem.find("-----END CERTIFICATE-----", start)
    if start < 0 or end < 0:
        return "?"
    der = ssl.PEM_cert_to_DER_cert(pem[start : end + len("-----END CERTIFICATE-----")])
    return hashlib.sha256(der).hexdigest()[:16]


def load_material(config: TlsConfig, where: str) -> CertificateMaterial:
    """Read and check the files of a `tls` block (the key must match the certificate)."""
    for _attempt in range(3):  # files rewritten while being read: read them again
        cert = _read(config.cert_file, "cert_file", where)
        key = _read(config.key_file, "key_file", where)
        ca = _read(config.client_ca_file, "client_ca_file", where) if config.client_ca_file else None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = _VERSIONS[config.min_version]
        try:
            context.load_cert_chain(config.cert_file, config.key_file)
        except ssl.SSLError as e:
            raise TlsError(
                f"{where}: cert_file {config.cert_file} and key_file {config.key_file} do not make a "
                f"certificate and its private key ({e.reason or e})"
            ) from None
        except OSError as e:
            raise TlsError(f"{where}: cannot load {config.cert_file} / {config.key_file}: {e.strerror}") from None
        if config.client_ca_file:
            try:
                context.load_verify_locations(cafile=config.client_ca_file)
            except (ssl.SSLError, OSError) as e:
                raise TlsError(f"{where}.client_ca_file: {config.client_ca_file} holds no usable CA: {e}") from None
            context.verify_mode = ssl.CERT_REQUIRED
        same = (
            _read(config.cert_file, "cert_file", where) == cert
            and _read(config.key_file, "key_file", where) == key
            and (ca is None or _read(config.client_ca_file or "", "client_ca_file", where) == ca)
        )
        if same:
            return CertificateMaterial(cert, key, ca, context, _fingerprint(cert))
    raise TlsError(f"{where}: the files kept changing while being read")


class TlsStats:
    """Handshakes that failed, by listener and reason; certificate reloads, by listener."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.failures: Counter[tuple[str, str]] = Counter()
        self.reloads: Counter[str] = Counter()

    def failed(self, listener: str, reason: str) -> None:
        with self._lock:
            self.failures[(listener, reason)] += 1

    def reloaded(self, listener: str) -> None:
        with self._lock:
            self.reloads[listener] += 1

    def metrics(self) -> list[metrics.Sample]:
        out = [
            metrics.counter(
                "tracelake_tls_handshake_failures",
                "TLS connections refused before any request (reason: plaintext, handshake), by listener",
                n,
                listener=listener,
                reason=reason,
            )
            for (listener, reason), n in sorted(self.failures.items())
        ]
        out += [
            metrics.counter("tracelake_tls_reloads", "certificates reloaded after their files changed", n, listener=lis)
            for lis, n in sorted(self.reloads.items())
        ]
        return out


class ServerCertificates:
    """The current certificate of one listener, reloaded when its files change."""

    def __init__(self, config: TlsConfig, where: str, listener: str, stats: TlsStats) -> None:
        self.config = config
        self.where = where
        self.listener = listener
        self.stats = stats
        self.current = load_material(config, where)
        files = [config.cert_file, config.key_file, *([config.client_ca_file] if config.client_ca_file else [])]
        self._watch = WatchedFiles(files, config.reload_interval)
        log.info("%s: serving certificate %s", where, self.current.fingerprint)

    @property
    def mutual(self) -> bool:
        return self.config.client_ca_file is not None

    def refresh(self) -> CertificateMaterial | None:
        """The new material when the files changed and load, else None (also when they fail to load)."""
        if not self._watch.due():
            return None
        try:
            material = load_material(self.config, self.where)
        except TlsError as e:
            self._watch.retry_soon()
            log.warning("%s: keeping the current certificate: %s", self.where, e)
            return None
        old = self.current
        if (material.cert_chain, material.private_key, material.client_ca) == (
            old.cert_chain,
            old.private_key,
            old.client_ca,
        ):
            return None  # touched, not changed
        self.current = material
        self.stats.reloaded(self.listener)
        log.info("%s: reloaded %s: now serving %s", self.where, self.config.cert_file, material.fingerprint)
        return material


def grpc_server_credentials(certs: ServerCertificates) -> grpc.ServerCredentials:
    """Credentials whose certificate gRPC asks for before every handshake (rotation without restart)."""

    def configuration(m: CertificateMaterial) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(m.private_key, m.cert_chain)], m.client_ca)

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        try:
            material = certs.refresh()
        except Exception:  # an exception here fails the client's handshake: keep serving the old certificate
            log.exception("%s: checking the certificate files failed", certs.where)
            return None
        return None if material is None else configuration(material)

    return grpc.dynamic_ssl_server_credentials(
        configuration(certs.current),
        fetch,  # type: ignore[arg-type]  # grpcio documents None as "no change"; its stub does not allow it
        require_client_authentication=certs.mutual,
    )


_PLAINTEXT_ANSWER = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
)


class HttpTlsEndpoint:
    """Server side of TLS for a threading HTTP server: wraps each accepted connection."""

    def __init__(self, certs: ServerCertificates) -> None:
        self.certs = certs

    def accept(self, sock: socket.socket, peer: str) -> ssl.SSLSocket | None:
        """The connection after a successful handshake, or None (answered or dropped, and counted)."""
        certs = self.certs
        certs.refresh()
        sock.settimeout(HANDSHAKE_TIMEOUT)
        try:
            first = sock.recv(1, socket.MSG_PEEK)
        except OSError:
            return None
        if first and first.isalpha():  # "POST /v1/traces HTTP/1.1": not a TLS ClientHello (0x16)
            certs.stats.failed(certs.listener, "plaintext")
            self._answer_plaintext(sock)
            return None
        try:
            tls = certs.current.context.wrap_socket(sock, server_side=True)
        except (ssl.SSLError, OSError) as e:
            certs.stats.failed(certs.listener, "handshake")
            log.info("%s: TLS handshake with %s failed: %s", certs.where, peer, getattr(e, "reason", None) or e)
            return None
        tls.settimeout(None)
        return tls

    def _answer_plaintext(self, sock: socket.socket) -> None:
        body = b'{"code": 3, "message": "this port speaks TLS: send to https://, not http://"}'
        try:
            sock.sendall(_PLAINTEXT_ANSWER % (len(body), body))
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(1.0)
            for _ in range(64):  # read what the client still sends, so closing does not reset the answer away
                if not sock.recv(65536):
                    break
        except OSError:
            pass


class TlsCapableServer(ThreadingHTTPServer):
    """A threading HTTP server whose connections are TLS when `tls` is given (handshake in the connection's thread)."""

    daemon_threads = True
    allow_reuse_address = True
    # Wait for handler threads on close, so an accepted request is answered before shutdown.
    block_on_close = True

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], tls: HttpTlsEndpoint | None = None
    ) -> None:
        self.tls = tls
        super().__init__(address, handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        conn = self.tls.accept(request, f"{client_address[0]}:{client_address[1]}")
        if conn is None:
            return
        try:
            super().finish_request(conn, client_address)
        finally:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_WR)
            conn.close()
