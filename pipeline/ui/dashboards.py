"""Dashboards: cost, calls, latency, errors, feedback and tokens over the list's time range.

Each chart is a `Chart` of series over time buckets (hours for ranges up to two days, else days),
drawn by uPlot in the browser. Per-model numbers come from the LLM spans (`span_type = 'llm'`, model
as reported by the response, else the request); per-trace numbers from `traces`, which holds every
trace, sampled out or not; feedback from `feedback`. Only the hour partitions of the range are read,
and rows are filtered before de-duplication (exact, see `pipeline.ui.lake`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import duckdb

from pipeline import query
from pipeline.ui.lake import HOUR_NS, Hour, LakeReader
from sinks.parquet.trace_index import common_keys

MAX_SERIES = 8  # more models/tenants than this: the rest are summed as "other"


@dataclass
class Chart:
    id: str
    title: str
    unit: str  # "usd", "count", "ms", "percent", "tokens"
    kind: str = "line"  # "line" | "bars" (stacked)
    x: list[int] = field(default_factory=list)  # bucket starts, unix seconds
    series: dict[str, list[float | None]] = field(default_factory=dict)
    note: str = ""

    @property
    def empty(self) -> bool:
        return not self.x


@dataclass(frozen=True)
class ChartSpec:
    """A chart: `sql` gives (bucket, series, value) rows from the temp tables `llm` (LLM spans), `t`
    (traces) and `fb` (feedback events), each with its time bucket `b`."""

    id: str
    title: str
    unit: str
    kind: str
    sql: str
    series_order: str | None = None  # "models" (by calls) or "tenants" (by cost); None: by name
    note: str = ""


CHARTS = [
    ChartSpec(
        "cost_model", "Cost by model", "usd", "bars", "SELECT b, model, sum(cost_usd) FROM llm GROUP BY ALL", "models"
    ),
    ChartSpec(
        "cost_tenant", "Cost by tenant", "usd", "bars", "SELECT b, tenant, sum(cost_usd) FROM t GROUP BY ALL", "tenants"
    ),
    ChartSpec(
        "calls_model",
        "LLM calls by model",
        "count",
        "bars",
        "SELECT b, model, count(*) FROM llm GROUP BY ALL",
        "models",
    ),
    ChartSpec(
        "p50_model",
        "p50 latency by model",
        "ms",
        "line",
        "SELECT b, model, quantile_cont(duration_ms, 0.5) FROM llm GROUP BY ALL",
        "models",
    ),
    ChartSpec(
        "p95_model",
        "p95 latency by model",
        "ms",
        "line",
        "SELECT b, model, quantile_cont(duration_ms, 0.95) FROM llm GROUP BY ALL",
        "models",
    ),
    ChartSpec(
        "errors",
        "Error rate",
        "percent",
        "line",
        "SELECT b, 'traces with an error', 100.0 * avg((error_count > 0)::INT) FROM t GROUP BY ALL"
        " UNION ALL SELECT b, 'LLM calls failed', 100.0 * avg((status_code = 'ERROR')::INT) FROM llm GROUP BY ALL",
    ),
    ChartSpec(
        "thumbs_down",
        "Thumbs-down rate",
        "percent",
        "line",
        # at or below 0, as tail sampling's feedback policy counts a thumbs-down
        "SELECT b, 'thumbs-down share of feedback', 100.0 * avg((value <= 0)::INT) FROM fb GROUP BY ALL",
    ),
    ChartSpec(
        "unpriced",
        "Unpriced LLM calls",
        "count",
        "bars",
        "SELECT b, 'unpriced calls', count(*) FROM llm WHERE cost_status <> 'priced' GROUP BY ALL",
        note="calls the cost processor could not price (unknown model or no usage): cost is a lower bound",
    ),
    ChartSpec(
        "tokens",
        "Tokens",
        "tokens",
        "bars",
        # GenAI counts input with its cache reads (the cost processor's rule): the rest is uncached
        'UNPIVOT (SELECT b, sum(input_tokens) - coalesce(sum(cache_read_tokens), 0) AS "input (not cached)",'
        ' sum(cache_read_tokens) AS "input (cache hit)", sum(output_tokens) AS output FROM t GROUP BY 1)'
        ' ON "input (not cached)", "input (cache hit)", output INTO NAME k VALUE v',
    ),
    ChartSpec(
        "cache_share",
        "Cache hit share of input tokens",
        "percent",
        "line",
        "SELECT b, 'cache hit share of input', 100.0 * sum(cache_read_tokens) / nullif(sum(input_tokens), 0)"
        " FROM t GROUP BY ALL",
    ),
]


@dataclass
class Dashboard:
    bucket: str  # "hour" | "day"
    charts: list[Chart]
    seconds: float


def _bucket(lo_ns: int | None, hi_ns: int | None, oldest_ns: int | None, newest_ns: int | None) -> str:
    start = lo_ns if lo_ns is not None else oldest_ns
    end = hi_ns if hi_ns is not None else newest_ns
    return "hour" if start is not None and end is not None and end - start <= 2 * 24 * HOUR_NS else "day"


ADDITIVE_UNITS = ("usd", "count", "tokens")


def _pivot(rows: list[tuple], chart: Chart, top: list[str] | None = None) -> Chart:
    """rows: (bucket seconds, series name, value) → chart.x and one list per series, None where missing.

    Series beyond the first MAX_SERIES of `top` are summed as "other" where sums mean something (cost,
    counts, tokens) and left out where they do not (latency percentiles, rates)."""
    names = sorted({str(r[1]) for r in rows}) if top is None else [str(t) for t in top]
    keep = set(names[:MAX_SERIES])
    fold = chart.unit in ADDITIVE_UNITS
    xs = sorted({int(r[0]) for r in rows})
    index = {x: i for i, x in enumerate(xs)}
    series: dict[str, list[float | None]] = {name: [None] * len(xs) for name in names[:MAX_SERIES]}
    for bucket, name, value in rows:
        if str(name) in keep:
            series[str(name)][index[int(bucket)]] = value
        elif fold and value is not None:
            col = series.setdefault("other", [None] * len(xs))
            i = index[int(bucket)]
            col[i] = (col[i] or 0) + value
    if len(names) > MAX_SERIES and not fold:
        chart.note = chart.note or f"the {MAX_SERIES} busiest of {len(names)} series"
    chart.x = xs
    chart.series = {k: v for k, v in series.items() if any(x is not None for x in v)}
    return chart


def _time_range(lo_ns: int | None, hi_ns: int | None, column: str) -> str:
    conds = []
    if lo_ns is not None:
        conds.append(f"epoch_ns({column}) >= {int(lo_ns)}")
    if hi_ns is not None:
        conds.append(f"epoch_ns({column}) < {int(hi_ns)}")
    return " AND ".join(conds) or "true"


def build_dashboard(lake: LakeReader, lo_ns: int | None, hi_ns: int | None, tenant: str | None = None) -> Dashboard:
    """The charts over [lo_ns, hi_ns); with `tenant`, of that tenant's spans, traces and the feedback on them."""
    t0 = time.perf_counter()
    of_tenant = f" AND tenant_id = {query.sql_literal(tenant)}" if tenant is not None else ""
    hours = lake.hours("traces", lo_ns, hi_ns)
    bucket = _bucket(lo_ns, hi_ns, *((hours[0].start_ns, hours[-1].start_ns + HOUR_NS) if hours else (None, None)))
    step_s = 3600 if bucket == "hour" else 86400  # UTC hours or days
    b = f"(epoch_ns({{col}}) // {step_s * 10**9}) * {step_s}"

    def work(con: duckdb.DuckDBPyConnection) -> list[Chart]:
        in_range = _time_range(lo_ns, hi_ns, "start_time")
        # each LLM call once: a span that repeats a call another span describes is left out, as in `traces`
        calls = lake.rows(
            con, "spans", lake.hours("spans", lo_ns, hi_ns), f"span_type = 'llm' AND {in_range}{of_tenant}"
        )
        decided = lake.rows(con, "traces", lake.hours("traces"), "len(duplicate_spans) > 0")
        llm = query.SPANS_DECIDED.format(rows=calls, traces_src=decided)
        con.execute(
            f"CREATE TEMP TABLE llm AS SELECT {b.format(col='start_time')} AS b, duration_ms, cost_usd, cost_status,"
            f" status_code, coalesce(response_model, request_model, '(no model)') AS model FROM ({llm})"
            " WHERE duplicate_of IS NULL"
        )
        # traces that started in the range: their parts are in its hours and any later one
        every = lake.hours("traces")
        first = hours[0].start_ns if hours else 2**62
        window = [h for h in every if h.start_ns >= first]
        started_before = _started_before(lake, con, window, [h for h in every if h.start_ns < first])
        merged = query.TRACES_MERGE.format(parts=lake.rows(con, "traces", window), feedback=lake.no_feedback(con))
        con.execute(
            f"CREATE TEMP TABLE t AS SELECT {b.format(col='start_time')} AS b, error_count, cost_usd, unpriced_calls,"
            " coalesce(tenant_id, '(none)') AS tenant, input_tokens, output_tokens, cache_read_tokens"
            f" FROM ({merged}) WHERE {in_range}{of_tenant} AND NOT list_contains($before, trace_id)",
            {"before": started_before},
        )
        fb_hours = lake.hours("feedback", lo_ns, hi_ns)
        events = lake.owned_feedback(con, fb_hours, _time_range(lo_ns, hi_ns, '"time"'), tenant=tenant)
        fb_bucket = b.format(col='"time"')
        con.execute(f"CREATE TEMP TABLE fb AS SELECT {fb_bucket} AS b, value FROM {events}")
        order = {
            "models": [r[0] for r in con.execute("SELECT model FROM llm GROUP BY 1 ORDER BY count(*) DESC").fetchall()],
            "tenants": [
                r[0]
                for r in con.execute(
                    "SELECT tenant FROM t GROUP BY 1 ORDER BY sum(cost_usd) DESC NULLS LAST"
                ).fetchall()
            ],
        }
        return [
            _pivot(
                con.execute(f"SELECT * FROM ({spec.sql}) ORDER BY 1").fetchall(),
                Chart(spec.id, spec.title, spec.unit, spec.kind, note=spec.note),
                order[spec.series_order] if spec.series_order else None,
            )
            for spec in CHARTS
        ]

    charts = lake.run(work)
    return Dashboard(bucket, charts, time.perf_counter() - t0)


def _started_before(
    lake: LakeReader, con: duckdb.DuckDBPyConnection, window: list[Hour], older: list[Hour]
) -> list[str]:
    """Trace ids with parts in `window` and in `older`: they started before the window, and merging the
    window alone would make a partial row of them. The id index finds them without a scan."""
    index = lake.ids["traces"]
    both = common_keys(
        index.keys([f for h in window for f in h.files]), index.keys([f for h in older for f in h.files])
    )
    if both.size == 0:
        return []
    parts = lake.rows(con, "traces", window, "list_contains($keys, ('0x' || trace_id[1:16])::UBIGINT)")
    candidates = [
        r[0] for r in con.execute(f"SELECT DISTINCT trace_id FROM {parts}", {"keys": both.tolist()}).fetchall()
    ]
    return lake.ids_with_parts_in(con, "traces", older, candidates)
