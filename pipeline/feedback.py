"""Feedback events: `POST /v1/feedback`, and spans that carry `feedback.value`.

Feedback must reach the worker that owns its trace (with Kafka: the trace's partition), and pass
through the processor chain (redaction of comments, tail sampling's late-feedback rescue). So an
HTTP feedback event becomes a small synthetic span of its trace, in the scope `tracelake.feedback`,
carrying `feedback.*` attributes, and travels over the bus like any span. The worker turns every
row with `feedback.value` into a `feedback` row; synthetic spans never reach the `spans` table.

Accepted JSON bodies (one object or a list of them):
- tracelake's own: {"trace_id", "span_id"?, "name", "value", "comment"?, "source"?, "time"?}
- Langfuse scores: {"traceId", "observationId"?, "name", "value", "comment"?, "source"?}
- Phoenix annotations: {"trace_id"? | "span_id", "name", "annotator_kind"?, "result": {"score"?, "label"?,
  "explanation"?}} — a span annotation needs the trace id too (tracelake cannot look it up): send trace_id.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from pipeline import schema
from pipeline.receiver.http_server import Route, UnsupportedMedia
from pipeline.receiver.intake import Intake, InvalidRequest

FEEDBACK_SCOPE = "tracelake.feedback"
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_HEX16 = re.compile(r"^[0-9a-f]{16}$")
MAX_COMMENT = 64 * 1024


@dataclass(frozen=True)
class FeedbackEvent:
    trace_id: str
    name: str
    value: float
    span_id: str | None = None
    comment: str | None = None
    source: str | None = None
    time_ns: int = 0


def _str(doc: dict[str, Any], *keys: str) -> str | None:
    for k in keys:
        v = doc.get(k)
        if v is not None:
            if not isinstance(v, str):
                raise InvalidRequest(f"{k}: expected a string")
            return v
    return None


def _time_ns(value: Any) -> int:
    if value is None:
        return time.time_ns()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)  # unix nanoseconds
    if isinstance(value, str):
        try:
            return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1e9)
        except ValueError:
            pass
    raise InvalidRequest(f"time: expected RFC 3339 text or unix nanoseconds, got {value!r}")


def parse_event(doc: Any) -> FeedbackEvent:
    if not isinstance(doc, dict):
        raise InvalidRequest("expected a JSON object")
    trace_id = (_str(doc, "trace_id", "traceId") or "").lower()
    if not _HEX32.match(trace_id) or trace_id == "0" * 32:
        raise InvalidRequest("trace_id: expected 32 lowercase hex characters (not all zero)")
    span_id = _str(doc, "span_id", "spanId", "observationId")
    if span_id is not None:
        span_id = span_id.lower()
        if not _HEX16.match(span_id):
            raise InvalidRequest("span_id: expected 16 hex characters")
    name = _str(doc, "name")
    if not name or len(name) > 256:
        raise InvalidRequest("name: expected a non-empty string of at most 256 characters")
    result = doc.get("result")
    value: Any = doc.get("value")
    comment = _str(doc, "comment")
    if isinstance(result, dict):  # Phoenix annotation
        value = result.get("score", value)
        comment = comment or (result.get("explanation") if isinstance(result.get("explanation"), str) else None)
    if isinstance(value, bool):
        value = 1.0 if value else 0.0
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidRequest("value: expected a finite number (or a boolean)")
    if comment is not None and len(comment) > MAX_COMMENT:
        raise InvalidRequest(f"comment: longer than {MAX_COMMENT} characters")
    source = _str(doc, "source", "annotator_kind") or "api"
    return FeedbackEvent(trace_id, name, float(value), span_id, comment, source, _time_ns(doc.get("time")))


def parse_json(body: bytes) -> list[FeedbackEvent]:
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidRequest(f"invalid JSON: {e}") from None
    docs = doc if isinstance(doc, list) else [doc]
    if not docs:
        raise InvalidRequest("no feedback events in the body")
    events = []
    for i, d in enumerate(docs):
        try:
            events.append(parse_event(d))
        except InvalidRequest as e:
            raise InvalidRequest(f"[{i}] {e}" if isinstance(doc, list) else str(e)) from None
    return events


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
        sp.attributes.append(_kv("feedback.value", ev.value))
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

    raw_value = get("feedback.value")
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
        "lake_source": rows.column("lake_source"),
    }
    return pa.table(out).cast(schema.FEEDBACK)


def http_route(intake: Intake) -> Route:
    """`POST /v1/feedback` on the OTLP/HTTP port: 202 once the events are on the bus, 400 when malformed."""

    def handle(body: bytes, content_type: str) -> tuple[int, bytes, str]:
        if content_type != "application/json":
            raise UnsupportedMedia(f"unsupported Content-Type {content_type or '(none)'!r}; use application/json")
        events = parse_json(body)
        intake.accept(to_request(events), None, "http", feedback=True)
        return 202, json.dumps({"accepted": len(events)}).encode(), "application/json"

    return handle
