"""`tracelake forget --user-id RAW` under the shipped configs themselves (conf/tracelake.yaml, conf/kafka.yaml).

conf/tracelake.yaml runs redact_pii in every worker process: the stored user id is HMAC(id) under the key the
first start created, what `forget` derives. The same server's log
must be free of Presidio's per-batch warnings ("Entity PERCENT is not mapped…"): the chats sent here hold
percentages, money and quantities, which the spaCy model labels and Presidio would complain about.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from pipeline.query import connect
from processors.redact_pii.hash_key import hash_value
from tests.conftest import RunningTracelake
from tests.kafka_broker import Broker

REPO = Path(__file__).resolve().parents[1]
ALICE, BOB = "alice-7731@corp.example", "bob-1044@corp.example"
CHAT = (
    "Hi, I'm Maria Gonzalez from Lagos. The Aurora kit was 50% off at $129.99 and weighs 3 kg; "
    "my card 4111 1111 1111 1111 was charged twice on 2025-03-04."
)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "TRACELAKE_GRPC_ENDPOINT": "127.0.0.1:0",
        "TRACELAKE_HTTP_ENDPOINT": "127.0.0.1:0",
        "TRACELAKE_TELEMETRY_ENDPOINT": "127.0.0.1:0",
        "TRACELAKE_LAKE": str(tmp_path / "lake"),
        "TRACELAKE_HASH_KEY": "",  # the shipped config's key file, created on first start
        "TRACELAKE_HASH_KEY_FILE": str(tmp_path / "state" / "hash.key"),
        **extra,
    }


def _send(endpoint: str) -> None:
    """Three traces of Alice and one of Bob, through the OpenTelemetry SDK's gRPC exporter."""
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    tracer = provider.get_tracer("tests")
    for user in (ALICE, ALICE, ALICE, BOB):
        with (
            tracer.start_as_current_span("POST /chat", attributes={"user.id": user}),
            tracer.start_as_current_span("chat gpt-4o", attributes={"gen_ai.input.messages": CHAT}),
        ):
            pass
    assert provider.force_flush(30_000)
    provider.shutdown()


def _wait_for_worker(tl: RunningTracelake, spans: int, timeout: float) -> None:
    """Until the worker has taken in every span (Kafka: the consumer group forms first)."""
    deadline = time.monotonic() + timeout
    seen = 0.0
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://{tl.telemetry}/metrics", timeout=5) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith("tracelake_worker_spans_in_total"):
                    seen = float(line.split()[-1])
        if seen >= spans:
            return
        time.sleep(0.5)
    raise AssertionError(f"worker took in {seen} of {spans} spans within {timeout}s:\n{tl.log}")


def _forget(config: Path, env: dict[str, str], user: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "forget", "--config", str(config), "--user-id", user],
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _run_shipped(tmp_path: Path, name: str, env: dict[str, str], timeout: float) -> RunningTracelake:
    tl = RunningTracelake(tmp_path, (REPO / "conf" / name).read_text(), env=env, name=name.removesuffix(".yaml"))
    try:
        _send(tl.grpc)
        _wait_for_worker(tl, 8, timeout)
    finally:
        assert tl.stop() == 0, tl.log
    return tl


def _user_ids(lake: Path) -> dict[str, int]:
    rows = connect(lake).execute("SELECT user_id, count(DISTINCT trace_id) FROM spans GROUP BY 1").fetchall()
    return {u: n for u, n in rows if u is not None}


def test_forget_finds_the_user_under_conf_tracelake_yaml(tmp_path: Path) -> None:
    env = _env(tmp_path)
    tl = _run_shipped(tmp_path, "tracelake.yaml", env, timeout=60)
    key = (tmp_path / "state" / "hash.key").read_text().strip().encode()
    # hashed once, by the worker's redact_pii
    assert _user_ids(tl.lake) == {hash_value(key, ALICE): 3, hash_value(key, BOB): 1}
    sql = "SELECT attributes['gen_ai.input.messages'] FROM spans WHERE name LIKE 'chat%'"
    content = connect(tl.lake).execute(sql)
    for (text,) in content.fetchall():
        assert "4111" not in text and "Maria Gonzalez" not in text and "<PERSON>" in text, text
    # no Presidio warning in the server log (it used to print one per batch)
    noisy = [line for line in tl.log.splitlines() if "not mapped" in line or "presidio" in line.lower()]
    assert noisy == [], noisy

    out = _forget(tl.config, env, ALICE)
    assert "removed 3 traces of the user" in out, out
    assert _user_ids(tl.lake) == {hash_value(key, BOB): 1}


@pytest.fixture(scope="module")
def broker() -> Broker:
    b = Broker()
    yield b  # type: ignore[misc]
    b.stop()


def test_forget_finds_the_user_under_conf_kafka_yaml(tmp_path: Path, broker: Broker) -> None:
    env = _env(tmp_path, KAFKA_BROKERS=broker.address)
    tl = _run_shipped(tmp_path, "kafka.yaml", env, timeout=90)
    assert _user_ids(tl.lake) == {ALICE: 3, BOB: 1}  # no redact_pii in this config: ids stay as sent
    out = _forget(tl.config, env, ALICE)
    assert "removed 3 traces of the user" in out, out
    assert _user_ids(tl.lake) == {BOB: 1}
