"""The columnar attribute reader against the protobuf message API, on random and odd encodings."""

from __future__ import annotations

import math
import random

import pytest
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList

from pipeline.otlp.attributes import RawAttributesRequest, key_value_columns
from pipeline.otlp.decode import any_value_to_str

WORDS = ["", "a", "gen_ai.usage.input_tokens", "é—ü", "🙂" * 40, "x" * 200, "x" * 20000, 'q"uote\\', "\x00\n"]


def _random_value(rng: random.Random, depth: int = 0) -> AnyValue:
    kind = rng.choice(["str", "str", "int", "bool", "double", "bytes", "array", "kvlist", "unset"])
    v = AnyValue()
    if kind == "str":
        v.string_value = rng.choice(WORDS)
    elif kind == "int":
        v.int_value = rng.choice([0, 1, -1, 127, 128, 2**31, -(2**63), 2**63 - 1, rng.randrange(-(10**12), 10**12)])
    elif kind == "bool":
        v.bool_value = rng.random() < 0.5
    elif kind == "double":
        specials = [0.0, -0.0, 0.7, 1.0, 1e300, -2.5e-310, math.inf, -math.inf, math.nan]
        v.double_value = rng.choice([*specials, rng.random()])
    elif kind == "bytes":
        v.bytes_value = rng.randbytes(rng.randrange(0, 20))
    elif kind == "array" and depth < 2:
        v.array_value.CopyFrom(ArrayValue(values=[_random_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]))
    elif kind == "kvlist" and depth < 2:
        kvs = [KeyValue(key=rng.choice(WORDS), value=_random_value(rng, depth + 1)) for _ in range(rng.randrange(0, 3))]
        v.kvlist_value.CopyFrom(KeyValueList(values=kvs))
    return v


def _expected(blobs: list[bytes]) -> tuple[list[str], list[str | None]]:
    kvs = [KeyValue.FromString(b) for b in blobs]
    return [kv.key for kv in kvs], [any_value_to_str(kv.value) for kv in kvs]


def _columns(blobs: list[bytes]) -> tuple[list[str], list[str | None]]:
    keys, values = key_value_columns(blobs, any_value_to_str)
    return keys.to_pylist(), values.to_pylist()


@pytest.mark.parametrize("seed", range(20))
def test_random_attributes_read_like_the_protobuf_api(seed: int) -> None:
    rng = random.Random(seed)
    blobs = []
    for _ in range(300):
        kv = KeyValue(key=rng.choice(WORDS))
        if rng.random() < 0.9:
            kv.value.CopyFrom(_random_value(rng))
        blobs.append(kv.SerializeToString())
    assert _columns(blobs) == _expected(blobs)


def test_non_canonical_encodings_fall_back_and_agree() -> None:
    key = b"\x0a\x03abc"
    value = b"\x12\x05\x0a\x03xyz"
    blobs = [
        value + key,  # value before key
        key + value + b"\x18\x01",  # an unknown field after the value
        key + b"\x0a\x01z" + value,  # the key twice: the last wins
        key + b"\x12\x07\x0a\x03xyz\x18\x05",  # a string and an int in one AnyValue: the last wins
        key + b"\x12\x00",  # an empty AnyValue
        key,  # no value at all
        value,  # empty key, left out by proto3
        key + b"\x12\x0b\x21" + bytes(8) + b"\x18\x07",  # a double, then an int
        key + b"\x12\x03\x0a\x80\x00",  # a string length written as a two-byte varint (0)
    ]
    assert _columns(blobs) == _expected(blobs)


def test_truncated_attribute_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        key_value_columns([b"\x0a\x03abc\x12\x09\x0a\x07short"], any_value_to_str)


def test_invalid_utf8_is_a_decode_error_like_the_protobuf_parser() -> None:
    blob = b"\x0a\x01k\x12\x04\x0a\x02\xff\xfe"
    with pytest.raises(DecodeError):
        ExportTraceServiceRequest.FromString(_request_with_attribute(blob))
    with pytest.raises(DecodeError):
        key_value_columns([blob], any_value_to_str)


def _request_with_attribute(blob: bytes) -> bytes:
    req = ExportTraceServiceRequest()
    req.resource_spans.add().scope_spans.add().spans.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="s")
    raw = RawAttributesRequest.FromString(req.SerializeToString())
    raw.resource_spans[0].scope_spans[0].spans[0].attributes.append(blob)
    return raw.SerializeToString()


def test_raw_request_is_wire_compatible() -> None:
    req = ExportTraceServiceRequest()
    span = req.resource_spans.add().scope_spans.add().spans.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="s")
    span.attributes.add(key="k", value=AnyValue(int_value=7))
    raw = RawAttributesRequest.FromString(req.SerializeToString())
    (blob,) = raw.resource_spans[0].scope_spans[0].spans[0].attributes
    assert KeyValue.FromString(blob) == span.attributes[0]
    assert ExportTraceServiceRequest.FromString(raw.SerializeToString()) == req


def test_string_arrays_render_like_json() -> None:
    def array(*items: str | AnyValue) -> bytes:
        values = [i if isinstance(i, AnyValue) else AnyValue(string_value=i) for i in items]
        return KeyValue(key="k", value=AnyValue(array_value=ArrayValue(values=values))).SerializeToString()

    blobs = [
        array("stop"),
        array("stop", "length", ""),
        array(),
        array("é—ü", "🙂"),
        array('say "hi"', "back\\slash", "tab\there"),  # JSON escapes these: the protobuf path renders them
        array("a", AnyValue(int_value=1)),
        array(AnyValue()),  # an element with no value
        array("x" * 300),
    ]
    assert _columns(blobs) == _expected(blobs)
    assert _columns(blobs)[1][:3] == ['["stop"]', '["stop","length",""]', "[]"]
