"""Assemble receivers, bus, worker, processors and sinks from a validated Config.

`tracelake run` is `Service(config).serve()`: one process, embedded bus.
"""

from __future__ import annotations

import logging
import signal
import threading

from pipeline.bus.embedded import EmbeddedBus
from pipeline.config import Config
from pipeline.config.model import split_endpoint
from pipeline.conventions import CorrelationKeys, Normalizer
from pipeline.receiver.grpc_server import GrpcReceiver
from pipeline.receiver.http_server import HttpReceiver
from pipeline.receiver.intake import Intake
from pipeline.trace_summary import TraceSummarizer
from pipeline.worker import Worker
from processors.base import Processor, ProcessorContext
from sinks.parquet.sink import ParquetSink

log = logging.getLogger("tracelake")


def build_normalizer(config: Config) -> Normalizer:
    k = config.raw.worker.keys
    return Normalizer(
        CorrelationKeys(tuple(k.session), tuple(k.user), tuple(k.tenant), tuple(k.prompt_version))
    )


def build_chain(config: Config, stage: str, normalizer: Normalizer) -> list[tuple[str, Processor]]:
    chain = []
    for pid in getattr(config.pipeline, stage):
        spec = config.processors[pid]
        ctx = ProcessorContext(processor_id=pid, normalizer=normalizer, stage=stage)
        chain.append((pid, spec.factory.create(spec.config, ctx)))
    return chain


class Service:
    def __init__(self, config: Config) -> None:
        self.config = config
        raw = config.raw
        otlp = raw.receivers.otlp
        self.bus = EmbeddedBus(raw.bus.capacity_spans, retry_after=otlp.retry_after)
        self.intake = Intake(self.bus)
        normalizer = build_normalizer(config)
        self.sinks = [ParquetSink(config.sinks[sid]) for sid in config.pipeline.sinks]
        self.worker = Worker(
            self.bus,
            build_chain(config, "process", normalizer),
            self.sinks,
            normalizer,
            TraceSummarizer(raw.worker.trace_idle),
            max_batch_spans=raw.worker.max_batch_spans,
            max_batch_delay=raw.worker.max_batch_delay,
        )
        self.grpc: GrpcReceiver | None = None
        self.http: HttpReceiver | None = None
        if otlp.grpc is not None:
            host, port = split_endpoint(otlp.grpc.endpoint)
            self.grpc = GrpcReceiver(self.intake, host, port, otlp.max_request_bytes)
        if otlp.http is not None:
            host, port = split_endpoint(otlp.http.endpoint)
            self.http = HttpReceiver(self.intake, host, port, otlp.max_request_bytes)
        self._worker_thread = threading.Thread(target=self.worker.run, name="worker", daemon=True)
        self._stop = threading.Event()

    def start(self) -> None:
        self._worker_thread.start()
        if self.grpc:
            self.grpc.start()
        if self.http:
            self.http.start()
        parts = []
        if self.grpc:
            parts.append(f"grpc={self.grpc.address}")
        if self.http:
            parts.append(f"http={self.http.address}")
        log.info("tracelake ready %s lake=%s", " ".join(parts), self.config.lake_path)

    def stop(self) -> None:
        """Stop accepting, drain the bus through the worker, shut processors down, flush sinks."""
        log.info("stopping: refusing new data, draining %d buffered spans", self.bus.held_spans)
        if self.grpc:
            self.grpc.stop()
        if self.http:
            self.http.stop()
        self.bus.close()
        self._worker_thread.join()
        s = self.worker.stats
        log.info(
            "stopped: %d spans in, %d out, %d traces summarised, %d files written",
            s.spans_in,
            s.spans_out,
            s.traces_summarised,
            sum(k.files_written for k in self.sinks),
        )

    def serve(self) -> int:
        """Run until SIGINT/SIGTERM, then stop cleanly. Returns the exit code."""
        self.start()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self._stop.set())
        while not self._stop.wait(0.5):
            if self.worker.stopped.is_set():  # the worker died: stop rather than accept into a void
                log.critical("worker stopped unexpectedly; shutting down")
                break
        self.stop()
        return 1 if self.worker.error else 0
