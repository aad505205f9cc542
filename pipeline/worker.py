"""Worker: bus → decode → processor chain → sinks, plus the per-trace summaries.

One thread runs `run()`; `step()` is one iteration and is what tests drive. Messages are
processed in batches per source partition, so every row, summary and held span knows which
partition and offset range it came from; the worker commits a partition only up to the oldest
offset that something (a sink buffer, an open trace summary, a processor) still holds in memory.

Stopping is cooperative: close the source, and `run()` returns once it is drained, processors
are shut down, every sink has flushed and the final offsets are committed.

Reloading (README "Changing a chain"): `request_swap(WorkerChain)` from any thread; the worker's thread
swaps at the next batch boundary (`_swap`) and resolves the returned future.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from google.protobuf.message import DecodeError

from core import feedback, metrics, schema, source_ref
from core.conventions import Normalizer
from core.processor import Processor, Sampler, StatefulProcessor
from core.sink import Sink, SinkWriteError
from pipeline.bus.base import Delivery, Source
from pipeline.feedback_scope import FeedbackScope
from pipeline.holdback import Holdback
from pipeline.otlp.attributes import RawAttributesRequest
from pipeline.otlp.decode import SourcedRequest, decode
from pipeline.otlp.wire import NotCanonical, decode_bodies
from pipeline.trace_summary import TraceSummarizer
from sinks.parquet.sink import ParquetSink

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
    commits: int = 0
    feedback_events: int = 0


@dataclass
class WorkerChain:
    """What a reload replaces in a running worker, built from a config (pipeline/build.py): the processor
    chain, the sinks, and the worker settings that are not restart-only."""

    processors: list[tuple[str, Processor]]
    sinks: list[Sink]
    normalizer: Normalizer
    trace_idle: float
    trace_max_wait: float | None
    max_batch_spans: int
    max_batch_delay: float
    holdback_retention: float | None


class WorkerStopping(Exception):
    """A swap requested of a worker that stopped before its next batch boundary."""


def lakes(sinks: list[Sink]) -> list[ParquetSink]:
    """The sinks that keep a holdback area (a Parquet lake's `_holdback/`): where the holdback writes what a
    sampler drops and reads back what late feedback promotes."""
    return [s for s in sinks if isinstance(s, ParquetSink)]


def _by_partition(deliveries: list[Delivery]) -> Iterable[tuple[str | None, list[Delivery]]]:
    groups: dict[str | None, list[Delivery]] = {}
    for d in deliveries:
        groups.setdefault(d.partition, []).append(d)
    return groups.items()


class Worker:
    def __init__(
        self,
        source: Source,
        processors: list[tuple[str, Processor]],
        sinks: list[Sink],
        normalizer: Normalizer,
        summarizer: TraceSummarizer,
        max_batch_spans: int = 8192,
        max_batch_delay: float = 0.2,
        commit_interval: float = 1.0,
        holdback_retention: float | None = None,
    ) -> None:
        self.source = source
        self.processors = processors
        self.sinks = sinks
        self.normalizer = normalizer
        self.summarizer = summarizer
        self.feedback_scope = FeedbackScope()
        self.max_batch_spans = max_batch_spans
        self.max_batch_delay = max_batch_delay
        self.commit_interval = commit_interval
        self.stats = WorkerStats()
        self.processor_in: dict[str, int] = dict.fromkeys((pid for pid, _ in processors), 0)
        self.processor_out: dict[str, int] = dict.fromkeys((pid for pid, _ in processors), 0)
        self.stopped = threading.Event()
        self.error: BaseException | None = None
        self._last_commit = 0.0
        self.holdback = Holdback(lakes(sinks), holdback_retention)
        self._last_busy = time.monotonic()
        self._released = True
        self._bind(processors)
        self._processors_shut_down = False
        self._swaps: list[tuple[WorkerChain, Future[None]]] = []
        self._swaps_closed = False  # the worker left its loop: no batch boundary comes any more
        self._swap_lock = threading.Lock()
        if hasattr(source, "on_revoke"):
            source.on_revoke = self.handle_revoke

    def _bind(self, processors: list[tuple[str, Processor]]) -> None:
        """The processor hooks, bound once per chain (core/processor.py): who holds spans, who promotes traces."""
        self._holders: list[tuple[int, StatefulProcessor]] = [
            (i, proc) for i, (_pid, proc) in enumerate(processors) if isinstance(proc, StatefulProcessor)
        ]
        self._samplers: list[Sampler] = [proc for _pid, proc in processors if isinstance(proc, Sampler)]

    def metrics(self) -> list[metrics.Sample]:
        """This worker's counters, its processors' and its sinks', read at the moment of the call."""
        s, held = self.stats, self.holdback
        out = [
            metrics.counter(name, doc, value)
            for name, value, doc in (
                ("tracelake_worker_spans_in", s.spans_in, "spans decoded from the bus (feedback events not counted)"),
                ("tracelake_worker_spans_out", s.spans_out, "spans written to the spans table"),
                ("tracelake_worker_spans_held_back", held.spans_held, "spans sampled out into the holdback area"),
                ("tracelake_worker_traces_summarised", s.traces_summarised, "trace summary rows written"),
                ("tracelake_worker_feedback_events", s.feedback_events, "feedback rows written"),
                ("tracelake_worker_promoted_traces", held.promoted_traces, "dropped traces promoted by late feedback"),
                (
                    "tracelake_worker_feedback_refused",
                    self.feedback_scope.refused,
                    "feedback events dropped because their tenant is not their trace's",
                ),
                ("tracelake_worker_undecodable_messages", s.undecodable_messages, "bus messages skipped"),
                ("tracelake_worker_offset_commits", s.commits, "offset commit rounds"),
            )
        ]
        out.append(
            metrics.gauge("tracelake_worker_open_traces", "traces not yet summarised", self.summarizer.open_traces)
        )
        for pid, _proc in self.processors:
            out.append(
                metrics.counter(
                    "tracelake_processor_spans_in", "spans into each processor", self.processor_in[pid], processor=pid
                )
            )
            out.append(
                metrics.counter(
                    "tracelake_processor_spans_out",
                    "spans out of each processor",
                    self.processor_out[pid],
                    processor=pid,
                )
            )
        for pid, proc in self.processors:
            for key, value in metrics.flatten_stats(proc.stats):
                out.append(
                    metrics.gauge(
                        "tracelake_processor_stat",
                        "each processor's own counters (redactions per entity, decisions per policy, ...)",
                        value,
                        processor=pid,
                        stat=key,
                    )
                )
        for sink in self.sinks:
            out.extend(sink.metrics())
        return out

    # -- one iteration ----------------------------------------------------------------------
    def step(self) -> int:
        self._swap_requested()
        if any(s.backlog_bytes > MAX_BACKLOG_BYTES for s in self.sinks):
            self._flush_due()
            time.sleep(0.2)
            return 0
        deliveries = self._take_batch()
        for partition, group in _by_partition(deliveries):
            self.handle(group, partition)
        self._release_memory_when_idle(bool(deliveries))
        self._promote()
        self._tick()
        self._maybe_commit()
        return len(deliveries)

    def _take_batch(self) -> list[Delivery]:
        """Up to `max_batch_spans` spans, waiting at most `max_batch_delay` after the first message for more
        (the Collector's batch processor: size or timeout). A bus hands over what is waiting at once; a worker
        that keeps up would otherwise run its chain on every message alone, and a batch of one 512-span request
        costs twice the CPU per span of one of 2,048 (benchmarks/README.md, issue 12 evening)."""
        deliveries = self.source.take(self.max_batch_spans, self.max_batch_delay)
        if not deliveries or any(d.spans <= 0 for d in deliveries):
            return deliveries  # unknown sizes (Kafka): its consume already waits for a full fetch or the timeout
        spans = sum(d.spans for d in deliveries)
        deadline = time.monotonic() + self.max_batch_delay
        while spans < self.max_batch_spans and (remaining := deadline - time.monotonic()) > 0:
            more = self.source.take(self.max_batch_spans - spans, remaining)
            if not more:
                break
            deliveries += more
            spans += sum(d.spans for d in more)
        return deliveries

    # After this long without data, free Arrow memory kept for reuse goes back to the OS
    # (pipeline.service.use_server_memory_pool keeps it while batches keep coming).
    IDLE_RELEASE_SECONDS = 5.0

    def _release_memory_when_idle(self, busy: bool) -> None:
        now = time.monotonic()
        if busy:
            self._last_busy, self._released = now, False
        elif not self._released and now - self._last_busy >= self.IDLE_RELEASE_SECONDS:
            pa.default_memory_pool().release_unused()
            self._released = True

    def handle(self, deliveries: list[Delivery], partition: str | None = None) -> None:
        offsets = None
        if partition is not None:
            known = [d.offset for d in deliveries if d.offset is not None]
            offsets = (min(known), max(known)) if known else None
        try:
            batch = decode_bodies([d.value for d in deliveries], [d.source for d in deliveries])
        except (NotCanonical, DecodeError):
            batch = self._decode_each(deliveries)
        except Exception:  # a bug in the columnar reader must not make a poison pill of a batch
            log.exception("columnar decode failed; decoding the batch message by message")
            batch = self._decode_each(deliveries)
        batch = self.feedback_scope.apply(self.normalizer(batch))
        self.stats.batches += 1
        # feedback events travel as synthetic spans; they are counted as feedback, never as spans
        self.stats.spans_in += batch.num_rows - (pc.sum(feedback.is_synthetic(batch)).as_py() or 0)
        self._emit(self._run_chain(batch, 0), partition, offsets)

    def _decode_each(self, deliveries: list[Delivery]) -> pa.Table:
        """A batch the columnar reader left to protobuf: each message on its own, the undecodable skipped
        (the receiver validated what it published; a foreign producer may not have)."""
        tables = []
        for d in deliveries:
            try:
                request = RawAttributesRequest.FromString(d.value)
                tables.append(decode([SourcedRequest(request, d.source)]))
            except Exception as e:
                self.stats.undecodable_messages += 1
                log.error("skipping undecodable message %s: %s", d.source, e)
        return pa.concat_tables(tables) if tables else schema.empty("spans")

    def _run_chain(self, batch: pa.Table, start: int) -> pa.Table:
        """Processors from position `start` on: spans a holder releases still go through what follows it."""
        for pid, proc in self.processors[start:]:
            if batch.num_rows == 0:
                break
            self.processor_in[pid] += batch.num_rows
            batch = proc.process(batch)
            self.processor_out[pid] += batch.num_rows
        return batch

    def _emit(self, spans: pa.Table, source: str | None = None, offsets: tuple[int, int] | None = None) -> None:
        """Route a processed batch: every row into the trace summaries, feedback rows into `feedback`,
        spans a tail sampler kept into `spans`, spans it dropped into the holdback area."""
        if spans.num_rows == 0:
            return
        spans = self.summarizer.observe(spans, source, offsets)  # marks spans that repeat an LLM call
        events = feedback.extract(spans)
        synthetic = feedback.is_synthetic(spans)
        real = spans.filter(pc.invert(synthetic)) if pc.any(synthetic).as_py() else spans  # a filter copies
        kept, dropped = real, None
        if "sampling_kept" in real.column_names:
            mask = real.column("sampling_kept")
            kept, dropped = real.filter(mask), real.filter(pc.invert(mask))
        self.stats.spans_out += kept.num_rows
        for sink in self.sinks:
            sink.write("spans", kept, source, offsets)
            sink.write("feedback", events, source, offsets)
        if dropped is not None:
            self.holdback.hold(dropped, source, offsets)
        self.stats.feedback_events += events.num_rows

    def _promote(self, samplers: list[Sampler] | None = None) -> None:
        """Late negative feedback for dropped traces: the holdback moves their spans into `spans`."""
        requests: list[tuple[str, str]] = []
        for sampler in self._samplers if samplers is None else samplers:
            requests.extend(sampler.take_promotions())
        if not requests or not self.sinks:
            self.feedback_scope.forget_ratings()  # the ratings seen since the last check promote nothing
            return
        # only held-back spans of the tenant that rated their trace (pipeline/feedback_scope.py)
        self.holdback.promote(requests, self.feedback_scope.promotable)

    def _emit_released(self, spans: pa.Table, position: int) -> None:
        """Spans the processor at `position` held and now releases: the rest of the chain, then the sinks,
        with their partition and offsets recovered from lake_source."""
        if spans.num_rows == 0:
            return
        self.processor_out[self.processors[position][0]] += spans.num_rows  # the holder's output, released late
        spans = self._run_chain(spans, position + 1)
        if spans.num_rows == 0:
            return
        partition, offset = source_ref.partitions_and_offsets(spans.column("lake_source"))
        for key in pc.unique(partition).to_pylist():
            if key is None:
                self._emit(spans.filter(pc.is_null(partition)))
                continue
            mask = pc.equal(partition, key)
            mm = pc.min_max(offset.filter(mask))
            self._emit(spans.filter(mask), key, (mm["min"].as_py(), mm["max"].as_py()))

    def _tick(self, force: bool = False, sources: set[str] | None = None) -> None:
        if not self._processors_shut_down:
            now_ns = time.time_ns()
            for i, holder in self._holders:
                self._emit_released(holder.tick(now_ns), i)
            self._promote()
        for part in self.summarizer.due(force=force, sources=sources):
            self.stats.traces_summarised += part.rows.num_rows
            for sink in self.sinks:
                sink.write("traces", part.rows, part.source, part.offsets)
        self._flush_due()
        self.holdback.expire()

    def _flush_due(self) -> None:
        for sink in self.sinks:
            sink.flush_due()

    # -- offsets ----------------------------------------------------------------------------
    def low_watermarks(self) -> dict[str, int]:
        """Per source partition, the oldest offset something still holds only in memory."""
        held: dict[str, int] = {}
        parts: list[dict[str, int]] = [s.low_watermarks() for s in self.sinks]
        parts.append(self.summarizer.low_watermarks())
        parts.extend(holder.low_watermarks() for _i, holder in self._holders)
        for marks in parts:
            for k, v in marks.items():
                held[k] = min(held.get(k, v), v)
        return held

    def _maybe_commit(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_commit >= self.commit_interval:
            self._last_commit = now
            self.source.commit(self.low_watermarks())
            self.stats.commits += 1

    def handle_revoke(self, sources: list[str]) -> None:
        """Before partitions move to another worker: write what we hold of them, commit it."""
        revoked = set(sources)
        if not self._processors_shut_down:  # leaving the group after shutdown revokes too
            for i, holder in self._holders:
                self._emit_released(holder.on_revoke(revoked), i)
        self._tick(force=True, sources=revoked)
        for sink in self.sinks:
            try:
                sink.flush_all(sources=revoked)
            except SinkWriteError as e:
                # not committed: the partitions' next owner reads these messages again
                log.error("could not write data of revoked partitions before handing them over: %s", e)
        self._maybe_commit(force=True)
        self._forget(revoked)

    def _forget(self, sources: set[str] | None) -> None:
        """After the commit: processors drop state the next owner of these partitions will replay."""
        for _i, holder in self._holders:
            holder.forget(sources)

    # -- reload -----------------------------------------------------------------------------
    def request_swap(self, chain: WorkerChain) -> Future[None]:
        """Ask the worker's thread to run `chain` from its next batch boundary on (any thread may ask). The
        future fails with the reason when the swap could not happen; the old chain then keeps running."""
        future: Future[None] = Future()
        with self._swap_lock:
            if self._swaps_closed:
                future.set_exception(WorkerStopping("the worker is stopping"))
            else:
                self._swaps.append((chain, future))
        return future

    def _swap_requested(self) -> None:
        with self._swap_lock:
            swaps, self._swaps = self._swaps, []
        for chain, future in swaps:
            try:
                self._swap(chain)
            except Exception as e:
                log.error("reload: keeping the old chain: %s", e)
                future.set_exception(e)
            else:
                future.set_result(None)

    def _swap(self, new: WorkerChain) -> None:
        """At a batch boundary: the old sinks write everything they buffer, as for a rebalance (a failure
        raises before anything changed), and the new sinks take over; the old stateful processors then
        release everything they hold, decided by their own policies (`retire`), through the rest of the old
        chain into the new sinks; then the new chain runs. Offsets stay behind whatever is still only in
        memory (the new sinks' buffers), so a crash at any point replays instead of losing."""
        for sink in self.sinks:
            sink.flush_all()
        self.sinks = new.sinks
        for i, holder in self._holders:
            if isinstance(holder, Sampler):
                self._promote([holder])  # its last promotions, while it still runs
            self._emit_released(holder.retire(), i)
        self.processors = new.processors
        self._bind(new.processors)
        self.processor_in = {pid: self.processor_in.get(pid, 0) for pid, _ in new.processors}
        self.processor_out = {pid: self.processor_out.get(pid, 0) for pid, _ in new.processors}
        self.normalizer = new.normalizer
        self.summarizer.trace_idle, self.summarizer.trace_max_wait = new.trace_idle, new.trace_max_wait
        self.max_batch_spans, self.max_batch_delay = new.max_batch_spans, new.max_batch_delay
        self.holdback.sinks, self.holdback.retention_s = lakes(new.sinks), new.holdback_retention
        self._maybe_commit(force=True)
        log.info("reload: now running processors [%s]", ", ".join(pid for pid, _ in new.processors))

    def _refuse_swaps(self) -> None:
        with self._swap_lock:
            swaps, self._swaps, self._swaps_closed = self._swaps, [], True
        for _chain, future in swaps:
            future.set_exception(WorkerStopping("the worker stopped before its next batch"))

    # -- lifecycle --------------------------------------------------------------------------
    def run(self) -> None:
        try:
            while not self.source.drained:
                self.step()
            self._refuse_swaps()
            self.shutdown()
        except BaseException as e:
            self.error = e
            log.critical("worker failed: %s", e, exc_info=True)
        finally:
            self._refuse_swaps()
            finish: Any = getattr(self.source, "finish", None)
            if finish is not None:
                finish()
            self.stopped.set()

    def shutdown(self) -> None:
        """Release what processors hold, summarise every open trace, flush every sink, commit.
        No processor hook but low_watermarks and forget runs after a processor's shutdown()."""
        for i, holder in self._holders:
            if isinstance(holder, Sampler):
                self._promote([holder])  # its last promotions, while it still runs
            self._emit_released(holder.shutdown(), i)
        self._processors_shut_down = True
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
        self._maybe_commit(force=True)
        self._forget(None)
