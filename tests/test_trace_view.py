"""`render_trace` over a real lake: Parquet files written by the sink, read through the DuckDB views."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from pipeline import schema
from pipeline.config.model import ParquetSinkConfig
from pipeline.query import connect
from pipeline.trace_view import render_trace
from sinks.parquet.sink import ParquetSink

T0 = 1_763_800_000 * 10**9  # 2025-11-22 08:26:40 UTC
MS = 10**6
KEPT = "0af7651916cd43dd8448eb211c80319c"
DROPPED = "5b8efff798038103d269b633813fc60c"
BLOCKS = "█▏▎▍▌▋▊▉▕▐"
ROOT, RETRIEVE, PLAN, CHAT, TOOL, GUARD, ORPHAN = (f"{i:016x}" for i in range(1, 8))


def _rows(table: pa.Schema, rows: list[dict[str, Any]]) -> pa.Table:
    """Rows with only the interesting columns; `conform` fills the rest with nulls like a real batch."""
    names = {k for r in rows for k in r}
    fields = pa.schema([f for f in table if f.name in names])
    return schema.conform(pa.Table.from_pylist(rows, schema=fields), table)


def _span(span_id: str, parent: str | None, name: str, start_ms: int, end_ms: int, **kw: Any) -> dict:
    return {
        "trace_id": KEPT,
        "span_id": span_id,
        "parent_span_id": parent,
        "name": name,
        "status_code": "UNSET",
        "start_time": T0 + start_ms * MS,
        "end_time": T0 + end_ms * MS,
        "duration_ms": float(end_ms - start_ms),
        "service_name": "support-bot",
        "lake_source": "kafka:otlp_spans/0@10",
        **kw,
    }


SPANS = [
    _span(
        ROOT,
        None,
        "agent.run",
        0,
        2400,
        span_type="agent",
        session_id="sess-42",
        tenant_id="acme",
        prompt_version="v3",
        status_code="OK",
    ),
    _span(RETRIEVE, ROOT, "retrieve docs", 10, 310, span_type="retrieval"),
    _span(PLAN, ROOT, "plan the refund workflow with a very long descriptive span name", 320, 900, span_type="chain"),
    _span(
        CHAT,
        PLAN,
        "chat",
        330,
        880,
        span_type="llm",
        provider="openai",
        request_model="gpt-4o",
        response_model="gpt-4o-2024-08-06",
        input_tokens=1200,
        output_tokens=350,
        cost_usd=0.0123,
        cost_status="priced",
    ),
    _span(
        TOOL,
        ROOT,
        "tool refund",
        900,
        1500,
        span_type="tool",
        status_code="ERROR",
        status_message="refund service returned 502",
        events=[
            {
                "time": T0 + 1490 * MS,
                "name": "exception",
                "attributes": [("exception.type", "HTTPError"), ("exception.message", "502 Bad Gateway")],
            }
        ],
    ),
    _span(
        GUARD,
        ROOT,
        "guardrail",
        1500,
        2400,
        span_type="llm",
        request_model="acme-guard-1",
        input_tokens=80,
        output_tokens=5,
        cost_status="unknown_model",
    ),
    _span(ORPHAN, "deadbeefdeadbeef", "late callback", 2000, 2100, span_type="tool"),
]


def build_lake(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    """The lake as the worker would leave it: two span files (one a replay), a summary per trace, feedback."""
    sink = ParquetSink(ParquetSinkConfig(path=str(tmp_path)))
    sink.write("spans", _rows(schema.SPANS, SPANS))
    sink.flush_all()
    # a replay wrote the chat span again from another offset: a second file, same identity
    sink.write("spans", _rows(schema.SPANS, [{**SPANS[3], "lake_source": "kafka:otlp_spans/0@99"}]))
    summary = {"part_id": "p1", "start_time": T0, "end_time": T0 + 2400 * MS, "duration_ms": 2400.0}
    sink.write(
        "traces",
        _rows(
            schema.TRACES,
            [
                {**summary, "trace_id": KEPT, "span_count": 7, "kept": True, "keep_reasons": ["error"]},
                {
                    **summary,
                    "trace_id": DROPPED,
                    "root_name": "faq.answer",
                    "service_name": "support-bot",
                    "span_count": 5,
                    "error_count": 0,
                    "input_tokens": 900,
                    "output_tokens": 120,
                    "cost_usd": 0.0021,
                    "unpriced_calls": 1,
                    "kept": False,
                    "keep_reasons": [],
                },
            ],
        ),
    )
    sink.write(
        "feedback",
        _rows(
            schema.FEEDBACK,
            [
                {
                    "time": T0 + 5000 * MS,
                    "trace_id": KEPT,
                    "span_id": None,
                    "name": "thumbs",
                    "value": 0.0,
                    "comment": "refund never arrived",
                    "source": "api",
                },
            ],
        ),
    )
    sink.flush_all()
    assert len(list((tmp_path / "spans").rglob("*.parquet"))) == 2
    return connect(tmp_path)


@pytest.fixture
def con(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    return build_lake(tmp_path)


def _span_line(lines: list[str], name: str) -> tuple[int, str]:
    """The span row of `name`: the line that also carries a waterfall bar (header lines do not)."""
    return next((i, line) for i, line in enumerate(lines) if name in line and any(c in line for c in BLOCKS))


def test_tree_order_indentation_and_width(con: duckdb.DuckDBPyConnection) -> None:
    text = render_trace(con, KEPT)
    assert text is not None
    print(text)
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    assert lines[0] == f"trace {KEPT}"
    names = ("agent.run", "retrieve docs", "plan the", "chat", "tool refund")
    order = [_span_line(lines, n)[0] for n in names]
    assert order == sorted(order)

    def indent(name: str) -> int:
        line = _span_line(lines, name)[1]
        return len(line) - len(line[2:].lstrip()) - 2

    assert indent("agent.run") == 0
    assert indent("retrieve docs") == indent("tool refund") == 2
    assert indent("chat") == 4  # under "plan the …", itself under the root
    assert "…" in _span_line(lines, "plan the")[1]  # the long name is cut, not the line wrapped


def test_header_model_tokens_cost(con: duckdb.DuckDBPyConnection) -> None:
    text = render_trace(con, KEPT.upper(), width=80)
    assert text is not None
    header = text.split("\n\n")[0]
    for fact in (
        "root: agent.run",
        "service: support-bot",
        "start: 2025-11-22 08:26:40.000 UTC",
        "duration: 2.40s",
        "spans: 7",
        "errors: 1",
        "1,280 in / 355 out",
        "$0.0123 (+1 unpriced)",
        "session: sess-42",
        "tenant: acme",
        "prompt: v3",
        "kept: error",
    ):
        assert fact in header, fact
    chat = _span_line(text.splitlines(), "chat")[1]
    assert "gpt-4o" in chat and "1200→350" in chat and "$0.0123" in chat and "llm" in chat
    assert "unpriced" in _span_line(text.splitlines(), "guardrail")[1]


def test_duplicate_span_rows_show_once(con: duckdb.DuckDBPyConnection) -> None:
    text = render_trace(con, KEPT)
    assert text is not None
    assert sum(" chat " in line for line in text.splitlines()) == 1
    assert "spans: 7" in text


def test_errors_stand_out(con: duckdb.DuckDBPyConnection) -> None:
    text = render_trace(con, KEPT)
    assert text is not None
    lines = text.splitlines()
    i, line = _span_line(lines, "tool refund")
    assert line.startswith("✗ ") and line.endswith("ERROR")
    details = lines[i + 1 : i + 3]
    assert details == [
        "      status: refund service returned 502",  # under the span's name, 2 deeper
        "      exception: HTTPError: 502 Bad Gateway",
    ]
    assert sum(line.startswith("✗") for line in lines) == 1


def test_orphan_shown_at_top_level(con: duckdb.DuckDBPyConnection) -> None:
    text = render_trace(con, KEPT)
    assert text is not None
    assert _span_line(text.splitlines(), "late callback")[1].startswith("  ↳? late callback")


def test_feedback_at_the_bottom(con: duckdb.DuckDBPyConnection) -> None:
    text = render_trace(con, KEPT)
    assert text is not None
    assert text.splitlines()[-2:] == ["feedback (1):", "  thumbs=0 — refund never arrived"]


def test_unknown_trace_is_none(con: duckdb.DuckDBPyConnection) -> None:
    assert render_trace(con, "f" * 32) is None


def test_sampled_out_trace_shows_its_summary(con: duckdb.DuckDBPyConnection) -> None:
    text = render_trace(con, DROPPED)
    assert text is not None
    print(text)
    assert "sampled out" in text
    for fact in ("spans: 5", "duration: 2.40s", "cost: $0.0021 (+1 unpriced)", "keep_reasons: none"):
        assert fact in text, fact
    assert all(len(line) <= 80 for line in text.splitlines())


def test_narrow_width_and_color(con: duckdb.DuckDBPyConnection) -> None:
    text = render_trace(con, KEPT, width=50)
    assert text is not None
    assert all(len(line) <= 50 for line in text.splitlines())
    assert "\x1b[" not in text
    colored = render_trace(con, KEPT, color=True)
    assert colored is not None and "\x1b[31m✗ " in colored


def test_empty_lake(tmp_path: Path) -> None:
    assert render_trace(connect(tmp_path), KEPT) is None
