"""The traces list: filters from the URL, and the page of `traces` rows they select.

Every filter is a query parameter, so a filtered view is a URL to share. The rows are the `traces`
view's (one merged row per trace, sampled-out traces included), computed over as few hour partitions
as the page needs. Newest first (the default), the newest hour is read first and the window grows
fourfold until the page is full or the time range is covered. A trace's parts sit in the hours they
started in, from the trace's own hour on; a candidate that also has a part in an hour before the
window (found by the id index, `pipeline.ui.trace_id_index`) started earlier and waits for a larger
window, so every row shown is complete. Sorting by cost, duration or tokens reads the whole range.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Literal
from urllib.parse import urlencode

import duckdb
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline import query
from pipeline.ui.lake import HOUR_NS, Hour, LakeReader

RANGES = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7), "30d": timedelta(days=30)}
TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
SORTS = {
    "start": "start_time",
    "cost": "cost_usd",
    "duration": "duration_ms",
    "tokens": "coalesce(input_tokens, 0) + coalesce(output_tokens, 0)",
}


class TraceQuery(BaseModel):
    """The list's filters as URL parameters; empty values mean "no filter"."""

    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)

    range: Literal["1h", "24h", "7d", "30d", "all"] = "7d"
    start: datetime | None = Field(default=None, alias="from")
    end: datetime | None = Field(default=None, alias="to")
    service: str = ""
    model: str = ""
    user: str = ""
    session: str = ""
    tenant: str = ""
    status: Literal["", "error", "ok"] = ""
    feedback: Literal["", "down", "up", "any"] = ""
    kept: Literal["", "kept", "summary"] = ""
    min_cost: float | None = Field(default=None, ge=0)
    max_cost: float | None = Field(default=None, ge=0)
    min_ms: float | None = Field(default=None, ge=0)
    max_ms: float | None = Field(default=None, ge=0)
    q: str = Field(default="", max_length=500)
    sort: Literal["start", "cost", "duration", "tokens"] = "start"
    order: Literal["desc", "asc"] = "desc"
    page: int = Field(default=1, ge=1, le=10_000)
    size: int = Field(default=50, ge=10, le=500)

    @field_validator("start", "end", "min_cost", "max_cost", "min_ms", "max_ms", mode="before")
    @classmethod
    def _blank_is_none(cls, v: object) -> object:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        return v.replace(tzinfo=UTC) if v is not None and v.tzinfo is None else v

    @classmethod
    def from_params(cls, params: Mapping[str, list[str]]) -> tuple[TraceQuery, list[str]]:
        """The query, and a message per parameter that could not be used (it is then left out)."""
        flat = {k: v[-1] for k, v in params.items() if v}
        try:
            return cls.model_validate(flat), []
        except ValidationError as e:
            bad = {str(err["loc"][0]) for err in e.errors()}
            errors = [f"{err['loc'][0]}: {err['msg']}" for err in e.errors()]
            return cls.model_validate({k: v for k, v in flat.items() if k not in bad}), errors

    def window(self, now_ns: int | None = None) -> tuple[int | None, int | None]:
        """[lo, hi) in unix ns; None is unbounded. `from`/`to` win over `range`."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        lo = hi = None
        if self.start is not None or self.end is not None:
            lo = int(self.start.timestamp() * 1e9) if self.start else None
            hi = int(self.end.timestamp() * 1e9) if self.end else None
        elif self.range != "all":
            lo = now_ns - int(RANGES[self.range].total_seconds() * 1e9)
        return lo, hi

    def params(self, **changes: object) -> dict[str, str]:
        """The non-default parameters (after `changes`), as the URL carries them."""
        data = self.model_dump(by_alias=True)
        data.update({("from" if k == "start" else "to" if k == "end" else k): v for k, v in changes.items()})
        defaults = TraceQuery().model_dump(by_alias=True)
        out = {}
        for k, v in data.items():
            if v == defaults.get(k) or v is None or v == "":
                continue
            if isinstance(v, datetime):
                out[k] = v.strftime("%Y-%m-%dT%H:%M")
            else:
                out[k] = f"{v:g}" if isinstance(v, float) else str(v)
        return out

    def url(self, **changes: object) -> str:
        """`?…` for this query with `changes` (page=2, sort="cost", …); the first page unless one is given."""
        if "page" not in changes:
            changes["page"] = 1
        params = self.params(**changes)
        return "?" + urlencode(params) if params else "?"

    def shared_params(self) -> dict[str, str]:
        """The time range and the tenant: what the dashboards take over from the list, and back."""
        return {k: v for k, v in self.params().items() if k in ("range", "from", "to", "tenant")}


@dataclass(frozen=True)
class TraceRow:
    """A row of the `traces` view, as the list and the trace page show it (`TRACE_COLUMNS`)."""

    trace_id: str
    root_name: str | None
    service_name: str | None
    start_ns: int
    end_ns: int | None
    duration_ms: float | None
    span_count: int
    error_count: int
    llm_count: int
    tool_count: int
    input_tokens: int | None
    output_tokens: int | None
    cache_read_tokens: int | None
    cache_write_tokens: int | None
    reasoning_tokens: int | None
    cost_usd: float | None
    unpriced_calls: int | None
    models: list[str]
    session_id: str | None
    user_id: str | None
    tenant_id: str | None
    prompt_versions: list[str]
    feedback_min: float | None
    kept: bool | None
    keep_reasons: list[str]


@dataclass(frozen=True)
class TracePage:
    rows: list[TraceRow]
    has_next: bool
    hours_read: int  # hour partitions of `traces` the page was computed from
    seconds: float


TRACE_COLUMNS = """trace_id, root_name, service_name, epoch_ns(start_time), epoch_ns(end_time), duration_ms,
  coalesce(span_count, 0), coalesce(error_count, 0), coalesce(llm_count, 0), coalesce(tool_count, 0),
  input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, cost_usd, unpriced_calls,
  coalesce(models, []), session_id, user_id, tenant_id, coalesce(prompt_versions, []), feedback_min, kept,
  coalesce(keep_reasons, [])"""
# What the text search looks at in a span (case-insensitive, a substring): its name, status message,
# attribute values (prompts, completions, tool arguments and results in all three conventions), event
# attributes (exceptions) and the previews of offloaded values. Lambdas over the values cost about half
# of casting the maps to text.
_SPAN_TEXT = """(ilike_escape(name, $pattern, '\\') OR ilike_escape(coalesce(status_message, ''), $pattern, '\\')
  OR len(list_filter(map_values(attributes), lambda v: ilike_escape(v, $pattern, '\\'))) > 0
  OR len(list_filter(coalesce(events, []), lambda e: len(list_filter(map_values(e.attributes),
       lambda v: ilike_escape(v, $pattern, '\\'))) > 0)) > 0
  OR len(list_filter(coalesce(artifacts, []), lambda a: ilike_escape(a.preview, $pattern, '\\'))) > 0)"""


def _conditions(q: TraceQuery, params: dict[str, object], spans_src: str | None) -> list[str]:
    where = []
    for key, column in (
        ("service", "service_name"),
        ("user", "user_id"),
        ("session", "session_id"),
        ("tenant", "tenant_id"),
    ):
        if value := getattr(q, key):
            params[key] = value
            where.append(f"{column} = ${key}")
    if q.model:
        params["model"] = q.model
        where.append("list_contains(models, $model)")
    if q.status == "error":
        where.append("error_count > 0")
    elif q.status == "ok":
        where.append("coalesce(error_count, 0) = 0")
    if q.feedback == "down":
        where.append("feedback_min <= 0")
    elif q.feedback == "up":
        where.append("feedback_min > 0")
    elif q.feedback == "any":
        where.append("feedback_min IS NOT NULL")
    if q.kept:
        where.append("kept" if q.kept == "kept" else "NOT coalesce(kept, false)")
    for key, column, op in (
        ("min_cost", "cost_usd", ">="),
        ("max_cost", "cost_usd", "<="),
        ("min_ms", "duration_ms", ">="),
        ("max_ms", "duration_ms", "<="),
    ):
        if (value := getattr(q, key)) is not None:
            params[key] = value
            where.append(f"{column} {op} ${key}")
    if q.q:
        params["q"] = q.q.lower()
        params["pattern"] = "%" + q.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        text = "ilike_escape(coalesce(root_name, ''), $pattern, '\\') OR trace_id = $q"
        if spans_src is not None:
            text += f" OR trace_id IN (SELECT trace_id FROM {spans_src} WHERE {_SPAN_TEXT})"
        where.append(f"({text})")
    return where


def _order(q: TraceQuery) -> str:
    return f"{SORTS[q.sort]} {'DESC' if q.order == 'desc' else 'ASC'} NULLS LAST, trace_id"


def _page_ids_sql(q: TraceQuery, parts: str, feedback: str, spans_src: str | None, params: dict[str, object]) -> str:
    """The page's trace ids. Only the columns the filters and the order use are aggregated: DuckDB drops
    the view's other aggregates (the list-valued ones cost most)."""
    where = ["epoch_ns(start_time) >= $lo", "epoch_ns(start_time) < $hi", *_conditions(q, params, spans_src)]
    if params.get("excluded"):
        where.append("NOT list_contains($excluded, trace_id)")
    merged = query.TRACES_MERGE.format(parts=parts, feedback=feedback)
    return f"SELECT trace_id FROM ({merged}) AS t WHERE {' AND '.join(where)} ORDER BY {_order(q)} LIMIT $limit"


def list_traces(lake: LakeReader, q: TraceQuery, now_ns: int | None = None) -> TracePage:
    """The page of traces `q` asks for, exactly as the `traces` view would list it.

    Parts of a trace are in the hour partitions of their own start: the first part in the trace's start
    hour, late parts (late spans, late feedback) in later hours, possibly after the range's end. So the
    rows are merged from every hour from the window's first one on, and a candidate that also has a
    part in an older hour (it started before the window: its row here is partial) is set aside for a
    larger window."""
    t0 = time.perf_counter()
    lo, hi = q.window(now_ns)
    lo_ns = -(2**62) if lo is None else lo
    hi_ns = 2**62 if hi is None else hi
    hours = lake.hours("traces")
    in_range = [h for h in hours if h.start_ns + HOUR_NS > lo_ns and h.start_ns < hi_ns]
    if not in_range:
        return TracePage([], False, 0, time.perf_counter() - t0)
    newest_first = q.sort == "start" and q.order == "desc"
    take = 1 if newest_first else len(in_range)
    need = q.page * q.size + 1
    while True:
        first = in_range[len(in_range) - take].start_ns
        window = [h for h in hours if h.start_ns >= first]
        older = [h for h in hours if h.start_ns < first]
        complete = take >= len(in_range)
        start_ns = lo_ns if complete else max(lo_ns, first)
        excluded: list[str] = []
        while True:
            ids = lake.run(partial(_page_ids, lake, q=q, window=window, lo_ns=start_ns, hi_ns=hi_ns, excluded=excluded))
            in_older = lake.run(partial(lake.ids_with_parts_in, table="traces", hours=older, ids=ids))
            if not in_older:
                break
            excluded += in_older
        if len(ids) >= need or complete:
            break
        take = min(len(in_range), take * 4)
    ids = ids[(q.page - 1) * q.size :]
    page_ids = ids[: q.size]
    rows = lake.run(lambda con: _rows(lake, con, q, window, page_ids)) if page_ids else []
    return TracePage([TraceRow(*r) for r in rows], len(ids) > q.size, take, time.perf_counter() - t0)


def _page_ids(
    lake: LakeReader,
    con: duckdb.DuckDBPyConnection,
    q: TraceQuery,
    window: list[Hour],
    lo_ns: int,
    hi_ns: int,
    excluded: list[str],
) -> list[str]:
    parts = lake.rows(con, "traces", window)
    # feedback_min matters only to a feedback filter; feedback may carry any time, so then it is all of it
    feedback = lake.rows(con, "feedback", lake.hours("feedback")) if q.feedback else lake.no_feedback(con)
    spans_src = None
    if q.q:
        spans_src = lake.source(con, "spans", lake.files("spans", window[0].start_ns))
    params: dict[str, object] = {"lo": lo_ns, "hi": hi_ns, "limit": q.page * q.size + 1}
    if excluded:
        params["excluded"] = excluded
    return [r[0] for r in con.execute(_page_ids_sql(q, parts, feedback, spans_src, params), params).fetchall()]


def _rows(
    lake: LakeReader, con: duckdb.DuckDBPyConnection, q: TraceQuery, window: list[Hour], ids: list[str]
) -> list[tuple]:
    """Every column of the page's traces; their parts are all in the window, found by the id index."""
    parts = lake.rows(con, "traces", lake.hours_holding("traces", ids, window), "list_contains($ids, trace_id)")
    feedback = lake.rows(con, "feedback", lake.hours_holding("feedback", ids), "list_contains($ids, trace_id)")
    merged = query.TRACES_MERGE.format(parts=parts, feedback=feedback)
    return con.execute(f"SELECT {TRACE_COLUMNS} FROM ({merged}) AS t ORDER BY {_order(q)}", {"ids": ids}).fetchall()


def facets(lake: LakeReader, q: TraceQuery, now_ns: int | None = None, limit: int = 200) -> dict[str, list[str]]:
    """Services, models and tenants seen in the newest day of the range, to suggest in the filter inputs
    (users and sessions are too many to list)."""
    lo, hi = q.window(now_ns)
    hours = lake.hours("traces", lo, hi)[-24:]
    if not hours:
        return {}

    def work(con: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
        src = lake.source(con, "traces", [f for h in hours for f in h.files])
        row = con.execute(
            "SELECT list_sort(list(DISTINCT service_name)), list_sort(list_distinct(flatten(list(models)))),"
            f" list_sort(list(DISTINCT tenant_id)) FROM {src}"
        ).fetchall()[0]
        return {
            key: [v for v in values or [] if v is not None][:limit]
            for key, values in zip(("service", "model", "tenant"), row, strict=True)
        }

    return lake.run(work)
