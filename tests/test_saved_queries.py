"""Saved investigations (conf/queries/*.sql): parsing, safe parameters, and the rows each returns.

The lake is planted with a few traces whose answers are known: trace A is expensive (acme, prompt
v2, a high-score retrieval), trace B got a thumbs-down and failed in its `weather` tool, trace C ran
out of context and had poor retrievals, trace E is expensive but 30 days old (outside the window).
"""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import grpc
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from core import feedback
from core.conventions import normalize
from pipeline.maintenance.saved_queries import (
    BUILTIN_DIR,
    SavedQueryError,
    list_saved,
    load_saved,
    parse,
    parse_param_args,
    referenced,
    render,
    run,
)
from pipeline.otlp.decode import SourcedRequest, decode
from pipeline.query import connect
from pipeline.trace_summary import TraceSummarizer
from sinks.parquet.config import ParquetSinkConfig
from sinks.parquet.sink import ParquetSink
from tests.conftest import RunningTracelake, config_yaml, make_request

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
MS = 10**6
NOW = time.time_ns() - 10 * 60 * 10**9  # ten minutes ago: inside every default window
OLD = NOW - 30 * 86400 * 10**9
A, B, C, E = ("a" * 32, "b" * 32, "c" * 32, "e" * 32)
EXPECTED = {
    "context_overflow",
    "cost_by_model",
    "cost_by_prompt_version",
    "cost_by_tenant",
    "error_rate_by_prompt_version",
    "latency_percentiles",
    "low_score_retrievals",
    "thumbs_down_traces",
    "tool_failure_rate",
    "top_cost_traces",
}
COSTS = {f"{A[:15]}2": 5.0, f"{B[:15]}2": 0.01, f"{C[:15]}2": 0.02, f"{E[:15]}2": 100.0}


def _span(trace: str, n: int, parent: int | None, start_ms: int, dur_ms: int, base: int = NOW, **kw: Any) -> dict:
    return {
        "trace_id": trace,
        "span_id": f"{trace[:15]}{n}",
        "parent": f"{trace[:15]}{parent}" if parent else None,
        "start": base + start_ms * MS,
        "end": base + (start_ms + dur_ms) * MS,
        **kw,
    }


def _llm(model: str, version: str, finish: str = "stop", **attrs: object) -> dict[str, object]:
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai" if model.startswith("gpt") else "anthropic",
        "gen_ai.request.model": model,
        "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 200,
        "gen_ai.response.finish_reason": finish,
        "app.prompt_version": version,
        **attrs,
    }


def planted() -> list[tuple[dict[str, object], list[dict[str, object]]]]:
    """(resource attributes, spans) per request."""
    agent = {"gen_ai.operation.name": "invoke_agent", "app.prompt_version": "v2"}
    a = [
        _span(A, 1, None, 0, 2000, name="agent", attrs=agent),
        _span(A, 2, 1, 10, 100, name="chat gpt-4o", attrs=_llm("gpt-4o", "v2")),
        _span(
            A,
            3,
            1,
            200,
            50,
            name="search",
            attrs={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"},
        ),
        _span(
            A,
            4,
            1,
            300,
            20,
            name="retrieve",
            attrs={
                "openinference.span.kind": "RETRIEVER",
                "retrieval.documents.0.document.id": "d1",
                "retrieval.documents.0.document.score": 0.91,
                "retrieval.documents.1.document.score": 0.42,
            },
        ),
        _span(A, 5, 1, 400, 300, name="chat gpt-4o", attrs=_llm("gpt-4o", "v2")),
    ]
    b = [
        _span(B, 1, None, 0, 1000, name="agent", error="tool failed", attrs={"app.prompt_version": "v1"}),
        _span(B, 2, 1, 10, 200, name="chat claude", attrs=_llm("claude-sonnet-4", "v1")),
        _span(
            B,
            3,
            1,
            300,
            30,
            name="weather",
            error="timeout after 30s",
            attrs={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "weather"},
        ),
    ]
    c = [
        _span(C, 1, None, 0, 900, name="agent", attrs={"app.prompt_version": "v1"}),
        _span(C, 2, 1, 10, 400, name="chat claude", attrs=_llm("claude-sonnet-4", "v1", finish="length")),
        _span(
            C,
            3,
            1,
            500,
            10,
            name="retrieve",
            attrs={
                "gen_ai.operation.name": "retrieval",
                "gen_ai.retrieval.documents": json.dumps([{"id": "x", "score": 0.21}, {"id": "y", "score": 0.35}]),
                "gen_ai.retrieval.query.text": "refund policy for pets",
            },
        ),
        _span(
            C,
            4,
            1,
            520,
            10,
            name="retrieve",
            attrs={
                "openinference.span.kind": "RETRIEVER",
                "retrieval.documents.0.document.score": 0.12,
                "retrieval.documents.1.document.score": 0.3,
            },
        ),
        _span(C, 5, 1, 540, 10, name="retrieve", attrs={"gen_ai.operation.name": "retrieval"}),  # no scores
        _span(
            C,
            6,
            1,
            600,
            20,
            name="weather",
            attrs={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "weather"},
        ),
    ]
    e = [
        _span(E, 1, None, 0, 100, base=OLD, name="agent", attrs={"app.prompt_version": "v0"}),
        _span(E, 2, 1, 10, 50, base=OLD, name="chat gpt-4o", attrs=_llm("gpt-4o", "v0")),
    ]
    return [
        ({"tenant.id": "acme"}, a),
        ({"tenant.id": "beta"}, b),
        ({"tenant.id": "beta"}, c),
        ({"tenant.id": "old"}, e),
    ]


FEEDBACK = [
    feedback.FeedbackEvent(A, "thumbs", 1.0, time_ns=NOW + 5 * 10**9),
    feedback.FeedbackEvent(B, "thumbs", 0.0, span_id=f"{B[:15]}2", comment="wrong city", time_ns=NOW + 6 * 10**9),
]


def _with_costs(spans: pa.Table) -> pa.Table:
    ids = spans.column("span_id").to_pylist()
    cost = pa.array([COSTS.get(i) for i in ids], pa.float64())
    status = pc.if_else(pc.is_valid(cost), pa.scalar("priced"), pa.scalar(None, pa.string()))
    spans = spans.set_column(spans.schema.get_field_index("cost_usd"), "cost_usd", cost)
    return spans.set_column(spans.schema.get_field_index("cost_status"), "cost_status", status)


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The planted traces through the real decode/normalize/summary path, written by ParquetSink;
    trace A is written twice (a replay) and must still count once."""
    root = tmp_path_factory.mktemp("lake")
    sink = ParquetSink(ParquetSinkConfig(path=str(root)))
    summarizer = TraceSummarizer(trace_idle=0, clock=lambda: 0.0)
    for i, (resource, spans) in enumerate(planted()):
        batch = _with_costs(normalize(decode([SourcedRequest(make_request(spans, resource=resource), f"t:0@{i}")])))
        sink.write("spans", batch)
        summarizer.observe(batch)
        if i == 0:
            replay = batch.set_column(
                batch.schema.get_field_index("lake_source"), "lake_source", pa.array(["t:1@0"] * batch.num_rows)
            )
            sink.write("spans", replay)
    for part in summarizer.due(force=True):
        sink.write("traces", part.rows)
        sink.write("traces", part.rows)  # a replayed summary part
    fb = feedback.extract(normalize(decode([SourcedRequest(feedback.to_request(FEEDBACK), "t:0@9")])))
    assert fb.num_rows == 2
    sink.write("feedback", fb)
    sink.flush_all()
    return root


def _plain(table: pa.Table) -> list[dict[str, Any]]:
    """Rows as dicts; nanosecond timestamps as text (datetime cannot hold them)."""
    cols = [c.cast(pa.string()) if pa.types.is_timestamp(c.type) else c for c in table.columns]
    return pa.Table.from_arrays(cols, names=table.column_names).to_pylist()


def _rows(con: duckdb.DuckDBPyConnection, name: str, **params: str) -> list[dict[str, Any]]:
    return _plain(run(con, load_saved(name), params).to_arrow_table())


# -- the files themselves -----------------------------------------------------------------------
def test_every_builtin_query_is_documented_and_declares_what_it_uses() -> None:
    saved = list_saved()
    assert {q.name for q in saved} >= EXPECTED
    for q in saved:
        assert q.description and len(q.description) > 20, q.name
        assert q.params, q.name
        assert [p.name for p in q.params if p.required] == [], f"{q.name}: built-ins run without --param"
        assert {p.name for p in q.params} == set(referenced(q.sql)), f"{q.name}: declared vs used parameters"
        assert all(p.description for p in q.params), q.name
        assert f"--saved {q.name}" in q.doc, f"{q.name}: show an example command"


def test_every_builtin_query_runs_on_an_empty_lake(tmp_path: Path) -> None:
    con = connect(tmp_path / "empty")
    for q in list_saved():
        assert run(con, q).fetchall() == [], q.name


def test_params_are_typed_and_bound_never_pasted(tmp_path: Path) -> None:
    q = parse(
        "-- Spans of one tenant.\n"
        "-- param: tenant VARCHAR -- required\n"
        "-- param: since INTERVAL = 7 days -- window\n"
        "-- param: limit INTEGER = 10 -- rows\n"
        "-- param: at TIMESTAMP = 2026-01-01T00:00:00Z -- not used below\n"
        "SELECT $tenant AS t, $since AS s, $limit AS l -- $ignored in a comment\n"
        "WHERE '$not_a_param' <> ''",
        tmp_path / "q.sql",
    )
    with pytest.raises(SavedQueryError, match="tenant is required"):
        render(q, {})
    with pytest.raises(SavedQueryError, match="unknown parameter nope"):
        render(q, {"tenant": "x", "nope": "1"})
    with pytest.raises(SavedQueryError, match="limit: expected INTEGER"):
        render(q, {"tenant": "x", "limit": "ten"})
    with pytest.raises(SavedQueryError, match="since: expected INTERVAL"):
        render(q, {"tenant": "x", "since": "yesterday-ish"})
    sql, bound = render(q, {"tenant": "x'; DROP TABLE spans; --", "since": "24h"})
    assert bound == {"tenant": "x'; DROP TABLE spans; --", "since": timedelta(hours=24), "limit": 10}
    assert "DROP" not in sql
    assert duckdb.connect().sql(sql, params=bound).fetchall() == [("x'; DROP TABLE spans; --", timedelta(days=1), 10)]
    # timestamps: ISO 8601, an offset is converted to UTC (the lake's zone)
    ts = parse(
        "-- Since a moment.\n-- param: at TIMESTAMP = 2026-01-01T00:30:00+01:00 -- from\n"
        "SELECT TIMESTAMPTZ_NS '2025-12-31 23:45:00+00' >= $at AS after",
        tmp_path / "ts.sql",
    )
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    assert run(con, ts).fetchall() == [(True,)]  # 23:45 UTC >= 23:30 UTC
    assert run(con, ts, {"at": "2025-12-31T23:50:00Z"}).fetchall() == [(False,)]
    assert parse_param_args(["a=1", "b=x=y"]) == {"a": "1", "b": "x=y"}
    with pytest.raises(SavedQueryError, match="key=value"):
        parse_param_args(["oops"])
    with pytest.raises(SavedQueryError, match=r"uses \$other without"):
        parse("-- Broken.\nSELECT $other", tmp_path / "broken.sql")


def test_user_directories_and_paths_come_before_builtins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    text = (BUILTIN_DIR / "top_cost_traces.sql").read_text().replace("LIMIT $limit", "LIMIT 1")
    (mine / "top_cost_traces.sql").write_text(text)
    monkeypatch.setenv("TRACELAKE_QUERIES", str(mine))
    assert load_saved("top_cost_traces").path == mine / "top_cost_traces.sql"
    assert load_saved(str(BUILTIN_DIR / "tool_failure_rate.sql")).name == "tool_failure_rate"
    with pytest.raises(SavedQueryError, match="no saved query 'nope'"):
        load_saved("nope")
    with pytest.raises(SavedQueryError, match="not a saved query name"):
        load_saved("top cost; rm")
    undocumented = tmp_path / "x.sql"
    undocumented.write_text("SELECT 1")
    with pytest.raises(SavedQueryError, match="description"):
        load_saved(str(undocumented))


# -- the answers on a planted lake --------------------------------------------------------------
def test_top_cost_traces(lake: Path) -> None:
    con = connect(lake)
    rows = _rows(con, "top_cost_traces")
    assert [r["trace_id"] for r in rows] == [A, C, B]  # E is 30 days old
    assert rows[0]["cost_usd"] == pytest.approx(5.0) and rows[0]["tenant_id"] == "acme"
    assert [r["trace_id"] for r in _rows(con, "top_cost_traces", since="60 days", limit="1")] == [E]
    assert [r["trace_id"] for r in _rows(con, "top_cost_traces", tenant="beta")] == [C, B]


def test_cost_by_tenant_model_and_prompt_version(lake: Path) -> None:
    con = connect(lake)
    tenants = {r["tenant_id"]: r for r in _rows(con, "cost_by_tenant")}
    assert set(tenants) == {"acme", "beta"}
    assert tenants["acme"]["cost_usd"] == pytest.approx(5.0) and tenants["acme"]["traces"] == 1
    assert tenants["beta"]["cost_usd"] == pytest.approx(0.03) and tenants["beta"]["traces"] == 2
    models = _rows(con, "cost_by_model")
    assert [(m["model"], m["calls"]) for m in models] == [("gpt-4o", 2), ("claude-sonnet-4", 2)]
    assert models[0]["cost_usd"] == pytest.approx(5.0) and models[0]["unpriced"] == 1
    versions = {r["prompt_version"]: r["cost_usd"] for r in _rows(con, "cost_by_prompt_version")}
    assert versions == pytest.approx({"v2": 5.0, "v1": 0.03})


def test_latency_percentiles(lake: Path) -> None:
    rows = {(r["span_type"], r["model"]): r for r in _rows(connect(lake), "latency_percentiles")}
    gpt = rows[("llm", "gpt-4o")]
    assert (gpt["spans"], gpt["p50_ms"], gpt["p95_ms"], gpt["p99_ms"]) == (2, 200.0, 290.0, 298.0)
    assert rows[("tool", "")]["spans"] == 3
    only_llm = _rows(connect(lake), "latency_percentiles", span_type="llm", min_count="2")
    assert {r["model"] for r in only_llm} == {"gpt-4o", "claude-sonnet-4"}


def test_error_rate_by_prompt_version(lake: Path) -> None:
    rows = {r["prompt_version"]: r for r in _rows(connect(lake), "error_rate_by_prompt_version")}
    assert (rows["v1"]["traces"], rows["v1"]["failed_traces"], rows["v1"]["error_rate"]) == (2, 1, 0.5)
    assert rows["v2"]["error_rate"] == 0.0


def test_thumbs_down_traces_show_the_failing_step(lake: Path) -> None:
    rows = _rows(connect(lake), "thumbs_down_traces")
    assert len(rows) == 1
    row = rows[0]
    assert row["trace_id"] == B and row["comment"] == "wrong city" and row["value"] == 0.0
    # the agent span failed too, but only because its child `weather` did: that is the step
    assert (row["failing_step"], row["step_type"], row["tool_name"]) == ("weather", "tool", "weather")
    assert row["status_message"] == "timeout after 30s" and row["step_source"] == "first error"
    assert _rows(connect(lake), "thumbs_down_traces", feedback_name="other") == []
    assert {r["trace_id"] for r in _rows(connect(lake), "thumbs_down_traces", max_value="1")} == {A, B}


def test_low_score_retrievals(lake: Path) -> None:
    con = connect(lake)
    rows = _rows(con, "low_score_retrievals")
    assert (
        [(r["span_id"], r["top_score"], r["documents"]) for r in rows]
        == [
            (f"{C[:15]}4", 0.3, 2),  # OpenInference attributes
            (f"{C[:15]}3", 0.35, 2),  # gen_ai.retrieval.documents JSON
        ]
    )
    assert rows[1]["query"] == "refund policy for pets"
    with_unscored = _rows(con, "low_score_retrievals", include_unscored="true")
    assert with_unscored[0]["span_id"] == f"{C[:15]}5"
    assert len(_rows(con, "low_score_retrievals", max_score="0.95")) == 3  # A's 0.91 too


def test_context_overflow(lake: Path) -> None:
    rows = _rows(connect(lake), "context_overflow")
    assert [(r["trace_id"], r["finish_reason"], r["model"]) for r in rows] == [(C, "length", "claude-sonnet-4")]
    assert _rows(connect(lake), "context_overflow", reasons="max_tokens") == []


def test_tool_failure_rate(lake: Path) -> None:
    rows = _rows(connect(lake), "tool_failure_rate")
    assert [(r["tool"], r["calls"], r["failures"], r["failure_rate"]) for r in rows] == [
        ("weather", 2, 1, 0.5),
        ("search", 1, 0, 0.0),
    ]
    assert rows[0]["example_error"] == "timeout after 30s"


# -- on a lake built by `tracelake run` ---------------------------------------------------------
def test_saved_queries_on_a_lake_built_by_tracelake_run(tmp_path: Path) -> None:
    tl = RunningTracelake(tmp_path, config_yaml())
    try:
        with grpc.insecure_channel(tl.grpc) as ch:
            call = ch.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
            for resource, spans in planted():
                call(make_request(spans, resource=resource).SerializeToString(), timeout=10)
        body = json.dumps(
            [
                {
                    "trace_id": ev.trace_id,
                    "span_id": ev.span_id,
                    "name": ev.name,
                    "value": ev.value,
                    "comment": ev.comment,
                    "time": ev.time_ns,
                }
                for ev in FEEDBACK
            ]
        ).encode()
        req = urllib.request.Request(
            f"http://{tl.http}/v1/feedback", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status in (200, 202)
    finally:
        assert tl.stop() == 0, tl.log
    con = connect(tl.lake)
    assert con.sql("select count(*) from spans").fetchall() == [(sum(len(s) for _r, s in planted()),)]
    results = {q.name: _plain(run(con, q).to_arrow_table()) for q in list_saved()}
    assert results["top_cost_traces"] == []  # no cost processor in this chain: nothing is priced
    assert [(r["trace_id"], r["failing_step"]) for r in results["thumbs_down_traces"]] == [(B, "weather")]
    assert [r["tool"] for r in results["tool_failure_rate"]] == ["weather", "search"]
    assert [r["trace_id"] for r in results["context_overflow"]] == [C]
    assert len(results["low_score_retrievals"]) == 2
    assert {r["tenant_id"] for r in results["cost_by_tenant"]} == {"acme", "beta"}
