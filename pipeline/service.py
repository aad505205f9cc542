"""Assemble receivers, bus, worker, processors and sinks from a validated Config.

`tracelake run` is `Service(config).serve()`: receivers and a worker in one process, over the
embedded bus or Kafka. `tracelake receiver` / `tracelake worker` run one role each (Kafka only).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time

import pyarrow as pa

from pipeline import feedback
from pipeline.bus.base import Publisher, Source
from pipeline.bus.embedded import EmbeddedBus
from pipeline.config import Config
from pipeline.config.model import EmbeddedBusConfig, KafkaBusConfig, split_endpoint
from pipeline.conventions import CorrelationKeys, Normalizer
from pipeline.maintenance.background import BackgroundCompactor
from pipeline.memory_limiter import MemoryLimiter
from pipeline.receiver.grpc_server import GrpcReceiver
from pipeline.receiver.http_server import HttpReceiver
from pipeline.receiver.intake import IngestChain, Intake
from pipeline.telemetry import SinkWriteHistogram, TelemetryServer
from pipeline.trace_summary import TraceSummarizer
from pipeline.worker import Worker
from processors.base import Processor, ProcessorContext
from sinks.parquet.sink import ParquetSink

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


def build_normalizer(config: Config) -> Normalizer:
    k = config.raw.worker.keys
    return Normalizer(CorrelationKeys(tuple(k.session), tuple(k.user), tuple(k.tenant), tuple(k.prompt_version)))


def build_chain(config: Config, stage: str, normalizer: Normalizer) -> list[tuple[str, Processor]]:
    chain = []
    replayable = isinstance(config.raw.bus, KafkaBusConfig)
    for pid in getattr(config.pipeline, stage):
        spec = config.processors[pid]
        ctx = ProcessorContext(processor_id=pid, normalizer=normalizer, stage=stage, replayable_source=replayable)
        chain.append((pid, spec.factory.create(spec.config, ctx)))
    return chain


def _holdback_retention(config: Config) -> float | None:
    """Held-back spans live as long as the longest late-feedback window of the chain's samplers."""
    windows = [
        float(getattr(config.processors[pid].config, "late_feedback_window", 0) or 0) for pid in config.pipeline.process
    ]
    windows = [w for w in windows if w > 0]
    return max(windows) if windows else None


class Service:
    ROLES = ("all", "receiver", "worker")

    def __init__(self, config: Config, role: str = "all") -> None:
        if role not in self.ROLES:
            raise ValueError(f"role must be one of {self.ROLES}")
        self.config = config
        self.role = role
        raw = config.raw
        otlp = raw.receivers.otlp
        bus_cfg = raw.bus
        self.write_latency = SinkWriteHistogram()
        self.started = False
        self.publisher: Publisher | None = None
        self.source: Source | None = None
        if isinstance(bus_cfg, EmbeddedBusConfig):
            if role != "all":
                raise ValueError(f"`tracelake {role}` needs a Kafka bus; the embedded bus only works with `run`")
            bus = EmbeddedBus(bus_cfg.capacity_spans, retry_after=otlp.retry_after)
            self.publisher, self.source = bus, bus
        else:
            assert isinstance(bus_cfg, KafkaBusConfig)
            from pipeline.bus.kafka import KafkaPublisher, KafkaSource, ensure_topic

            ensure_topic(bus_cfg)
            if role in ("all", "receiver"):
                self.publisher = KafkaPublisher(bus_cfg, retry_after=otlp.retry_after)
            if role in ("all", "worker"):
                self.source = KafkaSource(bus_cfg)
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
        self.sinks: list[ParquetSink] = []
        self.worker: Worker | None = None
        if self.source is not None:
            normalizer = build_normalizer(config)
            self.sinks = [
                ParquetSink(config.sinks[sid], on_written=lambda f: self.write_latency.observe(f.seconds))
                for sid in config.pipeline.sinks
            ]
            self.worker = Worker(
                self.source,
                build_chain(config, "process", normalizer),
                self.sinks,
                normalizer,
                TraceSummarizer(raw.worker.trace_idle),
                max_batch_spans=raw.worker.max_batch_spans,
                max_batch_delay=raw.worker.max_batch_delay,
                commit_interval=getattr(bus_cfg, "commit_interval", 1.0),
                holdback_retention=_holdback_retention(config),
            )
        self.grpc: GrpcReceiver | None = None
        self.http: HttpReceiver | None = None
        if self.intake is not None:
            if otlp.grpc is not None:
                host, port = split_endpoint(otlp.grpc.endpoint)
                self.grpc = GrpcReceiver(self.intake, host, port, otlp.max_request_bytes)
            if otlp.http is not None:
                host, port = split_endpoint(otlp.http.endpoint)
                self.http = HttpReceiver(self.intake, host, port, otlp.max_request_bytes)
                self.http.routes["/v1/feedback"] = feedback.http_route(self.intake)
        # the lakes this process writes keep themselves compact (one compaction per lake at a time)
        self.compactors = (
            [BackgroundCompactor(s.root, raw.compaction, s.config.compression_level) for s in self.sinks]
            if raw.compaction.background
            else []
        )
        self._worker_thread: threading.Thread | None = None
        if self.worker is not None:
            self._worker_thread = threading.Thread(target=self.worker.run, name="worker", daemon=True)
        self._stop = threading.Event()
        self._behind_warned_at = -BEHIND_WARNING_EVERY_S
        self.telemetry: TelemetryServer | None = None
        if raw.telemetry.endpoint is not None:
            host, port = split_endpoint(raw.telemetry.endpoint)
            self.telemetry = TelemetryServer(host, port, self, self.write_latency)
            if isinstance(bus_cfg, KafkaBusConfig):
                from pipeline.bus.kafka import probe

                self.telemetry.bus_check = probe(bus_cfg)

    def start(self) -> None:
        if self.memory is not None:
            self.memory.start()
        if self.telemetry is not None:
            self.telemetry.start()
        if self._worker_thread is not None:
            self._worker_thread.start()
        for compactor in self.compactors:
            compactor.start()
        if self.grpc:
            self.grpc.start()
        if self.http:
            self.http.start()
        parts = []
        if self.grpc:
            parts.append(f"grpc={self.grpc.address}")
        if self.http:
            parts.append(f"http={self.http.address}")
        bus = self.config.raw.bus
        where = f"kafka={bus.brokers}/{bus.topic}" if isinstance(bus, KafkaBusConfig) else "bus=embedded"
        lake = f" lake={self.config.lake_path}" if self.worker is not None else ""
        pool = f" arrow_pool={pa.default_memory_pool().backend_name}" if self.worker is not None else ""
        telemetry = f" telemetry={self.telemetry.address}" if self.telemetry is not None else ""
        self.started = True
        log.info("tracelake ready %s %s%s%s%s", " ".join(parts), where, lake, pool, telemetry)

    def stop(self) -> None:
        """Stop accepting, drain the bus through the worker, shut processors down, flush sinks."""
        log.info("stopping: refusing new data")
        if self.grpc:
            self.grpc.stop()
        if self.http:
            self.http.stop()
        if self.publisher is not None and self.publisher is not self.source:
            self.publisher.close()
        if self.source is not None:
            self.source.close()
        for compactor in self.compactors:
            compactor.stop()
        if self._worker_thread is not None and self.worker is not None:
            self._worker_thread.join()
        if self.memory is not None:
            self.memory.stop()
        if self.telemetry is not None:
            self.telemetry.stop()
        if self._worker_thread is not None and self.worker is not None:
            s = self.worker.stats
            log.info(
                "stopped: %d spans in, %d out, %d feedback events, %d traces summarised, %d files written",
                s.spans_in,
                s.spans_out,
                s.feedback_events,
                s.traces_summarised,
                sum(k.files_written for k in self.sinks),
            )

    @property
    def failed(self) -> bool:
        return self.worker is not None and self.worker.error is not None

    def warn_if_behind(self, now: float | None = None) -> bool:
        """Log (at most once a minute) when spans wait in the embedded bus longer than the freshness target."""
        wait = getattr(self.source, "oldest_wait", None)  # the embedded bus; Kafka has its consumer lag metric
        now = time.monotonic() if now is None else now
        if wait is None or wait < BEHIND_WARNING_S or now - self._behind_warned_at < BEHIND_WARNING_EVERY_S:
            return False
        self._behind_warned_at = now
        held = getattr(self.source, "held_spans", 0)
        log.warning(
            "the worker is %.0f s behind: %d spans wait in the bus and reach queries that late; the processors "
            "take longer than the traffic leaves them (README: Freshness)",
            wait,
            held,
        )
        return True

    def serve(self) -> int:
        """Run until SIGINT/SIGTERM, then stop cleanly. Returns the exit code."""
        self.start()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self._stop.set())
        while not self._stop.wait(0.5):
            if self.worker is not None and self.worker.stopped.is_set():
                # the worker died: stop rather than accept into a void
                log.critical("worker stopped unexpectedly; shutting down")
                break
            self.warn_if_behind()
        self.stop()
        return 1 if self.failed else 0
