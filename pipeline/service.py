"""Assemble receivers, bus, worker, processors and sinks from a validated Config.

`tracelake run` is `Service(config).serve()`: receivers in this process and `worker.processes` worker
processes (pipeline/worker_pool.py) behind the embedded bus or Kafka. `tracelake receiver` /
`tracelake worker` run one role each (Kafka only).

SIGINT/SIGTERM stop with a drain; SIGHUP and `POST /-/reload` reload the config file (`reload`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

import pyarrow as pa

from core import metrics
from pipeline.build import build_chain, build_normalizer
from pipeline.bus.base import Publisher
from pipeline.bus.embedded import EmbeddedBus
from pipeline.config import Config, ConfigError, load
from pipeline.config.model import EmbeddedBusConfig, KafkaBusConfig, TlsConfig, resolve_processes, split_endpoint
from pipeline.maintenance.background import BackgroundCompactor
from pipeline.memory_limiter import MemoryLimiter
from pipeline.receiver.auth import Authenticator
from pipeline.receiver.exposure import unprotected_receivers
from pipeline.receiver.feedback import http_route as feedback_route
from pipeline.receiver.grpc_server import GrpcReceiver
from pipeline.receiver.http_server import HttpReceiver
from pipeline.receiver.intake import IngestChain, Intake
from pipeline.receiver.rate_limit import TenantRateLimiter
from pipeline.receiver.tenants import Tenancy
from pipeline.receiver.tls import HttpTlsEndpoint, ServerCertificates, TlsStats, grpc_server_credentials
from pipeline.reload import ReloadResult, config_digest, restart_only_changes
from pipeline.telemetry import TelemetryServer
from pipeline.worker_pool import WorkerPool, WorkerStartError
from sinks.parquet.config import ParquetSinkConfig
from sinks.parquet.layout import open_lake

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


def _ingest_chain(config: Config) -> IngestChain | None:
    if not config.pipeline.ingest:
        return None
    normalizer = build_normalizer(config)
    return IngestChain(build_chain(config, "ingest", normalizer), normalizer)


def _lakes(config: Config) -> list[ParquetSinkConfig]:
    return [s for sid in config.pipeline.sinks if isinstance(s := config.sinks[sid].config, ParquetSinkConfig)]


class Service:
    """`run` (role "all"): receivers in this process, worker processes behind the bus.
    `receiver`: receivers publishing to Kafka. `worker`: worker processes consuming Kafka."""

    ROLES = ("all", "receiver", "worker")

    def __init__(
        self,
        config: Config,
        role: str = "all",
        log_level: str = "info",
        log_json: bool = False,
        insecure: bool = False,
    ) -> None:
        """`insecure`: receivers beyond loopback without TLS or auth are acknowledged, not warned about."""
        if role not in self.ROLES:
            raise ValueError(f"role must be one of {self.ROLES}")
        self.config = config
        self.role = role
        self.insecure = insecure
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
        # the lakes the workers write keep themselves compact, from this process (one compaction per lake at a time,
        # directories and object storage alike)
        self.compactors = (
            [BackgroundCompactor(open_lake(s.path, s.s3), raw.compaction, s.compression_level) for s in _lakes(config)]
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
        self.auth: Authenticator | None = None
        self.tls_stats = TlsStats()
        if self.publisher is not None:
            limiter = TenantRateLimiter(otlp.rate_limits) if otlp.rate_limits is not None else None
            tenancy = Tenancy(tuple(raw.worker.keys.tenant), limiter)
            self.auth = Authenticator(otlp.auth) if otlp.auth is not None else None
            self.intake = Intake(self.publisher, _ingest_chain(config), self.memory, tenancy)
        self.grpc: GrpcReceiver | None = None
        self.http: HttpReceiver | None = None
        if self.intake is not None:
            if otlp.grpc is not None:
                host, port = split_endpoint(otlp.grpc.endpoint)
                credentials = None
                if otlp.grpc.tls is not None:
                    certs = ServerCertificates(otlp.grpc.tls, "receivers.otlp.grpc.tls", "grpc", self.tls_stats)
                    credentials = grpc_server_credentials(certs)
                self.grpc = GrpcReceiver(
                    self.intake, host, port, otlp.max_request_bytes, credentials=credentials, auth=self.auth
                )
            if otlp.http is not None:
                host, port = split_endpoint(otlp.http.endpoint)
                tls = self._http_tls(otlp.http.tls, "receivers.otlp.http.tls", "http")
                self.http = HttpReceiver(self.intake, host, port, otlp.max_request_bytes, tls=tls, auth=self.auth)
                self.http.routes["/v1/feedback"] = feedback_route(self.intake)
        self._stop = threading.Event()
        self._reload_requested = threading.Event()
        self._reload_lock = threading.Lock()
        self.generation = 1
        self.reloads = self.reload_failures = 0
        self.config_sha256 = config_digest(config)
        self._behind_warned_at = -BEHIND_WARNING_EVERY_S
        self.telemetry: TelemetryServer | None = None
        if raw.telemetry.endpoint is not None:
            host, port = split_endpoint(raw.telemetry.endpoint)
            self.telemetry = self._telemetry(host, port)
        self.ui = None
        if raw.ui.enabled and self.workers is not None:  # the lake this process writes, in a browser
            from pipeline.ui import ui_server

            self.ui = ui_server(config, feedback_route=self.http.routes["/v1/feedback"] if self.http else None)

    def _http_tls(self, config: TlsConfig | None, where: str, listener: str) -> HttpTlsEndpoint | None:
        if config is None:
            return None
        return HttpTlsEndpoint(ServerCertificates(config, where, listener, self.tls_stats))

    def _telemetry(self, host: str, port: int) -> TelemetryServer:
        """Every component's metrics and readiness, wired once; telemetry knows no component."""
        tls = self._http_tls(self.config.raw.telemetry.tls, "telemetry.tls", "telemetry")
        server = TelemetryServer(host, port, tls)
        server.post_routes["/-/reload"] = self._reload_route
        server.metrics_sources.append(self._reload_metrics)
        server.readiness_checks.append(lambda: [] if self.started else ["receivers are not listening yet"])
        server.metrics_sources.append(self.tls_stats.metrics)
        if self.intake is not None:
            server.metrics_sources.append(self.intake.stats.metrics)
            server.metrics_sources.append(self.intake.tenancy.stats.metrics)
        if self.auth is not None:
            server.metrics_sources.append(self.auth.stats.metrics)
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
        if self.intake is not None:
            for problem in unprotected_receivers(self.config.raw.receivers.otlp):
                if self.insecure:
                    log.info("--insecure: %s", problem)
                else:
                    log.warning("!!! INSECURE !!! %s", problem)
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

    # -- reload -----------------------------------------------------------------------------
    def reload(self) -> ReloadResult:
        """Read the config file again and run it: validated by the same loader as a start (invalid: every error
        logged, nothing changes), restart-only keys refused by name, then the ingest chain here and every
        worker process's chain and sinks swapped at a batch boundary. One reload at a time."""
        with self._reload_lock:
            result = self._reload()
        self.reloads += 1
        if not result.ok:
            self.reload_failures += 1
            for error in result.errors:
                log.error("reload: %s", error)
            log.error("reload %s: %s", "incomplete" if result.changed else "refused, nothing changed", result.config)
        else:
            log.info("reload ok: %s is generation %d (sha256 %s)", result.config, result.generation, result.sha256)
        return result

    def _reload(self) -> ReloadResult:
        source = self.config.source

        def refused(errors: list[str]) -> ReloadResult:
            return ReloadResult(False, False, self.generation, source, self.config_sha256, errors)

        try:
            new = load(source)
        except ConfigError as e:
            return refused([f"{e.source}: {issue}" for issue in e.issues])
        restart = restart_only_changes(self.config, new)
        if restart:
            return refused([f"{source}: {issue}" for issue in restart])
        try:
            ingest = _ingest_chain(new) if self.intake is not None else None
        except Exception as e:
            return refused([f"{source}: cannot build the ingest chain: {e}"])
        errors = []
        if self.workers is not None:
            errors = self.workers.reload(new, self.generation + 1)
            if errors and self.workers.config is not new:
                return refused(errors)  # every process kept its old chain: nothing changed
        if self.intake is not None:
            self.intake.ingest = ingest
            self.intake.tenancy.claim_keys(tuple(new.raw.worker.keys.tenant))  # worker.keys is swapped too
        self.config, self.generation, self.config_sha256 = new, self.generation + 1, config_digest(new)
        return ReloadResult(not errors, True, self.generation, source, self.config_sha256, errors)

    def _reload_route(self, body: bytes) -> tuple[int, dict]:
        """`POST /-/reload`, optionally with {"config": PATH}: refused (409) when PATH is not the running file."""
        try:
            asked = json.loads(body or b"{}").get("config")
        except (ValueError, AttributeError):
            return 400, {"ok": False, "errors": ['the body is not a JSON object like {"config": "FILE"}']}
        running = self.config.source
        if asked is not None and Path(str(asked)).resolve() != Path(running).resolve():
            return 409, {
                "ok": False,
                "config": running,
                "errors": [
                    f"this server runs {running}, not {asked}: a reload reads the file the server was started "
                    "with (edit that file, or restart with --config)"
                ],
            }
        result = self.reload()
        return result.http_status, result.to_json()

    def _reload_metrics(self) -> list[metrics.Sample]:
        return [
            metrics.counter(
                "tracelake_config_reloads", "config reloads attempted (SIGHUP, POST /-/reload)", self.reloads
            ),
            metrics.counter(
                "tracelake_config_reload_failures", "reloads refused or not applied everywhere", self.reload_failures
            ),
            metrics.gauge(
                "tracelake_config_generation", "1 at start, +1 per reload that changed the chain", self.generation
            ),
            metrics.gauge("tracelake_config_info", "the running config", 1, sha256=self.config_sha256),
        ]

    def serve(self) -> int:
        """Run until SIGINT/SIGTERM, then stop cleanly; reload on SIGHUP. Returns the exit code."""
        # SIGHUP (a closed terminal, `systemctl reload`) must never end the server without the drain
        signal.signal(signal.SIGHUP, lambda *_: self._reload_requested.set())
        for sig in (signal.SIGINT, signal.SIGTERM):  # before the ready line: a stop right after it is a clean stop
            signal.signal(sig, lambda *_: self._stop.set())
        try:
            self.start()
        except WorkerStartError as e:
            log.critical("%s", e)
            return 1
        while not self._stop.wait(0.5):  # a wait with a timeout lets the signal handlers run
            if self._reload_requested.is_set():
                self._reload_requested.clear()
                log.info("SIGHUP: reloading %s", self.config.source)
                self.reload()
            self.warn_if_behind()
        self.stop()
        return 1 if self.failed else 0
