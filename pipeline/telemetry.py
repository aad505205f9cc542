"""Self-telemetry: Prometheus `/metrics`, `/healthz`, `/readyz` on 127.0.0.1:8888 (the Collector's port), and
the POST routes the server adds (`/-/reload`: pipeline/service.py).

Metrics are read from the components' own counters at scrape time (`metrics()` of each component;
worker processes report theirs every second), so the hot path never touches a metrics library: no
cost per span. `process_*` metrics describe the `tracelake` process itself, not its worker processes.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from core import metrics
from pipeline.receiver.tls import HttpTlsEndpoint, TlsCapableServer

log = logging.getLogger("tracelake.telemetry")

MetricsSource = Callable[[], Iterable[metrics.Sample]]
ReadinessCheck = Callable[[], list[str]]
# a POST handler: request body → (HTTP status, JSON answer)
PostRoute = Callable[[bytes], tuple[int, dict]]
MAX_POST_BYTES = 64 * 1024


class SampleCollector:
    """Prometheus families from the samples the components report (merged across processes)."""

    def __init__(self, sources: list[MetricsSource]) -> None:
        self.sources = sources

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        for s in metrics.merge(source() for source in self.sources):
            family = families.get(s.name)
            labels = [k for k, _ in s.labels]
            if family is None:
                if s.kind == "counter":
                    family = CounterMetricFamily(s.name, s.help, labels=labels)
                elif s.kind == "gauge":
                    family = GaugeMetricFamily(s.name, s.help, labels=labels)
                else:
                    family = HistogramMetricFamily(s.name, s.help, labels=labels)
                families[s.name] = family
            values = [v for _, v in s.labels]
            if s.kind == "histogram":
                buckets = [("+Inf" if b == float("inf") else str(b), c) for b, c in s.buckets]
                family.add_metric(values, buckets, sum_value=s.value)  # type: ignore[attr-defined]
            else:
                family.add_metric(values, s.value)  # type: ignore[attr-defined]
        return families.values()


class TelemetryServer:
    def __init__(self, host: str, port: int, tls: HttpTlsEndpoint | None = None) -> None:
        """`tls`: serve over TLS (`telemetry.tls`; with client_ca_file, scrapers need a client certificate)."""
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        # filled by whoever assembles the process: each component's metrics() and readiness
        self.metrics_sources: list[MetricsSource] = []
        self.readiness_checks: list[ReadinessCheck] = []
        self.post_routes: dict[str, PostRoute] = {}
        self.registry.register(SampleCollector(self.metrics_sources))
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(owner.registry), "text/plain; version=0.0.4; charset=utf-8")
                elif path == "/healthz":
                    self._send(200, b"ok\n", "text/plain")
                elif path == "/readyz":
                    problems = owner.readiness_problems()
                    body = ("ready\n" if not problems else "\n".join(problems) + "\n").encode()
                    self._send(503 if problems else 200, body, "text/plain")
                else:
                    self._send(404, b"try /metrics, /healthz or /readyz\n", "text/plain")

            def do_POST(self) -> None:
                route = owner.post_routes.get(self.path.split("?", 1)[0])
                length = int(self.headers.get("Content-Length") or 0)
                if route is None:
                    self._send(404, b"no such POST route\n", "text/plain")
                    return
                if length > MAX_POST_BYTES:
                    self._send(413, b"body too large\n", "text/plain")
                    return
                try:
                    status, answer = route(self.rfile.read(length))
                except Exception as e:  # the server keeps running; the caller learns why
                    log.exception("POST %s failed", self.path)
                    status, answer = 500, {"ok": False, "errors": [f"{type(e).__name__}: {e}"]}
                self._send(status, json.dumps(answer).encode() + b"\n", "application/json")

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        try:
            self._server = TlsCapableServer((host, port), Handler, tls)
        except OSError as e:
            raise OSError(f"cannot listen for telemetry on {host}:{port}: {e.strerror}") from None
        self.address = f"{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="telemetry", daemon=True)

    def readiness_problems(self) -> list[str]:
        return [problem for check in self.readiness_checks for problem in check()]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
