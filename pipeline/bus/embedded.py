"""EmbeddedBus: the bus of `tracelake run` on one machine, between its receivers and worker processes.

A small Kafka in memory. Each worker process owns a share of trace-id space (a "partition" here, as
in Kafka): the receiver cuts every request by trace id (`pipeline.otlp.split`) and appends each share
to its partition's log under the next offset. A worker process reads its partition from a cursor and
commits, exactly like a Kafka consumer, up to the oldest offset whose rows are not yet durable in the
lake (the same low-watermark commit the worker makes on Kafka). A message stays in memory until it is
committed, so when a worker process dies its replacement replays everything that was not yet written
from the committed offset (`rewind`), and nothing acknowledged is lost.

Bounded by the spans and bytes it retains (taken but not yet committed counts): beyond either bound
the receiver is refused with a retryable status (429 / RESOURCE_EXHAUSTED), and nothing is dropped. A
crash of the whole `tracelake run` process still loses what the bus held (use Kafka when that matters);
a clean stop drains it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from core import metrics
from core.source_ref import source_ref
from pipeline.bus.base import BusRefused, Delivery
from pipeline.otlp.split import split_by_share


@dataclass(slots=True)
class _Message:
    offset: int
    value: bytes
    spans: int
    published: float  # time.monotonic() when the receiver appended it


@dataclass
class _Partition:
    key: str
    log: deque[_Message] = field(default_factory=deque)  # offsets >= committed, in order
    next_offset: int = 0  # what the next appended message gets
    committed: int = 0  # everything below is durable in the lake
    cursor: int = 0  # the next offset to hand to the partition's reader
    reader: int = 0  # which reader may move the cursor (a new one after each `attach`)

    def unread(self) -> bool:
        return self.cursor < self.next_offset


class EmbeddedBus:
    """Publisher for the receivers, and the partition logs the worker processes read."""

    def __init__(self, partitions: int, capacity_spans: int, capacity_bytes: int, retry_after: float = 1.0) -> None:
        if partitions < 1:
            raise ValueError("an embedded bus needs at least one partition")
        self.capacity_spans = capacity_spans
        self.capacity_bytes = capacity_bytes
        self.retry_after = retry_after
        # Names this run's messages in `lake_source` and file names; distinct per process start so
        # that names derived from offsets never collide with an earlier run's.
        self.run_id = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"
        self._partitions = [_Partition(f"{self.run_id}/{p}") for p in range(partitions)]
        self._held_spans = 0
        self._held_bytes = 0
        self._closed = False
        self._cond = threading.Condition()

    # -- receivers --------------------------------------------------------------------------
    @property
    def partitions(self) -> int:
        return len(self._partitions)

    @property
    def held_spans(self) -> int:
        return self._held_spans

    @property
    def held_bytes(self) -> int:
        return self._held_bytes

    def metrics(self) -> list[metrics.Sample]:
        return [
            metrics.gauge(
                "tracelake_bus_held_spans", "spans in the embedded bus not yet durable in the lake", self._held_spans
            ),
            metrics.gauge(
                "tracelake_bus_held_bytes", "bytes in the embedded bus not yet durable in the lake", self._held_bytes
            ),
        ]

    @property
    def oldest_wait(self) -> float:
        """Seconds the oldest message no worker process has read yet has waited: how late queries see
        what arrives now."""
        now = time.monotonic()
        with self._cond:
            waits = [
                now - p.log[p.cursor - p.committed].published
                for p in self._partitions
                if p.unread() and p.cursor - p.committed < len(p.log)
            ]
        return max(waits, default=0.0)

    def publish(self, request: ExportTraceServiceRequest, raw: bytes | None, spans: int) -> None:
        value = raw if raw is not None else request.SerializeToString()
        try:
            shares = split_by_share(value, len(self._partitions))
        except DecodeError as e:  # the receiver validated it: not expected
            raise ValueError(f"cannot split a request the receiver accepted: {e}") from e
        size = sum(len(v) for _, v, _ in shares)
        with self._cond:
            if self._closed:
                raise BusRefused("shutting down", self.retry_after, exhausted=False)
            # An oversized request is still taken into an empty bus, or it could never pass.
            if self._held_spans and (
                self._held_spans + spans > self.capacity_spans or self._held_bytes + size > self.capacity_bytes
            ):
                raise BusRefused(
                    f"embedded bus full ({self._held_spans} of {self.capacity_spans} spans, "
                    f"{self._held_bytes} of {self.capacity_bytes} bytes not yet written to the lake)",
                    self.retry_after,
                )
            now = time.monotonic()
            for share, body, n in shares:
                part = self._partitions[share]
                part.log.append(_Message(part.next_offset, body, n, now))
                part.next_offset += 1
                self._held_spans += n
                self._held_bytes += len(body)
            self._cond.notify_all()

    def close(self) -> None:
        """Refuse new data; readers get what is left, then `end_of_partition` is true."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- worker processes -------------------------------------------------------------------
    def partition_key(self, partition: int) -> str:
        return self._partitions[partition].key

    def attach(self, partition: int) -> tuple[int, int]:
        """A new reader of the partition (its predecessor died, or the first one): it starts at the
        committed offset. Returns (that offset, the reader's token for `read`)."""
        part = self._partitions[partition]
        with self._cond:
            part.cursor = part.committed
            part.reader += 1
            self._cond.notify_all()
            return part.cursor, part.reader

    def read(self, partition: int, reader: int, max_spans: int, timeout: float) -> list[Delivery]:
        """Messages from the partition's cursor on, at least one when any arrives within `timeout`.

        Only the partition's current reader moves the cursor: a read still waiting for the process that
        died must not take messages from its replacement."""
        part = self._partitions[partition]
        deadline = time.monotonic() + timeout
        with self._cond:
            while not part.unread() and not self._closed and part.reader == reader:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._cond.wait(remaining)
            if part.reader != reader:
                return []
            out: list[Delivery] = []
            taken = 0
            i = part.cursor - part.committed  # index of the cursor in the retained log
            while i < len(part.log) and (not out or taken + part.log[i].spans <= max_spans):
                m = part.log[i]
                out.append(Delivery(m.value, m.spans, source_ref("embedded", part.key, m.offset), part.key, m.offset))
                taken += m.spans
                i += 1
            part.cursor += len(out)
            return out

    def commit(self, partition: int, offset: int) -> None:
        """Everything below `offset` is durable: forget it."""
        part = self._partitions[partition]
        with self._cond:
            offset = min(offset, part.cursor)
            while part.log and part.log[0].offset < offset:
                m = part.log.popleft()
                self._held_spans -= m.spans
                self._held_bytes -= len(m.value)
            part.committed = max(part.committed, offset)
            self._cond.notify_all()

    def end_of_partition(self, partition: int) -> bool:
        """Closed and everything handed out: the reader may stop once it has made that durable."""
        part = self._partitions[partition]
        with self._cond:
            return self._closed and not part.unread()

    def fully_committed(self) -> bool:
        with self._cond:
            return all(p.committed == p.next_offset for p in self._partitions)

    def wait_committed(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not all(p.committed == p.next_offset for p in self._partitions):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def reader(self, partition: int) -> PartitionReader:
        """A `Source` over one partition in this process (benchmarks, tests, tools that embed a worker)."""
        return PartitionReader(self, partition)


class PartitionReader:
    """A worker's `Source` over a partition of an `EmbeddedBus` in the same process.

    Worker processes read through `pipeline.bus.pipe.PipeSource` instead; both commit the same way."""

    def __init__(self, bus: EmbeddedBus, partition: int) -> None:
        self.bus = bus
        self.partition = partition
        self.partition_key = bus.partition_key(partition)
        self._next, self._reader = bus.attach(partition)
        self._committed = self._next

    def take(self, max_spans: int, timeout: float) -> list[Delivery]:
        out = self.bus.read(self.partition, self._reader, max_spans, timeout)
        if out:
            self._next = max(self._next, out[-1].offset + 1)  # type: ignore[operator]
        return out

    def commit(self, held: dict[str, int]) -> None:
        target = min(self._next, held.get(self.partition_key, self._next))
        if target > self._committed:
            self.bus.commit(self.partition, target)
            self._committed = target

    def close(self) -> None:
        self.bus.close()

    @property
    def drained(self) -> bool:
        return self.bus.end_of_partition(self.partition)
