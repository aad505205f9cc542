"""One trace for the trace page: its summary, the span waterfall, one span in full, its feedback.

The summary and the feedback are looked up by id in every hour of `traces` and `feedback` (both small
tables; a part or an event may sit in any hour). The spans, the big table, are read only from the hours
between the trace's start and end, where every one of its spans started; compacted files are sorted by
trace id, so DuckDB reads one row group of each. A trace without a summary yet (still open in the
worker) falls back to every spans file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

import duckdb

from pipeline import conversation, query
from pipeline.conversation import Conversation
from pipeline.trace_view import span_tree
from pipeline.ui.lake import LakeReader
from pipeline.ui.trace_list import TRACE_COLUMNS, TraceRow


@dataclass(frozen=True)
class SpanRow:
    """A waterfall row: what is needed to draw the span and its one-line facts."""

    span_id: str
    parent: str
    name: str
    span_type: str | None
    status_code: str | None
    status_message: str | None
    start_ns: int
    end_ns: int
    duration_ms: float | None
    model: str | None
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None
    cost_status: str | None
    exceptions: int
    service_name: str | None
    duplicate_of: str | None  # the span counted for the same LLM call, when this one repeats it

    @property
    def error(self) -> bool:
        return self.status_code == "ERROR"


@dataclass(frozen=True)
class WaterfallRow:
    span: SpanRow
    depth: int
    orphan: bool
    left: float  # percent of the trace's duration
    width: float


@dataclass(frozen=True)
class Event:
    time_ns: int | None
    name: str
    attributes: dict[str, str]

    @property
    def is_exception(self) -> bool:
        return self.name == "exception"


@dataclass(frozen=True)
class Artifact:
    key: str
    ref: str
    bytes: int | None
    preview: str | None


@dataclass(frozen=True)
class SpanDetail:
    """Every column of one span."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str | None
    status_code: str | None
    status_message: str | None
    start_ns: int
    end_ns: int | None
    duration_ms: float | None
    service_name: str | None
    scope_name: str | None
    span_type: str | None
    provider: str | None
    request_model: str | None
    response_model: str | None
    input_tokens: int | None
    output_tokens: int | None
    cache_read_tokens: int | None
    cache_write_tokens: int | None
    reasoning_tokens: int | None
    cost_usd: float | None
    cost_status: str | None
    finish_reason: str | None
    tool_name: str | None
    duplicate_of: str | None
    session_id: str | None
    user_id: str | None
    tenant_id: str | None
    prompt_version: str | None
    attributes: dict[str, str]
    resource_attributes: dict[str, str]
    events: list[Event]
    links: list[dict[str, Any]]
    pii_found: dict[str, int]
    artifacts: list[Artifact]
    conversation: Conversation = field(default_factory=Conversation)  # what it said, in any convention

    @property
    def error(self) -> bool:
        return self.status_code == "ERROR"

    @property
    def exceptions(self) -> list[Event]:
        return [e for e in self.events if e.is_exception]


@dataclass(frozen=True)
class FeedbackRow:
    time_ns: int
    name: str
    value: float | None
    comment: str | None
    source: str | None
    span_id: str | None


@dataclass
class TraceDetail:
    trace_id: str
    summary: TraceRow | None
    spans: list[SpanRow]
    feedback: list[FeedbackRow]
    waterfall: list[WaterfallRow] = field(default_factory=list)
    ticks: list[tuple[float, str]] = field(default_factory=list)  # (percent, label) on the time axis

    @property
    def sampled_out(self) -> bool:
        return not self.spans and self.summary is not None and self.summary.kept is False

    def default_span(self) -> str | None:
        """The span a reader wants first: where the first failure started (an error span without a failing
        child), else the first LLM call, else the root."""
        failing_parents = {row.span.parent for row in self.waterfall if row.span.error}
        for test in (lambda s: s.error and s.span_id not in failing_parents, lambda s: s.span_type == "llm"):
            for row in self.waterfall:
                if test(row.span):
                    return row.span.span_id
        return self.waterfall[0].span.span_id if self.waterfall else None


_SPAN_COLUMNS = """span_id, coalesce(parent_span_id, ''), coalesce(name, ''), span_type, status_code, status_message,
  epoch_ns(start_time), coalesce(epoch_ns(end_time), epoch_ns(start_time)), duration_ms,
  coalesce(response_model, request_model), input_tokens, output_tokens, cost_usd, cost_status,
  len(list_filter(coalesce(events, []), lambda e: e.name = 'exception')), service_name, duplicate_of"""
_DETAIL_COLUMNS = """trace_id, span_id, parent_span_id, coalesce(name, ''), kind, status_code, status_message,
  epoch_ns(start_time), epoch_ns(end_time), duration_ms, service_name, scope_name, span_type, provider,
  request_model, response_model, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,
  reasoning_tokens, cost_usd, cost_status, finish_reason, tool_name, duplicate_of, session_id, user_id, tenant_id,
  prompt_version, attributes, resource_attributes,
  [(epoch_ns(e.time), e.name, e.attributes) FOR e IN coalesce(events, [])], links, pii_found, artifacts"""


def _summary(
    lake: LakeReader, con: duckdb.DuckDBPyConnection, trace_id: str, feedback_min: bool = True
) -> TraceRow | None:
    """The merged `traces` row. Its parts may sit in any hour (a late part starts when its late spans or
    feedback do): the id index names the hours that hold them. Without `feedback_min` (None then) the
    trace's feedback is not read."""
    hours = lake.hours_holding("traces", [trace_id])
    if not hours:
        return None
    if feedback_min:
        feedback = lake.rows(con, "feedback", lake.hours_holding("feedback", [trace_id]), "trace_id = $id")
    else:
        feedback = lake.no_feedback(con)
    merged = query.TRACES_MERGE.format(parts=lake.rows(con, "traces", hours, "trace_id = $id"), feedback=feedback)
    rows = con.execute(f"SELECT {TRACE_COLUMNS} FROM ({merged}) AS t", {"id": trace_id}).fetchall()
    return TraceRow(*rows[0]) if rows else None


def trace_tenant(lake: LakeReader, trace_id: str) -> str | None:
    """The tenant of a trace (its spans'), None when it has none or is not in the lake."""
    summary = lake.run(lambda con: _summary(lake, con, trace_id, feedback_min=False))
    return summary.tenant_id if summary is not None else None


def _spans(lake: LakeReader, con: duckdb.DuckDBPyConnection, summary: TraceRow | None, where: str) -> str:
    """The trace's spans (rows passing `where`), `duplicate_of` as the view has it (also from the summary's
    `duplicate_spans`). Every span started between the trace's start and end, so only those hours are read
    (all of them while the trace has no summary yet)."""
    if summary is None:
        hours = lake.hours("spans")
    else:
        hours = lake.hours("spans", summary.start_ns, (summary.end_ns or summary.start_ns) + 1)
    parts = lake.rows(
        con, "traces", lake.hours_holding("traces", [summary.trace_id]) if summary else [], "trace_id = $id"
    )
    return f"({query.SPANS_DECIDED.format(rows=lake.rows(con, 'spans', hours, where), traces_src=parts)})"


def load_trace(lake: LakeReader, trace_id: str) -> TraceDetail | None:
    """The trace, or None when the lake knows nothing of it."""

    def work(con: duckdb.DuckDBPyConnection) -> TraceDetail | None:
        summary = _summary(lake, con, trace_id)
        spans_src = _spans(lake, con, summary, "trace_id = $id")
        spans = [
            SpanRow(*r)
            for r in con.execute(
                f"SELECT {_SPAN_COLUMNS} FROM {spans_src} ORDER BY start_time, span_id", {"id": trace_id}
            ).fetchall()
        ]
        if summary is None and not spans:
            return None
        # feedback may carry any time (an import of old scores): the id index names its hours. Feedback of
        # another tenant than the trace's is left out, as the `feedback` view (query.FEEDBACK_OWNED) leaves it
        hours = lake.hours_holding("feedback", [trace_id])
        events = lake.rows(con, "feedback", hours, "trace_id = $id AND (tenant_id IS NULL OR tenant_id = $owner)")
        feedback = [
            FeedbackRow(*r)
            for r in con.execute(
                f'SELECT epoch_ns("time"), name, value, comment, source, span_id FROM {events} ORDER BY "time", name',
                {"id": trace_id, "owner": summary.tenant_id if summary else None},
            ).fetchall()
        ]
        return TraceDetail(trace_id, summary, spans, feedback)

    detail = lake.run(work)
    if detail is not None and detail.spans:
        _lay_out(detail)
    return detail


def load_span(
    lake: LakeReader, trace_id: str, span_id: str, artifact_text: Callable[[str], str | None] | None = None
) -> SpanDetail | None:
    """One span in full, with its conversation (`pipeline.conversation`). Offloaded messages are read
    back with `artifact_text` (ref -> text, None when the object is gone): only this span's."""

    def work(con: duckdb.DuckDBPyConnection) -> SpanDetail | None:
        summary = _summary(lake, con, trace_id, feedback_min=False)  # only its hours and decided duplicates
        src = _spans(lake, con, summary, "trace_id = $id AND span_id = $span")
        rows = con.execute(f"SELECT {_DETAIL_COLUMNS} FROM {src}", {"id": trace_id, "span": span_id}).fetchall()
        return _detail(rows[0]) if rows else None

    span = lake.run(work)
    if span is None:
        return None
    events = [{"name": e.name, "attributes": e.attributes} for e in span.events]
    refs = conversation.artifact_refs(span.attributes, events)
    texts = {ref: artifact_text(ref) for ref in refs} if artifact_text is not None else {}
    return replace(span, conversation=conversation.parse(span.attributes, events, texts))


def _pairs(value: Any) -> dict[str, Any]:
    """DuckDB hands a MAP back as a dict, or as {key: [...], value: [...]} in some versions."""
    if not value:
        return {}
    if isinstance(value, dict) and set(value) == {"key", "value"} and isinstance(value["key"], list):
        return dict(zip(value["key"], value["value"], strict=True))
    return dict(value)


# the columns before `attributes`, as the query selects them
_HEAD_FIELDS = [f.name for f in fields(SpanDetail)][:30]


def _detail(r: tuple) -> SpanDetail:
    head = dict(zip(_HEAD_FIELDS, r[:30], strict=True))
    attributes, resource, events, links, pii, artifacts = r[30:]
    return SpanDetail(
        **head,
        attributes=_pairs(attributes),
        resource_attributes=_pairs(resource),
        events=[Event(t, n or "", _pairs(a)) for t, n, a in events or []],
        links=[dict(link) for link in links or []],
        pii_found=_pairs(pii),
        artifacts=[Artifact(a["key"], a["ref"], a["bytes"], a["preview"]) for a in artifacts or []],
    )


def _nice_step(total_ns: int, ticks: int = 6) -> int:
    raw = max(total_ns / ticks, 1)
    base = 10 ** math.floor(math.log10(raw))
    return int(next(m * base for m in (1, 2, 2.5, 5, 10) if m * base >= raw))


def format_ms(ms: float | None) -> str:
    if ms is None:
        return "–"
    if ms == 0:
        return "0"
    if ms < 1:
        return f"{ms * 1000:.0f}µs"
    if ms < 1000:
        return f"{ms:.1f}ms" if ms < 10 else f"{ms:.0f}ms"
    sec = ms / 1000
    return f"{sec:.2f}s" if sec < 10 else f"{sec:.1f}s" if sec < 60 else f"{sec / 60:.1f}min"


def _lay_out(detail: TraceDetail) -> None:
    """Waterfall rows in tree order with their bar's place on the trace's time axis, and the axis ticks."""
    t0 = min(s.start_ns for s in detail.spans)
    t1 = max(s.end_ns for s in detail.spans)
    total = max(t1 - t0, 1)
    detail.waterfall = [
        WaterfallRow(
            span,
            depth,
            orphan,
            left=100.0 * (span.start_ns - t0) / total,
            width=max(100.0 * (span.end_ns - span.start_ns) / total, 0.0),
        )
        for span, depth, orphan in span_tree(detail.spans)
    ]
    step = _nice_step(total)
    detail.ticks = [(100.0 * t / total, format_ms(t / 1e6)) for t in range(0, total + 1, step)]


def pretty_json(text: str) -> str | None:
    """Indented JSON when `text` is a JSON object or array (messages, tool arguments), else None."""
    stripped = text.strip()
    if not stripped or stripped[0] not in "[{":
        return None
    try:
        return json.dumps(json.loads(stripped), indent=2, ensure_ascii=False)
    except ValueError:
        return None
