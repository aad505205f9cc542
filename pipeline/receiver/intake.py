"""What both OTLP transports do with a request: check it, reject what is invalid, hand it on.

Transport-independent so that gRPC and HTTP answer the same request the same way.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline.bus.base import Publisher
from pipeline.conventions import Normalizer
from pipeline.otlp.decode import SourcedRequest, decode
from pipeline.otlp.encode import apply_table
from processors.base import Processor

log = logging.getLogger("tracelake.receiver")


class IngestChain:
    """Processors that run in the receiver, before the bus (e.g. redaction: raw PII never reaches Kafka).

    The request is decoded into a spans table, processed, and folded back into OTLP. Processors are
    called under a lock: they need not be thread-safe, and the GIL would serialise them anyway."""

    def __init__(self, processors: list[tuple[str, Processor]], normalizer: Normalizer) -> None:
        self.processors = processors
        self.normalizer = normalizer
        self._lock = threading.Lock()
        self.spans_dropped = 0

    def apply(self, request: ExportTraceServiceRequest) -> ExportTraceServiceRequest:
        table = self.normalizer(decode([SourcedRequest(request, "ingest")]))
        before = table.num_rows
        with self._lock:
            for _pid, proc in self.processors:
                if table.num_rows == 0:
                    break
                table = proc.process(table)
            self.spans_dropped += before - table.num_rows
        return apply_table(request, table)


class InvalidRequest(Exception):
    """Undecodable or unusable input: INVALID_ARGUMENT / HTTP 400, never retried."""


@dataclass(frozen=True)
class IntakeResult:
    accepted: int
    rejected: int
    message: str = ""


@dataclass
class IntakeStats:
    requests: int = 0
    spans_accepted: int = 0
    spans_rejected: int = 0
    refused_requests: int = 0
    invalid_requests: int = 0


class Intake:
    def __init__(self, bus: Publisher, ingest: IngestChain | None = None) -> None:
        self.bus = bus
        self.ingest = ingest
        self.stats = IntakeStats()
        self._lock = threading.Lock()

    def parse(self, body: bytes) -> ExportTraceServiceRequest:
        req = ExportTraceServiceRequest()
        try:
            req.ParseFromString(body)
        except DecodeError as e:
            raise InvalidRequest(f"cannot decode ExportTraceServiceRequest protobuf: {e}") from None
        return req

    def accept(self, request: ExportTraceServiceRequest, raw: bytes | None) -> IntakeResult:
        """Validate, then publish. Raises BusRefused (retryable) or InvalidRequest."""
        total, rejected, reasons = _drop_invalid_spans(request)
        if rejected:
            raw = None  # the request changed; let the bus re-encode it
        accepted = total - rejected
        if accepted and self.ingest is not None:
            request = self.ingest.apply(request)
            raw = None
            # spans an ingest filter dropped are dropped on purpose: still a success for the client
            accepted = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        if accepted:
            try:
                self.bus.publish(request, raw, accepted)
            except Exception:
                with self._lock:
                    self.stats.refused_requests += 1
                raise
        with self._lock:
            self.stats.requests += 1
            self.stats.spans_accepted += accepted
            self.stats.spans_rejected += rejected
        message = ""
        if rejected:
            message = f"rejected {rejected} of {total} spans: " + "; ".join(sorted(reasons))
            log.warning("%s", message)
        return IntakeResult(accepted, rejected, message)

    def invalid(self) -> None:
        with self._lock:
            self.stats.invalid_requests += 1


def _drop_invalid_spans(req: ExportTraceServiceRequest) -> tuple[int, int, set[str]]:
    """Spans without a 16-byte trace id or 8-byte span id cannot be stored or joined: reject them."""
    total = 0
    rejected = 0
    reasons: set[str] = set()
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            n = len(ss.spans)
            total += n
            bad = [
                i
                for i, sp in enumerate(ss.spans)
                if len(sp.trace_id) != 16 or len(sp.span_id) != 8 or sp.trace_id == bytes(16)
            ]
            for i in reversed(bad):
                sp = ss.spans[i]
                if len(sp.trace_id) != 16 or sp.trace_id == bytes(16):
                    reasons.add(f"invalid trace_id ({len(sp.trace_id)} bytes, want 16 non-zero)")
                else:
                    reasons.add(f"invalid span_id ({len(sp.span_id)} bytes, want 8)")
                del ss.spans[i]
            rejected += len(bad)
    return total, rejected, reasons
