"""Feedback as it travels: synthetic spans on the bus, `feedback` rows in the lake.

Feedback must reach the worker that owns its trace (with Kafka: the trace's partition; with worker
processes: the trace's share) and pass through the processor chain (redaction of comments, tail
sampling's late-feedback rescue). So a feedback event becomes a small synthetic span of its trace, in the
scope `tracelake.feedback`, carrying `feedback.*` attributes, and travels over the bus like any span. A
span an application sends with `feedback.value` is a feedback event too. The worker turns every row with
`feedback.value` into a `feedback` row; synthetic spans never reach the `spans` table, and processors must
let them through (docs/design.md, "feedback synthetic spans"; processors/README.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from core import schema

FEEDBACK_SCOPE = "tracelake.feedback"
VALUE = "feedback.value"  # the attribute that makes a span a feedback event


@dataclass(frozen=True)
class FeedbackEvent:
    trace_id: str
    name: str
    value: float
    span_id: str | None = None
    comment: str | None = None
    source: str | None = None
    time_ns: int = 0


def _kv(key: str, value: str | float) -> KeyValue:
    kv = KeyValue(key=key)
    if isinstance(value, float):
        kv.value.double_value = value
    else:
        kv.value.string_value = value
    return kv


def to_request(events: list[FeedbackEvent]) -> ExportTraceServiceRequest:
    """Synthetic spans, one per event, so feedback travels with its trace."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(_kv("service.name", "tracelake.feedback"))
    ss = rs.scope_spans.add()
    ss.scope.name = FEEDBACK_SCOPE
    for ev in events:
        sp = ss.spans.add()
        sp.trace_id = bytes.fromhex(ev.trace_id)
        sp.span_id = os.urandom(8)
        sp.name = f"feedback {ev.name}"
        sp.start_time_unix_nano = sp.end_time_unix_nano = ev.time_ns
        sp.attributes.append(_kv(VALUE, ev.value))
        sp.attributes.append(_kv("feedback.name", ev.name))
        sp.attributes.append(_kv("feedback.source", ev.source or "api"))
        if ev.span_id:
            sp.attributes.append(_kv("feedback.span_id", ev.span_id))
        if ev.comment is not None:
            sp.attributes.append(_kv("feedback.comment", ev.comment))
    return req


def is_synthetic(spans: pa.Table) -> pa.ChunkedArray:
    return pc.fill_null(pc.equal(spans.column("scope_name"), FEEDBACK_SCOPE), False)


def extract(spans: pa.Table) -> pa.Table:
    """Feedback rows (the `feedback` table's schema) for every span that carries `feedback.value`."""
    attrs = spans.column("attributes")

    def get(key: str) -> pa.ChunkedArray:
        return pc.map_lookup(attrs, pa.scalar(key, pa.string()), "first")

    raw_value = get(VALUE)
    mask = pc.is_valid(raw_value)
    if not pc.any(mask).as_py():
        return schema.empty("feedback")
    rows = spans.filter(mask)
    attrs = rows.column("attributes")
    raw_value = raw_value.filter(mask)
    numeric = pc.match_substring_regex(raw_value, r"^\s*-?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$")
    value = pc.cast(pc.if_else(numeric, raw_value, pa.scalar(None, pa.string())), pa.float64())
    synthetic = is_synthetic(rows)
    own_span = pc.if_else(synthetic, pa.scalar(None, pa.string()), rows.column("span_id"))
    out = {
        "time": rows.column("end_time"),
        "trace_id": rows.column("trace_id"),
        "span_id": pc.coalesce(get("feedback.span_id"), own_span),
        "name": pc.fill_null(get("feedback.name"), "feedback"),
        "value": value,
        "comment": get("feedback.comment"),
        "source": pc.fill_null(get("feedback.source"), "otlp"),
        "tenant_id": rows.column("tenant_id"),
        "lake_source": rows.column("lake_source"),
    }
    return pa.table(out).cast(schema.FEEDBACK)
