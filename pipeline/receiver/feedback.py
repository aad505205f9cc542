"""`POST /v1/feedback`: feedback events in JSON, onto the bus as synthetic spans of their traces.

How feedback travels from here on (the synthetic spans, the `feedback` rows) is core/feedback.py.

Accepted JSON bodies (one object or a list of them):
- tracelake's own: {"trace_id", "span_id"?, "name", "value", "comment"?, "source"?, "time"?}
- Langfuse scores: {"traceId", "observationId"?, "name", "value", "comment"?, "source"?}
- Phoenix annotations: {"trace_id"? | "span_id", "name", "annotator_kind"?, "result": {"score"?, "label"?,
  "explanation"?}} — a span annotation needs the trace id too (tracelake cannot look it up): send trace_id.
"""

from __future__ import annotations

import json
import math
import re
import time
from datetime import datetime
from typing import Any

from core.feedback import FeedbackEvent, to_request
from pipeline.receiver.auth import Caller
from pipeline.receiver.http_server import Route, UnsupportedMedia
from pipeline.receiver.intake import Intake, InvalidRequest

_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_HEX16 = re.compile(r"^[0-9a-f]{16}$")
MAX_COMMENT = 64 * 1024


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


def http_route(intake: Intake) -> Route:
    """`POST /v1/feedback` on the OTLP/HTTP port: 202 once the events are on the bus, 400 when malformed.

    With authentication, the events carry the token's tenant like any span; feedback counts only toward
    a trace of that tenant (README "Securing receivers": the worker and the lake views check it)."""

    def handle(body: bytes, content_type: str, caller: Caller | None) -> tuple[int, bytes, str]:
        if content_type != "application/json":
            raise UnsupportedMedia(f"unsupported Content-Type {content_type or '(none)'!r}; use application/json")
        events = parse_json(body)
        intake.accept(to_request(events), None, "http", feedback=True, caller=caller)
        return 202, json.dumps({"accepted": len(events)}).encode(), "application/json"

    return handle
