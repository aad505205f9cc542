"""Self-telemetry: Prometheus `/metrics`, `/healthz`, `/readyz` on 127.0.0.1:8888 (the Collector's port).

Metrics are read from the components' own counters at scrape time (a custom collector), so the hot
path never touches a metrics library: no cost per span, one dictionary read per scrape.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

if TYPE_CHECKING:
    from pipeline.service import Service

log = logging.getLogger("tracelake.telemetry")

WRITE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, float("inf"))


class SinkWriteHistogram:
    """Parquet file write latency; fed once per written file."""

    def __init__(self) -> None:
        self.counts = [0] * len(WRITE_BUCKETS)
        self.total = 0.0
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        with self._lock:
            self.total += seconds
            for i, bound in enumerate(WRITE_BUCKETS):
                if seconds <= bound:
                    self.counts[i] += 1


def _flatten(prefix: str, value: Any) -> Iterable[tuple[str, float]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _flatten(f"{prefix}.{k}" if prefix else str(k), v)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield prefix, float(value)


class ServiceCollector:
    def __init__(self, service: Service, write_latency: SinkWriteHistogram) -> None:
        self.service = service
        self.write_latency = write_latency

    def collect(self) -> Iterable[Metric]:
        svc = self.service
        if svc.intake is not None:
            stats = svc.intake.stats
            for name, doc, counts in (
                ("tracelake_receiver_requests", "OTLP export requests by transport and outcome", stats.requests),
                (
                    "tracelake_receiver_spans",
                    "spans by transport and outcome (accepted, refused_*, rejected_*)",
                    stats.spans,
                ),
                (
                    "tracelake_receiver_feedback_events",
                    "feedback events received on /v1/feedback by transport and outcome (not counted as spans)",
                    stats.feedback,
                ),
            ):
                family = CounterMetricFamily(name, doc, labels=["transport", "outcome"])
                for (transport, outcome), n in sorted(counts.items()):
                    family.add_metric([transport, outcome], n)
                yield family
        held = getattr(svc.source, "held_spans", None)
        if held is not None:
            yield GaugeMetricFamily("tracelake_bus_held_spans", "spans in the embedded bus", value=held)
        lag = getattr(svc.source, "lag", None)
        if lag:
            g = GaugeMetricFamily(
                "tracelake_kafka_consumer_lag", "messages behind, per partition", labels=["partition"]
            )
            for part, n in sorted(lag.items()):
                g.add_metric([part], n)
            yield g
        if svc.memory is not None:
            yield GaugeMetricFamily(
                "tracelake_memory_limiter_over_limit", "1 while refusing", value=svc.memory.over_limit
            )
            yield GaugeMetricFamily(
                "tracelake_memory_limiter_soft_limit_bytes", "soft limit", value=svc.memory.soft_limit
            )
        w = svc.worker
        if w is not None:
            ws = w.stats
            for name, value, doc in (
                ("tracelake_worker_spans_in", ws.spans_in, "spans decoded from the bus (feedback events not counted)"),
                ("tracelake_worker_spans_out", ws.spans_out, "spans written to the spans table"),
                ("tracelake_worker_spans_held_back", ws.spans_held_back, "spans sampled out into the holdback area"),
                ("tracelake_worker_traces_summarised", ws.traces_summarised, "trace summary rows written"),
                ("tracelake_worker_feedback_events", ws.feedback_events, "feedback rows written"),
                ("tracelake_worker_promoted_traces", ws.promoted_traces, "dropped traces promoted by late feedback"),
                ("tracelake_worker_undecodable_messages", ws.undecodable_messages, "bus messages skipped"),
                ("tracelake_worker_offset_commits", ws.commits, "offset commit rounds"),
            ):
                yield CounterMetricFamily(name, doc, value=value)
            yield GaugeMetricFamily(
                "tracelake_worker_open_traces", "traces not yet summarised", value=w.summarizer.open_traces
            )
            pin = CounterMetricFamily("tracelake_processor_spans_in", "spans into each processor", labels=["processor"])
            pout = CounterMetricFamily(
                "tracelake_processor_spans_out", "spans out of each processor", labels=["processor"]
            )
            for pid, n in sorted(w.processor_in.items()):
                pin.add_metric([pid], n)
            for pid, n in sorted(w.processor_out.items()):
                pout.add_metric([pid], n)
            yield pin
            yield pout
            stat = GaugeMetricFamily(
                "tracelake_processor_stat",
                "each processor's own counters (redactions per entity, decisions per policy, unknown models, ...)",
                labels=["processor", "stat"],
            )
            for pid, proc in w.processors:
                for key, value in _flatten("", getattr(proc, "stats", {}) or {}):
                    stat.add_metric([pid, key], value)
            yield stat
            files = CounterMetricFamily("tracelake_sink_files", "Parquet files written", labels=["sink"])
            size = CounterMetricFamily("tracelake_sink_bytes", "Parquet bytes written", labels=["sink"])
            buffered = GaugeMetricFamily("tracelake_sink_buffered_rows", "rows waiting for a file", labels=["sink"])
            failing = GaugeMetricFamily("tracelake_sink_failing", "1 while writes fail", labels=["sink"])
            # the sinks were built in the order of pipelines.traces.sinks: label each with its id there
            for sid, sink in zip(svc.config.pipeline.sinks, svc.sinks, strict=True):
                files.add_metric([sid], sink.files_written)
                size.add_metric([sid], sink.bytes_written)
                buffered.add_metric([sid], sink.buffered_rows)
                failing.add_metric([sid], int(sink.failing))
            yield files
            yield size
            yield buffered
            yield failing
            h = HistogramMetricFamily("tracelake_sink_write_seconds", "time to write one Parquet file")
            buckets = [  # counts are cumulative already (observations <= bound)
                ("+Inf" if bound == float("inf") else str(bound), count)
                for bound, count in zip(WRITE_BUCKETS, self.write_latency.counts, strict=True)
            ]
            h.add_metric([], buckets, sum_value=self.write_latency.total)
            yield h


class TelemetryServer:
    def __init__(self, host: str, port: int, service: Service, write_latency: SinkWriteHistogram) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.registry.register(ServiceCollector(service, write_latency))  # type: ignore[arg-type]
        self.service = service
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

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except OSError as e:
            raise OSError(f"cannot listen for telemetry on {host}:{port}: {e.strerror}") from None
        self._server.daemon_threads = True
        self.address = f"{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="telemetry", daemon=True)
        self.bus_check: Callable[[], bool] | None = None

    def readiness_problems(self) -> list[str]:
        svc = self.service
        problems = []
        if not svc.started:
            problems.append("receivers are not listening yet")
        if svc.worker is not None and svc.worker.stopped.is_set():
            problems.append("worker stopped")
        if any(s.failing for s in svc.sinks):
            problems.append("sink cannot write (see logs)")
        if svc.memory is not None and svc.memory.over_limit:
            problems.append(svc.memory.reason)
        if self.bus_check is not None and not self.bus_check():
            problems.append("bus unreachable")
        return problems

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
