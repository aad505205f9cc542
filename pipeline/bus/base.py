"""What receivers hand to a bus and what workers take from it.

A bus carries serialized `ExportTraceServiceRequest`s (DESIGN.md, contract 1). How a request
is cut into messages is the bus's business: the embedded bus keeps a request whole, a Kafka bus
cuts it into one message per trace.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


class BusRefused(Exception):
    """The bus cannot take this now; the receiver answers with a retryable status."""

    def __init__(self, reason: str, retry_after: float, exhausted: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        # exhausted: full (429 / RESOURCE_EXHAUSTED); otherwise unreachable (503 / UNAVAILABLE)
        self.exhausted = exhausted


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message as a worker receives it; `source` becomes the rows' `lake_source`."""

    value: bytes
    spans: int
    source: str


class Bus(Protocol):
    def publish(self, request: ExportTraceServiceRequest, raw: bytes | None, spans: int) -> None:
        """Return once the bus holds the request durably enough to answer the client OK.

        Raises BusRefused when it cannot. `raw` is the request's serialization when the
        receiver still has it unchanged (saves re-encoding)."""
        ...

    def take(self, max_spans: int, timeout: float) -> list[Delivery]: ...

    def close(self) -> None:
        """Stop accepting; `take` keeps returning what is left, then an empty list."""
        ...

    @property
    def drained(self) -> bool: ...
