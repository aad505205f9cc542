"""TailSampler: hold a trace's spans until the trace is complete, then keep or drop it whole.

Per batch, one Arrow group_by computes every per-trace aggregate the policies need; the results
are folded into a small per-trace record (Python work per trace, never per span). Held spans stay
in the batch tables they arrived in; releasing many traces at once is one `is_in` + `filter` per
held batch, and a held batch is dropped once none of its traces is pending any more.

Released rows carry two extra columns, `sampling_kept` and `sampling_reasons` (names of the
policies that kept the trace); the worker routes kept rows to `spans`, dropped rows to the
holdback area, and every row into the trace summaries.

Early release: a trace that a monotone policy already keeps (an error, a thumbs-down, a cost or
duration past a threshold, a matching attribute, the probabilistic share) will be kept whatever
arrives next, so its held rows are released at once and its later rows pass straight through;
only its decision (final keep reasons, counters, the decision cache) waits for decision_wait.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from core import schema, source_ref
from core.processor import SAMPLING_KEPT as KEPT
from core.processor import SAMPLING_REASONS as REASONS
from core.processor import ProcessorContext
from processors.tail_sampling.config import TailSamplingConfig
from processors.tail_sampling.policies import FALSE, NULL_STR, TRUE, Feature, Feedback, Policy, Rows, build, merge

Decision = tuple[bool, tuple[str, ...]]
UNDECIDED: Decision = (True, ())  # feedback rows of traces still pending


@dataclass(slots=True)
class _Trace:
    """An undecided trace: aggregates so far, where its rows are held, its lowest Kafka offsets."""

    last_seen: float
    values: tuple[Any, ...]
    batches: tuple[int, ...]
    # (partition, lowest offset) pairs, usually one. Tuples rather than lists/dicts: smaller, and
    # the garbage collector stops tracking them, which matters with 50k pending traces.
    marks: tuple[tuple[str, int], ...] = ()
    # released early: the policies keeping it so far (its rows are no longer held)
    kept: tuple[str, ...] | None = None

    def partitions(self) -> set[str]:
        return {p for p, _ in self.marks}


@dataclass(slots=True)
class _Held:
    """A batch as it arrived (no copy); `rows` masks out its rows released at once (feedback, late spans)."""

    table: pa.Table
    traces: int  # pending traces with rows in `table`
    live: int  # rows of `table` not released yet
    rows: pa.ChunkedArray | None = None  # the rows of `table` that were held (None: all of them)
    dead: list[str] = field(default_factory=list)  # released traces whose rows are still in `table`


def _add_mark(marks: tuple[tuple[str, int], ...], part: str, offset: int) -> tuple[tuple[str, int], ...]:
    for i, (p, o) in enumerate(marks):
        if p == part:
            return marks if o <= offset else (*marks[:i], (part, offset), *marks[i + 1 :])
    return (*marks, (part, offset))


def bus_offsets(sources: pa.Array | pa.ChunkedArray) -> tuple[list[str | None], list[int | None]]:
    """(partition, offset) of each lake_source value; None for rows that came from no committed bus."""
    parts, offsets = source_ref.partitions_and_offsets(sources)
    return parts.to_pylist(), offsets.to_pylist()


class TailSampler:
    """The `tail_sampling` processor, a `core.processor.Sampler`; README.md tells how it meets that contract."""

    def __init__(
        self,
        config: TailSamplingConfig,
        context: ProcessorContext | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.context = context or ProcessorContext("tail_sampling")
        self.replayable = self.context.replayable_source
        self._clock = clock
        self.policies: list[Policy] = [build(p) for p in config.policies]
        unique: dict[str, Feature] = {}
        for p in self.policies:
            for f in p.features:
                unique.setdefault(f.key, f)
        self.features = list(unique.values())
        self._aggs = [f.agg for f in self.features]
        index = {f.key: i for i, f in enumerate(self.features)}
        for p in self.policies:
            p.bind(index)
        self.feedback_policies = [p for p in self.policies if isinstance(p, Feedback)]
        self.monotone_policies = [p for p in self.policies if p.monotone] if config.early_release else []

        # least recently active first: the order of both decision_wait and early decisions
        self._pending: OrderedDict[str, _Trace] = OrderedDict()
        self._held: dict[int, _Held] = {}
        self._next_batch = 0
        # trace id -> kept: its (interned, non-empty) reasons; dropped: when it was decided (clock), for
        # late_feedback_window. No per-entry tuple: 200k entries are worth the isinstance().
        self._decided: OrderedDict[str, tuple[str, ...] | float] = OrderedDict()
        # rows decided early in process(): released by the next tick() (with their Kafka marks)
        self._outbox: list[tuple[pa.Table, dict[str, int]]] = []
        self._promotions: list[tuple[str, str]] = []
        self._frozen: set[str] = set()
        self._frozen_all = False
        self._schema: pa.Schema = schema.SPANS
        self._interned: dict[Any, Any] = {}
        self.stats: dict[str, int] = {
            **{f"kept_by.{p.name}": 0 for p in self.policies},
            "traces_kept": 0,
            "traces_dropped": 0,
            "decided_early": 0,
            "released_early": 0,
            "late_spans_kept": 0,
            "late_spans_dropped": 0,
            "promotions": 0,
            "pending_traces": 0,
            "held_spans": 0,
        }

    # -- the worker's interface ---------------------------------------------------------------
    def process(self, batch: pa.Table) -> pa.Table:
        """Fold a batch into pending traces; return the rows released now (decided traces, feedback)."""
        batch = self._strip(batch)
        self._schema = batch.schema
        if batch.num_rows == 0:
            return self._empty()
        rows = Rows(batch)
        is_feedback = rows.is_feedback
        agg = self._aggregate(rows, is_feedback)
        now = self._clock()
        trace_ids: list[str] = agg.column("trace_id").to_pylist()
        held_n: list[int] = agg.column("held_sum").to_pylist()
        real_n: list[int] = agg.column("real_sum").to_pylist()
        columns = [agg.column(f"f{i}_{f.agg}").to_pylist() for i, f in enumerate(self.features)]
        per_trace: list[tuple[Any, ...]] = list(zip(*columns, strict=True)) if columns else [()] * len(trace_ids)

        answer: dict[str, Decision] = {}  # decision stamped on this batch's released rows
        whole: list[str] = []  # traces all of whose rows in this batch are released now
        holding: list[str] = []
        holding_at: list[int] = []  # their positions in `agg`
        for j, tid in enumerate(trace_ids):
            values = per_trace[j]
            entry = self._decided.get(tid)
            if entry is not None:  # late spans / late feedback follow the decision
                kept, reasons = self._late(tid, values, entry, now)
                self.stats["late_spans_kept" if kept else "late_spans_dropped"] += held_n[j]
                answer[tid] = (kept, reasons)
                whole.append(tid)
                continue
            trace = self._pending.get(tid)
            if trace is None:
                if not held_n[j]:  # feedback for a trace neither pending nor remembered
                    answer[tid] = self._unknown_feedback(tid, values, now)
                    whole.append(tid)
                    continue
                trace = self._pending[tid] = _Trace(now, values, ())
            else:
                trace.values = tuple([merge(a, o, n) for a, o, n in zip(self._aggs, trace.values, values, strict=True)])
                if real_n[j]:  # the wait counts from the last span, not from feedback
                    trace.last_seen = now
                    self._pending.move_to_end(tid)
            if held_n[j]:
                holding.append(tid)
                holding_at.append(j)
            answer[tid] = UNDECIDED

        if self.monotone_policies:
            kept_traces = self._release_kept(trace_ids, answer)
            if kept_traces:
                whole += kept_traces
                at = [(t, j) for t, j in zip(holding, holding_at, strict=True) if t not in kept_traces]
                holding, holding_at = [t for t, _ in at], [j for _, j in at]

        release = is_feedback
        if whole:
            release = pc.or_(release, pc.is_in(batch.column("trace_id"), value_set=pa.array(whole, pa.string())))
        released = pc.sum(release).as_py() or 0
        if holding:  # the batch itself is held, not a copy of the held rows
            rows_held = None if released == 0 else pc.invert(release)
            self._hold(batch, rows_held, batch.num_rows - released, holding, holding_at, agg)
        out = batch.slice(0, 0) if released == 0 else batch.filter(release)
        self._evict()
        self._gauges()
        return self._label(out, answer)

    def tick(self, now_ns: int) -> pa.Table:
        """Decide traces idle for decision_wait (by the injected clock; now_ns is wall time, unused)."""
        now = self._clock()
        due = []
        for tid, trace in self._pending.items():
            if now - trace.last_seen < self.config.decision_wait:
                break
            if not self._is_frozen(trace):
                due.append(tid)
        parts = [table for table, _ in self._outbox]
        self._outbox.clear()
        if due:
            parts.append(self._decide(due))
        self._gauges()
        return self._concat(parts)

    def shutdown(self) -> pa.Table:
        """Embedded bus: decide everything now. Kafka: release only what is decided already (early, for
        num_traces) and keep the rest; the next owner replays the uncommitted offsets."""
        if self.replayable:
            self._frozen_all = True
            return self._release([])
        return self._release(list(self._pending))

    def retire(self) -> pa.Table:
        """A reload replaces the chain: decide every pending trace with these policies now and release it, on
        Kafka too (a replay would reach the new chain, not this one). Traces of revoked partitions waiting
        for forget() stay frozen: their next owner replays them."""
        self._frozen_all = False
        return self._release([t for t, trace in self._pending.items() if not self._is_frozen(trace)])

    def on_revoke(self, sources: set[str]) -> pa.Table:
        """Partitions move away: decide their traces (embedded) or freeze them until forget() (Kafka)."""
        if self.replayable:
            self._frozen |= set(sources)
            return self._empty()
        return self._release(self._of_sources(sources))

    def forget(self, sources: set[str] | None) -> None:
        """After the worker committed: drop what the partitions' next owner will replay (None: all)."""
        if sources is None:
            self._pending.clear()
            self._held.clear()
            self._outbox.clear()
            self._frozen.clear()
            self._frozen_all = False
        else:
            self._take(self._of_sources(sources))
            outbox = []
            for table, marks in self._outbox:
                if not sources.isdisjoint(marks.keys()):
                    part = source_ref.partitions(table.column("lake_source"))
                    gone = pc.is_in(part, value_set=pa.array(sorted(sources), pa.string()))
                    keep = pc.invert(pc.fill_null(gone, FALSE))
                    table = table.filter(keep)
                    marks = self._marks(table)
                if table.num_rows:
                    outbox.append((table, marks))
            self._outbox = outbox
            self._frozen -= sources
        self._gauges()

    def low_watermarks(self) -> dict[str, int]:
        """Per Kafka partition ("topic/3"), the lowest offset among rows held here."""
        out: dict[str, int] = {}
        pairs: list[Iterable[tuple[str, int]]] = [t.marks for t in self._pending.values() if t.marks]
        pairs += [m.items() for _, m in self._outbox]
        for part, offset in itertools.chain.from_iterable(pairs):
            current = out.get(part)
            if current is None or offset < current:
                out[part] = offset
        return out

    def take_promotions(self) -> list[tuple[str, str]]:
        """(trace_id, policy name) of dropped traces that late negative feedback turned into kept ones."""
        out, self._promotions = self._promotions, []
        return out

    def _release_kept(self, trace_ids: list[str], answer: dict[str, Decision]) -> set[str]:
        """Pending traces of this batch that a monotone policy keeps: their rows in this batch are released
        now (returned: the caller releases them), rows held from earlier batches on the next tick (with
        their own Kafka marks, as the contract of `process` wants), and they hold nothing from now on."""
        pending = self._pending
        touched = [t for t in trace_ids if answer.get(t) is UNDECIDED and t in pending]
        fresh = [t for t in touched if pending[t].kept is None]
        for p in self.monotone_policies:
            p.prepare(fresh)
        newly = [t for t in fresh if any(p.evaluate(t, pending[t].values) for p in self.monotone_policies)]
        newly_set = set(newly)
        kept = [t for t in touched if pending[t].kept is not None or t in newly_set]
        if not kept:
            return set()
        for p in self.policies:
            p.prepare(kept)
        for tid in kept:
            trace = pending[tid]
            reasons = self._intern(tuple(p.name for p in self.policies if p.evaluate(tid, trace.values)))
            trace.kept = reasons
            answer[tid] = (True, reasons)
        for p in self.policies:
            p.prepare([])
        if newly:
            self.stats["released_early"] += len(newly)
            traces = {tid: pending[tid] for tid in newly}
            earlier = self._take(newly)  # drops them from pending: put them back, holding nothing
            for tid, trace in traces.items():
                trace.batches, trace.marks = (), ()
                pending[tid] = trace
            if earlier.num_rows:
                table = self._label(earlier, {tid: answer[tid] for tid in newly})
                self._outbox.append((table, self._marks(table)))
        return set(kept)

    # -- folding in ----------------------------------------------------------------------------
    def _aggregate(self, rows: Rows, is_feedback: pa.ChunkedArray) -> pa.Table:
        columns: dict[str, Any] = {
            "trace_id": rows.batch.column("trace_id"),
            "held": pc.cast(pc.invert(is_feedback), pa.int64()),
            "real": pc.cast(rows.real, pa.int64()),
        }
        aggregations: list[Any] = [("held", "sum"), ("real", "sum")]
        # distinct sources of the held rows: a Kafka message holds one trace, so ~1 per trace
        columns["source"] = pc.if_else(is_feedback, NULL_STR, rows.batch.column("lake_source"))
        aggregations.append(("source", "distinct", pc.CountOptions(mode="only_valid")))
        for i, f in enumerate(self.features):
            columns[f"f{i}"] = f.compute(rows)
            aggregations.append((f"f{i}", f.agg))
        return pa.table(columns).group_by("trace_id", use_threads=False).aggregate(aggregations)

    def _hold(
        self,
        table: pa.Table,
        rows: pa.ChunkedArray | None,
        live: int,
        trace_ids: list[str],
        positions: list[int],
        agg: pa.Table,
    ) -> None:
        bid = self._next_batch
        self._next_batch += 1
        self._held[bid] = _Held(table, len(trace_ids), live, rows)
        sources = agg.column("source_distinct").combine_chunks()
        flat = pc.list_flatten(sources)
        marks: dict[int, list[tuple[str, int]]] = {}
        if len(flat):
            parents = pc.list_parent_indices(sources).to_pylist()
            for j, part, offset in zip(parents, *bus_offsets(flat), strict=True):
                if part is not None and offset is not None:
                    marks.setdefault(j, []).append((self._intern(part), offset))
        pending = self._pending
        for tid, j in zip(trace_ids, positions, strict=True):
            trace = pending[tid]
            trace.batches = (*trace.batches, bid)
            for part, offset in marks.get(j, ()):
                trace.marks = _add_mark(trace.marks, part, offset)

    def _late(self, tid: str, values: tuple[Any, ...], entry: tuple[str, ...] | float, now: float) -> Decision:
        if isinstance(entry, tuple):
            return True, entry
        if now - entry > self.config.late_feedback_window:
            return False, ()
        name = self._negative(values)
        return (False, ()) if name is None else self._promote(tid, name, now)

    def _unknown_feedback(self, tid: str, values: tuple[Any, ...], now: float) -> Decision:
        """E.g. after a restart: the trace may sit in the holdback area, so negative feedback promotes it."""
        name = self._negative(values)
        return UNDECIDED if name is None else self._promote(tid, name, now)

    def _negative(self, values: tuple[Any, ...]) -> str | None:
        for p in self.feedback_policies:
            if p.evaluate("", values):
                return p.name
        return None

    def _promote(self, tid: str, name: str, now: float) -> Decision:
        reasons: tuple[str, ...] = self._intern((name,))
        self._remember(tid, True, reasons, now)
        self._promotions.append((tid, name))
        self.stats["promotions"] += 1
        self.stats[f"kept_by.{name}"] += 1
        return True, reasons

    # -- deciding and releasing ----------------------------------------------------------------
    def _evict(self) -> None:
        """Over num_traces: decide the least recently active traces now, release them on the next tick."""
        excess = len(self._pending) - self.config.num_traces
        if excess <= 0:
            return
        victims: list[str] = []
        for tid, trace in self._pending.items():
            if len(victims) >= excess:
                break
            if not self._is_frozen(trace):
                victims.append(tid)
        if victims:
            self.stats["decided_early"] += len(victims)
            table = self._decide(victims)
            if table.num_rows:
                self._outbox.append((table, self._marks(table)))

    def _decide(self, trace_ids: list[str]) -> pa.Table:
        now = self._clock()
        answer: dict[str, Decision] = {}
        for p in self.policies:
            p.prepare(trace_ids)
        for tid in trace_ids:
            trace = self._pending[tid]
            names = {p.name for p in self.policies if p.evaluate(tid, trace.values)} | set(trace.kept or ())
            reasons: tuple[str, ...] = self._intern(tuple(p.name for p in self.policies if p.name in names))
            kept = bool(reasons)
            for name in reasons:
                self.stats[f"kept_by.{name}"] += 1
            self.stats["traces_kept" if kept else "traces_dropped"] += 1
            self._remember(tid, kept, reasons, now)
            answer[tid] = (kept, reasons)
        for p in self.policies:
            p.prepare([])
        return self._label(self._take(trace_ids), answer)

    def _release(self, trace_ids: list[str]) -> pa.Table:
        parts = [table for table, _ in self._outbox]
        self._outbox.clear()
        if trace_ids:
            parts.append(self._decide(trace_ids))
        self._gauges()
        return self._concat(parts)

    def _take(self, trace_ids: list[str]) -> pa.Table:
        """Remove traces from the pending set and return their held rows."""
        by_batch: dict[int, list[str]] = {}
        for tid in trace_ids:
            for bid in self._pending.pop(tid).batches:
                by_batch.setdefault(bid, []).append(tid)
        parts = []
        for bid in sorted(by_batch):
            held, ids = self._held[bid], by_batch[bid]
            held.traces -= len(ids)
            if held.traces == 0 and not held.dead and held.rows is None:
                part = held.table
            else:
                mask = pc.is_in(held.table.column("trace_id"), value_set=pa.array(ids, pa.string()))
                part = held.table.filter(mask if held.rows is None else pc.and_(mask, held.rows))
            held.live -= part.num_rows
            parts.append(part)
            if held.traces == 0:
                del self._held[bid]
                continue
            held.dead += ids
            if held.live * 2 < held.table.num_rows:  # mostly released: copy the live rest, free the batch
                dead = pc.is_in(held.table.column("trace_id"), value_set=pa.array(held.dead, pa.string()))
                keep = pc.invert(dead) if held.rows is None else pc.and_(pc.invert(dead), held.rows)
                held.table, held.rows, held.dead = held.table.filter(keep), None, []
        if not parts:
            return self._schema.empty_table()
        return pa.concat_tables(parts, promote_options="permissive")

    def _remember(self, tid: str, kept: bool, reasons: tuple[str, ...], now: float) -> None:
        size = self.config.decision_cache_size
        if size == 0:
            return
        self._decided[tid] = reasons if kept else now
        self._decided.move_to_end(tid)
        while len(self._decided) > size:
            self._decided.popitem(last=False)

    # -- helpers -------------------------------------------------------------------------------
    def _label(self, table: pa.Table, answer: dict[str, Decision]) -> pa.Table:
        """Append sampling_kept / sampling_reasons from per-trace decisions (one take per column)."""
        if table.num_rows == 0:
            return table.append_column(KEPT, pa.array([], KEPT.type)).append_column(REASONS, pa.array([], REASONS.type))
        ids = list(answer)
        idx = pc.index_in(table.column("trace_id"), value_set=pa.array(ids, pa.string()))
        kept = pc.fill_null(pc.take(pa.array([answer[t][0] for t in ids], pa.bool_()), idx), TRUE)
        reasons = pc.take(pa.array([list(answer[t][1]) for t in ids], REASONS.type), idx)
        return table.append_column(KEPT, kept).append_column(REASONS, reasons)

    def _empty(self) -> pa.Table:
        return self._label(self._schema.empty_table(), {})

    def _concat(self, parts: list[pa.Table]) -> pa.Table:
        parts = [p for p in parts if p.num_rows]
        if not parts:
            return self._empty()
        return parts[0] if len(parts) == 1 else pa.concat_tables(parts, promote_options="permissive")

    @staticmethod
    def _strip(batch: pa.Table) -> pa.Table:
        """An earlier tail sampler's columns would clash with ours (README: one sampler per chain)."""
        names = [n for n in (KEPT.name, REASONS.name) if n in batch.column_names]
        return batch.drop_columns(names) if names else batch

    def _of_sources(self, sources: set[str]) -> list[str]:
        return [t for t, tr in self._pending.items() if tr.marks and not sources.isdisjoint(tr.partitions())]

    def _is_frozen(self, trace: _Trace) -> bool:
        if self._frozen_all:
            return True
        return bool(self._frozen and trace.marks) and not self._frozen.isdisjoint(trace.partitions())

    def _marks(self, table: pa.Table) -> dict[str, int]:
        """Lowest Kafka offset per partition among `table`'s rows (one regex per distinct source)."""
        out: dict[str, int] = {}
        for part, offset in zip(*bus_offsets(pc.unique(table.column("lake_source"))), strict=True):
            if part is not None and offset is not None and offset < out.get(part, offset + 1):
                out[self._intern(part)] = offset
        return out

    def _intern(self, value: Any) -> Any:
        """Partition keys and reason tuples repeat across thousands of traces: keep one object each."""
        return self._interned.setdefault(value, value)

    def _gauges(self) -> None:
        self.stats["pending_traces"] = len(self._pending)
        self.stats["held_spans"] = sum(h.live for h in self._held.values())
