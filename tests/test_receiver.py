"""OTLP receivers answer as the specification says, for good input and for every kind of bad input."""

from __future__ import annotations

import gzip
import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from pipeline.config import parse
from pipeline.query import connect
from pipeline.service import Service
from tests.conftest import make_request

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
TRACE = "5b8efff798038103d269b633813fc60c"


def _service(tmp_path: Path, **overrides: object) -> Service:
    doc: dict[str, object] = {
        "receivers": {
            "otlp": {
                "grpc": {"endpoint": "127.0.0.1:0"},
                "http": {"endpoint": "127.0.0.1:0"},
                "max_request_bytes": overrides.pop("max_request_bytes", "1MiB"),
            }
        },
        "bus": {"type": "embedded", "capacity_spans": overrides.pop("capacity_spans", 10_000)},
        "sinks": {"parquet": {"path": str(tmp_path / "lake")}},
        "worker": {"trace_idle": "100ms", "max_batch_delay": "20ms"},
        "telemetry": {"endpoint": None},
    }
    return Service(parse(doc, "test.yaml"))


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    svc = _service(tmp_path)
    svc.start()
    yield svc
    svc.stop()


def _grpc_export(svc: Service, body: bytes, compression: grpc.Compression | None = None) -> bytes:
    assert svc.grpc is not None
    with grpc.insecure_channel(svc.grpc.address) as ch:
        call = ch.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
        return call(body, timeout=10, compression=compression)


def _http_post(
    svc: Service,
    body: bytes,
    ctype: str = "application/x-protobuf",
    headers: dict[str, str] | None = None,
    path: str = "/v1/traces",
) -> tuple[int, dict[str, str], bytes]:
    assert svc.http is not None
    host, port = svc.http.address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("POST", path, body=body, headers={"Content-Type": ctype, **(headers or {})})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, dict(resp.getheaders()), data


def _one_span(span_id: str = "051581bf3cb55c13", trace_id: str = TRACE) -> bytes:
    return make_request([{"trace_id": trace_id, "span_id": span_id, "name": "chat"}]).SerializeToString()


def _lake_count(svc: Service) -> int:
    svc.stop()
    svc.stop = lambda: None  # type: ignore[method-assign]  # already stopped for the fixture
    return connect(svc.config.lake_path).execute("select count(*) from spans").fetchone()[0]  # type: ignore[index]


def test_grpc_and_http_protobuf_accepted(service: Service) -> None:
    resp = ExportTraceServiceResponse.FromString(_grpc_export(service, _one_span("0000000000000001")))
    assert not resp.HasField("partial_success")
    status, headers, body = _http_post(service, _one_span("0000000000000002"))
    assert status == 200 and headers["Content-Type"] == "application/x-protobuf"
    ExportTraceServiceResponse.FromString(body)
    assert _lake_count(service) == 2


def test_gzip_on_both_transports(service: Service) -> None:
    _grpc_export(service, _one_span("0000000000000003"), compression=grpc.Compression.Gzip)
    status, _, _ = _http_post(
        service, gzip.compress(_one_span("0000000000000004")), headers={"Content-Encoding": "gzip"}
    )
    assert status == 200
    assert _lake_count(service) == 2


def test_otlp_json_with_hex_ids_and_enum_names_and_ints(service: Service) -> None:
    doc = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-svc"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "s"},
                        "spans": [
                            {
                                "traceId": TRACE,
                                "spanId": "1111111111111111",
                                "name": "chat gpt-4o",
                                "kind": "SPAN_KIND_CLIENT",
                                "startTimeUnixNano": "1763800000000000000",
                                "endTimeUnixNano": "1763800001000000000",
                                "attributes": [
                                    {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
                                    {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "42"}},
                                ],
                                "status": {"code": 2, "message": "boom"},
                                "unknownFieldFromTheFuture": 1,
                            },
                            {
                                "traceId": TRACE,
                                "spanId": "2222222222222222",
                                "parentSpanId": "1111111111111111",
                                "name": "tool",
                                "kind": 3,
                                "startTimeUnixNano": 1763800000500000000,
                                "endTimeUnixNano": 1763800000600000000,
                            },
                        ],
                    }
                ],
            }
        ]
    }
    status, headers, body = _http_post(service, json.dumps(doc).encode(), "application/json")
    assert status == 200, body
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {}
    service.stop()
    service.stop = lambda: None  # type: ignore[method-assign]
    rows = (
        connect(service.config.lake_path)
        .execute(
            "select span_id, parent_span_id, kind, status_code, status_message, request_model, input_tokens,"
            " service_name, duration_ms from spans order by span_id"
        )
        .fetchall()
    )
    assert rows == [
        ("1111111111111111", None, "CLIENT", "ERROR", "boom", "gpt-4o", 42, "json-svc", 1000.0),
        ("2222222222222222", "1111111111111111", "CLIENT", "UNSET", None, None, None, "json-svc", 100.0),
    ]


@pytest.mark.parametrize(
    ("body", "ctype", "status", "needle"),
    [
        (b"\xff\xff\xff not protobuf", "application/x-protobuf", 400, "cannot decode"),
        (b"{not json", "application/json", 400, "invalid JSON"),
        (json.dumps({"resourceSpans": "nope"}).encode(), "application/json", 400, "expected an array"),
        (b"hello", "text/plain", 415, "unsupported Content-Type"),
    ],
)
def test_http_bad_input(service: Service, body: bytes, ctype: str, status: int, needle: str) -> None:
    got, _, data = _http_post(service, body, ctype)
    assert got == status
    message = json.loads(data)["message"] if ctype == "application/json" else Status.FromString(data).message
    assert needle in message
    # the process keeps serving afterwards
    assert _http_post(service, _one_span())[0] == 200


def test_http_bad_gzip_and_unknown_path(service: Service) -> None:
    got, _, data = _http_post(service, b"not gzip", headers={"Content-Encoding": "gzip"})
    assert got == 400 and "gzip" in Status.FromString(data).message
    got, _, _ = _http_post(service, _one_span(), path="/v1/metrics")
    assert got == 404


def test_grpc_undecodable_is_invalid_argument(service: Service) -> None:
    with pytest.raises(grpc.RpcError) as err:
        _grpc_export(service, b"\xff\xff\xff garbage")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "cannot decode" in err.value.details()
    _grpc_export(service, _one_span())  # still serving


def test_oversized_requests(tmp_path: Path) -> None:
    svc = _service(tmp_path, max_request_bytes=2048)
    svc.start()
    try:
        big = make_request(
            [{"trace_id": TRACE, "span_id": "0000000000000009", "attrs": {"prompt": "x" * 5000}}]
        ).SerializeToString()
        got, _, _ = _http_post(svc, big)
        assert got == 413
        # a gzip bomb: small on the wire, large once decompressed
        got, _, data = _http_post(svc, gzip.compress(big), headers={"Content-Encoding": "gzip"})
        assert got == 413 and b"decompressed" in data
        with pytest.raises(grpc.RpcError) as err:
            _grpc_export(svc, big)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert _http_post(svc, _one_span())[0] == 200
    finally:
        svc.stop()


def test_partial_success_rejects_spans_without_valid_ids(service: Service) -> None:
    req = make_request(
        [
            {"trace_id": TRACE, "span_id": "00000000000000aa"},
            {"trace_id": "00" * 16, "span_id": "00000000000000bb"},
        ]
    )
    bad = req.resource_spans[0].scope_spans[0].spans.add()
    bad.trace_id = b"\x01" * 8  # wrong length
    bad.span_id = b"\x02" * 8
    resp = ExportTraceServiceResponse.FromString(_grpc_export(service, req.SerializeToString()))
    assert resp.partial_success.rejected_spans == 2
    assert "trace_id" in resp.partial_success.error_message
    status, _, _ = _http_post(service, json.dumps({"resourceSpans": []}).encode(), "application/json")
    assert status == 200
    assert _lake_count(service) == 1


def test_json_span_with_a_non_hex_id_is_rejected_alone(service: Service) -> None:
    """Like a wrong-length id: that span is rejected (partial success, counted), the others are kept."""

    def span(trace_id: str, span_id: str, **extra: object) -> dict[str, object]:
        return {"traceId": trace_id, "spanId": span_id, "name": "s", "startTimeUnixNano": "1", **extra}

    spans = [
        span(TRACE, "1111111111111111"),
        span("not-a-hex-trace-id-zzzzzzzzzzzzzz", "2222222222222222"),
        span(TRACE, "3333333333333333", parentSpanId="xyz"),
        span(TRACE, "4444444444444444", links=[{"traceId": TRACE, "spanId": "q" * 16}]),
        span(TRACE, "5555555555555555"),
    ]
    doc = {"resourceSpans": [{"scopeSpans": [{"scope": {"name": "s"}, "spans": spans}]}]}
    status, _, body = _http_post(service, json.dumps(doc).encode(), "application/json")
    assert status == 200, body
    partial = json.loads(body)["partialSuccess"]
    assert partial["rejectedSpans"] == "3"  # protobuf JSON writes int64 as a string
    message = partial["errorMessage"]
    assert message.startswith("rejected 3 of 5 spans: ")
    assert "resourceSpans[0].scopeSpans[0].spans[1].traceId: 'not-a-hex-trace-id-zzzzzzzzzzzzzz' is not hex" in message
    assert "spans[2].parentSpanId: 'xyz' is not hex" in message and "spans[3].links[0].spanId" in message
    assert service.intake is not None
    assert service.intake.stats.spans[("http", "rejected_invalid_id")] == 3
    assert service.intake.stats.spans[("http", "accepted")] == 2
    assert _lake_count(service) == 2


def test_full_bus_refuses_with_retryable_statuses(tmp_path: Path) -> None:
    svc = _service(tmp_path, capacity_spans=1)
    # hold the worker so the bus stays full: it is not started, only the receivers are
    assert svc.grpc is not None and svc.http is not None
    svc.grpc.start()
    svc.http.start()
    try:
        _grpc_export(svc, _one_span("0000000000000001"))
        with pytest.raises(grpc.RpcError) as err:
            _grpc_export(svc, _one_span("0000000000000002"))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        trailers = dict(err.value.trailing_metadata())
        assert RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"]).retry_delay.seconds == 1
        status, headers, _ = _http_post(svc, _one_span("0000000000000003"))
        assert status == 429 and headers["Retry-After"] == "1"
        assert svc.intake.stats.refused_requests == 2
    finally:
        svc.grpc.stop()
        svc.http.stop()
