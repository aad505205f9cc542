"""What the UI reads (list, trace, dashboards) equals what the `spans` / `traces` / `feedback` views say.

The UI reads only the hour partitions a page needs; these tests write a lake with the real ParquetSink
(traces of two tenants over six hours, a trace with a late part hours after its start, a replayed part, a
sampled-out trace, spans with prompts, feedback with and without a tenant, and another tenant's
thumbs-down that must not count) and compare every answer with the same question asked of the views.
"""

from __future__ import annotations

import functools
import itertools
import random
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from core import schema
from pipeline.maintenance.compact import Compactor
from pipeline.query import connect
from pipeline.ui.dashboards import build_dashboard
from pipeline.ui.lake import HOUR_NS, LakeReader, create_views
from pipeline.ui.trace_detail import load_span, load_trace
from pipeline.ui.trace_list import SORTS, TraceQuery, list_traces
from sinks.parquet.config import ParquetSinkConfig
from sinks.parquet.sink import ParquetSink

NOW = (1_790_000_000 * 10**9 // HOUR_NS) * HOUR_NS + 40 * 60 * 10**9  # 40 minutes into an hour
MIN = 60 * 10**9
LATE = "1a7e" + "0" * 28  # first part 5 hours ago, a late part (feedback) 10 minutes ago
REPLAYED = "4e9" + "0" * 29  # one part written twice (a replay)
DROPPED = "d409" + "0" * 28  # sampled out: summary only
TWICE = "7e1ce" + "0" * 27  # one LLM call recorded by two instrumentations, decided by the summary
NEEDLE = "zebra-4711"
RATED_BY_STRANGER = 10  # an acme trace with a thumbs-up from acme and a thumbs-down from globex (not counted)


def _table(rows: list[dict[str, Any]], table: pa.Schema) -> pa.Table:
    names = {k for r in rows for k in r}
    fields = pa.schema([f for f in table if f.name in names])
    return schema.conform(pa.Table.from_pylist(rows, schema=fields), table)


def _trace_part(trace_id: str, part: str, start: int, **kw: Any) -> dict[str, Any]:
    return {
        "trace_id": trace_id,
        "part_id": part,
        "root_name": "POST /chat",
        "service_name": "support-bot",
        "start_time": start,
        "end_time": start + 2000 * 10**6,
        "duration_ms": 2000.0,
        "span_count": 2,
        "error_count": 0,
        "llm_count": 1,
        "tool_count": 0,
        "input_tokens": 100,
        "output_tokens": 20,
        "cost_usd": 0.001,
        "unpriced_calls": 0,
        "models": ["gpt-4o"],
        "tenant_id": "acme",
        "user_id": "u1",
        "session_id": "s1",
        "prompt_versions": ["v1"],
        "kept": True,
        "keep_reasons": ["baseline"],
        "lake_source": "test@1",
        **kw,
    }


def _span(trace_id: str, span_id: str, parent: str | None, start: int, **kw: Any) -> dict[str, Any]:
    return {
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_span_id": parent,
        "name": "chat gpt-4o" if parent else "POST /chat",
        "status_code": "UNSET",
        "start_time": start,
        "end_time": start + 1000 * 10**6,
        "duration_ms": 1000.0,
        "service_name": "support-bot",
        "span_type": "llm" if parent else "other",
        "request_model": "gpt-4o" if parent else None,
        "cost_usd": 0.001 if parent else None,
        "cost_status": "priced" if parent else None,
        "attributes": [("gen_ai.input.messages", '[{"role":"user","content":"hello"}]')] if parent else [],
        "tenant_id": "acme",
        "lake_source": "test@1",
        **kw,
    }


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ui-reads") / "lake"
    rnd = random.Random(3)
    parts, spans, feedback = [], [], []
    services = ["support-bot", "research-assistant", "ticket-summarizer"]
    for i in range(60):
        tid = f"{rnd.getrandbits(128):032x}"
        start = NOW - rnd.randrange(6 * HOUR_NS)
        errors = 1 if i % 7 == 0 else 0
        tenant = ["acme", "globex"][i % 2]
        rating = 0.0 if i % 9 == 0 else 1.0 if i % 9 == 1 else None
        if rating is not None:  # from the trace's tenant, or from a receiver without authentication
            rater = tenant if i % 2 == 0 else None
            feedback.append(
                {"time": start + MIN, "trace_id": tid, "name": "user_thumbs", "value": rating, "tenant_id": rater}
            )
        if i == RATED_BY_STRANGER:
            stranger = {
                "time": start + 2 * MIN,
                "trace_id": tid,
                "name": "sabotage",
                "value": -1.0,
                "tenant_id": "globex",
            }
            feedback.append(stranger)
            rating = -1.0  # as a worker that no longer remembered the trace wrote its feedback part
        parts.append(
            _trace_part(
                tid,
                f"p{i}",
                start,
                service_name=services[i % 3],
                tenant_id=tenant,
                error_count=errors,
                cost_usd=None if i % 11 == 0 else round(0.0005 * (i % 13 + 1), 6),
                unpriced_calls=1 if i % 11 == 0 else 0,
                models=[["gpt-4o"], ["claude-3-5-sonnet"], ["gpt-4o", "o3-mini"]][i % 3],
                duration_ms=float(100 * (i % 17 + 1)),
                feedback_min=rating,
            )
        )
        prompt = f"please help {NEEDLE}" if i == 5 else "please help"
        spans.append(_span(tid, f"{2 * i + 1:016x}", None, start, tenant_id=tenant))
        spans.append(
            _span(
                tid,
                f"{2 * i + 2:016x}",
                f"{2 * i + 1:016x}",
                start + 10 * 10**6,
                attributes=[("gen_ai.input.messages", f'[{{"role":"user","content":"{prompt}"}}]')],
                status_code="ERROR" if errors else "UNSET",
                tenant_id=tenant,
            )
        )
    # a trace whose late part (feedback five hours later) sits in the newest hour
    parts.append(_trace_part(LATE, "first", NOW - 5 * HOUR_NS, cost_usd=0.2))
    parts.append(
        _trace_part(
            LATE,
            "late",
            NOW - 10 * MIN,
            root_name=None,
            span_count=0,
            llm_count=0,
            input_tokens=None,
            output_tokens=None,
            cost_usd=0.05,  # a late span's cost
            models=[],
            prompt_versions=[],
            keep_reasons=[],
            feedback_min=0.0,
            end_time=None,
            tenant_id=None,  # a feedback-only part: the feedback's tenant never decides the trace's
        )
    )
    spans.append(_span(LATE, "00000000000000a1", None, NOW - 5 * HOUR_NS))
    feedback.append({"time": NOW - 10 * MIN, "trace_id": LATE, "name": "user_thumbs", "value": 0.0, "comment": "late"})
    # a replayed part: the view counts it once
    parts.append(_trace_part(REPLAYED, "r", NOW - 30 * MIN, lake_source="test@1"))
    parts.append(_trace_part(REPLAYED, "r", NOW - 30 * MIN, lake_source="test@2"))
    spans.append(_span(REPLAYED, "00000000000000b1", None, NOW - 30 * MIN))
    spans.append(_span(REPLAYED, "00000000000000b1", None, NOW - 30 * MIN, lake_source="test@2"))
    parts.append(_trace_part(DROPPED, "d", NOW - 20 * MIN, kept=False, keep_reasons=[]))
    # the second chat span repeats the first one's call: the file says so for one, the summary for the other
    parts.append(
        _trace_part(
            TWICE,
            "t",
            NOW - 50 * MIN,
            duplicate_spans=[{"span_id": "00000000000000c3", "duplicate_of": "00000000000000c2"}],
        )
    )
    spans.append(_span(TWICE, "00000000000000c1", None, NOW - 50 * MIN))
    spans.append(_span(TWICE, "00000000000000c2", "00000000000000c1", NOW - 50 * MIN + 10**6))
    spans.append(_span(TWICE, "00000000000000c3", "00000000000000c1", NOW - 50 * MIN + 10**6))
    spans.append(
        _span(TWICE, "00000000000000c4", "00000000000000c1", NOW - 50 * MIN + 10**6, duplicate_of="00000000000000c2")
    )

    sink = ParquetSink(ParquetSinkConfig(path=str(root)))
    sink.write("traces", _table(parts, schema.TRACES))
    sink.write("spans", _table(spans, schema.SPANS))
    sink.write("feedback", _table([{**f, "source": "api", "lake_source": "test@1"} for f in feedback], schema.FEEDBACK))
    sink.flush_all()
    return root


def _reference(lake: Path, q: TraceQuery) -> list[str]:
    """The same page straight from the `traces` view (and `spans` for the text search)."""
    lo, hi = q.window(NOW)
    where = ["true"]
    params: dict[str, Any] = {}
    if lo is not None:
        where.append("epoch_ns(start_time) >= $lo")
        params["lo"] = lo
    if hi is not None:
        where.append("epoch_ns(start_time) < $hi")
        params["hi"] = hi
    for key, col in (("service", "service_name"), ("tenant", "tenant_id")):
        if getattr(q, key):
            where.append(f"{col} = ${key}")
            params[key] = getattr(q, key)
    if q.model:
        where.append("list_contains(models, $model)")
        params["model"] = q.model
    if q.status == "error":
        where.append("error_count > 0")
    if q.feedback == "down":
        where.append("feedback_min <= 0")
    elif q.feedback == "up":
        where.append("feedback_min > 0")
    elif q.feedback == "any":
        where.append("feedback_min IS NOT NULL")
    if q.kept == "summary":
        where.append("NOT kept")
    if q.min_cost is not None:
        where.append("cost_usd >= $min_cost")
        params["min_cost"] = q.min_cost
    if q.q:
        where.append("trace_id IN (SELECT trace_id FROM spans WHERE contains(lower(CAST(attributes AS VARCHAR)), $q))")
        params["q"] = q.q.lower()
    order = f"{SORTS[q.sort]} {'DESC' if q.order == 'desc' else 'ASC'} NULLS LAST, trace_id"
    sql = f"SELECT trace_id FROM traces WHERE {' AND '.join(where)} ORDER BY {order}"
    sql += f" LIMIT {q.size} OFFSET {(q.page - 1) * q.size}"
    return [r[0] for r in _views(lake).execute(sql, params).fetchall()]


@functools.cache
def _reader(lake: Path) -> LakeReader:
    return LakeReader(lake)


@functools.cache
def _views(lake: Path) -> duckdb.DuckDBPyConnection:
    return connect(lake)


CASES = [
    {},
    {"range": "1h"},
    {"range": "all", "sort": "cost"},
    {"sort": "cost", "order": "asc"},
    {"sort": "duration"},
    {"sort": "tokens", "order": "asc"},
    {"status": "error"},
    {"feedback": "down"},
    {"feedback": "up", "tenant": "acme"},
    {"feedback": "any", "sort": "cost"},
    {"kept": "summary"},
    {"service": "research-assistant", "tenant": "globex"},
    {"model": "o3-mini"},
    {"min_cost": "0.004"},
    {"q": NEEDLE},
    {"q": NEEDLE.upper(), "sort": "cost"},
    {"q": "help_z%"},  # LIKE's wildcards are searched for as text
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
def test_every_page_equals_the_traces_view(lake: Path, case: dict[str, str]) -> None:
    reader = _reader(lake)
    for page in (1, 2):
        q = TraceQuery.model_validate({**case, "size": 10, "page": page})
        got = list_traces(reader, q, now_ns=NOW)
        assert [r.trace_id for r in got.rows] == _reference(lake, q), (case, page)
        assert got.has_next == bool(_reference(lake, q.model_copy(update={"page": page + 1})))


def test_a_late_part_never_shows_as_a_new_trace(lake: Path) -> None:
    """LATE's feedback part is in the newest hour: the first window must not list that partial row."""
    reader = LakeReader(lake)
    page = list_traces(reader, TraceQuery(size=10), now_ns=NOW)
    assert LATE not in [r.trace_id for r in page.rows]
    everything = [r for p in range(1, 8) for r in list_traces(reader, TraceQuery(size=10, page=p), now_ns=NOW).rows]
    late = [r for r in everything if r.trace_id == LATE]
    assert len(late) == 1
    row = late[0]
    assert (row.root_name, row.span_count, row.feedback_min, row.cost_usd) == ("POST /chat", 2, 0.0, 0.25)
    replayed = next(r for r in everything if r.trace_id == REPLAYED)
    assert replayed.span_count == 2 and replayed.cost_usd == pytest.approx(0.001)


def test_the_newest_page_reads_only_the_newest_hours(lake: Path) -> None:
    reader = LakeReader(lake)
    page = list_traces(reader, TraceQuery(size=10), now_ns=NOW)
    assert page.hours_read < len(reader.hours("traces"))
    by_cost = list_traces(reader, TraceQuery(size=10, sort="cost"), now_ns=NOW)
    assert by_cost.hours_read == len(reader.hours("traces"))


def test_trace_page_finds_every_part_and_feedback(lake: Path) -> None:
    reader = LakeReader(lake)
    view = connect(lake)
    for trace_id in (LATE, REPLAYED):
        want = view.execute(
            "SELECT span_count, cost_usd, feedback_min, kept FROM traces WHERE trace_id = ?", [trace_id]
        ).fetchall()[0]
        spans = view.execute("SELECT count(*) FROM spans WHERE trace_id = ?", [trace_id]).fetchall()[0][0]
        detail = load_trace(reader, trace_id)
        assert detail is not None and detail.summary is not None
        s = detail.summary
        assert (s.span_count, s.cost_usd, s.feedback_min, s.kept) == want, trace_id
        assert len(detail.spans) == spans
    late = load_trace(reader, LATE)
    assert late is not None and [(f.name, f.value, f.comment) for f in late.feedback] == [("user_thumbs", 0.0, "late")]


def test_duplicate_calls_are_marked_as_the_view_decides(lake: Path) -> None:
    detail = load_trace(LakeReader(lake), TWICE)
    assert detail is not None
    marked = {s.span_id: s.duplicate_of for s in detail.spans}
    assert marked == {
        "00000000000000c1": None,
        "00000000000000c2": None,
        "00000000000000c3": "00000000000000c2",  # from traces.duplicate_spans
        "00000000000000c4": "00000000000000c2",  # from the file
    }
    span = load_span(LakeReader(lake), TWICE, "00000000000000c3")
    assert span is not None and span.duplicate_of == "00000000000000c2"


def test_sampled_out_and_unknown_traces(lake: Path) -> None:
    reader = LakeReader(lake)
    dropped = load_trace(reader, DROPPED)
    assert dropped is not None and dropped.sampled_out and not dropped.waterfall
    assert load_trace(reader, "f" * 32) is None


def test_span_detail_and_waterfall(lake: Path) -> None:
    reader = LakeReader(lake)
    sql = "SELECT trace_id FROM spans WHERE contains(CAST(attributes AS VARCHAR), ?)"
    trace_id = connect(lake).execute(sql, [NEEDLE]).fetchall()[0][0]
    detail = load_trace(reader, trace_id)
    assert detail is not None
    assert [(w.depth, w.span.span_type) for w in detail.waterfall] == [(0, "other"), (1, "llm")]
    assert detail.waterfall[0].left == 0 and detail.waterfall[0].width == pytest.approx(100 * 1000 / 1010)
    assert detail.default_span() == detail.waterfall[1].span.span_id  # the LLM call
    span = load_span(reader, trace_id, detail.waterfall[1].span.span_id)
    assert span is not None and NEEDLE in span.attributes["gen_ai.input.messages"]


def test_dashboard_totals_equal_the_views(lake: Path) -> None:
    reader = LakeReader(lake)
    board = build_dashboard(reader, None, None)
    charts = {c.id: c for c in board.charts}
    view = connect(lake)
    assert board.bucket == "hour"

    def total(chart_id: str) -> float:
        return sum(v for series in charts[chart_id].series.values() for v in series if v is not None)

    calls = "FROM spans WHERE span_type = 'llm' AND duplicate_of IS NULL"  # each call once
    llm_cost = view.execute(f"SELECT sum(cost_usd) {calls}").fetchall()[0][0]
    assert total("cost_model") == pytest.approx(llm_cost)
    trace_cost = view.execute("SELECT sum(cost_usd) FROM traces").fetchall()[0][0]
    assert total("cost_tenant") == pytest.approx(trace_cost)
    assert total("calls_model") == view.execute(f"SELECT count(*) {calls}").fetchall()[0][0]
    assert (
        view.execute("SELECT count(*) FROM spans WHERE span_type = 'llm'").fetchall()[0][0] == total("calls_model") + 2
    )
    assert set(charts["calls_model"].series) == {"gpt-4o"}
    assert _thumbs_down(charts) == _thumbs_down_of(view)

    # the last hour: LATE started five hours ago, its late part (and its $0.05) is not a trace of this hour
    lo = NOW - HOUR_NS
    recent = {c.id: c for c in build_dashboard(reader, lo, None).charts}
    want = view.execute("SELECT sum(cost_usd) FROM traces WHERE epoch_ns(start_time) >= ?", [lo]).fetchall()[0][0]
    got = sum(v for series in recent["cost_tenant"].series.values() for v in series if v is not None)
    assert got == pytest.approx(want)


def _thumbs_down(charts: dict[str, Any]) -> dict[int, float]:
    chart = charts["thumbs_down"]
    return {x: v for x, v in zip(chart.x, chart.series["thumbs-down share of feedback"], strict=True) if v is not None}


def _thumbs_down_of(view: duckdb.DuckDBPyConnection) -> dict[int, float]:
    sql = 'SELECT epoch_ns("time") // $hour * 3600, 100.0 * avg((value <= 0)::INT) FROM feedback GROUP BY 1'
    return dict(view.execute(sql, {"hour": HOUR_NS}).fetchall())


def test_another_tenants_feedback_counts_nowhere(lake: Path) -> None:
    """A thumbs-down from globex on an acme trace (written as a worker that no longer remembered the trace
    writes it: into the trace's summary part too) is in no view and on no page."""
    files = str(lake / "feedback" / "**" / "*.parquet")
    raw = duckdb.execute("SELECT trace_id FROM read_parquet(?) WHERE name = 'sabotage'", [files]).fetchall()
    stranger = raw[0][0]
    view = connect(lake)
    assert view.execute("SELECT name, tenant_id FROM feedback WHERE trace_id = ?", [stranger]).fetchall() == [
        ("user_thumbs", "acme")
    ]
    assert view.execute("SELECT tenant_id, feedback_min FROM traces WHERE trace_id = ?", [stranger]).fetchall() == [
        ("acme", 1.0)
    ]
    reader = _reader(lake)
    detail = load_trace(reader, stranger)
    assert detail is not None and detail.summary is not None and detail.summary.feedback_min == 1.0
    assert [f.name for f in detail.feedback] == ["user_thumbs"]
    down = list_traces(reader, TraceQuery(range="all", feedback="down", size=100), now_ns=NOW)
    assert down.rows and stranger not in [r.trace_id for r in down.rows]
    for tenant in ("acme", "globex"):
        assert connect(lake, tenant=tenant).execute(
            "SELECT count(*) FROM feedback WHERE name = 'sabotage'"
        ).fetchall() == [(0,)]


@pytest.mark.parametrize("tenant", ["acme", "globex"])
def test_dashboards_of_one_tenant_equal_the_views_of_that_tenant(lake: Path, tenant: str) -> None:
    charts = {c.id: c for c in build_dashboard(_reader(lake), None, None, tenant).charts}
    view = connect(lake, tenant=tenant)

    def total(chart_id: str) -> float:
        return sum(v for series in charts[chart_id].series.values() for v in series if v is not None)

    calls = "FROM spans WHERE span_type = 'llm' AND duplicate_of IS NULL"
    assert total("calls_model") == view.execute(f"SELECT count(*) {calls}").fetchall()[0][0] > 0
    assert total("cost_model") == pytest.approx(view.execute(f"SELECT sum(cost_usd) {calls}").fetchall()[0][0])
    assert total("cost_tenant") == pytest.approx(view.execute("SELECT sum(cost_usd) FROM traces").fetchall()[0][0])
    assert set(charts["cost_tenant"].series) == {tenant}
    assert _thumbs_down(charts) == _thumbs_down_of(view) != {}


def test_query_parameters_are_validated_and_round_trip() -> None:
    q, errors = TraceQuery.from_params({"min_cost": ["x"], "sort": ["cost"], "status": ["bogus"], "tenant": ["a&b"]})
    assert q.min_cost is None and q.sort == "cost" and q.status == "" and q.tenant == "a&b"
    assert sorted(e.split(":")[0] for e in errors) == ["min_cost", "status"]
    again, _ = TraceQuery.from_params({k: [v] for k, v in q.params().items()})
    assert again == q
    assert q.url(page=2) == "?tenant=a%26b&sort=cost&page=2"
    for a, b in itertools.pairwise(["1h", "24h", "7d", "30d"]):
        lo_a = TraceQuery(range=a).window(NOW)[0]
        lo_b = TraceQuery(range=b).window(NOW)[0]
        assert lo_a is not None and lo_b is not None and lo_a > lo_b


@pytest.fixture(scope="module")
def compacted(lake: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same lake after `tracelake compact` (replays dropped, one sorted file per hour)."""
    copy = tmp_path_factory.mktemp("ui-reads-compacted") / "lake"
    shutil.copytree(lake, copy)
    report = Compactor(copy).run(0.0)
    assert report.compacted and not report.errors
    assert all(LakeReader(copy).hours(t)[0].compacted for t in ("spans", "traces", "feedback"))
    return copy


@pytest.mark.parametrize("table", ["spans", "traces", "feedback"])
def test_console_views_equal_the_query_views_before_and_after_compaction(
    lake: Path, compacted: Path, table: str
) -> None:
    """The SQL console's views skip de-duplicating compacted hours; their rows are the views' rows."""
    order = {"spans": "trace_id, span_id", "traces": "trace_id", "feedback": "trace_id, time"}[table]
    columns = "*" if table == "traces" else "* EXCLUDE (lake_source)"  # compaction keeps one replay's source
    sql = f"SELECT {columns} FROM {table} ORDER BY {order}"
    want = connect(lake).sql(sql).to_arrow_table()
    assert want.num_rows
    for root in (lake, compacted):
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        create_views(con, root)
        assert con.sql(sql).to_arrow_table().equals(want), root


def test_list_is_the_same_after_compaction(lake: Path, compacted: Path) -> None:
    before, after = LakeReader(lake), LakeReader(compacted)
    for case in CASES:
        q = TraceQuery.model_validate({**case, "size": 10})
        want = [r.trace_id for r in list_traces(before, q, now_ns=NOW).rows]
        assert [r.trace_id for r in list_traces(after, q, now_ns=NOW).rows] == want, case
