"""OTLP export requests → the `spans` table, read from their wire bytes on columns.

The worker's bus messages are serialized `ExportTraceServiceRequest`s. Going through the protobuf
message API costs a Python object per field of every span. Here protobuf parses each request only
down to its resources and scopes (few), with every span left as bytes (`RawSpansRequest`); the
spans of the whole batch are then read from the wire format at once with numpy: `scan` lists the
fields of many messages in lockstep (one round per field position), for the spans and then their
status, and strings are copied out by Arrow. Events and links are few and go through protobuf.

It reads what OTLP encoders write. Anything else (a singular field twice, a wrong wire type,
ids that are not 16/8 bytes, a length past its message) raises `NotCanonical`; a request
protobuf cannot parse, or text that is not UTF-8, raises `DecodeError`. Either way the caller
decodes that batch with `pipeline.otlp.decode.decode`, message by message, which is also the
reference the tests compare this against (pipeline/otlp/test_wire.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from google.protobuf.message import Message
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from core import schema
from pipeline.otlp import decode as reference
from pipeline.otlp.attributes import (
    key_value_columns_at,
    read_fixed64,
    read_varints,
    request_class_with_bytes,
    strings_at,
)

_PAD = bytes(32)  # a tag varint and a length varint can each run 10 bytes past a message's end
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
# bytes after the tag per wire type: fixed sizes; the groups (3, 4) and unused types are negative
_FIXED = np.array([0, 8, 0, -(1 << 40), -(1 << 40), 4, -(1 << 40), -(1 << 40)], np.int64)


class NotCanonical(Exception):
    """The batch holds an encoding this reader leaves to the protobuf parser."""


@dataclass(frozen=True)
class Fields:
    """Every field of a set of messages, round by round: the first field of each, the second, ..."""

    msg: np.ndarray  # which message (index into the scanned ranges)
    number: np.ndarray
    wire: np.ndarray
    start: np.ndarray  # the value's bytes (for LEN, after the length)
    end: np.ndarray
    varint: np.ndarray  # the value of a VARINT field (uint64)

    def of(self, number: int, wire: int, ordered: bool = False) -> Fields:
        """The fields with this number; any of them with another wire type is not OTLP. `ordered`: by
        message and, within one, as written (a repeated field); otherwise in no particular order."""
        at = np.flatnonzero(self.number == number)
        if ordered and len(at):
            at = at[np.argsort(self.msg[at], kind="stable")]  # scan's rounds are in field order
        f = Fields(*(a[at] for a in self._arrays()))
        if (f.wire != wire).any():
            raise NotCanonical(f"field {number} with wire type other than {wire}")
        return f

    def single(self, number: int, wire: int) -> Fields:
        """A singular field, at most once per message (protobuf would merge or overwrite repeats)."""
        f = self.of(number, wire)
        if len(f.msg) and np.bincount(f.msg).max() > 1:
            raise NotCanonical(f"field {number} repeated in one message")
        return f

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return (self.msg, self.number, self.wire, self.start, self.end, self.varint)


def scan(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> Fields:
    """All fields of the messages at buf[starts[i]:ends[i]], in lockstep: round k reads the k-th field
    of every message that has one."""
    parts: list[tuple[np.ndarray, ...]] = []
    cursor = starts.astype(np.int64)
    active = np.flatnonzero(cursor < ends)
    while len(active):
        pos = cursor[active]
        end = ends[active]
        tag, after_tag = read_varints(buf, pos)
        wire = (tag & np.uint64(7)).astype(np.int8)
        number = (tag >> np.uint64(3)).astype(np.int64)
        value, after_value = read_varints(buf, after_tag)
        length = np.minimum(value, np.uint64(1 << 40)).astype(np.int64)
        vstart = np.where(wire == _LEN, after_value, after_tag)
        vend = np.where(
            wire == _VARINT, after_value, np.where(wire == _LEN, after_value + length, after_tag + _FIXED[wire])
        )
        if (vend < after_tag).any() or (vend > end).any() or (number == 0).any() or (after_tag > end).any():
            raise NotCanonical("a field runs past its message, or has a wire type OTLP does not use")
        parts.append((active, number, wire, vstart, vend, np.where(wire == _VARINT, value, 0)))
        cursor[active] = vend
        active = active[vend < end]
    if not parts:
        empty = np.zeros(0, np.int64)
        return Fields(empty, empty, empty.astype(np.int8), empty, empty, empty.astype(np.uint64))
    return Fields(*(np.concatenate(c) for c in zip(*parts, strict=True)))


_HEX = np.frombuffer(b"".join(f"{i:02x}".encode() for i in range(256)), np.uint8).reshape(256, 2)


def _hex(buf: np.ndarray, starts: np.ndarray, width: int) -> pa.StringArray:
    """Lowercase hex of the `width`-byte ids at `starts`."""
    n = len(starts)
    raw = buf[starts[:, None] + np.arange(width)]
    text = _HEX[raw].reshape(n, 2 * width)
    offsets = np.arange(n + 1, dtype=np.int32) * (2 * width)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(text.tobytes()))


def _texts(buf: np.ndarray, owners: np.ndarray, fields: Fields, empty: np.ndarray) -> pa.StringArray:
    """Per message i, the string in the singular `fields` that `owners` assigns to it; "" where it has
    none (`empty[i]`: any position inside message i)."""
    starts, ends = empty.copy(), empty.copy()
    starts[owners], ends[owners] = fields.start, fields.end
    return strings_at(buf, starts, ends)


def _by_message(single: Fields, n: int) -> np.ndarray:
    """Start positions of a singular field present in all n messages, in message order."""
    at = np.empty(n, np.int64)
    at[single.msg] = single.start
    return at


def _offsets(inner: Fields, n: int) -> np.ndarray:
    """List offsets over n messages of a repeated field (`inner`, ordered by message)."""
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(np.bincount(inner.msg, minlength=n), out=offsets[1:])
    return offsets


# The request down to ScopeSpans is parsed by protobuf (a few resources and scopes per request); each
# span arrives as its serialized bytes, which `scan` reads.
RawSpansRequest = request_class_with_bytes("ScopeSpans", "spans")


def decode_bodies(bodies: Sequence[bytes], sources: Sequence[str]) -> pa.Table:
    """Spans of serialized export requests, one source (lake_source) per request.

    Raises DecodeError for a request protobuf cannot parse, NotCanonical for what this reader leaves
    to `pipeline.otlp.decode.decode`."""
    blobs: list[bytes] = []
    resource_of_span: list[int] = []
    scope_of_span: list[int] = []
    source_of_span: list[str] = []
    services: list[str | None] = []
    scope_names: list[str | None] = []
    res_attrs = reference.MapBuilder()
    for body, source in zip(bodies, sources, strict=True):
        for rs in RawSpansRequest.FromString(body).resource_spans:
            resource = len(services)
            services.append(res_attrs.add_resource(rs.resource))
            for ss in rs.scope_spans:
                spans = ss.spans
                k = len(spans)
                blobs.extend(spans)
                scope_of_span.extend([len(scope_names)] * k)
                scope_names.append(ss.scope.name or None)
                resource_of_span.extend([resource] * k)
                source_of_span.extend([source] * k)
    n = len(blobs)
    if n == 0:
        return schema.empty("spans")
    data = b"".join([*blobs, _PAD])
    buf = np.frombuffer(data, np.uint8)
    lens = np.fromiter(map(len, blobs), np.int64, count=n)
    sp_end = np.cumsum(lens)
    sp_start = sp_end - lens
    del blobs

    f = scan(buf, sp_start, sp_end)
    trace = f.single(1, _LEN)
    span = f.single(2, _LEN)
    parent = f.single(4, _LEN)
    if len(trace.msg) != n or len(span.msg) != n:
        raise NotCanonical("a span without trace_id or span_id")
    if (trace.end - trace.start != 16).any() or (span.end - span.start != 8).any():
        raise NotCanonical("an id of unusual length")
    parent_len = parent.end - parent.start
    if not np.isin(parent_len, (0, 8)).all():
        raise NotCanonical("a parent_span_id of unusual length")
    name = f.single(5, _LEN)
    kind = f.single(6, _VARINT)
    start = f.single(7, _I64)
    end = f.single(8, _I64)
    attrs = f.of(9, _LEN, ordered=True)
    events = f.of(11, _LEN, ordered=True)
    links = f.of(13, _LEN, ordered=True)
    status = f.single(15, _LEN)
    for number, wire in ((3, _LEN), (10, _VARINT), (12, _VARINT), (14, _VARINT), (16, _I32)):
        f.of(number, wire)  # types checked; values not stored

    # parent: 8 bytes → hex; absent or empty → null
    parent_col = pa.nulls(n, pa.string())
    if (parent_len == 8).any():
        where = parent.msg[parent_len == 8]
        index = np.full(n, -1, np.int64)
        index[where] = np.arange(len(where))
        parent_col = _hex(buf, parent.start[parent_len == 8], 8).take(pa.array(index, mask=index < 0))

    names = _texts(buf, name.msg, name, sp_start)

    kinds = np.zeros(n, np.int64)
    kinds[kind.msg] = kind.varint.astype(np.int64)
    starts = np.zeros(n, np.uint64)
    starts[start.msg] = read_fixed64(buf, start.start, "<u8")
    ends = np.zeros(n, np.uint64)
    ends[end.msg] = read_fixed64(buf, end.start, "<u8")

    # status → message (2), code (3)
    st = scan(buf, status.start, status.end)
    message = st.single(2, _LEN)
    code = st.single(3, _VARINT)
    codes = np.zeros(n, np.int64)
    codes[status.msg[code.msg]] = code.varint.astype(np.int64)
    messages = _texts(buf, status.msg[message.msg], message, sp_start)
    messages = pc.if_else(pc.equal(messages, ""), pa.scalar(None, pa.string()), messages)

    keys, values = key_value_columns_at(data, buf, attrs.start, attrs.end, reference.any_value_to_str)
    which_resource = pa.array(resource_of_span, pa.int32())
    return reference.spans_table(
        starts,
        ends,
        {
            "trace_id": _hex(buf, _by_message(trace, n), 16),
            "span_id": _hex(buf, _by_message(span, n), 8),
            "parent_span_id": parent_col,
            "name": names,
            "kind": reference.enum_names(kinds, reference.SPAN_KINDS),
            "status_code": reference.enum_names(codes, reference.STATUS_CODES),
            "status_message": messages,
            "service_name": pa.array(services, pa.string()).take(which_resource),
            "scope_name": pa.array(scope_names, pa.string()).take(pa.array(scope_of_span, pa.int32())),
            "attributes": pa.MapArray.from_arrays(pa.array(_offsets(attrs, n)), keys, values),
            "resource_attributes": res_attrs.build().take(which_resource),
            "events": reference.events_column(_offsets(events, n), _parsed(Span.Event, data, events)),
            "links": reference.links_column(_offsets(links, n), _parsed(Span.Link, data, links)),
            "lake_source": pa.array(source_of_span, pa.string()),
        },
    )


M = TypeVar("M", bound=Message)


def _parsed(message: type[M], data: bytes, fields: Fields) -> Iterator[M]:
    """The protobuf messages in these fields (events, links: few)."""
    for s, e in zip(fields.start.tolist(), fields.end.tolist(), strict=True):
        yield message.FromString(data[s:e])
