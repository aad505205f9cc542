"""Span attributes from the wire to Arrow columns without a Python object per attribute.

Attributes are most of a span's decode cost: through the protobuf message API every attribute
costs a KeyValue, an AnyValue and a string object, about 1 µs. So the worker parses requests with
`RawAttributesRequest`, the OTLP schema with one change: `Span.attributes` is declared
`repeated bytes` (wire-compatible with `repeated KeyValue`), so each attribute arrives as its
serialized KeyValue. `key_value_columns` then reads keys and values for all of them at once
with numpy and lets Arrow copy the strings.

Only the canonical encodings are read this way: key field first, then a value holding a string,
int or bool, as every OTLP SDK writes them. Anything else (doubles, arrays, maps, bytes, unknown
fields, an empty key that proto3 leaves out) goes through the protobuf `KeyValue` and
`any_value_to_str`, so both paths produce the same strings (pipeline/otlp/test_attributes.py
compares them on random attributes). Malformed attribute bytes or invalid UTF-8 raise
`DecodeError`, as the protobuf parser would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import FileDescriptor
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

_REQUEST = "opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest"


def request_class_with_bytes(message: str, field: str) -> type[Any]:
    """ExportTraceServiceRequest in a private descriptor pool, with `message.field` (a repeated message
    field of the trace.v1 package) declared `repeated bytes`: the same wire format, read unparsed.
    A Message subclass built at run time, so a type checker knows none of its fields (hence Any)."""
    pool = descriptor_pool.DescriptorPool()
    files: list[descriptor_pb2.FileDescriptorProto] = []

    def add(fd: FileDescriptor) -> None:  # dependencies first
        if any(f.name == fd.name for f in files):
            return
        for dep in fd.dependencies:
            add(dep)
        proto = descriptor_pb2.FileDescriptorProto()
        fd.CopyToProto(proto)
        files.append(proto)

    add(ExportTraceServiceRequest.DESCRIPTOR.file)
    for proto in files:
        for msg in proto.message_type:
            if proto.package == "opentelemetry.proto.trace.v1" and msg.name == message:
                for f in msg.field:
                    if f.name == field:
                        f.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
                        f.ClearField("type_name")
        pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(_REQUEST))


RawAttributesRequest = request_class_with_bytes("Span", "attributes")

# AnyValue field tags as the first byte of the value
_TAG_STRING = 0x0A  # field 1, length-delimited
_TAG_BOOL = 0x10  # field 2, varint
_TAG_INT = 0x18  # field 3, varint
_TAG_DOUBLE = 0x21  # field 4, fixed64
_TAG_ARRAY = 0x2A  # field 5, length-delimited ArrayValue
_PAD = bytes(16)  # reads past the last blob land in zeros, which end any varint


def read_varints(buf: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Varints starting at `pos`: their values (uint64) and the position after each."""
    b = buf[pos]
    value = (b & 0x7F).astype(np.uint64)
    after = pos + 1
    more = np.flatnonzero(b & 0x80)
    shift = 7
    while len(more) and shift < 70:
        b = buf[after[more]]
        value[more] |= (b & 0x7F).astype(np.uint64) << np.uint64(shift)
        after[more] += 1
        more = more[(b & 0x80) != 0]
        shift += 7
    return value, after


def read_fixed64(buf: np.ndarray, pos: np.ndarray, dtype: str) -> np.ndarray:
    """The 8 little-endian bytes at each of `pos`, as `dtype` ("<u8" fixed64, "<f8" double)."""
    return buf[pos[:, None] + np.arange(8)].copy().view(dtype).ravel()


def key_value_columns(
    blobs: Sequence[bytes], value_to_str: Callable[[AnyValue], str | None]
) -> tuple[pa.StringArray, pa.StringArray]:
    """Keys and values (strings as stored in the lake's maps) of serialized KeyValues, in order.

    `value_to_str` is how the protobuf path renders an AnyValue; it handles what is not canonical."""
    n = len(blobs)
    if n == 0:
        return pa.array([], pa.string()), pa.array([], pa.string())
    data = b"".join([*blobs, _PAD])
    lens = np.fromiter(map(len, blobs), np.int64, count=n)
    end = np.cumsum(lens)
    return key_value_columns_at(data, np.frombuffer(data, np.uint8), end - lens, end, value_to_str)


def key_value_columns_at(
    data: bytes,
    buf: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    value_to_str: Callable[[AnyValue], str | None],
) -> tuple[pa.StringArray, pa.StringArray]:
    """`key_value_columns` of the KeyValues at data[start[i]:end[i]]: in order, not overlapping, with
    at least 16 zero bytes after the last (`buf` is `data` as uint8)."""
    n = len(start)
    if n == 0:
        return pa.array([], pa.string()), pa.array([], pa.string())
    lens = end - start

    # KeyValue: 0x0a <len> key [0x12 <len> AnyValue]. Positions that fail a check are reset to
    # `start` so that later reads stay inside the buffer.
    ok = (lens >= 2) & (buf[start] == _TAG_STRING)
    klen, ks = read_varints(buf, start + 1)
    ke = ks + klen.astype(np.int64)
    ok &= ke <= end
    ke = np.where(ok, ke, start)
    has_value = ok & (ke < end)
    ok &= ~has_value | (buf[ke] == 0x12)
    vlen, vs = read_varints(buf, ke + 1)
    ok &= ~has_value | (vs + vlen.astype(np.int64) == end)
    vs = np.where(has_value & ok, vs, ke)
    has_any = has_value & ok & (vs < end)  # an empty AnyValue is a null value

    # AnyValue: 0x0a <len> string | 0x10 bool | 0x18 int | 0x21 double, and nothing after it
    tag = np.where(has_any, buf[vs], 0)
    num, after = read_varints(buf, vs + 1)
    is_str = has_any & (tag == _TAG_STRING)
    ss = after
    is_str &= ss + num.astype(np.int64) == end
    is_num = has_any & ((tag == _TAG_BOOL) | (tag == _TAG_INT)) & (after == end)
    is_double = has_any & (tag == _TAG_DOUBLE) & (vs + 9 == end)
    # arrays of plain strings (gen_ai.response.finish_reasons and the like) are rendered on columns too
    arrays_at, arrays_json = _string_arrays(buf, np.flatnonzero(has_any & (tag == _TAG_ARRAY)), vs, end)
    is_array = np.zeros(n, bool)
    is_array[arrays_at] = True
    ok &= ~has_any | is_str | is_num | is_double | is_array
    is_null = ok & ~has_any

    # One binary array whose slices alternate between the strings we want and the bytes between
    # them; `take` of the wanted slices has Arrow copy them into fresh columns.
    ks = np.where(ok, ks, start)
    ke = np.where(ok, ke, start)
    ss = np.where(is_str, ss, ke)
    se = np.where(is_str, end, ke)
    bounds = np.empty(4 * n + 1, np.int64)
    bounds[0:-1:4], bounds[1:-1:4], bounds[2:-1:4], bounds[3:-1:4] = ks, ke, ss, se
    bounds[-1] = len(data)
    segments = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), 4 * n, [None, pa.py_buffer(bounds), pa.py_buffer(data)]
    )

    # Everything that is not a string value takes the place of its (empty) slice.
    positions: list[np.ndarray] = []
    rendered: list[pa.Array] = []
    is_int = is_num & (tag == _TAG_INT)
    if is_int.any():
        positions.append(np.flatnonzero(is_int))
        rendered.append(pa.array(num[is_int].view(np.int64)).cast(pa.string()))
    is_bool = is_num & (tag == _TAG_BOOL)
    if is_bool.any():
        positions.append(np.flatnonzero(is_bool))
        rendered.append(pa.array(np.where(num[is_bool] != 0, "true", "false").tolist(), pa.string()))
    if is_double.any():
        at = np.flatnonzero(is_double)
        doubles = read_fixed64(buf, vs[at] + 1, "<f8")
        positions.append(at)
        rendered.append(pa.array([_json_double(x) for x in doubles.tolist()], pa.string()))
    if len(arrays_at):
        positions.append(arrays_at)
        rendered.append(arrays_json)
    if is_null.any():
        positions.append(np.flatnonzero(is_null))
        rendered.append(pa.nulls(len(positions[-1]), pa.string()))
    odd = np.flatnonzero(~ok)
    if len(odd):
        parsed = [KeyValue.FromString(data[start[i] : end[i]]) for i in odd]
        positions.append(odd)
        rendered.append(pa.array([value_to_str(kv.value) for kv in parsed], pa.string()))
        keys = _take(segments, 0, [odd], [pa.array([kv.key for kv in parsed], pa.string())])
    else:
        keys = _take(segments, 0, [], [])
    values = _take(segments, 2, positions, rendered)
    return keys, values


def _string_arrays(buf: np.ndarray, rows: np.ndarray, vs: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, pa.Array]:
    """Of the KeyValues `rows` (an ArrayValue at vs..end), those whose array holds only strings that JSON
    writes verbatim, and their JSON text as `any_value_to_str` writes it: ["a","b"]. Others are left out."""
    if len(rows) == 0:
        return rows, pa.array([], pa.string())
    alen, a_start = read_varints(buf, vs[rows] + 1)
    a_end = end[rows]
    good = a_start + alen.astype(np.int64) == a_end
    # ArrayValue: (0x0a <len> AnyValue(0x0a <len> string))*, read one element per round
    cursor = np.where(good, a_start, a_end)
    starts: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    owners: list[np.ndarray] = []
    active = np.flatnonzero(good & (cursor < a_end))
    while len(active):
        pos = cursor[active]
        elen, e_start = read_varints(buf, pos + 1)
        e_start = np.where(e_start < a_end[active], e_start, pos)  # past the array: fails below, read safely
        e_end = e_start + elen.astype(np.int64)
        slen, s_start = read_varints(buf, e_start + 1)
        s_end = s_start + slen.astype(np.int64)
        fine = (buf[pos] == 0x0A) & (buf[e_start] == _TAG_STRING) & (s_end == e_end) & (e_end <= a_end[active])
        good[active[~fine]] = False
        active = active[fine]
        starts.append(s_start[fine])
        ends.append(s_end[fine])
        owners.append(active)
        cursor[active] = e_end[fine]
        active = active[cursor[active] < a_end[active]]
    if starts:
        s_all, e_all, own = np.concatenate(starts), np.concatenate(ends), np.concatenate(owners)
        lengths = e_all - s_all
        # bytes JSON would escape: control characters, '"' and '\'
        byte_at = np.repeat(s_all - np.r_[0, np.cumsum(lengths)[:-1]], lengths) + np.arange(lengths.sum())
        escaped = (buf[byte_at] < 0x20) | (buf[byte_at] == 0x22) | (buf[byte_at] == 0x5C)
        if escaped.any():
            good[own[np.repeat(np.arange(len(s_all)), lengths)[escaped]]] = False
        keep = good[own]
        order = np.lexsort((np.concatenate([np.full(len(x), i) for i, x in enumerate(starts)]), own))
        order = order[keep[order]]
        s_all, e_all, own = s_all[order], e_all[order], own[order]
    else:
        s_all = e_all = own = np.zeros(0, np.int64)
    chosen = np.flatnonzero(good)
    counts = np.bincount(own, minlength=len(rows))[chosen]
    offsets = np.zeros(len(chosen) + 1, np.int32)
    np.cumsum(counts, out=offsets[1:])
    elements = strings_at(buf, s_all, e_all)
    lists = pa.ListArray.from_arrays(pa.array(offsets), elements)
    joined = pc.binary_join_element_wise('["', pc.binary_join(lists, '","'), '"]', "")
    text = pc.if_else(pa.array(counts == 0), pa.scalar("[]"), joined)
    return rows[chosen], text


def strings_at(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> pa.StringArray:
    """UTF-8 strings at buf[starts[i]:ends[i]] (any order), copied out with numpy; DecodeError if one is not."""
    lengths = ends - starts
    offsets = np.zeros(len(starts) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    index = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
    return _utf8(
        pa.LargeBinaryArray.from_buffers(
            pa.large_binary(), len(starts), [None, pa.py_buffer(offsets), pa.py_buffer(buf[index].tobytes())]
        )
    )


def _take(segments: pa.Array, slot: int, positions: list[np.ndarray], rendered: list[pa.Array]) -> pa.Array:
    """Slice `slot` of every KeyValue's four segments, except the rows at `positions[i]`, which come
    from `rendered[i]`. One take, so string bytes are copied once."""
    n = len(segments) // 4
    index = np.arange(slot, 4 * n, 4)
    base = 4 * n
    for at in positions:
        index[at] = base + np.arange(len(at))
        base += len(at)
    chunks = [segments, *(r.cast(pa.large_binary()) for r in rendered)]
    return _utf8(pa.chunked_array(chunks, pa.large_binary()).take(pa.array(index)).combine_chunks())


def _json_double(x: float) -> str:
    """A double as any_value_to_str writes it (json.dumps)."""
    if x != x:
        return "NaN"
    if x in (float("inf"), float("-inf")):
        return "Infinity" if x > 0 else "-Infinity"
    return repr(x)


def _utf8(arr: pa.Array) -> pa.StringArray:
    """Binary → string. Keys and string values are UTF-8 by the protocol, which the protobuf parser
    checks for every other string; bad bytes fail the batch the same way."""
    try:
        return arr.cast(pa.large_string()).cast(pa.string())
    except pa.ArrowInvalid:
        raise DecodeError("an attribute key or string value is not valid UTF-8") from None
