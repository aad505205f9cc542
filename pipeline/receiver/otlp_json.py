"""The OTLP/JSON mapping: protobuf JSON with hex (not base64) trace and span ids.

Per the OTLP specification, ids are hex strings, enums may be integers or names, 64-bit ints
may be strings or numbers, and unknown fields are ignored. A span whose ids are not hex is
rejected alone (an OTLP partial success, like a span whose ids have the wrong length); the rest
of the request is kept.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from pipeline.receiver.intake import InvalidRequest

_ID_FIELDS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


def _hex_to_b64(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"{where}: expected a hex string")
    try:
        return base64.b64encode(bytes.fromhex(value)).decode()
    except ValueError:
        raise InvalidRequest(f"{where}: {value!r} is not hex") from None


def _fix_ids(obj: dict[str, Any], where: str) -> None:
    for f in _ID_FIELDS:
        if f in obj and obj[f] is not None:
            obj[f] = _hex_to_b64(obj[f], f"{where}.{f}")


def _items(obj: dict[str, Any], *names: str) -> list[Any]:
    for n in names:
        v = obj.get(n)
        if v is not None:
            if not isinstance(v, list):
                raise InvalidRequest(f"{n}: expected an array")
            return v
    return []


@dataclass
class ParsedJson:
    request: ExportTraceServiceRequest
    rejected: list[str] = field(default_factory=list)  # one reason per span left out (ids not hex)


def parse_json(body: bytes) -> ParsedJson:
    """The request, less the spans whose ids are not hex (named in `rejected`); InvalidRequest when
    the body as a whole is not OTLP/JSON."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidRequest(f"invalid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise InvalidRequest("expected a JSON object with resourceSpans")
    rejected: list[str] = []
    for i, rs in enumerate(_items(doc, "resourceSpans", "resource_spans")):
        if not isinstance(rs, dict):
            raise InvalidRequest(f"resourceSpans[{i}]: expected an object")
        for j, ss in enumerate(_items(rs, "scopeSpans", "scope_spans")):
            if not isinstance(ss, dict):
                raise InvalidRequest(f"resourceSpans[{i}].scopeSpans[{j}]: expected an object")
            kept = []
            for k, sp in enumerate(_items(ss, "spans")):
                where = f"resourceSpans[{i}].scopeSpans[{j}].spans[{k}]"
                if not isinstance(sp, dict):
                    raise InvalidRequest(f"{where}: expected an object")
                try:
                    _fix_ids(sp, where)
                    for m, link in enumerate(_items(sp, "links")):
                        if isinstance(link, dict):
                            _fix_ids(link, f"{where}.links[{m}]")
                except InvalidRequest as e:
                    rejected.append(str(e))
                    continue
                kept.append(sp)
            if "spans" in ss:
                ss["spans"] = kept
    req = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(doc, req, ignore_unknown_fields=True)
    except json_format.ParseError as e:
        raise InvalidRequest(f"invalid OTLP JSON: {e}") from None
    return ParsedJson(req, rejected)


def response_json(resp: ExportTraceServiceResponse) -> bytes:
    return json.dumps(json_format.MessageToDict(resp)).encode()
