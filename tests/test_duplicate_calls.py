"""The rule that counts one LLM call once (pipeline/duplicate_calls.py), on hand-made spans."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from core.conventions import normalize
from pipeline.duplicate_calls import CALL_COLUMNS, find_duplicates
from pipeline.otlp.decode import SourcedRequest, decode
from pipeline.query import connect
from pipeline.trace_summary import TraceSummarizer
from processors.cost.processor import CostProcessor
from sinks.parquet import layout
from sinks.parquet.config import ParquetSinkConfig
from sinks.parquet.sink import ParquetSink
from tests.conftest import RunningTracelake, config_yaml, make_request

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

T1, T2 = "a" * 32, "b" * 32
MS = 1_000_000
USAGE = {"input_tokens": 1030, "output_tokens": 60, "cache_read_tokens": 1000, "cache_write_tokens": 0}


def call(span: str, parent: str | None, scope: str, start: int, end: int, **fields: Any) -> dict[str, Any]:
    """A call span; `fields` override the defaults (tokens given twice: the later wins)."""
    row: dict[str, Any] = dict.fromkeys(CALL_COLUMNS)
    row.update(trace_id=T1, span_id=span, parent_span_id=parent, scope_name=scope, span_type="llm")
    row.update(provider="anthropic", request_model="claude-sonnet-4-5", start=start * MS, end=end * MS)
    row.update(fields)
    return row


SCHEMA = pa.schema(
    [(c, pa.int64() if c in ("start", "end") or c.endswith("_tokens") else pa.string()) for c in CALL_COLUMNS]
)


def marks(*calls: dict[str, Any]) -> dict[str, str]:
    out = find_duplicates(pa.Table.from_pylist(list(calls), schema=SCHEMA))
    return dict(zip(out.column("span_id").to_pylist(), out.column("duplicate_of").to_pylist(), strict=True))


def test_sdk_span_nested_under_an_instrumentor_span_is_one_call() -> None:
    outer = call("01", "00", "openinference.instrumentation.anthropic", 0, 100, **{**USAGE, "cache_write_tokens": None})
    inner = call("02", "01", "com.anthropic.sdk.python", 5, 95, **USAGE, response_model="claude-sonnet-4-5-20250929")
    # the SDK's span reports more counts (cache writes) and is closer to the wire: it is the one counted
    assert marks(outer, inner) == {"01": "02"}


def test_sibling_spans_of_one_call_with_output_counted_differently() -> None:
    """OpenLLMetry does not make its span current, so the SDK's span is its sibling; streaming, it counts one
    output token more."""
    llmetry = call("01", "00", "opentelemetry.instrumentation.anthropic", 0, 100, **{**USAGE, "output_tokens": 71})
    sdk = call("02", "00", "com.anthropic.sdk.python", 3, 98, **USAGE)
    assert marks(llmetry, sdk) == {"01": "02"}


def test_sequential_calls_under_one_parent_stay_two() -> None:
    first = call("01", "00", "opentelemetry.instrumentation.anthropic", 0, 100, **USAGE)
    second = call("02", "00", "com.anthropic.sdk.python", 150, 250, **USAGE)
    assert marks(first, second) == {}


def test_what_is_not_the_same_call() -> None:
    parent = call("01", "00", "langchain", 0, 100, **USAGE)
    assert marks(parent, call("02", "01", "langchain", 5, 95, **USAGE)) == {}  # one instrumentation, two calls
    assert marks(parent, call("02", "01", "sdk", 5, 95, **USAGE, request_model="claude-haiku-4-5")) == {}
    assert marks(parent, call("02", "01", "sdk", 5, 95, **{**USAGE, "input_tokens": 1031})) == {}
    assert marks(parent, call("02", "01", "sdk", 5, 95, **{**USAGE, "cache_read_tokens": 0})) == {}
    assert marks(parent, call("02", "01", "sdk", 5, 95, **USAGE, provider="aws.bedrock")) == {}
    assert marks(parent, call("02", "01", "sdk", 5, 95, **USAGE, span_type="embedding")) == {}
    assert marks(parent, call("02", "01", "sdk", 5, 95, **USAGE, trace_id=T2)) == {}


def test_what_still_is_the_same_call() -> None:
    parent = call("01", "00", "langchain", 0, 100, **USAGE)
    # the model as the other span's response model; no provider on one side; cache counts left out
    child = call("02", "01", "sdk", 5, 95, request_model=None, response_model="claude-sonnet-4-5", provider=None)
    child.update(input_tokens=1030, output_tokens=60)
    assert marks(parent, child) == {"02": "01"}  # the parent reports more counts


def test_a_failed_call_without_usage_is_counted_on_the_inner_span() -> None:
    outer = call("01", "00", "opentelemetry.instrumentation.genai.anthropic", 0, 100)
    inner = call("02", "01", "com.anthropic.sdk.python", 5, 95)
    assert marks(outer, inner) == {"01": "02"}


def test_the_span_with_usage_is_counted() -> None:
    outer = call("01", "00", "langchain", 0, 100, **USAGE)
    inner = call("02", "01", "openinference.instrumentation.openai", 5, 95)  # e.g. streamed without include_usage
    assert marks(outer, inner) == {"02": "01"}


def test_three_instrumentations_on_one_call() -> None:
    chain = call("01", "00", "openinference.instrumentation.langchain", 0, 100, **USAGE)
    client = call("02", "01", "openinference.instrumentation.anthropic", 2, 98, **USAGE)
    sdk = call("03", "02", "com.anthropic.sdk.python", 4, 96, **USAGE)
    assert marks(chain, client, sdk) == {"01": "03", "02": "03"}


def test_parallel_identical_calls_stay_separate_calls() -> None:
    """asyncio.gather of one prompt twice, each call recorded by OpenLLMetry and by the SDK as siblings."""
    spans = [
        call("01", "00", "opentelemetry.instrumentation.anthropic", 0, 100, **USAGE),
        call("02", "00", "com.anthropic.sdk.python", 1, 99, **USAGE),
        call("03", "00", "opentelemetry.instrumentation.anthropic", 10, 130, **USAGE),
        call("04", "00", "com.anthropic.sdk.python", 11, 129, **USAGE),
    ]
    assert marks(*spans) == {"01": "02", "03": "04"}


def test_nothing_to_pair() -> None:
    assert marks() == {}
    assert marks(call("01", None, "sdk", 0, 1, **USAGE)) == {}
    assert marks(call("01", None, "a", 0, 10, **USAGE), call("02", None, "b", 0, 10, **USAGE)) == {}  # two roots


# -- across batches: the trace summarizer, the lake views, a running tracelake ------------------------------------

T0 = 1_763_800_000 * 10**9
ROOT, OUTER, INNER = "10" * 8, "11" * 8, "12" * 8
ANTHROPIC_USAGE = {
    "gen_ai.usage.input_tokens": 1020,
    "gen_ai.usage.output_tokens": 50,
    "gen_ai.usage.cache_write.input_tokens": 1000,
}


def _requests(trace_id: str = T1, t0: int = T0) -> dict[str, ExportTraceServiceRequest]:
    """The three spans of one Anthropic call under an app span: the official instrumentation's span and, nested in
    it, the SDK's own span, each as its own export request (scope names as those libraries send them)."""
    chat = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic", **ANTHROPIC_USAGE}

    def _span(span_id: str, parent: str | None, start: int, end: int, attrs: dict[str, object]) -> dict[str, object]:
        return {
            "trace_id": trace_id,
            "span_id": span_id,
            "parent": parent,
            "start": t0 + start,
            "end": t0 + end,
            "attrs": attrs,
        }

    spans = {
        "root": (_span(ROOT, None, 0, 10_000_000, {}), "app"),
        "outer": (
            _span(OUTER, ROOT, 1000, 9_000_000, {**chat, "gen_ai.request.model": "claude-sonnet-4-5"}),
            "opentelemetry.instrumentation.genai.anthropic",
        ),
        "inner": (
            _span(
                INNER,
                OUTER,
                2000,
                8_000_000,
                {
                    **chat,
                    "gen_ai.request.model": "claude-sonnet-4-5",
                    "gen_ai.response.model": "claude-sonnet-4-5-20250929",
                    "gen_ai.usage.cache_read.input_tokens": 0,
                },
            ),
            "com.anthropic.sdk.python",
        ),
    }
    out = {}
    for name, (span, scope) in spans.items():
        req = make_request([span])
        req.resource_spans[0].scope_spans[0].scope.name = scope
        out[name] = req
    return out


def _batch(req: ExportTraceServiceRequest, source: str) -> pa.Table:
    return CostProcessor().process(normalize(decode([SourcedRequest(req, source)])))


def _summarise(order: list[str], lake: Path) -> dict[str, pa.Table]:
    """Each request as its own worker batch, in `order`; returns what observe returned per request."""
    requests = _requests()
    summarizer = TraceSummarizer(trace_idle=5, clock=lambda: 0.0)
    sink = ParquetSink(ParquetSinkConfig(path=str(lake)))
    returned = {}
    for i, name in enumerate(order):
        returned[name] = summarizer.observe(_batch(requests[name], f"t@{i}"))
        sink.write("spans", returned[name])
    for part in summarizer.due(force=True):
        sink.write("traces", part.rows)
    sink.flush_all()
    return returned


@pytest.mark.parametrize(
    ("order", "marked_when_written"),
    [
        (["inner", "outer", "root"], True),  # the usual order: the inner span ends and is exported first
        (["outer", "root", "inner"], False),  # the outer span was written before its pair arrived
        (["root", "outer", "inner"], False),
    ],
)
def test_one_call_counted_once_whatever_the_batches(
    tmp_path: Path, order: list[str], marked_when_written: bool
) -> None:
    returned = _summarise(order, tmp_path)
    assert returned["outer"].column("duplicate_of").to_pylist() == [INNER if marked_when_written else None]
    assert returned["inner"].column("duplicate_of").to_pylist() == [None]
    con = connect(tmp_path)
    spans = con.execute("SELECT span_id, duplicate_of, cost_usd FROM spans ORDER BY span_id").fetchall()
    cost = spans[2][2]
    assert cost == pytest.approx(0.00456, abs=1e-12)  # 20 × $3 + 1000 × $3.75 + 50 × $15 per MTok
    assert [(s, d) for s, d, _ in spans] == [(ROOT, None), (OUTER, INNER), (INNER, None)]
    (row,) = con.execute(
        "SELECT llm_count, span_count, input_tokens, output_tokens, cache_write_tokens, cost_usd, duplicate_spans"
        " FROM traces"
    ).fetchall()
    assert row[:6] == (1, 3, 1020, 50, 1000, pytest.approx(cost, abs=1e-15))
    assert row[6] == [{"span_id": OUTER, "duplicate_of": INNER}]


def test_saved_queries_and_the_trace_view_count_a_call_once(tmp_path: Path) -> None:
    _summarise(["outer", "root", "inner"], tmp_path)  # the outer span's mark comes from the trace summary

    def cli(*args: str) -> str:
        command = [sys.executable, "-m", "pipeline.cli", *args]
        env = {**os.environ, "NO_COLOR": "1"}
        return subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout

    out = cli(
        "query", "--lake", str(tmp_path), "--format", "json", "--saved", "cost_by_model", "--param", "since=36500d"
    )
    (model,) = json.loads(out)
    assert (model["calls"], model["input_tokens"], model["cost_usd"]) == (1, 1020, pytest.approx(0.00456))
    header = cli("trace", "--lake", str(tmp_path), T1).splitlines()[2:4]
    assert "tokens: 1,020 in / 50 out" in header[0] and "cost: $0.0046" in header[1], header


def test_one_call_counted_once_by_tracelake_run_across_export_requests(tmp_path: Path) -> None:
    """The real path: separate OTLP exports, far enough apart to be separate worker batches."""
    orders = {"c1" * 16: ["inner", "outer", "root"], "c2" * 16: ["outer", "root", "inner"]}
    tl = RunningTracelake(tmp_path, config_yaml(process="[cost]", processors="{cost: {}}"))
    try:
        with grpc.insecure_channel(tl.grpc) as channel:
            export = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
            for trace_id, order in orders.items():
                requests = _requests(trace_id, time.time_ns())
                for name in order:
                    export(requests[name].SerializeToString(), timeout=10)
                    time.sleep(0.3)  # the worker takes batches every max_batch_delay (50 ms here)
    finally:
        assert tl.stop() == 0, tl.log
    con = connect(tl.lake)
    marks = con.execute("SELECT trace_id, span_id, duplicate_of FROM spans WHERE duplicate_of IS NOT NULL").fetchall()
    assert sorted(marks) == [(t, OUTER, INNER) for t in sorted(orders)]
    summaries = con.execute("SELECT trace_id, llm_count, input_tokens, cost_usd FROM traces ORDER BY 1").fetchall()
    assert summaries == [(t, 1, 1020, pytest.approx(0.00456, abs=1e-12)) for t in sorted(orders)]
    written = pq.read_table(tl.lake / "spans", columns=["trace_id", "span_id", "duplicate_of"]).to_pylist()
    as_written = {(r["trace_id"], r["span_id"]): r["duplicate_of"] for r in written}
    assert as_written[("c1" * 16, OUTER)] == INNER  # marked when written: its pair had arrived before it
    assert as_written[("c2" * 16, OUTER)] is None  # written before its pair came: traces.duplicate_spans has it


def test_files_written_before_the_columns_existed(tmp_path: Path) -> None:
    """A lake (and a holdback) of files without duplicate_of / duplicate_spans still reads."""
    spans = _batch(_requests()["inner"], "t@1").drop_columns(["duplicate_of"])
    for table in ("spans", "_holdback"):
        path = tmp_path / table / "dt=2025-11-22" / "hour=08"
        path.mkdir(parents=True)
        pq.write_table(spans, path / "part-old.parquet")
    summarizer = TraceSummarizer(trace_idle=0, clock=lambda: 0.0)
    summarizer.observe(_batch(_requests()["inner"], "t@1"))
    (part,) = summarizer.due(force=True)
    path = tmp_path / "traces" / "dt=2025-11-22" / "hour=08"
    path.mkdir(parents=True)
    pq.write_table(part.rows.drop_columns(["duplicate_spans"]), path / "part-old.parquet")
    con = connect(tmp_path)
    assert con.execute("SELECT span_id, duplicate_of FROM spans").fetchall() == [(INNER, None)]
    assert con.execute("SELECT llm_count, duplicate_spans FROM traces").fetchall() == [(1, [])]
    held = layout.read_rows(tmp_path, "holdback", [T1])
    assert held.column("span_id").to_pylist() == [INNER] and held.column("duplicate_of").to_pylist() == [None]
