"""Worker: bus → decode → processor chain → sinks, plus the per-trace summaries.

One thread runs `run()`; `step()` is one iteration and is what tests drive. Stopping is
cooperative: close the bus, and `run()` returns once the bus is drained, processors are shut
down and every sink has flushed.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import pyarrow as pa
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline import schema
from pipeline.bus.base import Bus, Delivery
from pipeline.conventions import Normalizer
from pipeline.otlp.decode import SourcedRequest, decode
from pipeline.trace_summary import TraceSummarizer
from processors.base import Processor
from sinks.parquet.sink import ParquetSink, SinkWriteError

log = logging.getLogger("tracelake.worker")

# Held (unwritable) bytes beyond which the worker stops taking from the bus, so receivers refuse.
MAX_BACKLOG_BYTES = 256 * 2**20


@dataclass
class WorkerStats:
    batches: int = 0
    spans_in: int = 0
    spans_out: int = 0
    traces_summarised: int = 0
    undecodable_messages: int = 0


class Worker:
    def __init__(
        self,
        bus: Bus,
        processors: list[tuple[str, Processor]],
        sinks: list[ParquetSink],
        normalizer: Normalizer,
        summarizer: TraceSummarizer,
        max_batch_spans: int = 8192,
        max_batch_delay: float = 0.2,
    ) -> None:
        self.bus = bus
        self.processors = processors
        self.sinks = sinks
        self.normalizer = normalizer
        self.summarizer = summarizer
        self.max_batch_spans = max_batch_spans
        self.max_batch_delay = max_batch_delay
        self.stats = WorkerStats()
        self.stopped = threading.Event()
        self.error: BaseException | None = None

    # -- one iteration ----------------------------------------------------------------------
    def step(self) -> int:
        if any(s.backlog_bytes > MAX_BACKLOG_BYTES for s in self.sinks):
            self._flush_due()
            time.sleep(0.2)
            return 0
        deliveries = self.bus.take(self.max_batch_spans, self.max_batch_delay)
        n = 0
        if deliveries:
            n = self.handle(deliveries)
        self._tick()
        return n

    def handle(self, deliveries: list[Delivery]) -> int:
        requests = []
        for d in deliveries:
            req = ExportTraceServiceRequest()
            try:
                req.ParseFromString(d.value)
            except Exception as e:  # the receiver validated it; a foreign producer may not have
                self.stats.undecodable_messages += 1
                log.error("skipping undecodable message %s: %s", d.source, e)
                continue
            requests.append(SourcedRequest(req, d.source))
        batch = self.normalizer(decode(requests))
        self.stats.batches += 1
        self.stats.spans_in += batch.num_rows
        for _pid, proc in self.processors:
            if batch.num_rows == 0:
                break
            batch = proc.process(batch)
        self._emit(batch)
        return len(deliveries)

    def _emit(self, spans: pa.Table) -> None:
        if spans.num_rows:
            self.stats.spans_out += spans.num_rows
            self.summarizer.observe(spans)
            for sink in self.sinks:
                sink.write("spans", spans)

    def _tick(self, force: bool = False) -> None:
        now_ns = time.time_ns()
        for _pid, proc in self.processors:
            tick = getattr(proc, "tick", None)
            if tick is not None:
                self._emit(tick(now_ns))
        traces = self.summarizer.due(force=force)
        if traces.num_rows:
            self.stats.traces_summarised += traces.num_rows
            for sink in self.sinks:
                sink.write("traces", traces)
        self._flush_due()

    def _flush_due(self) -> None:
        for sink in self.sinks:
            sink.flush_due()

    # -- lifecycle --------------------------------------------------------------------------
    def run(self) -> None:
        try:
            while not self.bus.drained:
                self.step()
            self.shutdown()
        except BaseException as e:
            self.error = e
            log.critical("worker failed: %s", e, exc_info=True)
        finally:
            self.stopped.set()

    def shutdown(self) -> None:
        """Release what processors hold, summarise every open trace, flush every sink."""
        for _pid, proc in self.processors:
            stop = getattr(proc, "shutdown", None)
            if stop is not None:
                self._emit(stop())
        self._tick(force=True)
        for sink in self.sinks:
            attempts = 0
            while True:
                try:
                    sink.flush_all()
                    break
                except SinkWriteError as e:
                    attempts += 1
                    if attempts >= 3:
                        log.critical("giving up at shutdown, %d rows not written: %s", sink.buffered_rows, e)
                        raise
                    time.sleep(1.0)


def empty_spans() -> pa.Table:
    return schema.empty("spans")
