"""What receivers hand to a bus and what workers take from it.

A bus carries serialized `ExportTraceServiceRequest`s (docs/design.md, contract 1). How a request
is cut into messages is the bus's business: the embedded bus keeps a request whole, the Kafka
bus cuts it into one message per trace. Receivers see a `Publisher`, workers a `Source`; the
embedded bus is both, in one process.
"""

from __future__ import annotations

from collections.abc import Callable
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
    """One message as a worker receives it; `source` becomes the rows' `lake_source`.

    `partition` ("topic/3") and `offset` are set by buses whose progress is committed
    (Kafka); the worker commits a partition only up to what the lake holds durably.
    """

    value: bytes
    spans: int
    source: str
    partition: str | None = None
    offset: int | None = None


class Publisher(Protocol):
    def publish(self, request: ExportTraceServiceRequest, raw: bytes | None, spans: int) -> None:
        """Return once the bus holds the request durably enough to answer the client OK.

        Raises BusRefused when it cannot. `raw` is the request's serialization when the
        receiver still has it unchanged (saves re-encoding)."""
        ...

    def close(self) -> None: ...


# Callback a source calls (on the worker's thread) before it gives partitions away.
RevokeHandler = Callable[[list[str]], None]


class Source(Protocol):
    def take(self, max_spans: int, timeout: float) -> list[Delivery]: ...

    def commit(self, held: dict[str, int]) -> None:
        """Commit progress: for each partition, up to `held[p]` (the oldest offset not yet durable)
        or everything taken when nothing of it is held. No-op for buses without offsets."""
        ...

    def close(self) -> None:
        """Stop accepting; `take` keeps returning what is left, then an empty list."""
        ...

    @property
    def drained(self) -> bool: ...
