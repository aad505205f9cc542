"""TraceSummarizer: one `traces` row per trace, for every trace, kept or sampled out.

Each batch is aggregated per trace with Arrow's group_by and held as a table; when traces are due
(idle for `trace_idle` seconds, or forced) their rows from every batch are merged with group_by
again. Python work is a dict entry per trace (when it was last seen) and the part digest of a due
trace, never per span. Spans that arrive after a trace was summarised start a new part; the
`traces` view merges parts, and `part_id` (a digest of the part's span ids: a wrapping sum of
their mixed 64-bit values, so it can be summed per batch and merged) lets it drop a replayed part.

LLM-call spans (`llm`, `embedding`) are held as rows until their trace is due, because a call recorded
by two instrumentations must be counted once (pipeline/duplicate_calls.py) and its two spans may come
in different batches (the inner span ends, and is exported, first). `observe` marks `duplicate_of` on
the spans of the batch it is given, from what it holds of their traces; `due` decides again over every
call of the trace, counts calls, tokens and cost of the counted spans only, and lists the duplicates
in `duplicate_spans` (the `spans` view takes them from there for spans written before their pair came).
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core import feedback, schema
from core.schema import TOKEN_COLUMNS
from pipeline.duplicate_calls import CALL_TYPES, call_rows, find_duplicates


@dataclass(frozen=True)
class SummaryBatch:
    """Summary rows of traces that came from one source (Kafka partition), with its offset range."""

    rows: pa.Table
    source: str | None
    offsets: tuple[int, int] | None


# What a trace collects as sets, held as (trace_id, member, value) rows.
MODEL, PROMPT_VERSION, SOURCE, KEEP_REASON = range(4)

_SOME = pc.ScalarAggregateOptions(skip_nulls=True, min_count=1)  # null when no value at all
# How per-batch aggregates (and batches of them) merge into one row per trace.
_MERGE = [
    ("start", "min"),
    ("end", "max"),
    ("span_count", "sum"),
    ("error_count", "sum"),
    ("llm_count", "sum"),
    ("tool_count", "sum"),
    ("unpriced_calls", "sum"),
    ("cost_usd", "sum", _SOME),
    *[(c, "sum", _SOME) for c in TOKEN_COLUMNS],
    ("kept", "max", _SOME),
    ("feedback_min", "min", _SOME),
    ("session_id", "first"),
    ("user_id", "first"),
    ("tenant_id", "first"),
    ("root_row", "max"),
    ("part_hash", "sum"),  # uint64 sums wrap: an order-free digest of the part's span ids
    ("source", "last"),
    ("first_offset", "min"),
    ("last_offset", "max"),
]


@dataclass
class _Pending:
    """Per-trace aggregates of one batch (or of several, merged back after a partial `due`)."""

    seen: float
    rows: pa.Table  # one row per trace and batch, columns named after _MERGE's inputs
    members: pa.Table  # trace_id, member, value
    calls: pa.Table  # the LLM-call spans: duplicate_calls.CALL_COLUMNS, cost_usd, cost_status


_FB_NUMBER = r"^\s*-?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$"


def _members(trace_ids: pa.Array, values: pa.Array | pa.ChunkedArray, member: int) -> pa.Table:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    keep = pc.fill_null(pc.not_equal(values, ""), False)
    return pa.table(
        {
            "trace_id": trace_ids.filter(keep),
            "member": pa.array(np.full(pc.sum(keep).as_py() or 0, member, np.int8)),
            "value": values.filter(keep),
        }
    )


class TraceSummarizer:
    def __init__(
        self, trace_idle: float, clock: Callable[[], float] = time.monotonic, trace_max_wait: float | None = None
    ) -> None:
        self.trace_idle = trace_idle
        # A trace that keeps receiving spans is summarised in parts this often: an open trace holds the
        # offsets of its first spans uncommitted, and a long agent session must not hold them for an hour.
        self.trace_max_wait = trace_max_wait
        self._clock = clock
        self._pending: deque[_Pending] = deque()
        self._last_seen: dict[str, float] = {}
        self._opened: dict[str, float] = {}  # when the open part of each trace began, oldest first

    @property
    def open_traces(self) -> int:
        return len(self._last_seen)

    def observe(self, spans: pa.Table, source: str | None = None, offsets: tuple[int, int] | None = None) -> pa.Table:
        """Fold a batch of spans (all from `source`, within `offsets`) into the open traces; returns the
        batch with `duplicate_of` set where a span repeats a call this batch or an earlier one holds."""
        if spans.num_rows == 0:
            return spans
        now = self._clock()
        n = spans.num_rows
        # synthetic feedback spans (POST /v1/feedback) carry feedback only: they are not spans of the trace
        real = pc.invert(feedback.is_synthetic(spans))
        fb_raw = pc.map_lookup(spans.column("attributes"), pa.scalar("feedback.value", pa.string()), "first")
        fb_ok = pc.match_substring_regex(fb_raw, _FB_NUMBER)
        fb = pc.cast(pc.if_else(fb_ok, fb_raw, pa.scalar(None, pa.string())), pa.float64())
        if "sampling_kept" in spans.column_names:
            kept = pc.if_else(real, spans.column("sampling_kept"), pa.scalar(None, pa.bool_()))
        else:
            kept = pc.if_else(real, pa.scalar(True), pa.scalar(None, pa.bool_()))
        is_error = pc.and_(pc.equal(spans.column("status_code"), "ERROR"), real)
        span_type = pc.if_else(real, spans.column("span_type"), pa.scalar(None, pa.string()))
        calls = call_rows(spans, real, ("cost_usd", "cost_status"))
        # calls are counted when their trace is due (see the module docstring); the rest is summed now
        not_call = pc.invert(pc.and_(pc.fill_null(pc.is_in(span_type, CALL_TYPES), False), real))
        trace_ids = spans.column("trace_id").combine_chunks()
        is_root = pc.and_(pc.is_null(spans.column("parent_span_id")), real)
        no_int = pa.scalar(None, pa.int64())
        work = pa.table(
            {
                "trace_id": trace_ids,
                "start": spans.column("start_time").cast(pa.int64()),
                "end": pc.if_else(real, spans.column("end_time").cast(pa.int64()), no_int),
                "span_count": pc.cast(real, pa.int64()),
                "error_count": pc.cast(is_error, pa.int64()),
                "llm_count": pa.array(np.zeros(n, np.int64)),
                "tool_count": pc.cast(pc.fill_null(pc.equal(span_type, "tool"), False), pa.int64()),
                "unpriced_calls": pa.array(np.zeros(n, np.int64)),
                "cost_usd": pc.if_else(not_call, spans.column("cost_usd"), pa.scalar(None, pa.float64())),
                **{c: pc.if_else(not_call, spans.column(c), pa.scalar(None, pa.int64())) for c in TOKEN_COLUMNS},
                "kept": pc.cast(kept, pa.int64()),
                "feedback_min": fb,
                "session_id": spans.column("session_id"),
                "user_id": spans.column("user_id"),
                # a trace's tenant is its spans': feedback (another tenant's, perhaps) never decides it
                "tenant_id": pc.if_else(real, spans.column("tenant_id"), pa.scalar(None, pa.string())),
                "root_row": pc.if_else(is_root, pa.array(np.arange(n)), no_int),
                "part_hash": pa.array(np.where(np.asarray(real), span_id_hashes(spans.column("span_id")), 0)),
            }
        )
        agg = _per_trace(work)
        root_row = agg.column("root_row")
        agg = agg.drop_columns(["root_row"])
        m = agg.num_rows
        with_offsets = offsets is not None
        agg = (
            agg.append_column("root_name", spans.column("name").take(root_row))
            .append_column("service_name", spans.column("service_name").take(root_row))
            .append_column("root_row", root_row)  # rewritten on merge: a row number within the merged rows
            .append_column("source", pa.array([source if with_offsets else None] * m, pa.string()))
            .append_column("first_offset", pa.array([offsets[0] if offsets else None] * m, pa.int64()))
            .append_column("last_offset", pa.array([offsets[1] if offsets else None] * m, pa.int64()))
        )
        models = pc.coalesce(spans.column("response_model"), spans.column("request_model"))
        sets = [
            _members(trace_ids, models, MODEL),
            _members(trace_ids, spans.column("prompt_version"), PROMPT_VERSION),
            _members(trace_ids, spans.column("lake_source"), SOURCE),
        ]
        if "sampling_reasons" in spans.column_names:
            reasons = spans.column("sampling_reasons").combine_chunks()
            sets.append(
                _members(trace_ids.take(pc.list_parent_indices(reasons)), pc.list_flatten(reasons), KEEP_REASON)
            )
        distinct = pa.concat_tables(sets).group_by(["trace_id", "member", "value"], use_threads=False).aggregate([])
        members = distinct.select(["trace_id", "member", "value"])
        marked = self._mark_duplicates(spans, calls)
        self._pending.append(_Pending(now, agg, members, calls))
        ids = agg.column("trace_id").to_pylist()
        if self.trace_max_wait is not None:
            opened = self._opened
            for t in ids:
                opened.setdefault(t, now)
        self._last_seen.update(dict.fromkeys(ids, now))
        return marked

    def _mark_duplicates(self, spans: pa.Table, calls: pa.Table) -> pa.Table:
        """`spans` with duplicate_of set from the calls of this batch and those held for the same traces."""
        if calls.num_rows == 0:
            return spans
        held = [p.calls for p in self._pending if p.calls.num_rows]
        if held:
            earlier = pa.concat_tables(held)
            earlier = earlier.filter(pc.is_in(earlier.column("trace_id"), pc.unique(calls.column("trace_id"))))
            calls = pa.concat_tables([earlier, calls])
        marks = find_duplicates(calls)
        if marks.num_rows == 0:
            return spans
        at = pc.index_in(_span_keys(spans), value_set=_span_keys(marks))
        found = marks.column("duplicate_of").take(at)
        i = spans.schema.get_field_index("duplicate_of")
        return spans.set_column(i, spans.schema.field(i), pc.coalesce(found, spans.column(i)))

    def low_watermarks(self) -> dict[str, int]:
        """Per source, the oldest offset that contributed to a trace not yet summarised."""
        if not self._pending:
            return {}
        rows = pa.concat_tables([p.rows.select(["source", "first_offset"]) for p in self._pending])
        held = rows.filter(pc.is_valid(rows.column("source")))
        lows = held.group_by("source", use_threads=False).aggregate([("first_offset", "min")]).to_pydict()
        return dict(zip(lows["source"], lows["first_offset_min"], strict=True))

    def due(self, force: bool = False, sources: set[str] | None = None) -> list[SummaryBatch]:
        """Summaries of traces idle for `trace_idle`; with `force`, of all open traces (of `sources`)."""
        now = self._clock()
        cutoff = now - self.trace_idle
        aged = self._aged(now) if not force else set()
        old: list[_Pending] = []
        while self._pending and (force or aged or self._pending[0].seen <= cutoff):
            old.append(self._pending.popleft())
        if not old:
            return []
        rows = pa.concat_tables([p.rows for p in old])
        members = pa.concat_tables([p.members for p in old])
        calls = pa.concat_tables([p.calls for p in old])
        candidates = pc.unique(rows.column("trace_id")).to_pylist()
        if force and sources is not None:
            last = rows.group_by("trace_id", use_threads=False).aggregate([("source", "last")])
            mine = last.filter(pc.is_in(last.column("source_last"), pa.array(list(sources), pa.string())))
            due_ids = mine.column("trace_id").to_pylist()
        elif force:
            due_ids = candidates
        else:
            seen = self._last_seen
            due_ids = [t for t in candidates if seen[t] <= cutoff or t in aged]
        for t in due_ids:
            del self._last_seen[t]
            self._opened.pop(t, None)
        due_set = pa.array(due_ids, pa.string())
        is_due = pc.is_in(rows.column("trace_id"), due_set)
        member_due = pc.is_in(members.column("trace_id"), due_set)
        call_due = pc.is_in(calls.column("trace_id"), due_set)
        carry = rows.filter(pc.invert(is_due))
        if carry.num_rows:
            carry_members = members.filter(pc.invert(member_due))
            carry_calls = calls.filter(pc.invert(call_due))
            self._pending.appendleft(_Pending(max(p.seen for p in old), carry, carry_members, carry_calls))
        if not due_ids:
            return []
        rows = rows.filter(is_due)
        calls = calls.filter(call_due)
        duplicates = find_duplicates(calls)
        counted = calls.filter(pc.invert(pc.is_in(_span_keys(calls), value_set=_span_keys(duplicates))))
        rows = pa.concat_tables([rows, schema.conform(_per_trace(_call_totals(counted)), rows.schema)])
        merged = _merge(rows, members.filter(member_due), duplicates)
        out = []
        source_col = merged.column("source")
        for source in pc.unique(source_col).to_pylist():
            mask = pc.is_null(source_col) if source is None else pc.fill_null(pc.equal(source_col, source), False)
            part = merged.filter(mask)
            lo, hi = pc.min(part.column("first_offset")).as_py(), pc.max(part.column("last_offset")).as_py()
            offsets = (lo, hi) if lo is not None and hi is not None else None
            out.append(SummaryBatch(_traces_rows(part), source, offsets))
        return out

    def _aged(self, now: float) -> set[str]:
        """Open traces whose current part began `trace_max_wait` ago (they are written as a part now)."""
        if self.trace_max_wait is None:
            return set()
        limit = now - self.trace_max_wait
        aged = set()
        for t, began in self._opened.items():  # insertion order: the oldest parts first
            if began > limit:
                break
            aged.add(t)
        return aged


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A 64-bit mixer (splitmix64's finaliser): nearby inputs give unrelated outputs."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


_HEX_DIGIT = np.full(256, 0, np.uint64)
_HEX_DIGIT[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16, dtype=np.uint64)
_HEX_DIGIT[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16, dtype=np.uint64)


def span_id_hashes(span_ids: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Per span id (16 hex digits), a mixed 64-bit value; summed per part, they make its part_id."""
    ids = span_ids.combine_chunks() if isinstance(span_ids, pa.ChunkedArray) else span_ids
    ids = pc.fill_null(ids, "")
    offsets = np.frombuffer(ids.buffers()[1], np.int32)[ids.offset : ids.offset + len(ids) + 1]
    if len(ids) and (np.diff(offsets) == 16).all():
        raw = np.frombuffer(ids.buffers()[2], np.uint8)[offsets[0] : offsets[-1]].reshape(len(ids), 16)
        value = np.zeros(len(ids), np.uint64)
        for i in range(16):
            value = (value << np.uint64(4)) | _HEX_DIGIT[raw[:, i]]
    else:  # ids of another length (not from an OTLP receiver): hashed one by one
        value = np.array(
            [int.from_bytes(hashlib.sha256(s.encode()).digest()[:8], "big") for s in ids.to_pylist()], np.uint64
        )
    return _splitmix64(value)


def _hex64(values: np.ndarray) -> pa.StringArray:
    text = values.astype(">u8").tobytes().hex().encode()
    offsets = np.arange(len(values) + 1, dtype=np.int32) * 16
    return pa.StringArray.from_buffers(len(values), pa.py_buffer(offsets), pa.py_buffer(text))


def _digest(trace_id: str, span_ids: list[str]) -> str:
    return hashlib.sha256((trace_id + ",".join(sorted(span_ids))).encode()).hexdigest()[:16]


def _per_trace(rows: pa.Table) -> pa.Table:
    """One row per trace_id: each column of `rows` that _MERGE names, merged its way, under its own name."""
    merged = rows.group_by("trace_id", use_threads=False).aggregate([a for a in _MERGE if a[0] in rows.column_names])
    return merged.rename_columns([c.rsplit("_", 1)[0] if c != "trace_id" else c for c in merged.column_names])


def _span_keys(table: pa.Table) -> pa.Array:
    """trace_id:span_id per row, to find rows of one table in another."""
    keys = pc.binary_join_element_wise(table.column("trace_id"), table.column("span_id"), ":")
    return keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys


def _call_totals(calls: pa.Table) -> pa.Table:
    """What the counted LLM-call spans add to their traces, one row per span, in _MERGE's columns."""
    span_type, status = calls.column("span_type"), calls.column("cost_status")
    is_llm = pc.fill_null(pc.equal(span_type, "llm"), False)
    unpriced = pc.and_(is_llm, pc.fill_null(pc.not_equal(status, "priced"), False))
    zeros = pa.array(np.zeros(calls.num_rows, np.int64))
    return pa.table(
        {
            "trace_id": calls.column("trace_id"),
            **dict.fromkeys(("span_count", "error_count", "tool_count"), zeros),
            "llm_count": pc.cast(is_llm, pa.int64()),
            "unpriced_calls": pc.cast(unpriced, pa.int64()),
            "cost_usd": calls.column("cost_usd"),
            **{c: calls.column(c) for c in TOKEN_COLUMNS},
            "part_hash": pa.array(np.zeros(calls.num_rows, np.uint64)),
        }
    )


def _merge(rows: pa.Table, members: pa.Table, duplicates: pa.Table) -> pa.Table:
    """One row per trace from its rows of every batch, its set members and its duplicate call spans."""
    rows = rows.set_column(
        rows.schema.get_field_index("root_row"),
        "root_row",
        pc.if_else(
            pc.is_valid(rows.column("root_row")), pa.array(np.arange(rows.num_rows)), pa.scalar(None, pa.int64())
        ),
    )
    merged = _per_trace(rows)
    root = merged.column("root_row")
    merged = merged.append_column("root_name", rows.column("root_name").take(root)).append_column(
        "service_name", rows.column("service_name").take(root)
    )
    trace_ids = merged.column("trace_id")
    member = members.column("member")
    for kind, column in ((MODEL, "models"), (PROMPT_VERSION, "prompt_versions"), (KEEP_REASON, "keep_reasons")):
        merged = merged.append_column(column, _sorted_sets(trace_ids, members.filter(pc.equal(member, kind))))
    sources = members.filter(pc.equal(member, SOURCE))
    first_source = sources.group_by("trace_id", use_threads=False).aggregate([("value", "min")])
    where = pc.index_in(trace_ids, value_set=first_source.column("trace_id"))
    merged = merged.append_column("lake_source", first_source.column("value_min").take(where))
    merged = merged.append_column("duplicate_spans", _duplicate_lists(trace_ids, duplicates))
    count = np.asarray(merged.column("span_count")).astype(np.uint64)
    part = _splitmix64(np.asarray(merged.column("part_hash")) ^ _splitmix64(count))
    return merged.append_column("part_id", _hex64(part))


def _sorted_sets(trace_ids: pa.Array, members: pa.Table) -> pa.Array:
    """Per trace (in `trace_ids` order) its distinct member values, sorted; [] when it has none."""
    pairs = members.select(["trace_id", "value"]).group_by(["trace_id", "value"], use_threads=False).aggregate([])
    # hash_list keeps input order in a single thread: sorted input, sorted lists
    pairs = pairs.sort_by([("trace_id", "ascending"), ("value", "ascending")])
    grouped = pairs.group_by("trace_id", use_threads=False).aggregate([("value", "list")])
    lists = grouped.column("value_list").take(pc.index_in(trace_ids, value_set=grouped.column("trace_id")))
    return pc.fill_null(lists, pa.scalar([], pa.list_(pa.string())))


def _duplicate_lists(trace_ids: pa.Array | pa.ChunkedArray, duplicates: pa.Table) -> pa.Array:
    """Per trace (in `trace_ids` order) its duplicate call spans, sorted by span id; [] when it has none."""
    if duplicates.num_rows == 0:
        return pa.array([[]] * len(trace_ids), pa.list_(schema.DUPLICATE))
    pairs = duplicates.sort_by([("trace_id", "ascending"), ("span_id", "ascending")]).combine_chunks()
    owner = pairs.column("trace_id").chunk(0)
    starts = np.flatnonzero(np.concatenate([[True], np.asarray(pc.not_equal(owner[1:], owner[:-1]))]))
    entries = pa.StructArray.from_arrays(
        [pairs.column("span_id").chunk(0), pairs.column("duplicate_of").chunk(0)], fields=list(schema.DUPLICATE)
    )
    offsets = pa.array(np.append(starts, len(owner)).astype(np.int32))
    lists = pa.ListArray.from_arrays(offsets, entries, type=pa.list_(schema.DUPLICATE))
    at = pc.index_in(trace_ids, value_set=owner.take(pa.array(starts)))
    return pc.fill_null(lists.take(at), pa.scalar([], pa.list_(schema.DUPLICATE)))


def _traces_rows(merged: pa.Table) -> pa.Table:
    """The `traces` schema from merged per-trace aggregates."""
    if merged.num_rows == 0:
        return schema.empty("traces")
    start, end = merged.column("start"), merged.column("end")
    both = pc.and_(pc.fill_null(pc.not_equal(start, 0), False), pc.fill_null(pc.not_equal(end, 0), False))
    duration = pc.if_else(
        both, pc.divide(pc.cast(pc.subtract(end, start), pa.float64()), 1e6), pa.scalar(None, pa.float64())
    )
    columns = {
        "start_time": start.cast(schema.TS),
        "end_time": end.cast(schema.TS),
        "duration_ms": duration,
        "kept": pc.cast(merged.column("kept"), pa.bool_()),
    }
    arrays = [columns[f.name] if f.name in columns else merged.column(f.name).cast(f.type) for f in schema.TRACES]
    return pa.Table.from_arrays(arrays, schema=schema.TRACES)


def promotion_parts(spans: pa.Table, reasons: dict[str, str]) -> pa.Table:
    """Summary parts that turn dropped traces into kept ones (their counts are already summarised): what
    pipeline/holdback.py writes when it promotes held-back spans."""
    ids = spans.select(["trace_id"]).append_column("start", spans.column("start_time").cast(pa.int64()))
    starts = ids.group_by("trace_id", use_threads=False).aggregate([("start", "min")])
    trace_ids = starts.column("trace_id").to_pylist()
    why = [reasons.get(t, "feedback") for t in trace_ids]
    n = len(trace_ids)
    zeros = pa.array(np.zeros(n, np.int64))
    nulls = pa.nulls(n, pa.string())
    merged = pa.table(
        {
            "trace_id": starts.column("trace_id"),
            "part_id": [_digest(t, [f"promoted:{ {r} }"]) for t, r in zip(trace_ids, why, strict=True)],
            "root_name": nulls,
            "service_name": nulls,
            "start": starts.column("start_min"),
            "end": pa.nulls(n, pa.int64()),
            **dict.fromkeys(("span_count", "error_count", "llm_count", "tool_count", "unpriced_calls"), zeros),
            **dict.fromkeys(("cost_usd", "feedback_min"), pa.nulls(n, pa.float64())),
            **dict.fromkeys(TOKEN_COLUMNS, pa.nulls(n, pa.int64())),
            **dict.fromkeys(("session_id", "user_id", "tenant_id", "lake_source"), nulls),
            "kept": pa.array([1] * n, pa.int64()),
            "models": pa.array([[]] * n, pa.list_(pa.string())),
            "duplicate_spans": pa.array([[]] * n, pa.list_(schema.DUPLICATE)),
            "prompt_versions": pa.array([[]] * n, pa.list_(pa.string())),
            "keep_reasons": pa.array([[r] for r in why], pa.list_(pa.string())),
        }
    )
    return _traces_rows(merged)
