"""Self-telemetry: /metrics scraped from a running tracelake, /healthz, /readyz, and the memory limiter."""

from __future__ import annotations

import http.client
import json
import re
import time
from pathlib import Path

import grpc
import pytest

from tests.conftest import RunningTracelake, config_yaml, make_request

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _get(address: str, path: str) -> tuple[int, str]:
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read().decode()
    conn.close()
    return resp.status, body


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format; labels match in any order."""
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? ([0-9.e+-]+|NaN)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if got == labels:
            return float(m.group(3))
    raise AssertionError(f"{name}{labels} not in /metrics")


def _send(tl: RunningTracelake, n: int, seed: int) -> None:
    spans = [{"trace_id": f"{seed:08x}{i + 1:024x}", "span_id": f"{i + 1:016x}"} for i in range(n)]
    with grpc.insecure_channel(tl.grpc) as ch:
        ch.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)(
            make_request(spans).SerializeToString(), timeout=10
        )


SAMPLED = """\
receivers: {otlp: {grpc: {endpoint: 127.0.0.1:0}, http: {endpoint: 127.0.0.1:0}}}
processors:
  tail_sampling:
    decision_wait: 200ms
    policies: [{name: all, type: probabilistic, probabilistic: {sampling_percentage: 100}}]
  attributes: {actions: [{key: env, action: insert, value: test}]}
sinks: {parquet/main: {path: "{lake}", roll_seconds: 1s}}
worker: {trace_idle: 1s, max_batch_delay: 50ms}
telemetry: {endpoint: 127.0.0.1:0}
pipelines: {traces: {process: [tail_sampling, attributes], sinks: [parquet/main]}}
"""


def _post_feedback(tl: RunningTracelake, doc: dict[str, object]) -> int:
    host, port = tl.http.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("POST", "/v1/feedback", body=json.dumps(doc), headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp.status


def test_metrics_health_and_readiness(tmp_path: Path) -> None:
    tl = RunningTracelake(tmp_path, SAMPLED)
    try:
        assert _get(tl.telemetry, "/healthz") == (200, "ok\n")
        assert _get(tl.telemetry, "/readyz") == (200, "ready\n")
        _send(tl, 30, 1)
        _send(tl, 12, 2)
        assert _post_feedback(tl, {"trace_id": f"{1:08x}{1:024x}", "name": "thumbs", "value": 0}) == 202
        deadline = time.monotonic() + 20
        while True:  # tail sampling releases its spans once the traces are decided
            status, text = _get(tl.telemetry, "/metrics")
            out = _metric(text, "tracelake_processor_spans_out_total", processor="tail_sampling")
            if out >= 43 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert status == 200
        # what a processor that holds spans releases later counts as its output: the next one takes it in
        assert out == _metric(text, "tracelake_processor_spans_in_total", processor="attributes") == 43
        # feedback is not spans: it has its own counter
        assert _metric(text, "tracelake_receiver_spans_total", transport="grpc", outcome="accepted") == 42
        assert not [
            x
            for x in text.splitlines()
            if x.startswith("tracelake_receiver_") and 'transport="http"' in x and "feedback" not in x
        ]
        assert _metric(text, "tracelake_receiver_requests_total", transport="grpc", outcome="accepted") == 2
        assert _metric(text, "tracelake_receiver_feedback_events_total", transport="http", outcome="accepted") == 1
        assert _metric(text, "tracelake_worker_spans_in_total") == 42
        # sinks are labelled with their id in the config
        assert _metric(text, "tracelake_sink_failing", sink="parquet/main") == 0
        assert _metric(text, "process_resident_memory_bytes") > 10 * 2**20
        assert "tracelake_sink_write_seconds_bucket" in text
        assert _get(tl.telemetry, "/nope")[0] == 404
    finally:
        assert tl.stop() == 0, tl.log
    assert "stopped: 42 spans in, 42 out, 1 feedback events," in tl.log, tl.log


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_memory_limiter_refuses_above_the_soft_limit(tmp_path: Path, transport: str) -> None:
    # the interpreter alone is above 40 MiB resident: every export is refused with a retryable status
    extra = "memory_limiter: {limit: 48MiB, spike_limit: 8MiB, check_interval: 100ms}\n"
    tl = RunningTracelake(tmp_path, config_yaml(extra=extra))
    try:
        body = make_request([{"trace_id": "1" * 32, "span_id": "1" * 16}]).SerializeToString()
        if transport == "grpc":
            with grpc.insecure_channel(tl.grpc) as ch, pytest.raises(grpc.RpcError) as err:
                ch.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)(body, timeout=10)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "memory limit" in (err.value.details() or "")
        else:
            host, port = tl.http.rsplit(":", 1)
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            conn.request("POST", "/v1/traces", body=body, headers={"Content-Type": "application/x-protobuf"})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 429 and resp.getheader("Retry-After") == "1"
        status, text = _get(tl.telemetry, "/metrics")
        assert _metric(text, "tracelake_receiver_spans_total", transport=transport, outcome="refused_memory_limit") == 1
        assert _metric(text, "tracelake_memory_limiter_over_limit") == 1
        status, body_text = _get(tl.telemetry, "/readyz")
        assert status == 503 and "memory limit" in body_text
    finally:
        assert tl.stop() == 0, tl.log
