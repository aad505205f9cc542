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
from pipeline.ui.trace_id_index import common_keys

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


def build_dashboard(lake: LakeReader, lo_ns: int | None, hi_ns: int | None) -> Dashboard:
    t0 = time.perf_counter()
    hours = lake.hours("traces", lo_ns, hi_ns)
    bucket = _bucket(lo_ns, hi_ns, *((hours[0].start_ns, hours[-1].start_ns + HOUR_NS) if hours else (None, None)))
    step_s = 3600 if bucket == "hour" else 86400  # UTC hours or days
    b = f"(epoch_ns({{col}}) // {step_s * 10**9}) * {step_s}"

    def work(con: duckdb.DuckDBPyConnection) -> list[Chart]:
        in_range = _time_range(lo_ns, hi_ns, "start_time")
        llm = lake.rows(con, "spans", lake.hours("spans", lo_ns, hi_ns), f"span_type = 'llm' AND {in_range}")
        con.execute(
            "CREATE TEMP TABLE llm AS SELECT start_time, duration_ms, cost_usd, cost_status, status_code,"
            f" coalesce(response_model, request_model, '(no model)') AS model FROM {llm}"
        )
        # traces that started in the range: their parts are in its hours and any later one
        every = lake.hours("traces")
        first = hours[0].start_ns if hours else 2**62
        window = [h for h in every if h.start_ns >= first]
        started_before = _started_before(lake, con, window, [h for h in every if h.start_ns < first])
        merged = query.TRACES_MERGE.format(parts=lake.rows(con, "traces", window))
        con.execute(
            "CREATE TEMP TABLE t AS SELECT start_time, error_count, cost_usd, unpriced_calls, tenant_id,"
            " input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, feedback_min"
            f" FROM ({merged}) WHERE {in_range} AND NOT list_contains($before, trace_id)",
            {"before": started_before},
        )
        fb_hours = lake.hours("feedback", lo_ns, hi_ns)
        fb_range = _time_range(lo_ns, hi_ns, '"time"')
        sb, tb = b.format(col="start_time"), b.format(col="start_time")
        models = [r[0] for r in con.execute("SELECT model FROM llm GROUP BY 1 ORDER BY count(*) DESC").fetchall()]
        tenants = [
            r[0]
            for r in con.execute(
                "SELECT coalesce(tenant_id, '(none)') FROM t GROUP BY 1 ORDER BY sum(cost_usd) DESC NULLS LAST"
            ).fetchall()
        ]
        charts = [
            _pivot(
                con.execute(f"SELECT {sb}, model, sum(cost_usd) FROM llm GROUP BY ALL ORDER BY 1").fetchall(),
                Chart("cost_model", "Cost by model", "usd", "bars"),
                models,
            ),
            _pivot(
                con.execute(
                    f"SELECT {tb}, coalesce(tenant_id, '(none)'), sum(cost_usd) FROM t GROUP BY ALL ORDER BY 1"
                ).fetchall(),
                Chart("cost_tenant", "Cost by tenant", "usd", "bars"),
                tenants,
            ),
            _pivot(
                con.execute(f"SELECT {sb}, model, count(*) FROM llm GROUP BY ALL ORDER BY 1").fetchall(),
                Chart("calls_model", "LLM calls by model", "count", "bars"),
                models,
            ),
            _pivot(
                con.execute(
                    f"SELECT {sb}, model, quantile_cont(duration_ms, 0.5) FROM llm GROUP BY ALL ORDER BY 1"
                ).fetchall(),
                Chart("p50_model", "p50 latency by model", "ms"),
                models,
            ),
            _pivot(
                con.execute(
                    f"SELECT {sb}, model, quantile_cont(duration_ms, 0.95) FROM llm GROUP BY ALL ORDER BY 1"
                ).fetchall(),
                Chart("p95_model", "p95 latency by model", "ms"),
                models,
            ),
            _pivot(
                con.execute(
                    f"SELECT {tb}, 'traces with an error', 100.0 * avg((error_count > 0)::INT) FROM t GROUP BY ALL"
                    f" UNION ALL SELECT {sb}, 'LLM calls failed', 100.0 * avg((status_code = 'ERROR')::INT)"
                    " FROM llm GROUP BY ALL ORDER BY 1"
                ).fetchall(),
                Chart("errors", "Error rate", "percent"),
            ),
            _thumbs_down(con, lake.rows(con, "feedback", fb_hours, fb_range), b.format(col='"time"')),
            _pivot(
                con.execute(
                    f"SELECT {sb}, 'unpriced calls', count(*) FROM llm"
                    " WHERE cost_status IS NOT NULL AND cost_status <> 'priced' GROUP BY ALL ORDER BY 1"
                ).fetchall(),
                Chart(
                    "unpriced",
                    "Unpriced LLM calls",
                    "count",
                    "bars",
                    note="calls the cost processor could not price (unknown model or no usage): cost is a lower bound",
                ),
            ),
            _pivot(
                con.execute(
                    f"UNPIVOT (SELECT {tb} AS b, sum(input_tokens) - coalesce(sum(cache_read_tokens), 0)"
                    ' AS "input (not cached)", sum(cache_read_tokens) AS "input (cache hit)",'
                    " sum(output_tokens) AS output FROM t GROUP BY 1)"
                    ' ON "input (not cached)", "input (cache hit)", output INTO NAME k VALUE v ORDER BY b'
                ).fetchall(),
                Chart("tokens", "Tokens", "tokens", "bars"),
            ),
            _pivot(
                con.execute(
                    f"SELECT {tb}, 'cache hit share of input',"
                    " 100.0 * sum(cache_read_tokens) / nullif(sum(input_tokens), 0) FROM t GROUP BY ALL ORDER BY 1"
                ).fetchall(),
                Chart("cache_share", "Cache hit share of input tokens", "percent"),
            ),
        ]
        return charts

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


def _thumbs_down(con: duckdb.DuckDBPyConnection, events: str, bucket: str) -> Chart:
    """Share of feedback events at or below 0 (thumbs-down, as tail sampling's feedback policy counts them)."""
    rows = con.execute(
        f"SELECT {bucket}, 'thumbs-down share of feedback', 100.0 * avg((value <= 0)::INT)"
        f" FROM {events} GROUP BY ALL ORDER BY 1"
    ).fetchall()
    return _pivot(rows, Chart("thumbs_down", "Thumbs-down rate", "percent"))
