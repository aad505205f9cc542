"""Assemble receivers, bus, worker, processors and sinks from a validated Config.

`tracelake run` is `Service(config).serve()`: receivers in this process and `worker.processes` worker
processes (pipeline/worker_pool.py) behind the embedded bus or Kafka. `tracelake receiver` /
`tracelake worker` run one role each (Kafka only).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time

import pyarrow as pa

from pipeline.build import build_chain, build_normalizer
from pipeline.bus.base import Publisher
from pipeline.bus.embedded import EmbeddedBus
from pipeline.config import Config
from pipeline.config.model import EmbeddedBusConfig, KafkaBusConfig, resolve_processes, split_endpoint
from pipeline.maintenance.background import BackgroundCompactor
from pipeline.memory_limiter import MemoryLimiter
from pipeline.receiver.feedback import http_route as feedback_route
from pipeline.receiver.grpc_server import GrpcReceiver
from pipeline.receiver.http_server import HttpReceiver
from pipeline.receiver.intake import IngestChain, Intake
from pipeline.telemetry import TelemetryServer
from pipeline.worker_pool import WorkerPool, WorkerStartError
from sinks.parquet.config import ParquetSinkConfig, lake_scheme

log = logging.getLogger("tracelake")

# A span waiting this long in the bus misses the freshness target (README: Freshness): say so, once a minute.
BEHIND_WARNING_S = 5.0
BEHIND_WARNING_EVERY_S = 60.0


def use_server_memory_pool() -> str:
    """Arrow's allocator for a server process: jemalloc that keeps freed memory for the next batch,
    unless ARROW_DEFAULT_MEMORY_POOL names a pool. Returns the pool in use.

    Measured on the worker's own path (benchmarks/README.md): pyarrow's default, mimalloc, costs a
    fresh process about 1 s of page faults on its first ~50k spans; Arrow's jemalloc returns freed
    pages at once (decay 0), so every batch faults its ~100 MB of buffers in again, 2-5 µs per
    span of system time. With decay off, memory freed by one batch serves the next; the worker
    returns it to the OS once the bus has been idle for a while (`Worker.IDLE_RELEASE_SECONDS`),
    and the memory limiter does above its hard limit."""
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return pa.default_memory_pool().backend_name
    # jemalloc's decay setting (JE_ARROW_MALLOC_CONF) is made in pipeline/__init__.py, before pyarrow loads
    with contextlib.suppress(NotImplementedError):  # a pyarrow built without jemalloc keeps its default
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    return pa.default_memory_pool().backend_name


def _lakes(config: Config) -> list[ParquetSinkConfig]:
    return [s for sid in config.pipeline.sinks if isinstance(s := config.sinks[sid].config, ParquetSinkConfig)]


class Service:
    """`run` (role "all"): receivers in this process, worker processes behind the bus.
    `receiver`: receivers publishing to Kafka. `worker`: worker processes consuming Kafka."""

    ROLES = ("all", "receiver", "worker")

    def __init__(self, config: Config, role: str = "all", log_level: str = "info", log_json: bool = False) -> None:
        if role not in self.ROLES:
            raise ValueError(f"role must be one of {self.ROLES}")
        self.config = config
        self.role = role
        raw = config.raw
        otlp = raw.receivers.otlp
        bus_cfg = raw.bus
        self.started = False
        self.publisher: Publisher | None = None
        self.bus: EmbeddedBus | None = None
        processes = resolve_processes(raw.worker.processes)
        if isinstance(bus_cfg, EmbeddedBusConfig):
            if role != "all":
                raise ValueError(f"`tracelake {role}` needs a Kafka bus; the embedded bus only works with `run`")
            self.bus = EmbeddedBus(processes, bus_cfg.capacity_spans, bus_cfg.capacity_bytes, otlp.retry_after)
            self.publisher = self.bus
        else:
            assert isinstance(bus_cfg, KafkaBusConfig)
            from pipeline.bus.kafka import KafkaPublisher, ensure_topic

            ensure_topic(bus_cfg)
            if role in ("all", "receiver"):
                self.publisher = KafkaPublisher(bus_cfg, retry_after=otlp.retry_after)
        self.workers: WorkerPool | None = None
        if role in ("all", "worker"):
            self.workers = WorkerPool(config, processes, self.bus, log_level=log_level, log_json=log_json)
        # the lakes the workers write keep themselves compact, from this process (one compaction per lake at a time);
        # compaction works on lake directories only so far, not on object storage
        local = [s for s in _lakes(config) if lake_scheme(s.path) == "file"]
        self.compactors = (
            [BackgroundCompactor(s.path, raw.compaction, s.compression_level) for s in local]
            if raw.compaction.background and self.workers is not None
            else []
        )
        self._build_receivers()

    def _build_receivers(self) -> None:
        config, raw = self.config, self.config.raw
        otlp = raw.receivers.otlp
        self.memory: MemoryLimiter | None = None
        if raw.memory_limiter is not None and self.publisher is not None:
            ml = raw.memory_limiter
            self.memory = MemoryLimiter(ml.limit, ml.spike_limit, ml.check_interval, otlp.retry_after)
        self.intake: Intake | None = None
        if self.publisher is not None:
            ingest = None
            if config.pipeline.ingest:
                normalizer = build_normalizer(config)
                ingest = IngestChain(build_chain(config, "ingest", normalizer), normalizer)
            self.intake = Intake(self.publisher, ingest, self.memory)
        self.grpc: GrpcReceiver | None = None
        self.http: HttpReceiver | None = None
        if self.intake is not None:
            if otlp.grpc is not None:
                host, port = split_endpoint(otlp.grpc.endpoint)
                self.grpc = GrpcReceiver(self.intake, host, port, otlp.max_request_bytes)
            if otlp.http is not None:
                host, port = split_endpoint(otlp.http.endpoint)
                self.http = HttpReceiver(self.intake, host, port, otlp.max_request_bytes)
                self.http.routes["/v1/feedback"] = feedback_route(self.intake)
        self._stop = threading.Event()
        self._behind_warned_at = -BEHIND_WARNING_EVERY_S
        self.telemetry: TelemetryServer | None = None
        if raw.telemetry.endpoint is not None:
            host, port = split_endpoint(raw.telemetry.endpoint)
            self.telemetry = self._telemetry(host, port)
        self.ui = None
        if raw.ui.enabled and self.workers is not None:  # the lake this process writes, in a browser
            from pipeline.ui import ui_server

            self.ui = ui_server(config, feedback_route=self.http.routes["/v1/feedback"] if self.http else None)

    def _telemetry(self, host: str, port: int) -> TelemetryServer:
        """Every component's metrics and readiness, wired once; telemetry knows no component."""
        server = TelemetryServer(host, port)
        server.readiness_checks.append(lambda: [] if self.started else ["receivers are not listening yet"])
        if self.intake is not None:
            server.metrics_sources.append(self.intake.stats.metrics)
        if self.bus is not None:
            server.metrics_sources.append(self.bus.metrics)
        if self.memory is not None:
            server.metrics_sources.append(self.memory.metrics)
            server.readiness_checks.append(self.memory.readiness_problems)
        if self.workers is not None:
            workers = self.workers
            server.metrics_sources.append(workers.metrics)
            server.readiness_checks.append(lambda: workers.readiness_problems() if self.started else [])
        bus_cfg = self.config.raw.bus
        if isinstance(bus_cfg, KafkaBusConfig):
            from pipeline.bus.kafka import probe

            check = probe(bus_cfg)
            server.readiness_checks.append(lambda: [] if check() else ["bus unreachable"])
        return server

    def start(self) -> None:
        if self.memory is not None:
            self.memory.start()
        if self.telemetry is not None:
            self.telemetry.start()
        if self.workers is not None:
            self.workers.start()  # processes are built before the receivers accept anything
        for compactor in self.compactors:
            compactor.start()
        if self.grpc:
            self.grpc.start()
        if self.http:
            self.http.start()
        if self.ui is not None:
            self.ui.start()
        parts = []
        if self.grpc:
            parts.append(f"grpc={self.grpc.address}")
        if self.http:
            parts.append(f"http={self.http.address}")
        bus = self.config.raw.bus
        where = f"kafka={bus.brokers}/{bus.topic}" if isinstance(bus, KafkaBusConfig) else "bus=embedded"
        workers = ""
        if self.workers is not None:
            workers = f" workers={self.workers.processes} lake={self.config.lake_path}"
        telemetry = f" telemetry={self.telemetry.address}" if self.telemetry is not None else ""
        self.started = True
        log.info("tracelake ready %s %s%s%s", " ".join(parts), where, workers, telemetry)

    def stop(self) -> None:
        """Stop accepting, drain the bus through the workers, shut processors down, flush sinks."""
        log.info("stopping: refusing new data")
        if self.grpc:
            self.grpc.stop()
        if self.http:
            self.http.stop()
        if self.publisher is not None and self.publisher is not self.bus:
            self.publisher.close()
        for compactor in self.compactors:
            compactor.stop()
        ok = True
        if self.workers is not None:
            ok = self.workers.stop()
        if self.memory is not None:
            self.memory.stop()
        if self.telemetry is not None:
            self.telemetry.stop()
        if self.ui is not None:
            self.ui.stop()
        self.failed = not ok
        if self.workers is not None:
            totals = {s.name: s.value for s in self.workers.metrics() if not s.labels}
            log.info(
                "stopped: %d spans in, %d out, %d feedback events, %d traces summarised, %d files written",
                totals.get("tracelake_worker_spans_in", 0),
                totals.get("tracelake_worker_spans_out", 0),
                totals.get("tracelake_worker_feedback_events", 0),
                totals.get("tracelake_worker_traces_summarised", 0),
                sum(s.value for s in self.workers.metrics() if s.name == "tracelake_sink_files"),
            )

    failed = False

    def warn_if_behind(self, now: float | None = None) -> bool:
        """Log (at most once a minute) when spans wait in the embedded bus longer than the freshness target."""
        wait = self.bus.oldest_wait if self.bus is not None else None  # Kafka has its consumer lag metric
        now = time.monotonic() if now is None else now
        if wait is None or wait < BEHIND_WARNING_S or now - self._behind_warned_at < BEHIND_WARNING_EVERY_S:
            return False
        self._behind_warned_at = now
        held = self.bus.held_spans if self.bus is not None else 0
        log.warning(
            "the worker is %.0f s behind: %d spans wait in the bus and reach queries that late; the processors "
            "take longer than the traffic leaves them (README: Freshness)",
            wait,
            held,
        )
        return True

    def serve(self) -> int:
        """Run until SIGINT/SIGTERM, then stop cleanly. Returns the exit code."""
        try:
            self.start()
        except WorkerStartError as e:
            log.critical("%s", e)
            return 1
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self._stop.set())
        while not self._stop.wait(0.5):  # a wait with a timeout lets the signal handlers run
            self.warn_if_behind()
        self.stop()
        return 1 if self.failed else 0
