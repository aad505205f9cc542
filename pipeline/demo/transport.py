"""Sending the demo traffic: over OTLP/gRPC or OTLP/HTTP as an instrumented application does
(BatchSpanProcessor, OTLPSpanExporter), or into memory as serialized ExportTraceServiceRequests."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pipeline.demo.traffic import emit_traces, make_providers


@dataclass(frozen=True)
class DemoResult:
    traces: int
    spans: int


class _RecordingExporter(SpanExporter):
    """Wraps an exporter to record its results: the SDK's force_flush() is True even when an export failed."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.spans_ok = 0
        self.spans_failed = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception:
            result = SpanExportResult.FAILURE
        if result == SpanExportResult.SUCCESS:
            self.spans_ok += len(spans)
        else:
            self.spans_failed += len(spans)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def _exporter(endpoint: str, protocol: str, timeout: float) -> SpanExporter:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        target = endpoint.split("://", 1)[-1]
        return GrpcExporter(endpoint=target, insecure=True, timeout=timeout)
    if protocol == "http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        url = endpoint if "://" in endpoint else f"http://{endpoint}"
        if url.count("/") < 3:  # no path: the OTLP/HTTP default
            url = url.rstrip("/") + "/v1/traces"
        return HttpExporter(endpoint=url, timeout=timeout)
    raise ValueError(f"protocol must be 'grpc' or 'http', got {protocol!r}")


FLUSH_EVERY_TRACES = 100  # at most ~10 spans per trace: far below the processor's queue, nothing is dropped


def run_demo(
    endpoint: str,
    traces: int = 50,
    protocol: str = "grpc",
    seed: int | None = None,
    *,
    timeout: float = 10.0,
    start_ns: int | None = None,
) -> DemoResult:
    """Send `traces` demo traces to an OTLP receiver at HOST:PORT.

    Raises RuntimeError naming the endpoint if any export failed or any span was not exported."""
    recorder = _RecordingExporter(_exporter(endpoint, protocol, timeout))
    processor = BatchSpanProcessor(recorder, max_queue_size=8192, schedule_delay_millis=200)
    rng = random.Random(seed)
    providers = make_providers(processor, rng)

    def flush(i: int) -> None:
        if i % FLUSH_EVERY_TRACES == 0:
            processor.force_flush()

    try:
        spans = emit_traces(providers, rng, traces, start_ns, after_trace=flush)
        processor.force_flush()
    finally:
        processor.shutdown()  # once: the providers share it
    if recorder.spans_failed or recorder.spans_ok != spans:
        lost = spans - recorder.spans_ok
        raise RuntimeError(
            f"OTLP/{protocol} export to {endpoint} failed: {lost} of {spans} spans were not accepted "
            f"(is a tracelake receiver listening there on {protocol}?)"
        )
    return DemoResult(traces=traces, spans=spans)


def build_requests(
    traces: int, seed: int = 0, spans_per_request: int = 512, *, start_ns: int | None = None
) -> list[bytes]:
    """The demo traffic as serialized ExportTraceServiceRequests of `spans_per_request` spans each
    (the last one smaller), in the order a BatchSpanProcessor would send them."""
    memory = InMemorySpanExporter()
    rng = random.Random(seed)
    providers = make_providers(SimpleSpanProcessor(memory), rng)
    pending: list[ReadableSpan] = []
    out: list[bytes] = []

    def collect(_i: int) -> None:
        pending.extend(memory.get_finished_spans())
        memory.clear()
        while len(pending) >= spans_per_request:
            out.append(encode_spans(pending[:spans_per_request]).SerializeToString())
            del pending[:spans_per_request]

    emit_traces(providers, rng, traces, start_ns, after_trace=collect)
    if pending:
        out.append(encode_spans(pending).SerializeToString())
    return out
