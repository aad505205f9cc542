"""The embedded bus across a process boundary: a worker process reads its partition over a pipe.

`PipeSource` is the worker process's `Source`; `PartitionFeed` is the thread in the `tracelake run`
process that serves it from the `EmbeddedBus`. The protocol is request/response on one duplex
connection, used only by the worker's own thread on the other side:

    worker → run:  ("take", max_spans, timeout)   answered by ("batch", [(value, spans, offset), ...])
                                                  or ("end",) once the bus is closed and drained
    worker → run:  ("commit", offset)             everything below offset is durable in the lake

The worker commits exactly as it does on Kafka (pipeline/worker.py: up to the oldest offset something
still holds in memory), so both buses share one worker code path.
"""

from __future__ import annotations

import logging
import threading
from multiprocessing.connection import Connection

from core.source_ref import source_ref
from pipeline.bus.base import Delivery
from pipeline.bus.embedded import EmbeddedBus

log = logging.getLogger("tracelake.bus.pipe")


class PipeSource:
    """A worker process's view of its partition of the embedded bus."""

    def __init__(self, conn: Connection, partition_key: str, first_offset: int = 0) -> None:
        self._conn = conn
        self.partition_key = partition_key
        self._next = first_offset  # one past the last offset taken
        self._committed = first_offset
        self._ended = False

    def take(self, max_spans: int, timeout: float) -> list[Delivery]:
        if self._ended:
            return []
        try:
            self._conn.send(("take", max_spans, timeout))
            reply = self._conn.recv()
        except (EOFError, OSError):
            # `tracelake run` is gone: write what we hold and stop (nobody will replay it to us)
            log.error("lost the connection to the tracelake run process; flushing and stopping")
            self._ended = True
            return []
        if reply[0] == "end":
            self._ended = True
            return []
        key = self.partition_key
        out = [
            Delivery(value, spans, source_ref("embedded", key, offset), key, offset)
            for value, spans, offset in reply[1]
        ]
        if out:
            self._next = max(self._next, out[-1].offset + 1)  # type: ignore[operator]
        return out

    def commit(self, held: dict[str, int]) -> None:
        target = min(self._next, held.get(self.partition_key, self._next))
        if target <= self._committed:
            return
        try:
            self._conn.send(("commit", target))
        except OSError:
            return  # the run process is gone; nothing left to tell
        self._committed = target

    def close(self) -> None:
        """The run process decides when a partition ends (it answers "end"); nothing to do here."""

    @property
    def drained(self) -> bool:
        return self._ended


class PartitionFeed:
    """In `tracelake run`: serves one worker process its partition until the process goes away."""

    def __init__(self, bus: EmbeddedBus, partition: int, reader: int, conn: Connection) -> None:
        self.bus = bus
        self.partition = partition
        self.reader = reader
        self._conn = conn
        self._thread = threading.Thread(target=self._serve, name=f"feed-{partition}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _serve(self) -> None:
        bus, p, conn = self.bus, self.partition, self._conn
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                return  # the worker process exited (or died); the pool decides what follows
            try:
                if msg[0] == "take":
                    _, max_spans, timeout = msg
                    if bus.end_of_partition(p):
                        conn.send(("end",))
                        continue
                    batch = bus.read(p, self.reader, max_spans, timeout)
                    conn.send(("batch", [(d.value, d.spans, d.offset) for d in batch]))
                elif msg[0] == "commit":
                    bus.commit(p, msg[1])
                else:
                    log.error("unexpected message from worker process %d: %r", p, msg[0])
            except OSError:
                return
