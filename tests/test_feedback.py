"""Feedback: POST /v1/feedback (tracelake, Langfuse and Phoenix shapes) and spans carrying feedback.value."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from pipeline.config import parse
from pipeline.query import connect
from pipeline.service import Service
from tests.conftest import make_request

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
TRACE = "7f" * 16


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    cfg = parse(
        {
            "receivers": {"otlp": {"grpc": {"endpoint": "127.0.0.1:0"}, "http": {"endpoint": "127.0.0.1:0"}}},
            "sinks": {"parquet": {"path": str(tmp_path / "lake")}},
            "worker": {"trace_idle": "200ms", "max_batch_delay": "20ms"},
            "telemetry": {"endpoint": None},
        },
        "t.yaml",
        env={},
    )
    svc = Service(cfg)
    svc.start()
    yield svc
    svc.stop()


def _post(svc: Service, body: object, ctype: str = "application/json") -> tuple[int, dict]:
    assert svc.http is not None
    host, port = svc.http.address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request("POST", "/v1/feedback", body=raw, headers={"Content-Type": ctype})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    try:
        return resp.status, json.loads(data)
    except json.JSONDecodeError:
        return resp.status, {"raw": data}


def _export(svc: Service, spans: list[dict[str, object]]) -> None:
    assert svc.grpc is not None
    with grpc.insecure_channel(svc.grpc.address) as ch:
        ch.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)(
            make_request(spans).SerializeToString(), timeout=10
        )


def _stop(svc: Service) -> Path:
    svc.stop()
    svc.stop = lambda: None  # type: ignore[method-assign]
    return Path(svc.config.lake_path)


def test_feedback_endpoint_in_three_shapes(service: Service) -> None:
    _export(service, [{"trace_id": TRACE, "span_id": "0000000000000001", "name": "POST /chat"}])
    time.sleep(0.5)  # the trace is summarised before its feedback arrives: a separate part
    own = {"trace_id": TRACE, "span_id": "0000000000000001", "name": "user_thumbs", "value": 0, "comment": "wrong"}
    assert _post(service, own) == (202, {"accepted": 1})
    langfuse = {"traceId": TRACE, "name": "quality", "value": 0.25, "comment": "meh", "source": "langfuse"}
    phoenix = {
        "trace_id": TRACE,
        "name": "correctness",
        "annotator_kind": "LLM",
        "result": {"label": "incorrect", "score": 0.1, "explanation": "cites the wrong doc"},
    }
    assert _post(service, [langfuse, phoenix]) == (202, {"accepted": 2})
    con = connect(_stop(service))
    rows = con.execute("select trace_id, span_id, name, value, comment, source from feedback order by name").fetchall()
    assert rows == [
        (TRACE, None, "correctness", 0.1, "cites the wrong doc", "LLM"),
        (TRACE, None, "quality", 0.25, "meh", "langfuse"),
        (TRACE, "0000000000000001", "user_thumbs", 0.0, "wrong", "api"),
    ]
    # feedback is not a span of the trace, but it reaches the trace's summary
    assert con.execute("select count(*) from spans").fetchone() == (1,)
    assert con.execute("select span_count, feedback_min, kept, parts from traces").fetchone() == (1, 0.0, True, 2)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"trace_id": "xyz", "name": "n", "value": 1}, "trace_id: expected 32"),
        ({"trace_id": "0" * 32, "name": "n", "value": 1}, "trace_id"),
        ({"trace_id": TRACE, "name": "", "value": 1}, "name: expected a non-empty string"),
        ({"trace_id": TRACE, "name": "n", "value": "good"}, "value: expected a finite number"),
        ({"trace_id": TRACE, "name": "n", "value": 1, "span_id": "12"}, "span_id: expected 16 hex"),
        ({"trace_id": TRACE, "name": "n", "value": 1, "time": "yesterday"}, "time: expected RFC 3339"),
        ([{"trace_id": TRACE, "name": "n", "value": 1}, {"name": "n"}], "[1] trace_id"),
        ([], "no feedback events"),
        (b"{nope", "invalid JSON"),
    ],
)
def test_malformed_feedback_is_400_with_the_reason(service: Service, body: object, needle: str) -> None:
    status, reply = _post(service, body)
    assert status == 400 and needle in reply["message"], reply


def test_feedback_wants_json_and_answers_in_json(service: Service) -> None:
    for ctype in ("application/x-www-form-urlencoded", "application/x-protobuf", ""):
        status, reply = _post(service, b"trace_id=1", ctype)
        # a JSON endpoint answers in JSON whatever was sent
        assert status == 415 and "use application/json" in reply["message"], (ctype, reply)
    assert service.intake is not None
    assert sum(service.intake.stats.requests.values()) == 0  # feedback is not counted as OTLP requests
    _post(service, b"{nope")
    assert service.intake.stats.feedback[("http", "invalid")] == 1 and not service.intake.stats.requests


def test_span_with_feedback_value_is_a_feedback_event(service: Service) -> None:
    _export(
        service,
        [
            {"trace_id": TRACE, "span_id": "0000000000000001", "name": "answer"},
            {
                "trace_id": TRACE,
                "span_id": "0000000000000002",
                "parent": "0000000000000001",
                "name": "thumbs",
                "attrs": {"feedback.value": -1, "feedback.name": "thumbs", "feedback.comment": "no"},
            },
        ],
    )
    con = connect(_stop(service))
    assert con.execute("select span_id, name, value, comment, source from feedback").fetchall() == [
        ("0000000000000002", "thumbs", -1.0, "no", "otlp")
    ]
    assert con.execute("select count(*) from spans").fetchone() == (2,)  # the app's own span stays a span
    assert con.execute("select span_count, feedback_min from traces").fetchone() == (2, -1.0)
