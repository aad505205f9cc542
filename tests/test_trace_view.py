"""`render_trace` over a real lake: Parquet files written by the sink, read through the DuckDB views."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from core import schema
from pipeline.query import connect
from pipeline.trace_view import load_trace, render_trace, trace_document
from sinks.artifacts.refs import make_ref
from sinks.artifacts.store import ArtifactStore
from sinks.parquet.config import ParquetSinkConfig
from sinks.parquet.sink import ParquetSink

T0 = 1_763_800_000 * 10**9  # 2025-11-22 08:26:40 UTC
MS = 10**6
KEPT = "0af7651916cd43dd8448eb211c80319c"
DROPPED = "5b8efff798038103d269b633813fc60c"
BLOCKS = "█▏▎▍▌▋▊▉▕▐"
FEEDBACK_ONLY = "c0ffee00c0ffee00c0ffee00c0ffee00"
SYSTEM = "You are the refund assistant of Acme. " * 200  # ~7.6 KB: offloaded to the artifact store
SYSTEM_REF = make_ref(__import__("hashlib").sha256(SYSTEM.encode()).hexdigest())
GONE_REF = make_ref("e" * 64)  # an offloaded value whose object gc already deleted
HISTORY = [{"role": "user", "parts": [{"type": "text", "content": f"earlier question {i}"}]} for i in range(1, 6)] + [
    {"role": "user", "parts": [{"type": "text", "content": "Where is my refund for order A-1?"}]}
]
CHAT_ATTRS = [
    ("gen_ai.operation.name", "chat"),
    ("gen_ai.system_instructions", SYSTEM_REF),
    ("gen_ai.input.messages", json.dumps(HISTORY)),
    (
        "gen_ai.output.messages",
        json.dumps(
            [
                {
                    "role": "assistant",
                    "finish_reason": "tool_calls",
                    "parts": [{"type": "tool_call", "id": "call_7", "name": "refund", "arguments": {"order": "A-1"}}],
                }
            ]
        ),
    ),
]
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
    _span(
        RETRIEVE,
        ROOT,
        "retrieve docs",
        10,
        310,
        span_type="retrieval",
        attributes=[
            ("openinference.span.kind", "RETRIEVER"),
            ("input.value", "refund policy"),
            ("retrieval.documents.0.document.id", "kb-17"),
            ("retrieval.documents.0.document.score", "0.92"),
            ("retrieval.documents.0.document.content", "Refunds are paid within 14 days. " * 20),
        ],
    ),
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
        attributes=CHAT_ATTRS,
        artifacts=[
            {"key": "gen_ai.system_instructions", "ref": SYSTEM_REF, "bytes": len(SYSTEM), "preview": SYSTEM[:40]}
        ],
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
        attributes=[
            ("gen_ai.operation.name", "execute_tool"),
            ("gen_ai.tool.name", "refund"),
            ("gen_ai.tool.call.id", "call_7"),
            ("gen_ai.tool.call.arguments", '{"order": "A-1"}'),
            ("gen_ai.tool.call.result", GONE_REF),
        ],
        artifacts=[{"key": "gen_ai.tool.call.result", "ref": GONE_REF, "bytes": 5000, "preview": "502 Bad Gateway …"}],
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
                {
                    "time": T0 + 6000 * MS,
                    "trace_id": FEEDBACK_ONLY,
                    "span_id": ROOT,
                    "name": "thumbs",
                    "value": 1.0,
                    "comment": "spans still on their way",
                    "source": "langfuse",
                },
            ],
        ),
    )
    sink.flush_all()
    assert len(list((tmp_path / "spans").rglob("*.parquet"))) == 2
    assert ArtifactStore(str(tmp_path / "_artifacts")).put(SYSTEM.encode()) == SYSTEM_REF
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
    # only a line holding a whole reference that does not fit is longer: a reference is never cut
    assert {line.strip() for line in lines if len(line) > 80} == {GONE_REF, SYSTEM_REF}
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
    assert sum(" chat " in line and any(c in line for c in BLOCKS) for line in text.splitlines()) == 1
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


def _section(text: str, span_id: str) -> list[str]:
    """The lines under a span's `── name · span <id>` title, up to the next blank line."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("── ") and line.endswith(f"span {span_id}"))
    end = next((i for i in range(start, len(lines)) if not lines[i]), len(lines))
    return lines[start + 1 : end]


def test_conversation_on_a_screen(con: duckdb.DuckDBPyConnection) -> None:
    text = render_trace(con, KEPT)
    assert text is not None
    print(text)
    chat = _section(text, CHAT)
    # the offloaded system prompt is read back from the store, cut to a screen
    assert chat[0].startswith("  system: You are the refund assistant of Acme.")
    assert any("more lines (--full shows everything)" in line for line in chat)
    assert "  … 3 earlier messages (--full shows everything)" in chat
    assert "  user: earlier question 1" not in chat and "  user: earlier question 4" in chat
    assert "  user: Where is my refund for order A-1?" in chat
    assert '  assistant (tool_calls) → refund [call_7]: {"order": "A-1"}' in chat
    assert f"  offloaded gen_ai.system_instructions ({len(SYSTEM) / 1024:.1f} KiB):" in chat
    assert f"    {SYSTEM_REF}" in chat  # the whole reference, never cut
    tool = _section(text, TOOL)
    assert tool[:4] == ["  tool refund [call_7]", '    arguments: {"order": "A-1"}', "    result:", f"      {GONE_REF}"]
    assert "missing from the artifact store; preview: 502 Bad Gateway …" in "\n".join(tool)
    docs = _section(text, RETRIEVE)
    assert docs[:3] == ["  query: refund policy", "  documents (1):", "    1. kb-17 · score 0.92"]
    assert len(docs) == 3 + 2 + 1 and docs[-1].endswith("more lines (--full shows everything)")


def test_full_shows_everything(con: duckdb.DuckDBPyConnection) -> None:
    text = render_trace(con, KEPT, width=100, full=True)
    assert text is not None
    assert "--full" not in text
    chat = "\n".join(_section(text, CHAT))
    assert " ".join(chat.split()).count("You are the refund assistant of Acme.") == 200
    assert all(f"user: earlier question {i}" in chat for i in range(1, 6))
    assert " ".join("\n".join(_section(text, RETRIEVE)).split()).count("Refunds are paid within 14 days.") == 20


def test_json_document(con: duckdb.DuckDBPyConnection) -> None:
    trace = load_trace(con, KEPT)
    assert trace is not None
    doc = json.loads(json.dumps(trace_document(trace)))
    assert doc["trace_id"] == KEPT and doc["summary"]["kept"] is True and doc["summary"]["span_count"] == 7
    assert [s["span_id"] for s in doc["spans"]] == [ROOT, RETRIEVE, PLAN, CHAT, TOOL, GUARD, ORPHAN]
    chat = next(s for s in doc["spans"] if s["span_id"] == CHAT)
    assert chat["start_time"] == "2025-11-22T08:26:40.33Z" and chat["request_model"] == "gpt-4o"
    assert chat["attributes"]["gen_ai.system_instructions"] == SYSTEM_REF  # as stored
    assert chat["conversation"]["input"][0] == {
        "role": "system",
        "content": SYSTEM,  # read back, whole
        "tool_calls": [],
        "tool_call_id": None,
        "name": None,
        "finish_reason": None,
    }
    assert len(chat["conversation"]["input"]) == 7
    assert chat["conversation"]["output"][0]["tool_calls"] == [
        {"name": "refund", "arguments": '{"order": "A-1"}', "id": "call_7"}
    ]
    tool = next(s for s in doc["spans"] if s["span_id"] == TOOL)
    assert tool["conversation"]["missing_artifacts"] == [GONE_REF]
    assert tool["events"][0]["time"] == "2025-11-22T08:26:41.49Z"
    assert next(s for s in doc["spans"] if s["span_id"] == ROOT)["conversation"] is None
    assert [(f["name"], f["value"], f["comment"]) for f in doc["feedback"]] == [("thumbs", 0.0, "refund never arrived")]


def test_cli_trace_json_and_full(tmp_path: Path) -> None:
    build_lake(tmp_path)

    def trace(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "pipeline.cli", "trace", "--lake", str(tmp_path), *args]
        return subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)

    out = trace("--json", KEPT)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["spans"][3]["conversation"]["input"][0]["content"] == SYSTEM
    out = trace("--full", "--width", "120", KEPT)
    assert out.returncode == 0 and "earlier question 1" in out.stdout and "--full" not in out.stdout
    out = trace(FEEDBACK_ONLY)
    assert out.returncode == 0 and "thumbs=1 — spans still on their way" in out.stdout
    assert trace("f" * 32).returncode == 1


def test_trace_with_only_feedback_shows_it(con: duckdb.DuckDBPyConnection) -> None:
    text = render_trace(con, FEEDBACK_ONLY)
    assert text is not None
    print(text)
    lines = text.splitlines()
    assert lines[0] == f"trace {FEEDBACK_ONLY}"
    assert "no spans of this trace in the lake" in lines[1]
    assert lines[-2:] == ["feedback (1):", f"  thumbs=1 — spans still on their way [span {ROOT}]"]


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
    assert all(len(line) <= 50 or line.strip() in (GONE_REF, SYSTEM_REF) for line in text.splitlines())
    assert "\x1b[" not in text
    colored = render_trace(con, KEPT, color=True)
    assert colored is not None and "\x1b[31m✗ " in colored


def test_empty_lake(tmp_path: Path) -> None:
    assert render_trace(connect(tmp_path), KEPT) is None
