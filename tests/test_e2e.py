"""`tracelake run` in a subprocess, fed by the real OpenTelemetry SDK exporters, read back with DuckDB."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Status, StatusCode

from pipeline.query import connect
from tests.conftest import RunningTracelake, config_yaml, make_request

REPO = Path(__file__).resolve().parent.parent
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class _Recording(SpanExporter):
    """Wraps an exporter to see its results: force_flush() reports success even when export failed."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.results: list[SpanExportResult] = []

    def export(self, spans):  # type: ignore[no-untyped-def]
        result = self.inner.export(spans)
        self.results.append(result)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()


def _emit_three_dialects(exporter: SpanExporter, service: str) -> None:
    rec = _Recording(exporter)
    tp = TracerProvider(resource=Resource.create({"service.name": service, "tenant.id": "acme"}))
    tp.add_span_processor(BatchSpanProcessor(rec))
    tracer = tp.get_tracer("e2e")
    with tracer.start_as_current_span("POST /chat") as root:
        root.set_attribute("session.id", "sess-1")
        with tracer.start_as_current_span("chat gpt-4o") as s:  # OTel GenAI semconv
            s.set_attributes(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "gpt-4o",
                    "gen_ai.response.model": "gpt-4o-2024-08-06",
                    "gen_ai.usage.input_tokens": 1200,
                    "gen_ai.usage.output_tokens": 300,
                    "gen_ai.usage.cache_read.input_tokens": 1000,
                    "gen_ai.response.finish_reasons": ["stop"],
                }
            )
        with tracer.start_as_current_span("ChatAnthropic") as s:  # OpenInference
            s.set_attributes(
                {
                    "openinference.span.kind": "LLM",
                    "llm.provider": "anthropic",
                    "llm.model_name": "claude-3-5-sonnet-20241022",
                    "llm.token_count.prompt": 1200,
                    "llm.token_count.completion": 300,
                    "llm.token_count.prompt_details.cache_read": 1000,
                }
            )
        with tracer.start_as_current_span("mistral.chat") as s:  # OpenLLMetry, legacy names
            s.set_attributes(
                {
                    "traceloop.span.kind": "task",
                    "llm.request.type": "chat",
                    "gen_ai.system": "MistralAI",
                    "gen_ai.request.model": "mistral-large",
                    "gen_ai.usage.prompt_tokens": 1200,
                    "gen_ai.usage.completion_tokens": 300,
                    "gen_ai.prompt.0.content": "hello",
                }
            )
        with tracer.start_as_current_span("search_tool") as s:
            s.set_attributes({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "web_search"})
            s.record_exception(TimeoutError("search backend timed out after 30s"))
            s.set_status(Status(StatusCode.ERROR, "tool timeout"))
    tp.shutdown()
    assert rec.results and all(r == SpanExportResult.SUCCESS for r in rec.results), rec.results


def test_sdk_grpc_and_http_land_in_the_same_columns(tmp_path: Path) -> None:
    tl = RunningTracelake(tmp_path, config_yaml())
    try:
        _emit_three_dialects(GrpcExporter(endpoint=tl.grpc, insecure=True, compression=grpc.Compression.Gzip), "grpc")
        _emit_three_dialects(
            HttpExporter(endpoint=f"http://{tl.http}/v1/traces", compression=HttpCompression.Gzip), "http"
        )
    finally:
        assert tl.stop() == 0, tl.log
    con = connect(tl.lake)
    rows = con.execute(
        """select service_name, name, span_type, provider, request_model, input_tokens, output_tokens,
                  cache_read_tokens, tenant_id
           from spans where span_type = 'llm' order by service_name, provider"""
    ).fetchall()
    for svc in ("grpc", "http"):
        got = [r[1:] for r in rows if r[0] == svc]
        assert got == [
            ("ChatAnthropic", "llm", "anthropic", "claude-3-5-sonnet-20241022", 1200, 300, 1000, "acme"),
            ("mistral.chat", "llm", "mistralai", "mistral-large", 1200, 300, None, "acme"),
            ("chat gpt-4o", "llm", "openai", "gpt-4o", 1200, 300, 1000, "acme"),
        ]
    tool = con.execute(
        "select tool_name, status_code, status_message, events[1].attributes['exception.message'] "
        "from spans where span_type = 'tool' and service_name = 'grpc'"
    ).fetchall()
    assert tool == [("web_search", "ERROR", "tool timeout", "search backend timed out after 30s")]
    traces = con.execute(
        "select service_name, span_count, error_count, llm_count, tool_count, input_tokens, session_id, root_name "
        "from traces order by service_name"
    ).fetchall()
    assert traces == [
        ("grpc", 5, 1, 3, 1, 3600, "sess-1", "POST /chat"),
        ("http", 5, 1, 3, 1, 3600, "sess-1", "POST /chat"),
    ]
    assert con.execute("select count(*) from spans where dt = current_date or dt < current_date").fetchone() == (10,)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, cwd=REPO)


def test_query_cli_formats_and_errors(tmp_path: Path) -> None:
    tl = RunningTracelake(tmp_path, config_yaml())
    try:
        _emit_three_dialects(GrpcExporter(endpoint=tl.grpc, insecure=True), "svc")
    finally:
        tl.stop()
    lake = str(tl.lake)
    sql = "select span_type, count(*) as n from spans group by 1 order by 1"
    rows = [{"span_type": "llm", "n": 3}, {"span_type": "other", "n": 1}, {"span_type": "tool", "n": 1}]
    out = _cli("query", "--lake", lake, "--format", "json", sql)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == rows  # one JSON array
    out = _cli("query", "--lake", lake, "--format", "json", "select 1 as x where false")
    assert json.loads(out.stdout) == []
    out = _cli("query", "--lake", lake, "--format", "ndjson", sql)
    assert [json.loads(line) for line in out.stdout.splitlines()] == rows
    out = _cli("query", "--config", str(tl.config), "--format", "csv", sql)
    assert out.stdout.splitlines() == ["span_type,n", "llm,3", "other,1", "tool,1"]
    out = _cli("query", "--lake", lake, sql)
    assert out.returncode == 0 and "llm" in out.stdout and "│" in out.stdout
    out = _cli("query", "--lake", lake, "select nope from spans")
    assert out.returncode == 1 and "query error" in out.stderr and "nope" in out.stderr
    # an empty lake still has its views; a lake that does not exist is an error, not "0 rows"
    (tmp_path / "empty").mkdir()
    out = _cli("query", "--lake", str(tmp_path / "empty"), "--format", "csv", "select count(*) from traces")
    assert out.returncode == 0 and out.stdout.splitlines()[1] == "0"
    for command in (["query", "select count(*) from traces"], ["trace", "ab" * 16]):
        out = _cli(command[0], "--lake", str(tmp_path / "nowhere"), *command[1:])
        assert out.returncode == 2 and f"no lake at {tmp_path / 'nowhere'}" in out.stderr, out.stderr
        assert out.stdout == ""


def test_sigterm_during_load_loses_nothing_accepted(tmp_path: Path) -> None:
    tl = RunningTracelake(tmp_path, config_yaml())
    accepted: list[str] = []
    errors: list[grpc.StatusCode] = []
    stop = threading.Event()

    def send(worker: int) -> None:
        with grpc.insecure_channel(tl.grpc) as ch:
            call = ch.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
            i = 0
            while not stop.is_set() and i < 5000:
                trace = f"{worker + 1:08x}{i:024x}"
                spans = [{"trace_id": trace, "span_id": f"{j + 1:016x}", "attrs": {"i": i}} for j in range(20)]
                try:
                    call(make_request(spans).SerializeToString(), timeout=5)
                except grpc.RpcError as e:
                    errors.append(e.code())
                    if e.code() == grpc.StatusCode.UNAVAILABLE:
                        return  # the server is gone
                    continue
                accepted.append(trace)
                i += 1

    threads = [threading.Thread(target=send, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while len(accepted) < 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    tl.proc.send_signal(signal.SIGTERM)
    rc = tl.proc.wait(60)
    stop.set()
    for t in threads:
        t.join(30)
    assert rc == 0, tl.log
    assert len(accepted) >= 200
    con = connect(tl.lake)
    stored = con.execute("select count(*), count(distinct trace_id) from spans").fetchone()
    have = {r[0] for r in con.execute("select distinct trace_id from spans").fetchall()}
    missing = [t for t in accepted if t not in have]
    assert stored == (len(accepted) * 20, len(accepted)), (stored, len(accepted), errors[:5], missing)
    # every accepted trace got its summary row too
    assert con.execute("select count(*) from traces").fetchone() == (len(accepted),)
