"""Testing helpers for processor authors: batches exactly as the worker hands them to a chain, and a chain
run the way the worker runs it (processors/README.md, "Testing a processor").

Batches come from real OTLP: a request built from simple dicts (`spans_batch`), the demo traffic of
`tracelake demo` (`demo_batches`) or feedback events as `POST /v1/feedback` makes them
(`feedback_batch`), always through the worker's own decode and normalize. Tests import this module;
processor code imports `core` only.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from core import schema, source_ref
from core.conventions import Normalizer
from core.feedback import FeedbackEvent, to_request
from core.processor import Processor, Sampler, StatefulProcessor
from pipeline.otlp.decode import SourcedRequest, decode
from pipeline.otlp.wire import decode_bodies

# The span a `links` entry of `make_request` points to.
LINKED_TRACE_ID = "ab" * 16
LINKED_SPAN_ID = "cd" * 8


def kv(key: str, value: object) -> KeyValue:
    """An OTLP attribute: bool, int and float keep their type, anything else becomes a string."""
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def make_request(
    spans: Sequence[Mapping[str, Any]],
    service: str = "svc",
    resource: Mapping[str, object] | None = None,
    scope: str = "tests",
) -> ExportTraceServiceRequest:
    """One resource and scope holding `spans`: dicts with `trace_id` (32 hex) and `span_id` (16 hex), and
    optionally `parent`, `name`, `kind` (OTLP number), `start` / `end` (unix ns; now and 1 ms later by
    default), `error` (status ERROR; a string is its message), `attrs` {key: value}, `events` [(name, {key: value})]
    at the span's start, `links` [{key: value}] to LINKED_TRACE_ID / LINKED_SPAN_ID."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(kv("service.name", service))
    for k, v in (resource or {}).items():
        rs.resource.attributes.append(kv(k, v))
    ss = rs.scope_spans.add()
    ss.scope.name = scope
    now = time.time_ns()
    for s in spans:
        sp: Span = ss.spans.add()
        sp.trace_id = bytes.fromhex(str(s["trace_id"]))
        sp.span_id = bytes.fromhex(str(s["span_id"]))
        if s.get("parent"):
            sp.parent_span_id = bytes.fromhex(str(s["parent"]))
        sp.name = str(s.get("name", "span"))
        sp.kind = int(s.get("kind", 1))  # type: ignore[assignment]
        sp.start_time_unix_nano = int(s.get("start", now))
        sp.end_time_unix_nano = int(s.get("end", now + 1_000_000))
        if s.get("error"):
            sp.status.code = 2  # type: ignore[assignment]
            if isinstance(s["error"], str):
                sp.status.message = s["error"]
        for k, v in dict(s.get("attrs", {})).items():
            sp.attributes.append(kv(k, v))
        for name, attrs in s.get("events", ()):
            ev = sp.events.add()
            ev.name = name
            ev.time_unix_nano = sp.start_time_unix_nano
            ev.attributes.extend(kv(k, v) for k, v in attrs.items())
        for attrs in s.get("links", ()):
            ln = sp.links.add()
            ln.trace_id = bytes.fromhex(LINKED_TRACE_ID)
            ln.span_id = bytes.fromhex(LINKED_SPAN_ID)
            ln.attributes.extend(kv(k, v) for k, v in attrs.items())
    return req


def spans_batch(
    spans: Sequence[Mapping[str, Any]],
    source: str = "test@1",
    *,
    service: str = "svc",
    resource: Mapping[str, object] | None = None,
    normalizer: Normalizer | None = None,
) -> pa.Table:
    """`make_request(spans)` → decode → normalize: a batch in the `spans` schema, every row's `lake_source`
    being `source` (`core.source_ref` format, e.g. `kafka:spans/0@100`, for a stateful processor's offsets)."""
    request = make_request(spans, service=service, resource=resource)
    return (normalizer or Normalizer())(decode([SourcedRequest(request, source)]))


def feedback_batch(
    events: Sequence[FeedbackEvent], source: str = "test@1", normalizer: Normalizer | None = None
) -> pa.Table:
    """Synthetic feedback spans (one per event), exactly as `POST /v1/feedback` puts them on the bus."""
    return (normalizer or Normalizer())(decode([SourcedRequest(to_request(list(events)), source)]))


def demo_batches(
    traces: int = 20,
    seed: int = 0,
    *,
    spans_per_request: int = 512,
    partition: str = "demo/0",
    normalizer: Normalizer | None = None,
) -> list[pa.Table]:
    """The traffic of `tracelake demo` (three applications, one per attribute dialect: LLM calls with
    prompts and token counts, tools, retrieval, errors), one batch per OTLP request, read by the worker's
    columnar decode. Request i's rows come from `embedded:<partition>@<i>`."""
    from pipeline.demo import build_requests  # the OpenTelemetry SDK: only for those who ask for demo traffic

    norm = normalizer or Normalizer()
    bodies = build_requests(traces, seed=seed, spans_per_request=spans_per_request)
    return [
        norm(decode_bodies([body], [source_ref.source_ref("embedded", partition, i)])) for i, body in enumerate(bodies)
    ]


def _ints_for_times(t: pa.DataType) -> pa.DataType:
    if pa.types.is_timestamp(t):
        return pa.int64()
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(_ints_for_times(f.type)) for f in t])
    if pa.types.is_list(t):
        return pa.list_(t.value_field.with_type(_ints_for_times(t.value_type)))
    return t


def rows(table: pa.Table, columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Rows (of `columns`, default all) as Python values. Timestamps, nested ones too, become int unix ns
    (a datetime cannot hold nanoseconds); maps stay lists of (key, value) pairs (see `attributes`)."""
    if columns is not None:
        table = table.select(list(columns))
    schema = pa.schema([f.with_type(_ints_for_times(f.type)) for f in table.schema])
    return table.cast(schema).to_pylist()


def attributes(row: Mapping[str, Any], column: str = "attributes") -> dict[str, str]:
    """A row's map column (from `rows`) as a dict; {} for a null map."""
    return dict(row[column] or [])


@dataclass
class ChainRun:
    """What a chain passed on, in the order the worker would have routed it, and the promotions asked for."""

    output: pa.Table
    promotions: list[tuple[str, str]]


def run_chain(processors: Sequence[Processor], batches: Iterable[pa.Table], *, shutdown: bool = True) -> ChainRun:
    """Run batches through processors as the worker does: each batch through the chain in order, then every
    `StatefulProcessor` ticked, its released rows through the processors after it; at the end (`shutdown`)
    each one shut down in chain order, a `Sampler`'s promotions taken first. Stateful processors are not
    told to `forget`; the caller decides."""
    out: list[pa.Table] = []
    promotions: list[tuple[str, str]] = []

    def rest(batch: pa.Table, start: int) -> None:
        for proc in processors[start:]:
            if batch.num_rows == 0:
                return
            batch = proc.process(batch)
        if batch.num_rows:
            out.append(batch)

    holders = [(i, p) for i, p in enumerate(processors) if isinstance(p, StatefulProcessor)]
    for batch in batches:
        rest(batch, 0)
        for i, holder in holders:
            rest(holder.tick(time.time_ns()), i + 1)
        for _i, holder in holders:
            if isinstance(holder, Sampler):
                promotions += holder.take_promotions()
    if shutdown:
        for i, holder in holders:
            if isinstance(holder, Sampler):
                promotions += holder.take_promotions()
            rest(holder.shutdown(), i + 1)
    output = pa.concat_tables(out, promote_options="permissive") if out else schema.empty("spans")
    return ChainRun(output, promotions)
