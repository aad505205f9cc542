"""The ingest stage: processors in the receiver, before the bus; their output folded back into OTLP."""

from __future__ import annotations

from pathlib import Path

import grpc
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from core.conventions import Normalizer, normalize
from core.processor import ProcessorConfig, ProcessorContext, ProcessorFactory, Registry
from pipeline.config import ConfigError, parse
from pipeline.demo import build_requests
from pipeline.otlp.decode import SourcedRequest, decode
from pipeline.otlp.encode import apply_table
from pipeline.query import connect
from pipeline.receiver.intake import IngestChain
from pipeline.service import Service
from tests.conftest import make_request

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class _MaskConfig(ProcessorConfig):
    secret_key: str = "password"
    drop_name: str = "healthcheck"


class _Mask:
    """A stand-in for a redactor: replaces one key's value, drops spans by name."""

    def __init__(self, cfg: _MaskConfig, ctx: ProcessorContext) -> None:
        self.cfg = cfg
        self.stats: dict[str, int] = {}

    def process(self, batch: pa.Table) -> pa.Table:
        batch = batch.filter(pc.not_equal(batch.column("name"), self.cfg.drop_name))
        attrs = batch.column("attributes").combine_chunks()
        keys, items = attrs.keys, attrs.items
        masked = pc.if_else(pc.equal(keys, self.cfg.secret_key), "<SECRET>", items)
        new = pa.MapArray.from_arrays(attrs.offsets, keys, masked)
        batch = batch.set_column(batch.schema.get_field_index("attributes"), "attributes", new)
        message = pc.replace_substring(batch.column("status_message"), "hunter2", "<SECRET>")
        return batch.set_column(batch.schema.get_field_index("status_message"), "status_message", message)


MASK = ProcessorFactory(type="test_mask", config_class=_MaskConfig, create=_Mask)
STATEFUL = ProcessorFactory(type="test_hold", config_class=_MaskConfig, create=_Mask, stateful=True)


@pytest.fixture(autouse=True)
def _register() -> None:
    Registry.register(MASK)
    Registry.register(STATEFUL)


def _request():  # type: ignore[no-untyped-def]
    return make_request(
        [
            {
                "trace_id": "ab" * 16,
                "span_id": "0000000000000001",
                "name": "login",
                "attrs": {"password": "hunter2", "retries": 3, "ok": True},
                "error": "bad password hunter2",
            },
            {"trace_id": "ab" * 16, "span_id": "0000000000000002", "name": "healthcheck", "attrs": {"x": 1}},
        ]
    )


def test_apply_table_keeps_types_of_untouched_values_and_drops_spans() -> None:
    req = _request()
    table = _Mask(_MaskConfig(), None).process(normalize(decode([SourcedRequest(req, "t")])))  # type: ignore[arg-type]
    out = apply_table(req, table)
    spans = out.resource_spans[0].scope_spans[0].spans
    assert [s.name for s in spans] == ["login"]
    attrs = {kv.key: kv.value for kv in spans[0].attributes}
    assert attrs["password"].string_value == "<SECRET>"
    assert attrs["retries"].WhichOneof("value") == "int_value" and attrs["retries"].int_value == 3
    assert attrs["ok"].WhichOneof("value") == "bool_value"
    assert spans[0].status.message == "bad password <SECRET>"


def test_ingest_chain_runs_before_the_bus(tmp_path: Path) -> None:
    cfg = parse(
        {
            "receivers": {"otlp": {"grpc": {"endpoint": "127.0.0.1:0"}}},
            "processors": {"test_mask": {}},
            "sinks": {"parquet": {"path": str(tmp_path / "lake")}},
            "pipelines": {"traces": {"ingest": ["test_mask"], "process": []}},
            "telemetry": {"endpoint": None},
        },
        "t.yaml",
        env={},
    )
    svc = Service(cfg)
    published: list[bytes] = []
    real_publish = svc.publisher.publish  # type: ignore[union-attr]

    def spy(request, raw, spans):  # type: ignore[no-untyped-def]
        published.append(request.SerializeToString())
        real_publish(request, raw, spans)

    svc.publisher.publish = spy  # type: ignore[union-attr,method-assign]
    svc.start()
    try:
        assert svc.grpc is not None
        with grpc.insecure_channel(svc.grpc.address) as ch:
            ch.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)(
                _request().SerializeToString(), timeout=10
            )
    finally:
        svc.stop()
    assert published and all(b"hunter2" not in m for m in published)  # never on the bus
    rows = (
        connect(tmp_path / "lake")
        .execute("select name, attributes['password'], attributes['retries'], status_message from spans")
        .fetchall()
    )
    assert rows == [("login", "<SECRET>", "3", "bad password <SECRET>")]


def test_stateful_processors_are_refused_in_ingest() -> None:
    with pytest.raises(ConfigError, match=r"pipelines\.traces\.ingest\.0: processor 'test_hold' holds spans"):
        parse(
            {"processors": {"test_hold": {}}, "pipelines": {"traces": {"ingest": ["test_hold"]}}},
            "t.yaml",
            env={},
        )


def test_ingest_chain_reads_raw_bytes_like_the_parsed_request() -> None:
    """The receiver hands the ingest chain the request's bytes too (the columnar decode); both reads agree."""
    chain = IngestChain([("mask", _Mask(_MaskConfig(), None))], Normalizer())  # type: ignore[arg-type]
    for body in build_requests(40, seed=2):
        from_raw = chain.apply(ExportTraceServiceRequest.FromString(body), body)
        from_parsed = chain.apply(ExportTraceServiceRequest.FromString(body))
        assert from_raw == from_parsed
