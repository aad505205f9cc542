"""OTLP protobuf messages → one Arrow table with the `spans` schema.

The decode for parsed requests, and the reference for `pipeline.otlp.wire`, which the worker uses
on serialized ones and which hands back here whatever it does not read itself. Span fields go
through the protobuf API into flat column lists (a Python loop per span, no per-span dicts); span
attributes are read on columns by `pipeline.otlp.attributes`; map/list columns are built from
offsets. Typed LLM columns are derived afterwards, on columns, by `core.conventions.normalize`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from google.protobuf.message import Message
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from core import schema
from pipeline.otlp.attributes import RawAttributesRequest, key_value_columns

SPAN_KINDS, STATUS_CODES = schema.SPAN_KINDS, schema.STATUS_CODES


def any_value_to_python(v: AnyValue) -> object:
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value_to_python(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value_to_python(kv.value) for kv in v.kvlist_value.values}
    if which == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    return getattr(v, which)


def any_value_to_str(v: AnyValue) -> str | None:
    """Attribute value as stored in the lake's string maps: strings raw, everything else JSON."""
    s = v.string_value
    if s:
        return s
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "string_value":
        return ""
    if which == "int_value":
        return str(v.int_value)
    if which == "bool_value":
        return "true" if v.bool_value else "false"
    if which == "double_value":
        return json.dumps(v.double_value)
    return _JSON.encode(any_value_to_python(v))


_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class SourcedRequest:
    """One bus message: a parsed request and where it came from (`lake_source` lineage)."""

    request: Message  # an ExportTraceServiceRequest, or one parsed as RawAttributesRequest
    source: str


class MapBuilder:
    """Accumulates map<string,string> rows as flat keys/values plus offsets."""

    __slots__ = ("keys", "offsets", "values")

    def __init__(self) -> None:
        self.offsets: list[int] = [0]
        self.keys: list[str] = []
        self.values: list[str | None] = []

    def add_kvs(self, kvs: Iterable) -> None:
        keys, values = self.keys, self.values
        for kv in kvs:
            keys.append(kv.key)
            v = kv.value
            s = v.string_value
            values.append(s if s else any_value_to_str(v))
        self.offsets.append(len(keys))

    def add_resource(self, resource: Resource) -> str | None:
        """Add a resource's attributes as one row; returns its service.name."""
        service = None
        for kv in resource.attributes:
            if kv.key == "service.name":
                service = any_value_to_str(kv.value)
        self.add_kvs(resource.attributes)
        return service

    def build(self) -> pa.MapArray:
        return pa.MapArray.from_arrays(
            pa.array(self.offsets, pa.int32()),
            pa.array(self.keys, pa.string()),
            pa.array(self.values, pa.string()),
        )


_INT64_MAX = pa.scalar(2**63 - 1, pa.uint64())


def nanoseconds(values: Sequence[int] | np.ndarray) -> pa.Array:
    """OTLP's fixed64 nanoseconds as int64. A value past 2262-04-11 (a broken clock, a fuzzer) is clamped
    there (DuckDB reads it as infinity) instead of failing the whole batch: the span lands, visibly wrong."""
    arr = pa.array(values, pa.uint64())
    if pc.any(pc.greater(arr, _INT64_MAX)).as_py():
        arr = pc.min_element_wise(arr, _INT64_MAX)
    return arr.cast(pa.int64())


def _hex_ids(ids: list[bytes], empty_is_null: bool = False) -> pa.Array:
    """Hex strings of binary ids, encoded in one `bytes.hex` call over all of them."""
    lens = np.fromiter(map(len, ids), np.int32, count=len(ids))
    offsets = np.zeros(len(ids) + 1, np.int32)
    np.cumsum(lens * 2, out=offsets[1:])
    validity = None
    if empty_is_null and not lens.all():
        validity = pa.array(lens != 0).buffers()[1]
    text = b"".join(ids).hex().encode()
    return pa.StringArray.from_buffers(len(ids), pa.py_buffer(offsets), pa.py_buffer(text), validity)


def raw_attributes_request(request: Message) -> Any:
    """The request as `RawAttributesRequest` (what the worker parses bus messages into; Any to a type
    checker, as that class is built at run time)."""
    if isinstance(request, RawAttributesRequest):
        return request
    return RawAttributesRequest.FromString(request.SerializeToString())


def decode(requests: Iterable[SourcedRequest]) -> pa.Table:
    """Spans of OTLP requests as one table; typed LLM columns are left null for `normalize`.

    Requests parsed as `RawAttributesRequest` skip a re-encode; others are converted first."""
    trace_ids: list[bytes] = []
    span_ids: list[bytes] = []
    parents: list[bytes] = []
    names: list[str] = []
    kinds: list[int] = []
    status_codes: list[int] = []
    status_messages: list[str | None] = []
    starts: list[int] = []
    ends: list[int] = []
    resource_of_span: list[int] = []
    scopes: list[str | None] = []
    sources: list[str] = []
    attr_blobs: list[bytes] = []
    attr_counts: list[int] = []
    services: list[str | None] = []
    res_attrs = MapBuilder()
    ev_offsets: list[int] = [0]
    events: list[Span.Event] = []
    ln_offsets: list[int] = [0]
    links: list[Span.Link] = []

    for item in requests:
        source = item.source
        for rs in raw_attributes_request(item.request).resource_spans:
            resource = len(services)
            services.append(res_attrs.add_resource(rs.resource))
            for ss in rs.scope_spans:
                scope = ss.scope.name or None
                for sp in ss.spans:
                    trace_ids.append(sp.trace_id)
                    span_ids.append(sp.span_id)
                    parents.append(sp.parent_span_id)
                    names.append(sp.name)
                    kinds.append(sp.kind)
                    st = sp.status
                    status_codes.append(st.code)
                    status_messages.append(st.message or None)
                    starts.append(sp.start_time_unix_nano)
                    ends.append(sp.end_time_unix_nano)
                    resource_of_span.append(resource)
                    scopes.append(scope)
                    sources.append(source)
                    attributes = sp.attributes
                    attr_blobs.extend(attributes)
                    attr_counts.append(len(attributes))
                    events.extend(sp.events)
                    ev_offsets.append(len(events))
                    links.extend(sp.links)
                    ln_offsets.append(len(links))

    n = len(trace_ids)
    attr_offsets = np.zeros(n + 1, np.int32)
    np.cumsum(np.fromiter(attr_counts, np.int32, count=n), out=attr_offsets[1:])
    attr_keys, attr_values = key_value_columns(attr_blobs, any_value_to_str)
    which_resource = pa.array(resource_of_span, pa.int32())
    return spans_table(
        starts,
        ends,
        {
            "trace_id": _hex_ids(trace_ids),
            "span_id": _hex_ids(span_ids),
            "parent_span_id": _hex_ids(parents, empty_is_null=True),
            "name": pa.array(names, pa.string()),
            "kind": enum_names(kinds, SPAN_KINDS),
            "status_code": enum_names(status_codes, STATUS_CODES),
            "status_message": pa.array(status_messages, pa.string()),
            "service_name": pa.array(services, pa.string()).take(which_resource),
            "scope_name": pa.array(scopes, pa.string()),
            "attributes": pa.MapArray.from_arrays(pa.array(attr_offsets), attr_keys, attr_values),
            "resource_attributes": res_attrs.build().take(which_resource),
            "events": events_column(ev_offsets, events),
            "links": links_column(ln_offsets, links),
            "lake_source": pa.array(sources, pa.string()),
        },
    )


def spans_table(starts: Sequence[int] | np.ndarray, ends: Sequence[int] | np.ndarray, columns: dict) -> pa.Table:
    """The `spans` schema from decoded columns plus OTLP's start/end nanoseconds; what is not given is null."""
    start_arr = nanoseconds(starts)
    end_arr = nanoseconds(ends)
    # unsafe cast: a nonsense span (start 0, end now) has a difference beyond float64's exact integers
    duration = pc.divide(pc.cast(pc.subtract(end_arr, start_arr), pa.float64(), safe=False), 1e6)
    columns = {
        **columns,
        "start_time": start_arr.cast(schema.TS),
        "end_time": end_arr.cast(schema.TS),
        "duration_ms": duration,
    }
    n = len(start_arr)
    arrays = [columns[f.name] if f.name in columns else pa.nulls(n, f.type) for f in schema.SPANS]
    return pa.Table.from_arrays(arrays, schema=schema.SPANS)


def events_column(offsets: Sequence[int] | np.ndarray, events: Iterable[Span.Event]) -> pa.ListArray:
    """The `events` column: each span's events are events[offsets[i]:offsets[i + 1]]."""
    times: list[int] = []
    names: list[str] = []
    attributes = MapBuilder()
    for ev in events:
        times.append(ev.time_unix_nano)
        names.append(ev.name)
        attributes.add_kvs(ev.attributes)
    children = [nanoseconds(times).cast(schema.TS), pa.array(names, pa.string()), attributes.build()]
    return _list_of_structs(offsets, children, schema.EVENT)


def links_column(offsets: Sequence[int] | np.ndarray, links: Iterable[Span.Link]) -> pa.ListArray:
    """The `links` column: each span's links are links[offsets[i]:offsets[i + 1]]."""
    trace_ids: list[str] = []
    span_ids: list[str] = []
    attributes = MapBuilder()
    for ln in links:
        trace_ids.append(ln.trace_id.hex())
        span_ids.append(ln.span_id.hex())
        attributes.add_kvs(ln.attributes)
    children = [pa.array(trace_ids, pa.string()), pa.array(span_ids, pa.string()), attributes.build()]
    return _list_of_structs(offsets, children, schema.LINK)


def _list_of_structs(
    offsets: Sequence[int] | np.ndarray, children: list[pa.Array], type_: pa.StructType
) -> pa.ListArray:
    return pa.ListArray.from_arrays(
        pa.array(offsets, pa.int32()), pa.StructArray.from_arrays(children, fields=list(type_))
    )


def enum_names(codes: Sequence[int] | np.ndarray, names: tuple[str, ...]) -> pa.Array:
    """Enum numbers → names; a number the protocol does not define reads as the first (UNSPECIFIED/UNSET)."""
    arr = np.array(codes, np.int64)
    arr[(arr < 0) | (arr >= len(names))] = 0
    return pa.array(names, pa.string()).take(pa.array(arr))
