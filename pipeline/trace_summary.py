"""TraceSummarizer: one `traces` row per trace, for every trace, kept or sampled out.

Spans are aggregated per trace with Arrow's group_by, then merged into a small per-trace record
(Python work per trace, never per span). A trace is summarised once it has been idle for
`trace_idle` seconds. Spans that arrive after that start a new part; the `traces` view merges
parts, and `part_id` (a digest of the part's span ids) lets it drop a replayed part.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from pipeline import feedback, schema


@dataclass(frozen=True)
class SummaryBatch:
    """Summary rows of traces that came from one source (Kafka partition), with its offset range."""

    rows: pa.Table
    source: str | None
    offsets: tuple[int, int] | None


@dataclass
class _Partial:
    first_seen: float
    last_seen: float
    source: str | None = None
    first_offset: int | None = None
    last_offset: int | None = None
    span_ids: list[str] = field(default_factory=list)
    root_name: str | None = None
    service_name: str | None = None
    start_ns: int | None = None
    end_ns: int | None = None
    span_count: int = 0
    error_count: int = 0
    llm_count: int = 0
    tool_count: int = 0
    tokens: dict[str, int] = field(default_factory=dict)
    cost_usd: float | None = None
    unpriced_calls: int = 0
    models: set[str] = field(default_factory=set)
    session_id: str | None = None
    user_id: str | None = None
    tenant_id: str | None = None
    prompt_versions: set[str] = field(default_factory=set)
    sources: set[str] = field(default_factory=set)
    # None: no sampling decision seen in this part (no tail sampler, or feedback only)
    kept: bool | None = None
    keep_reasons: set[str] = field(default_factory=set)
    feedback_min: float | None = None


TOKEN_COLUMNS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)


def _min(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


class TraceSummarizer:
    def __init__(self, trace_idle: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.trace_idle = trace_idle
        self._clock = clock
        self._open: dict[str, _Partial] = {}

    @property
    def open_traces(self) -> int:
        return len(self._open)

    def observe(self, spans: pa.Table, source: str | None = None, offsets: tuple[int, int] | None = None) -> None:
        """Fold a batch of spans (all from `source`, within `offsets`) into the open traces."""
        if spans.num_rows == 0:
            return
        now = self._clock()
        n = spans.num_rows
        # synthetic feedback spans (POST /v1/feedback) carry feedback only: they are not spans of the trace
        real = pc.invert(feedback.is_synthetic(spans))
        fb_raw = pc.map_lookup(spans.column("attributes"), pa.scalar("feedback.value", pa.string()), "first")
        fb_ok = pc.match_substring_regex(fb_raw, r"^\s*-?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$")
        fb = pc.cast(pc.if_else(fb_ok, fb_raw, pa.scalar(None, pa.string())), pa.float64())
        if "sampling_kept" in spans.column_names:
            kept = pc.if_else(real, spans.column("sampling_kept"), pa.scalar(None, pa.bool_()))
            reasons = pc.binary_join(spans.column("sampling_reasons"), ",")
        else:
            kept = pc.if_else(real, pa.scalar(True), pa.scalar(None, pa.bool_()))
            reasons = pa.nulls(n, pa.string())
        is_error = pc.and_(pc.equal(spans.column("status_code"), "ERROR"), real)
        span_type = pc.if_else(real, spans.column("span_type"), pa.scalar(None, pa.string()))
        is_llm = pc.fill_null(pc.equal(span_type, "llm"), False)
        cost_status = spans.column("cost_status")
        unpriced = pc.and_kleene(is_llm, pc.and_kleene(pc.is_valid(cost_status), pc.not_equal(cost_status, "priced")))
        model = pc.coalesce(spans.column("response_model"), spans.column("request_model"))
        no_int = pa.scalar(None, pa.int64())
        work = pa.table(
            {
                "trace_id": spans.column("trace_id"),
                "start": spans.column("start_time").cast(pa.int64()),
                "end": pc.if_else(real, spans.column("end_time").cast(pa.int64()), no_int),
                "span_id": pc.if_else(real, spans.column("span_id"), pa.scalar(None, pa.string())),
                "real": pc.cast(real, pa.int64()),
                "err": pc.cast(is_error, pa.int64()),
                "llm": pc.cast(is_llm, pa.int64()),
                "tool": pc.cast(pc.fill_null(pc.equal(span_type, "tool"), False), pa.int64()),
                "unpriced": pc.cast(pc.fill_null(unpriced, False), pa.int64()),
                "cost": spans.column("cost_usd"),
                "model": model,
                "session_id": spans.column("session_id"),
                "user_id": spans.column("user_id"),
                "tenant_id": spans.column("tenant_id"),
                "prompt_version": spans.column("prompt_version"),
                "source": spans.column("lake_source"),
                "kept": pc.cast(kept, pa.int64()),
                "reasons": reasons,
                "fb": fb,
                **{c: spans.column(c) for c in TOKEN_COLUMNS},
            }
        )
        agg = work.group_by("trace_id", use_threads=False).aggregate(
            [
                ("start", "min"),
                ("end", "max"),
                ("span_id", "list"),
                ("real", "sum"),
                ("kept", "max", pc.ScalarAggregateOptions(skip_nulls=True, min_count=1)),
                ("reasons", "distinct"),
                ("fb", "min", pc.ScalarAggregateOptions(skip_nulls=True, min_count=1)),
                ("err", "sum"),
                ("llm", "sum"),
                ("tool", "sum"),
                ("unpriced", "sum"),
                ("cost", "sum", pc.ScalarAggregateOptions(skip_nulls=True, min_count=1)),
                ("model", "distinct"),
                ("session_id", "first"),
                ("user_id", "first"),
                ("tenant_id", "first"),
                ("prompt_version", "distinct"),
                ("source", "distinct"),
                *[(c, "sum", pc.ScalarAggregateOptions(skip_nulls=True, min_count=1)) for c in TOKEN_COLUMNS],
            ]
        )
        roots = spans.filter(pc.is_null(spans.column("parent_span_id"))).select(["trace_id", "name", "service_name"])
        root_by_trace = {r["trace_id"]: r for r in roots.to_pylist()}
        for row in agg.to_pylist():
            tid = row["trace_id"]
            p = self._open.get(tid)
            if p is None:
                p = self._open[tid] = _Partial(first_seen=now, last_seen=now)
            p.last_seen = now
            if offsets is not None:
                p.source = source
                p.first_offset = offsets[0] if p.first_offset is None else min(p.first_offset, offsets[0])
                p.last_offset = offsets[1] if p.last_offset is None else max(p.last_offset, offsets[1])
            p.span_ids.extend(s for s in row["span_id_list"] if s is not None)
            p.span_count += row["real_sum"]
            if row["kept_max"] is not None:
                p.kept = bool(row["kept_max"]) or bool(p.kept)
            for joined in row["reasons_distinct"]:
                if joined:
                    p.keep_reasons.update(joined.split(","))
            if row["fb_min"] is not None:
                p.feedback_min = row["fb_min"] if p.feedback_min is None else min(p.feedback_min, row["fb_min"])
            p.start_ns = _min(p.start_ns, row["start_min"])
            p.end_ns = _max(p.end_ns, row["end_max"])
            p.error_count += row["err_sum"]
            p.llm_count += row["llm_sum"]
            p.tool_count += row["tool_sum"]
            p.unpriced_calls += row["unpriced_sum"]
            if row["cost_sum"] is not None:
                p.cost_usd = (p.cost_usd or 0.0) + row["cost_sum"]
            for c in TOKEN_COLUMNS:
                if row[f"{c}_sum"] is not None:
                    p.tokens[c] = p.tokens.get(c, 0) + row[f"{c}_sum"]
            p.models.update(m for m in row["model_distinct"] if m)
            p.prompt_versions.update(v for v in row["prompt_version_distinct"] if v)
            p.sources.update(s for s in row["source_distinct"] if s)
            p.session_id = p.session_id or row["session_id_first"]
            p.user_id = p.user_id or row["user_id_first"]
            p.tenant_id = p.tenant_id or row["tenant_id_first"]
            root = root_by_trace.get(tid)
            if root is not None:
                p.root_name, p.service_name = root["name"], root["service_name"]
            elif p.service_name is None:
                p.service_name = None

    def low_watermarks(self) -> dict[str, int]:
        """Per source, the oldest offset that contributed to a trace not yet summarised."""
        out: dict[str, int] = {}
        for p in self._open.values():
            if p.source is not None and p.first_offset is not None:
                out[p.source] = min(out.get(p.source, p.first_offset), p.first_offset)
        return out

    def due(self, force: bool = False, sources: set[str] | None = None) -> list[SummaryBatch]:
        """Summaries of traces idle for `trace_idle`; with `force`, of all open traces (of `sources`)."""
        now = self._clock()
        by_source: dict[str | None, list[str]] = {}
        for t, p in self._open.items():
            if (force and (sources is None or p.source in sources)) or now - p.last_seen >= self.trace_idle:
                by_source.setdefault(p.source, []).append(t)
        out = []
        for source, trace_ids in by_source.items():
            partials = [self._open.pop(t) for t in trace_ids]
            offsets = None
            firsts = [p.first_offset for p in partials if p.first_offset is not None]
            lasts = [p.last_offset for p in partials if p.last_offset is not None]
            if firsts and lasts:
                offsets = (min(firsts), max(lasts))
            out.append(SummaryBatch(self._emit(trace_ids, partials), source, offsets))
        return out

    def promotion_rows(self, spans: pa.Table, reasons: dict[str, str]) -> pa.Table:
        """Summary parts that turn dropped traces into kept ones (their counts are already summarised)."""
        ids = spans.select(["trace_id"]).append_column("start", spans.column("start_time").cast(pa.int64()))
        starts = ids.group_by("trace_id", use_threads=False).aggregate([("start", "min")]).to_pydict()
        trace_ids, partials = [], []
        for tid, start in zip(starts["trace_id"], starts["start_min"], strict=True):
            p = _Partial(first_seen=0.0, last_seen=0.0, kept=True, keep_reasons={reasons.get(tid, "feedback")})
            p.start_ns = start
            p.span_ids = [f"promoted:{p.keep_reasons}"]
            trace_ids.append(tid)
            partials.append(p)
        return self._emit(trace_ids, partials)

    def _emit(self, trace_ids: list[str], partials: list[_Partial]) -> pa.Table:
        rows = []
        for tid, p in zip(trace_ids, partials, strict=True):
            digest = hashlib.sha256((tid + ",".join(sorted(p.span_ids))).encode()).hexdigest()[:16]
            rows.append(
                {
                    "trace_id": tid,
                    "part_id": digest,
                    "root_name": p.root_name,
                    "service_name": p.service_name,
                    "start_time": p.start_ns,
                    "end_time": p.end_ns,
                    "duration_ms": (p.end_ns - p.start_ns) / 1e6 if p.start_ns and p.end_ns else None,
                    "span_count": p.span_count,
                    "error_count": p.error_count,
                    "llm_count": p.llm_count,
                    "tool_count": p.tool_count,
                    **{c: p.tokens.get(c) for c in TOKEN_COLUMNS},
                    "cost_usd": p.cost_usd,
                    "unpriced_calls": p.unpriced_calls,
                    "models": sorted(p.models),
                    "session_id": p.session_id,
                    "user_id": p.user_id,
                    "tenant_id": p.tenant_id,
                    "prompt_versions": sorted(p.prompt_versions),
                    "feedback_min": p.feedback_min,
                    "kept": p.kept,
                    "keep_reasons": sorted(p.keep_reasons),
                    "lake_source": min(p.sources) if p.sources else None,
                }
            )
        if not rows:
            return schema.empty("traces")
        columns = {f.name: [r[f.name] for r in rows] for f in schema.TRACES}
        arrays = []
        for f in schema.TRACES:
            if f.name in ("start_time", "end_time"):
                arrays.append(pa.array(columns[f.name], pa.int64()).cast(f.type))
            else:
                arrays.append(pa.array(columns[f.name], f.type))
        return pa.Table.from_arrays(arrays, schema=schema.TRACES)
