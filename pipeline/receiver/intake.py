"""What both OTLP transports do with a request: check it, reject what is invalid, hand it on.

Transport-independent so that gRPC and HTTP answer the same request the same way.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from core import metrics
from core.conventions import Normalizer
from core.processor import Processor
from pipeline.bus.base import BusRefused, Publisher
from pipeline.otlp.decode import SourcedRequest, decode
from pipeline.otlp.encode import apply_table
from pipeline.otlp.wire import NotCanonical, decode_bodies
from pipeline.receiver.auth import Caller, TenantDenied
from pipeline.receiver.rate_limit import RateLimited
from pipeline.receiver.tenants import Tenancy

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

    def apply(self, request: ExportTraceServiceRequest, raw: bytes | None = None) -> ExportTraceServiceRequest:
        """`raw`: the request's bytes when it is unchanged since it was received (the columnar decode)."""
        table = self.normalizer(decode_request(request, raw))
        before = table.num_rows
        with self._lock:
            for _pid, proc in self.processors:
                if table.num_rows == 0:
                    break
                table = proc.process(table)
            self.spans_dropped += before - table.num_rows
        return apply_table(request, table)


def decode_request(request: ExportTraceServiceRequest, raw: bytes | None, source: str = "ingest") -> pa.Table:
    """One export request as a spans table, by the columnar reader when it can (the worker's path), else protobuf."""
    if raw is not None:
        try:
            return decode_bodies([raw], [source])
        except (NotCanonical, DecodeError):
            pass  # the protobuf decode reads what the columnar one leaves alone
    return decode([SourcedRequest(request, source)])


class InvalidRequest(Exception):
    """Undecodable or unusable input: INVALID_ARGUMENT / HTTP 400, never retried."""


@dataclass(frozen=True)
class IntakeResult:
    accepted: int
    rejected: int
    message: str = ""


class IntakeStats:
    """Counters by (transport, outcome); read by the telemetry endpoint at scrape time."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str]] = Counter()
        self.spans: Counter[tuple[str, str]] = Counter()
        self.feedback: Counter[tuple[str, str]] = Counter()  # POST /v1/feedback events (not spans)

    def metrics(self) -> list[metrics.Sample]:
        out = []
        for name, doc, counts in (
            ("tracelake_receiver_requests", "OTLP export requests by transport and outcome", self.requests),
            (
                "tracelake_receiver_spans",
                "spans by transport and outcome (accepted, refused_*, rejected_*)",
                self.spans,
            ),
            (
                "tracelake_receiver_feedback_events",
                "feedback events received on /v1/feedback by transport and outcome (not counted as spans)",
                self.feedback,
            ),
        ):
            for (transport, outcome), n in sorted(counts.items()):
                out.append(metrics.counter(name, doc, n, transport=transport, outcome=outcome))
        return out

    @property
    def refused_requests(self) -> int:
        return sum(n for (_t, outcome), n in self.requests.items() if outcome.startswith("refused"))

    @property
    def spans_accepted(self) -> int:
        return sum(n for (_t, outcome), n in self.spans.items() if outcome == "accepted")


class Intake:
    def __init__(
        self,
        bus: Publisher,
        ingest: IngestChain | None = None,
        memory: MemoryGate | None = None,
        tenancy: Tenancy | None = None,
    ) -> None:
        self.bus = bus
        self.ingest = ingest
        self.memory = memory
        # without authentication it only removes the tenant attribute no token vouches for
        self.tenancy = tenancy or Tenancy(())
        self.stats = IntakeStats()
        self._lock = threading.Lock()

    def parse(self, body: bytes) -> ExportTraceServiceRequest:
        req = ExportTraceServiceRequest()
        try:
            req.ParseFromString(body)
        except DecodeError as e:
            raise InvalidRequest(f"cannot decode ExportTraceServiceRequest protobuf: {e}") from None
        return req

    def _count(self, transport: str, outcome: str, spans: int, feedback: bool = False) -> None:
        with self._lock:
            if feedback:
                self.stats.feedback[(transport, outcome)] += spans
                return
            self.stats.requests[(transport, outcome)] += 1
            if spans:
                self.stats.spans[(transport, outcome)] += spans

    def accept(
        self,
        request: ExportTraceServiceRequest,
        raw: bytes | None,
        transport: str = "grpc",
        rejected_earlier: Sequence[str] = (),
        feedback: bool = False,
        caller: Caller | None = None,
    ) -> IntakeResult:
        """Validate, stamp tenants, then publish. Raises BusRefused (retryable: bus full, rate limit, memory),
        TenantDenied (the token may not write a tenant the request names) or InvalidRequest.

        `rejected_earlier`: one reason per span the transport already left out of `request` (ids in
        OTLP/JSON that are not hex); they are rejected like spans with wrong-length ids. `feedback`:
        the request holds feedback events as synthetic spans (core/feedback.py): they are counted
        as feedback, not as OTLP requests or spans. `caller`: who sent it, when the receiver authenticates."""
        total, rejected, reasons = _drop_invalid_spans(request)
        total += len(rejected_earlier)
        rejected += len(rejected_earlier)
        reasons.update(rejected_earlier)
        if self.memory is not None and self.memory.over_limit:
            self._count(transport, "refused_memory_limit", total, feedback)
            raise BusRefused(self.memory.reason, self.memory.retry_after, exhausted=True)
        if rejected:
            raw = None  # the request changed; let the bus re-encode it
            self._count(transport, "rejected_invalid_id", rejected, feedback)
        accepted = total - rejected
        stamped = None
        if accepted:
            try:
                stamped = self.tenancy.admit(request, raw, caller, feedback)
            except TenantDenied:
                self._count(transport, "refused_tenant_denied", accepted, feedback)
                raise
            except RateLimited:
                self._count(transport, "refused_rate_limit", accepted, feedback)
                raise
            request, raw = stamped.request, stamped.raw
        if accepted and self.ingest is not None:
            request = self.ingest.apply(request, raw)
            raw = None
            # spans an ingest filter dropped are dropped on purpose: still a success for the client
            accepted = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        if accepted:
            try:
                self.bus.publish(request, raw, accepted)
            except BusRefused as e:
                outcome = "refused_bus_full" if e.exhausted else "refused_bus_unavailable"
                self._count(transport, outcome, accepted, feedback)
                if stamped is not None:
                    self.tenancy.settle(stamped, outcome, feedback)
                raise
        self._count(transport, "accepted", accepted, feedback)
        if stamped is not None:
            self.tenancy.settle(stamped, "accepted", feedback)
        message = ""
        if rejected:
            shown = sorted(reasons)[:5]  # a request of 10k bad spans must not answer with 10k reasons
            more = f"; and {len(reasons) - len(shown)} more" if len(reasons) > len(shown) else ""
            message = f"rejected {rejected} of {total} spans: " + "; ".join(shown) + more
            log.warning("%s", message)
        return IntakeResult(accepted, rejected, message)

    def invalid(self, transport: str = "grpc", feedback: bool = False) -> None:
        """An undecodable request (a feedback body counts as one invalid event)."""
        self._count(transport, "invalid", 1 if feedback else 0, feedback)

    def unauthenticated(self, transport: str, feedback: bool = False) -> None:
        """A request refused for its credentials before it was read (its spans are not known)."""
        self._count(transport, "refused_unauthenticated", 1 if feedback else 0, feedback)


class MemoryGate(Protocol):
    over_limit: bool
    reason: str
    retry_after: float


_NO_TRACE = bytes(16)


def _drop_invalid_spans(req: ExportTraceServiceRequest) -> tuple[int, int, set[str]]:
    """Spans without a 16-byte trace id or 8-byte span id cannot be stored or joined: reject them."""
    total = 0
    rejected = 0
    reasons: set[str] = set()
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            spans = ss.spans
            total += len(spans)
            bad = [
                i for i, sp in enumerate(spans) if len(sp.span_id) != 8 or len(t := sp.trace_id) != 16 or t == _NO_TRACE
            ]
            for i in reversed(bad):
                sp = spans[i]
                if len(sp.trace_id) != 16 or sp.trace_id == _NO_TRACE:
                    reasons.add(f"invalid trace_id ({len(sp.trace_id)} bytes, want 16 non-zero)")
                else:
                    reasons.add(f"invalid span_id ({len(sp.span_id)} bytes, want 8)")
                del spans[i]
            rejected += len(bad)
    return total, rejected, reasons
