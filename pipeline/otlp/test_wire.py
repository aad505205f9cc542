"""The columnar wire reader against the protobuf-based decode: same table, or NotCanonical, never another table."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from pipeline.demo import build_requests
from pipeline.otlp.decode import SourcedRequest, decode
from pipeline.otlp.test_attributes import WORDS, _random_value
from pipeline.otlp.wire import NotCanonical, decode_bodies


def _reference(bodies: list[bytes], sources: list[str]) -> pa.Table:
    return decode(
        [SourcedRequest(ExportTraceServiceRequest.FromString(b), s) for b, s in zip(bodies, sources, strict=True)]
    )


def _same(bodies: list[bytes]) -> None:
    sources = [f"test:{i}" for i in range(len(bodies))]
    got, want = decode_bodies(bodies, sources), _reference(bodies, sources)
    for name in want.column_names:
        assert got.column(name).equals(want.column(name)), name
    assert got.equals(want)


def test_demo_traffic_reads_the_same() -> None:
    _same(build_requests(300, seed=5))


def _random_span(rng: random.Random, sp: Span) -> None:
    sp.trace_id = rng.randbytes(16)
    sp.span_id = rng.randbytes(8)
    if rng.random() < 0.7:
        sp.parent_span_id = rng.randbytes(8)
    if rng.random() < 0.9:
        sp.name = rng.choice(WORDS)
    if rng.random() < 0.3:
        sp.trace_state = "k=v"
    sp.kind = rng.choice([0, 1, 2, 3, 4, 5, 9])  # 9: not an OTLP kind
    if rng.random() < 0.9:
        sp.start_time_unix_nano = rng.choice([0, 1, 1_700_000_000_000_000_000, 2**64 - 1])
        sp.end_time_unix_nano = rng.choice([0, 1_700_000_000_000_000_001, 2**63 + 5])
    for _ in range(rng.randrange(0, 6)):
        kv = sp.attributes.add(key=rng.choice(WORDS))
        if rng.random() < 0.9:
            kv.value.CopyFrom(_random_value(rng))
    for _ in range(rng.choice([0, 0, 1, 2])):
        ev = sp.events.add(time_unix_nano=rng.randrange(0, 2**62), name=rng.choice(WORDS))
        ev.attributes.append(KeyValue(key="exception.message", value=AnyValue(string_value=rng.choice(WORDS))))
    for _ in range(rng.choice([0, 0, 1])):
        sp.links.add(trace_id=rng.randbytes(16), span_id=rng.randbytes(8)).attributes.append(
            KeyValue(key="l", value=AnyValue(int_value=3))
        )
    if rng.random() < 0.7:
        sp.status.code = rng.choice([0, 1, 2, 7])
        if rng.random() < 0.5:
            sp.status.message = rng.choice(WORDS)
    sp.dropped_attributes_count = rng.choice([0, 3])
    sp.flags = rng.choice([0, 0x100])


@pytest.mark.parametrize("seed", range(12))
def test_random_requests_read_the_same(seed: int) -> None:
    rng = random.Random(seed)
    bodies = []
    for _ in range(rng.randrange(1, 4)):
        req = ExportTraceServiceRequest()
        for _ in range(rng.randrange(0, 3)):
            rs = req.resource_spans.add()
            if rng.random() < 0.8:
                rs.resource.attributes.add(key="service.name", value=AnyValue(string_value=rng.choice(WORDS)))
            for _ in range(rng.randrange(0, 3)):
                ss = rs.scope_spans.add()
                if rng.random() < 0.7:
                    ss.scope.name = rng.choice(WORDS)
                for _ in range(rng.randrange(0, 30)):
                    _random_span(rng, ss.spans.add())
        bodies.append(req.SerializeToString())
    _same(bodies)


def _one_span(raw_span: bytes) -> bytes:
    """A request holding one span given as wire bytes (ScopeSpans.spans = field 2, wire type 2)."""

    def field(number: int, payload: bytes) -> bytes:
        return _varint(number << 3 | 2) + _varint(len(payload)) + payload

    return field(1, field(2, field(2, raw_span)))


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


TRACE = b"\x0a\x10" + bytes(range(1, 17))
SPAN = b"\x12\x08" + bytes(range(1, 9))
NAME = b"\x2a\x04name"


@pytest.mark.parametrize(
    "raw",
    [
        SPAN + NAME + TRACE,  # fields out of the usual order: still read
        TRACE + SPAN + NAME + b"\xa0\x06\x07",  # an unknown varint field (100): ignored
        TRACE + SPAN + NAME + b"\x2a\x01x",  # the name twice: protobuf keeps the last
        TRACE + SPAN + b"\x7a\x02\x18\x02" + b"\x7a\x02\x12\x00",  # status twice: protobuf merges
        TRACE + b"\x12\x04" + bytes(4),  # a 4-byte span id
        TRACE + SPAN + b"\x30\x96\x01",  # kind 150
        TRACE + SPAN + b"\x3d\x00\x00\x00\x00",  # start_time with the wrong wire type
    ],
)
def test_odd_encodings_read_the_same_or_are_left_to_protobuf(raw: bytes) -> None:
    body = _one_span(raw)
    want = _reference([body], ["s"])
    try:
        got = decode_bodies([body], ["s"])
    except NotCanonical:
        return
    assert got.equals(want)


@pytest.mark.parametrize(
    "body",
    [
        _one_span(TRACE + SPAN + b"\x2a\x09short"),  # a length past the end of the span
        _one_span(TRACE + SPAN + b"\x2a\x02\xff\xfe"),  # a name that is not UTF-8
        b"\x0a\x05\x12\x03\x12\x09",  # a span length past the end of the request
        b"\xff\xff\xff",
    ],
)
def test_broken_input_is_never_read_as_spans(body: bytes) -> None:
    with pytest.raises((NotCanonical, DecodeError)):
        decode_bodies([body], ["s"])


def test_mutated_bytes_give_the_same_table_or_a_decode_error() -> None:
    """Fuzz: flipped, dropped and truncated bytes. Never an unexpected exception, never a different table."""
    rng = random.Random(7)
    base = ExportTraceServiceRequest()
    rs = base.resource_spans.add()
    rs.resource.attributes.add(key="service.name", value=AnyValue(string_value="svc"))
    ss = rs.scope_spans.add()
    for _ in range(6):
        _random_span(rng, ss.spans.add())
    body = base.SerializeToString()
    for _ in range(400):
        mutated = bytearray(body)
        for _ in range(rng.randrange(1, 4)):
            kind = rng.random()
            at = rng.randrange(len(mutated))
            if kind < 0.5:
                mutated[at] = rng.randrange(256)
            elif kind < 0.8:
                del mutated[at]
            else:
                del mutated[at:]
            if not mutated:
                break
        data = bytes(mutated)
        try:
            want = _reference([data], ["s"])
        except DecodeError:
            want = None
        try:
            got = decode_bodies([data], ["s"])
        except (NotCanonical, DecodeError):
            continue
        assert want is not None and got.equals(want)
