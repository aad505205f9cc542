"""Config errors name the file, the key path and what was expected; env substitution works."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import ConfigError, load, parse

REPO = Path(__file__).resolve().parent.parent


def _errors(doc: object, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse(doc, "t.yaml", env=env or {})
    return [str(i) for i in err.value.issues]


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"recievers": {}}, "recievers: unknown key"),
        (
            {"receivers": {"otlp": {"grpc": {"endpoint": "localhost"}}}},
            "receivers.otlp.grpc.endpoint: expected host:port",
        ),
        ({"receivers": {"otlp": {"grpc": {"endpoint": "h:99999"}}}}, "receivers.otlp.grpc.endpoint"),
        ({"receivers": {"otlp": {"max_request_bytes": "lots"}}}, "receivers.otlp.max_request_bytes"),
        ({"bus": {"type": "rabbitmq"}}, "bus: Input tag 'rabbitmq' found using 'type' does not match"),
        ({"bus": {"type": "kafka"}}, "bus.brokers: Field required"),
        ({"bus": {"type": "kafka", "brokers": "b:9092", "partitions": 0}}, "bus.partitions: Input should be greater"),
        ({"bus": {"type": "kafka", "brokers": "b:9092", "compression": "brotli"}}, "bus.compression"),
        ({"bus": {"capacity_spans": -1}}, "bus.capacity_spans: Input should be greater than 0"),
        ({"bus": {"capacity_spans": "many"}}, "bus.capacity_spans: Input should be a valid integer"),
        ({"processors": {"nope": {}}}, "processors.nope: unknown processor type 'nope'"),
        ({"processors": {"nope/2": {}}}, "processors.nope/2: unknown processor type 'nope'"),
        (
            {"pipelines": {"traces": {"process": ["ghost"]}}},
            "pipelines.traces.process.0: processor 'ghost' is not defined",
        ),
        ({"pipelines": {"traces": {"sinks": ["s3"]}}}, "pipelines.traces.sinks.0: sink 's3' is not defined"),
        ({"pipelines": {"traces": {"sinks": []}}}, "pipelines.traces.sinks: at least one sink is required"),
        ({"pipelines": {"traces": {"procss": []}}}, "pipelines.traces.procss: unknown key"),
        ({"pipelines": {"logs": {}}}, "pipelines.logs: only the 'traces' pipeline is supported"),
        ({"sinks": {"parquet": {"path": "x", "roll_seconds": "soon"}}}, "sinks.parquet.roll_seconds"),
        ({"sinks": {"parquet": {"pth": "x"}}}, "sinks.parquet.pth: unknown key"),
        ({"sinks": {"kafka": {}}}, "sinks.kafka: unknown sink type 'kafka'"),
        ({"worker": {"trace_idle": "5 parsecs"}}, "worker.trace_idle"),
        ({"worker": {"keys": {"session": "session.id"}}}, "worker.keys.session: Input should be a valid list"),
        ([1, 2], "expected a mapping at the top level"),
    ],
)
def test_config_errors(doc: object, expected: str) -> None:
    errors = _errors(doc)
    assert any(expected in e for e in errors), errors


def test_every_error_is_reported_not_just_the_first() -> None:
    errors = _errors(
        {"processors": {"a": {}, "b": {}}, "pipelines": {"traces": {"process": ["a", "c"]}}, "sinks": {"x": {}}}
    )
    assert len(errors) >= 4, errors


def test_validate_reports_schema_errors_and_undefined_processors_in_one_run(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "receivers: {otlp: {grpc: {endpoint: 'localhost:99999'}}}\n"
        "worker: {trace_idle: forever, max_batch_spans: -1}\n"
        "processors: {cost: {}, tail_sampling: {decision_wait: soon, policies: []}}\n"
        "sinks: {parquet: {roll_bytes: lots}}\n"
        "pipelines: {traces: {process: [cost, nonexistent, cost], sinks: [parquet, s3]}}\n"
    )
    out = _cli("validate", str(bad))
    assert out.returncode == 2
    lines = [line.removeprefix(f"{bad}: ") for line in out.stderr.strip().splitlines()]
    assert lines == [
        "receivers.otlp.grpc.endpoint: expected host:port with a port 0-65535, got 'localhost:99999'",
        "worker.trace_idle: expected a duration like 5s, 500ms, 10m, 24h, got 'forever'",
        "worker.max_batch_spans: Input should be greater than 0 (got -1)",
        "processors.tail_sampling.decision_wait: expected a duration like 5s, 500ms, 10m, 24h, got 'soon'",
        "processors.tail_sampling.policies: List should have at least 1 item after validation, not 0",
        "sinks.parquet.roll_bytes: expected a size like 16MiB, 64MB or a number of bytes, got 'lots'",
        "pipelines.traces.process.1: processor 'nonexistent' is not defined under processors",
        "pipelines.traces.process.2: processor 'cost' appears twice",
        "pipelines.traces.sinks.1: sink 's3' is not defined under sinks",
    ]


def test_env_substitution() -> None:
    env = {"GRPC": "0.0.0.0:5317", "CAP": "123"}
    cfg = parse(
        {
            "receivers": {
                "otlp": {"grpc": {"endpoint": "${env:GRPC}"}, "http": {"endpoint": "${env:NOPE:-127.0.0.1:9}"}}
            },
            "bus": {"type": "embedded", "capacity_spans": "${env:CAP}"},
            "sinks": {"parquet": {"path": "/data/${env:TENANT:-shared}/lake"}},
        },
        "t.yaml",
        env=env,
    )
    assert cfg.raw.receivers.otlp.grpc is not None and cfg.raw.receivers.otlp.grpc.endpoint == "0.0.0.0:5317"
    assert cfg.raw.receivers.otlp.http is not None and cfg.raw.receivers.otlp.http.endpoint == "127.0.0.1:9"
    assert cfg.raw.bus.capacity_spans == 123  # a whole-value reference takes the YAML type of its value
    assert cfg.lake_path == "/data/shared/lake"


def test_missing_env_var_is_an_error_naming_the_key() -> None:
    errors = _errors({"sinks": {"parquet": {"path": "${env:LAKE_DIR}"}}})
    assert errors == ["sinks.parquet.path: environment variable LAKE_DIR is not set (or use ${env:LAKE_DIR:-default})"]


def test_durations_and_sizes() -> None:
    cfg = parse(
        {
            "receivers": {"otlp": {"max_request_bytes": "4MiB"}},
            "worker": {"trace_idle": "1500ms", "max_batch_delay": 2},
            "sinks": {"parquet": {"roll_seconds": "2m", "roll_bytes": "10MB"}},
        },
        "t.yaml",
        env={},
    )
    assert cfg.raw.receivers.otlp.max_request_bytes == 4 * 2**20
    assert cfg.raw.worker.trace_idle == 1.5 and cfg.raw.worker.max_batch_delay == 2.0
    assert cfg.sinks["parquet"].config.roll_seconds == 120.0 and cfg.sinks["parquet"].config.roll_bytes == 10_000_000


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("receivers:\n  otlp: [unclosed\n")
    with pytest.raises(ConfigError) as err:
        load(p)
    assert "invalid YAML" in str(err.value) and "line" in str(err.value)
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "missing.yaml")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, cwd=REPO)


def test_validate_cli(tmp_path: Path) -> None:
    ok = _cli("validate", str(REPO / "conf" / "tracelake.yaml"))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"{REPO / 'conf' / 'tracelake.yaml'}: ok")
    assert "warning" not in ok.stderr  # the default chain redacts before it offloads
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text(
        "processors: {offload_artifacts: {}, redact_pii: {}}\n"
        "pipelines: {traces: {process: [offload_artifacts, redact_pii]}}\n"
    )
    warned = _cli("validate", str(unsafe))
    assert warned.returncode == 0, warned.stderr
    assert "'offload_artifacts' runs before 'redact_pii'" in warned.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("bus: {type: embedded, capcity: 3}\nprocessors: {frobnicate: {}}\n")
    out = _cli("validate", str(bad))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert f"{bad}: bus.capcity: unknown key" in lines
    assert any(line.startswith(f"{bad}: processors.frobnicate: unknown processor type") for line in lines)


def test_freshness_and_compaction_keys() -> None:
    """Defaults as README's key table says; bad values name their key path."""
    cfg = parse({}, "t.yaml", env={})
    sink, comp = cfg.sinks["parquet"].config, cfg.raw.compaction
    assert (sink.flush_idle, sink.roll_seconds) == (1.0, 2.0)  # type: ignore[union-attr]
    assert (comp.background, comp.interval, comp.older_than, comp.grace) == (True, 30.0, 600.0, 300.0)
    cfg = parse({"compaction": {"interval": "2m", "grace": "0s", "background": False}}, "t.yaml", env={})
    assert (cfg.raw.compaction.interval, cfg.raw.compaction.grace) == (120.0, 0.0)
    for doc, expected in [
        ({"compaction": {"interval": 0}}, "compaction.interval: Input should be greater than 0"),
        ({"compaction": {"grace": "-5s"}}, "compaction.grace"),
        ({"compaction": {"background": "sometimes"}}, "compaction.background"),
        ({"compaction": {"intervall": "1m"}}, "compaction.intervall: unknown key"),
        ({"sinks": {"parquet": {"flush_idle": "soon"}}}, "sinks.parquet.flush_idle"),
    ]:
        errors = _errors(doc)
        assert any(expected in e for e in errors), (doc, errors)
