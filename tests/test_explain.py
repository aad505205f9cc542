"""`tracelake explain`: the decisions it reports on demo traffic and on a trace read from a lake are the ones the
policies give (computed here from the spans themselves), a lake's raw values never reach its output, and
`--diff` of two sampling configs counts the traces each keeps and drops."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from core.conventions import Normalizer
from pipeline.bus.embedded import EmbeddedBus
from pipeline.cli import build_parser
from pipeline.explain import decode_input, demo_input
from pipeline.trace_summary import TraceSummarizer
from pipeline.worker import Worker
from sinks.parquet.config import ParquetSinkConfig
from sinks.parquet.sink import ParquetSink

TRACES, SEED = 30, 0
ERRORS = "{name: errors, type: status_code, status_code: {status_codes: [ERROR]}}"
LONG = "{name: long, type: span_count, span_count: {min_spans: 4}}"


def _config(path: Path, policies: str, extra_processors: str = "", process: str = "tail_sampling") -> Path:
    path.write_text(
        f"processors:\n{extra_processors}"
        f"  tail_sampling: {{decision_wait: 1s, policies: [{policies}]}}\n"
        f"pipelines: {{traces: {{process: [{process}]}}}}\n"
    )
    return path


def _run(*args: str) -> int:
    """The command as `tracelake explain ARGS` parses and runs it (in this process)."""
    parsed = build_parser("explain").parse_args(["explain", *args])
    return int(parsed.func(parsed))


def _explain(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert _run(*args, "--json") == 0
    return json.loads(capsys.readouterr().out)


def _expected(spans: pa.Table) -> dict[str, list[str]]:
    """trace id → the policies that keep it (errors: a span with status ERROR; long: 4 spans or more)."""
    by_trace = (
        pa.table({"t": spans.column("trace_id"), "e": pc.equal(spans.column("status_code"), "ERROR")})
        .group_by("t")
        .aggregate([("e", "any"), ("e", "count")])
    )
    out = {}
    for tid, err, n in zip(*(by_trace.column(c).to_pylist() for c in ("t", "e_any", "e_count")), strict=True):
        out[tid] = [name for name, hit in (("errors", err), ("long", n >= 4)) if hit]
    return out


def test_decisions_on_demo_traffic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path / "c.yaml", f"{ERRORS}, {LONG}")
    out = _explain(capsys, "--config", str(config), "--demo", str(TRACES), "--seed", str(SEED))
    expected = _expected(decode_input(demo_input(TRACES, SEED)))
    got = {d["trace_id"]: d["policies"] if d["kept"] else [] for d in out["decisions"]}
    assert got == expected
    kept = sum(1 for v in expected.values() if v)
    assert 0 < kept < TRACES, "the demo has traces of both kinds"
    assert (out["totals"]["traces_kept"], out["totals"]["traces_dropped"]) == (kept, TRACES - kept)
    steps = [s["processor"] for s in out["steps"]]
    assert steps == ["normalize", "tail_sampling"]
    # normalization filled typed columns from the dialects' attributes
    filled = {c for ch in out["steps"][0]["changes"] for c in ch["columns"]}
    assert {"span_type", "request_model", "input_tokens"} <= filled


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Demo traffic written by the real worker with an empty chain: raw values in the lake."""
    root = tmp_path_factory.mktemp("explain") / "lake"
    bus = EmbeddedBus(1, capacity_spans=10**6, capacity_bytes=2**31)
    for body in demo_input(TRACES, SEED):
        req = ExportTraceServiceRequest.FromString(body)
        bus.publish(req, body, sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans))
    bus.close()
    worker = Worker(
        bus.reader(0), [], [ParquetSink(ParquetSinkConfig(path=str(root)))], Normalizer(), TraceSummarizer(60)
    )
    worker.run()
    assert worker.error is None
    return root


def test_a_trace_from_a_lake(lake: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spans = decode_input(demo_input(TRACES, SEED))
    expected = _expected(spans)
    normalized = Normalizer()(spans)
    user_ids = [u for u in normalized.column("user_id").to_pylist() if u]
    by_user = normalized.filter(pc.is_valid(normalized.column("user_id")))
    trace_id = next(t for t in by_user.column("trace_id").to_pylist() if expected[t])
    redact = '  redact_pii: {ner: "off", hash_key_env: EXPLAIN_TEST_KEY}\n'
    config = _config(tmp_path / "c.yaml", f"{ERRORS}, {LONG}", redact, "redact_pii, tail_sampling")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EXPLAIN_TEST_KEY", "k" * 32)
        assert _run("--config", str(config), "--lake", str(lake), "--trace", trace_id) == 0
        text = capsys.readouterr().out
        out = _explain(capsys, "--config", str(config), "--lake", str(lake), "--trace", trace_id)
    assert out["decisions"] == [{"trace_id": trace_id, "kept": True, "policies": expected[trace_id]}]
    assert f"{trace_id}  kept by {', '.join(expected[trace_id])}" in text
    redaction = next(s for s in out["steps"] if s["processor"] == "redact_pii")
    hashed = {k: v for c in redaction["changes"] for k, v in c["attributes"].items()}
    assert "user.id" in hashed and hashed["user.id"][0].endswith(" chars>"), hashed
    for raw in set(user_ids):  # never a raw value of the lake, before or after
        assert raw not in text and raw not in json.dumps(out)
    assert "values from a lake are not shown" in text


def test_diff_of_two_sampling_configs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    everything = _config(tmp_path / "all.yaml", "{name: all, type: always_sample}")
    errors_only = _config(tmp_path / "errors.yaml", ERRORS)
    out = _explain(capsys, "--config", str(everything), "--demo", str(TRACES), "--diff", str(errors_only))
    expected = _expected(decode_input(demo_input(TRACES, SEED)))
    errors = sum(1 for v in expected.values() if "errors" in v)
    assert 0 < errors < TRACES
    assert out["totals"]["traces_kept"] == [TRACES, errors]
    assert out["totals"]["traces_dropped"] == [0, TRACES - errors]
    differ = {t["trace_id"] for t in out["traces_decided_differently"]}
    assert differ == {t for t, v in expected.items() if "errors" not in v}
    held_back = out["totals"]["spans_held_back"][1]
    assert held_back > 0 and out["totals"]["spans_out"][0] == out["totals"]["spans_out"][1] + held_back
    assert out["totals"]["bytes_written"][0] > out["totals"]["bytes_written"][1]
