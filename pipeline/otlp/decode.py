"""OTLP protobuf → one Arrow table with the `spans` schema.

This is the one place where per-span Python runs. It appends to flat column lists (no per-span
dicts) and builds map/list columns from offsets, which is what keeps the decode floor above
40k spans/s per core (benchmarks/README.md). Typed LLM columns are derived afterwards, on
columns, by `pipeline.conventions.normalize`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from pipeline import schema

SPAN_KINDS = ("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
STATUS_CODES = ("UNSET", "OK", "ERROR")


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
    return json.dumps(any_value_to_python(v), ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class SourcedRequest:
    """One bus message: a parsed request and where it came from (`lake_source` lineage)."""

    request: ExportTraceServiceRequest
    source: str


class _MapBuilder:
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

    def add_flat(self, keys: list[str], values: list[str | None]) -> None:
        self.keys.extend(keys)
        self.values.extend(values)
        self.offsets.append(len(self.keys))

    def build(self) -> pa.MapArray:
        return pa.MapArray.from_arrays(
            pa.array(self.offsets, pa.int32()),
            pa.array(self.keys, pa.string()),
            pa.array(self.values, pa.string()),
        )


_INT64_MAX = pa.scalar(2**63 - 1, pa.uint64())


def _ns(values: list[int]) -> pa.Array:
    """OTLP's fixed64 nanoseconds as int64. A value past 2262-04-11 (a broken clock, a fuzzer) is clamped
    there (DuckDB reads it as infinity) instead of failing the whole batch: the span lands, visibly wrong."""
    arr = pa.array(values, pa.uint64())
    if pc.any(pc.greater(arr, _INT64_MAX)).as_py():
        arr = pc.min_element_wise(arr, _INT64_MAX)
    return arr.cast(pa.int64())


def decode(requests: Iterable[SourcedRequest]) -> pa.Table:
    trace_ids: list[str] = []
    span_ids: list[str] = []
    parents: list[str | None] = []
    names: list[str] = []
    kinds: list[str] = []
    status_codes: list[str] = []
    status_messages: list[str | None] = []
    starts: list[int] = []
    ends: list[int] = []
    services: list[str | None] = []
    scopes: list[str | None] = []
    sources: list[str] = []
    attrs = _MapBuilder()
    res_attrs = _MapBuilder()
    ev_offsets: list[int] = [0]
    ev_times: list[int] = []
    ev_names: list[str] = []
    ev_attrs = _MapBuilder()
    ln_offsets: list[int] = [0]
    ln_trace: list[str] = []
    ln_span: list[str] = []
    ln_attrs = _MapBuilder()

    for item in requests:
        source = item.source
        for rs in item.request.resource_spans:
            r_keys: list[str] = []
            r_values: list[str | None] = []
            service = None
            for kv in rs.resource.attributes:
                r_keys.append(kv.key)
                val = any_value_to_str(kv.value)
                r_values.append(val)
                if kv.key == "service.name":
                    service = val
            for ss in rs.scope_spans:
                scope = ss.scope.name or None
                for sp in ss.spans:
                    trace_ids.append(sp.trace_id.hex())
                    span_ids.append(sp.span_id.hex())
                    p = sp.parent_span_id
                    parents.append(p.hex() if p else None)
                    names.append(sp.name)
                    kinds.append(SPAN_KINDS[sp.kind] if 0 <= sp.kind < 6 else "UNSPECIFIED")
                    st = sp.status
                    status_codes.append(STATUS_CODES[st.code] if 0 <= st.code < 3 else "UNSET")
                    status_messages.append(st.message or None)
                    starts.append(sp.start_time_unix_nano)
                    ends.append(sp.end_time_unix_nano)
                    services.append(service)
                    scopes.append(scope)
                    sources.append(source)
                    attrs.add_kvs(sp.attributes)
                    res_attrs.add_flat(r_keys, r_values)
                    for ev in sp.events:
                        ev_times.append(ev.time_unix_nano)
                        ev_names.append(ev.name)
                        ev_attrs.add_kvs(ev.attributes)
                    ev_offsets.append(len(ev_times))
                    for ln in sp.links:
                        ln_trace.append(ln.trace_id.hex())
                        ln_span.append(ln.span_id.hex())
                        ln_attrs.add_kvs(ln.attributes)
                    ln_offsets.append(len(ln_trace))

    n = len(trace_ids)
    start_arr = _ns(starts)
    end_arr = _ns(ends)
    # unsafe cast: a nonsense span (start 0, end now) has a difference beyond float64's exact integers
    duration = pc.divide(pc.cast(pc.subtract(end_arr, start_arr), pa.float64(), safe=False), 1e6)
    events = pa.ListArray.from_arrays(
        pa.array(ev_offsets, pa.int32()),
        pa.StructArray.from_arrays(
            [
                _ns(ev_times).cast(schema.TS),
                pa.array(ev_names, pa.string()),
                ev_attrs.build(),
            ],
            fields=list(schema.EVENT),
        ),
    )
    links = pa.ListArray.from_arrays(
        pa.array(ln_offsets, pa.int32()),
        pa.StructArray.from_arrays(
            [pa.array(ln_trace, pa.string()), pa.array(ln_span, pa.string()), ln_attrs.build()],
            fields=list(schema.LINK),
        ),
    )
    columns = {
        "trace_id": pa.array(trace_ids, pa.string()),
        "span_id": pa.array(span_ids, pa.string()),
        "parent_span_id": pa.array(parents, pa.string()),
        "name": pa.array(names, pa.string()),
        "kind": pa.array(kinds, pa.string()),
        "status_code": pa.array(status_codes, pa.string()),
        "status_message": pa.array(status_messages, pa.string()),
        "start_time": start_arr.cast(schema.TS),
        "end_time": end_arr.cast(schema.TS),
        "duration_ms": duration,
        "service_name": pa.array(services, pa.string()),
        "scope_name": pa.array(scopes, pa.string()),
        "attributes": attrs.build(),
        "resource_attributes": res_attrs.build(),
        "events": events,
        "links": links,
        "lake_source": pa.array(sources, pa.string()),
    }
    arrays = [columns[f.name] if f.name in columns else pa.nulls(n, f.type) for f in schema.SPANS]
    return pa.Table.from_arrays(arrays, schema=schema.SPANS)
