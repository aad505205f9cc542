"""EmbeddedBus: the bounded in-process queue of `tracelake run` on one machine.

Bounded in spans, not messages, because spans are what cost memory downstream. When full, the
receiver is refused with a retryable status; nothing is dropped. Whatever it holds lives in
memory only: a crash loses it (use the Kafka bus when that matters), a clean stop drains it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pipeline.bus.base import BusRefused, Delivery


class EmbeddedBus:
    def __init__(self, capacity_spans: int, retry_after: float = 1.0) -> None:
        self.capacity_spans = capacity_spans
        self.retry_after = retry_after
        self._queue: deque[tuple[bytes, int, int, float]] = deque()  # (value, spans, seq, published at)
        self._held = 0
        self._seq = 0
        self._closed = False
        self._cond = threading.Condition()
        # Names this run's messages in `lake_source`; distinct per process start so that
        # file names derived from it never collide with an earlier run's.
        self.run_id = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"

    @property
    def held_spans(self) -> int:
        return self._held

    @property
    def oldest_wait(self) -> float:
        """Seconds the oldest message has waited for the worker: how late queries see what arrives now."""
        with self._cond:
            return time.monotonic() - self._queue[0][3] if self._queue else 0.0

    def publish(self, request: ExportTraceServiceRequest, raw: bytes | None, spans: int) -> None:
        value = raw if raw is not None else request.SerializeToString()
        with self._cond:
            if self._closed:
                raise BusRefused("shutting down", self.retry_after, exhausted=False)
            # An oversized request is still taken into an empty queue, or it could never pass.
            if self._held and self._held + spans > self.capacity_spans:
                raise BusRefused(f"embedded bus full ({self._held} of {self.capacity_spans} spans)", self.retry_after)
            self._seq += 1
            self._queue.append((value, spans, self._seq, time.monotonic()))
            self._held += spans
            self._cond.notify()

    def take(self, max_spans: int, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        out: list[Delivery] = []
        taken = 0
        with self._cond:
            while True:
                while self._queue and (not out or taken + self._queue[0][1] <= max_spans):
                    value, spans, seq, _published = self._queue.popleft()
                    self._held -= spans
                    taken += spans
                    out.append(Delivery(value, spans, f"embedded:{self.run_id}@{seq}"))
                if taken >= max_spans or self._closed or self._queue:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
        return out

    def commit(self, held: dict[str, int]) -> None:
        """Nothing to commit: what the embedded bus hands out is gone from it."""

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def drained(self) -> bool:
        with self._cond:
            return self._closed and not self._queue
