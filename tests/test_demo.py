"""The demo traffic generator: repeatable, all three dialects, and what it sends lands in the lake."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from core.conventions import normalize
from pipeline.demo import DemoResult, build_requests, run_demo
from pipeline.otlp.decode import SourcedRequest, decode
from pipeline.query import connect
from tests.conftest import RunningTracelake, config_yaml

REPO = Path(__file__).resolve().parent.parent
START = 1_780_000_000_000_000_000  # a fixed base time: byte-identical output for a seed


def _parse(requests: list[bytes]) -> list[ExportTraceServiceRequest]:
    out = []
    for body in requests:
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        out.append(req)
    return out


def _table(requests: list[bytes]) -> pa.Table:
    return normalize(decode(SourcedRequest(r, "test") for r in _parse(requests)))


@pytest.fixture(scope="module")
def demo_table() -> pa.Table:
    return _table(build_requests(400, seed=11, start_ns=START))


def test_a_seed_repeats_the_traffic_and_its_ids() -> None:
    a = build_requests(40, seed=7, start_ns=START)
    assert a == build_requests(40, seed=7, start_ns=START)
    # without a fixed base time only the timestamps move: the ids stay
    ids = _table(a).select(["trace_id", "span_id", "parent_span_id"])
    later = _table(build_requests(40, seed=7)).select(["trace_id", "span_id", "parent_span_id"])
    assert ids.equals(later)
    other = _table(build_requests(40, seed=8, start_ns=START))
    assert set(other.column("trace_id").to_pylist()).isdisjoint(ids.column("trace_id").to_pylist())


def test_requests_are_split_like_the_sdk_batches() -> None:
    reqs = _parse(build_requests(200, seed=3, spans_per_request=100, start_ns=START))
    sizes = [sum(len(ss.spans) for rs in r.resource_spans for ss in rs.scope_spans) for r in reqs]
    assert len(sizes) > 3 and set(sizes[:-1]) == {100} and 0 < sizes[-1] <= 100
    services = {
        kv.value.string_value
        for r in reqs
        for rs in r.resource_spans
        for kv in rs.resource.attributes
        if kv.key == "service.name"
    }
    assert services == {"support-bot", "research-assistant", "ticket-summarizer"}


def test_all_three_dialects_normalise_to_llm_spans(demo_table: pa.Table) -> None:
    rows = demo_table.select(
        [
            "service_name",
            "span_type",
            "provider",
            "request_model",
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "reasoning_tokens",
            "finish_reason",
            "status_code",
            "attributes",
        ]
    ).to_pylist()
    llm = [r for r in rows if r["span_type"] == "llm"]
    dialect_key = {
        "support-bot": "gen_ai.provider.name",
        "research-assistant": "openinference.span.kind",
        "ticket-summarizer": "gen_ai.prompt.0.content",
    }
    for service, key in dialect_key.items():
        spans = [r for r in llm if r["service_name"] == service]
        assert len(spans) >= 20, service
        assert all(key in dict(r["attributes"]) for r in spans), service
        assert all(r["provider"] and r["request_model"] for r in spans), service
        answered = [r for r in spans if r["status_code"] != "ERROR"]
        assert answered and all(r["input_tokens"] > 0 and r["output_tokens"] > 0 for r in answered), service
    models = {r["request_model"] for r in llm}
    assert {
        "gpt-4o",
        "gpt-4o-mini",
        "o3-mini",
        "claude-3-5-sonnet-20241022",
        "gemini-1.5-flash",
        "acme-support-llama-3.1-8b",
    } <= models
    assert any(r["cache_read_tokens"] for r in llm)
    assert all(r["reasoning_tokens"] for r in llm if r["request_model"] == "o3-mini" and r["output_tokens"])
    finish = Counter(r["finish_reason"] for r in llm)
    assert finish["stop"] and finish["length"] and finish["tool_calls"]
    # errors: rate limits on LLM spans, timeouts on tools, a few percent of spans
    errors = Counter(r["span_type"] for r in rows if r["status_code"] == "ERROR")
    assert errors["llm"] and errors["tool"]
    assert sum(errors.values()) < 0.1 * len(rows)
    types = Counter(r["span_type"] for r in rows)
    assert types["retrieval"] and types["tool"] and types["agent"] and types["chain"]


def test_traffic_looks_like_production(demo_table: pa.Table) -> None:
    con = duckdb.connect()
    con.register("t", demo_table.select(["span_type", "attributes", "duration_ms", "events", "trace_id"]))
    per_span, llm_prompt, has_pii, slow, exceptions, traces = con.execute(
        """select avg(cardinality(attributes)),
                  avg(length(coalesce(
                        attributes['gen_ai.input.messages'],
                        attributes['llm.input_messages.1.message.content'],
                        attributes['gen_ai.prompt.0.content']))) filter (where span_type = 'llm'),
                  count(*) filter (where regexp_matches(attributes::varchar, '[a-z.]+@example\\.(com|org)')),
                  count(*) filter (where duration_ms > 10000),
                  count(*) filter (where len(events) > 0),
                  count(distinct trace_id)
           from t"""
    ).fetchone()
    assert traces == 400
    assert per_span >= 10
    assert 800 < llm_prompt < 2500
    assert has_pii > 0 and slow > 0 and exceptions > 0


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_failed_export_raises_naming_the_endpoint(protocol: str) -> None:
    endpoint = f"127.0.0.1:{_closed_port()}"
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=endpoint.replace(".", r"\.")):
        run_demo(endpoint, traces=3, protocol=protocol, seed=1, timeout=1.0)
    assert time.monotonic() - t0 < 30


def test_demo_over_grpc_and_http_lands_in_the_lake(tmp_path: Path) -> None:
    tl = RunningTracelake(tmp_path, config_yaml())
    try:
        over_grpc = run_demo(tl.grpc, traces=60, protocol="grpc", seed=1)
        over_http = run_demo(tl.http, traces=40, protocol="http", seed=2)
        cli = subprocess.run(
            [
                sys.executable,
                "-m",
                "pipeline.cli",
                "demo",
                "--endpoint",
                tl.grpc,
                "--traces",
                "5",
                "--seed",
                "3",
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
        )
    finally:
        assert tl.stop(timeout=60) == 0, tl.log
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.startswith("sent 5 traces (") and "over OTLP/grpc" in cli.stdout
    cli_spans = int(cli.stdout.split("(")[1].split()[0])
    assert isinstance(over_grpc, DemoResult) and over_grpc.traces == 60 and over_http.traces == 40
    con = connect(tl.lake)
    spans, traces = con.execute("select count(*), count(distinct trace_id) from spans").fetchone()
    assert spans == over_grpc.spans + over_http.spans + cli_spans
    assert traces == 105
    llm = con.execute(
        "select service_name, count(*), count(request_model), count(input_tokens) from spans "
        "where span_type = 'llm' group by 1 order by 1"
    ).fetchall()
    assert [r[0] for r in llm] == ["research-assistant", "support-bot", "ticket-summarizer"]
    assert all(n > 0 and models == n for _, n, models, _ in llm)
    assert con.execute("select count(*) from traces").fetchone() == (105,)


def test_demo_without_the_sdk_says_which_extra_to_install() -> None:
    """A server install (`pip install -e .`, no `demo` extra) has neither the OpenTelemetry API nor SDK."""
    without_sdk = (
        "import sys\n"
        "sys.modules['opentelemetry.trace'] = sys.modules['opentelemetry.sdk'] = None  # not installed\n"
        "from pipeline.cli import main\n"
        "sys.exit(main(['demo', '--traces', '1']))\n"
    )
    out = subprocess.run([sys.executable, "-c", without_sdk], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 2
    assert out.stderr.startswith("tracelake demo: the OpenTelemetry SDK is not installed (")
    assert "pip install 'tracelake[demo]'" in out.stderr and "Traceback" not in out.stderr
    assert out.stdout == ""
