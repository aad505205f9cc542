"""Test support: spans batches built the way the worker builds them (OTLP protobuf → decode → normalize)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from core.conventions import CorrelationKeys, normalize
from pipeline.otlp.decode import SourcedRequest, decode

TEST_HASH_KEY = "redact-pii-tests-0123456789abcdef"


def make_batch(
    spans: list[dict[str, Any]], resource: dict[str, object] | None = None, keys: CorrelationKeys | None = None
) -> pa.Table:
    """spans: dicts with optional "attrs", "error" (status message), "events" [(name, {attr: value})] and
    "links" [{attr: value}]; trace and span ids are made up."""
    from tests.conftest import kv, make_request

    protos = [
        {
            "trace_id": f"{i + 1:032x}",
            "span_id": f"{i + 1:016x}",
            "attrs": s.get("attrs", {}),
            "error": s.get("error"),
        }
        for i, s in enumerate(spans)
    ]
    req = make_request(protos, resource=resource)
    for span, proto in zip(spans, req.resource_spans[0].scope_spans[0].spans, strict=True):
        for name, attrs in span.get("events", []):
            ev = proto.events.add()
            ev.name = name
            ev.time_unix_nano = proto.start_time_unix_nano
            for k, v in attrs.items():
                ev.attributes.append(kv(k, v))
        for attrs in span.get("links", []):
            ln = proto.links.add()
            ln.trace_id = bytes.fromhex("ab" * 16)
            ln.span_id = bytes.fromhex("cd" * 8)
            for k, v in attrs.items():
                ln.attributes.append(kv(k, v))
    return normalize(decode([SourcedRequest(req, "test@1")]), keys)


def rows(table: pa.Table) -> list[dict[str, Any]]:
    """Rows with maps as dicts, events as (name, attrs) and links as attrs; event times dropped."""
    out = []
    data = table.drop_columns(["start_time", "end_time", "events"]).to_pylist()
    events = table.column("events").combine_chunks()
    names = events.flatten().field("name").to_pylist() if len(events.flatten()) else []
    ev_attrs = events.flatten().field("attributes").to_pylist() if len(events.flatten()) else []
    offsets = events.offsets.to_pylist()
    for i, row in enumerate(data):
        start, end = offsets[i] - offsets[0], offsets[i + 1] - offsets[0]
        out.append(
            {
                **row,
                "attributes": dict(row["attributes"] or []),
                "resource_attributes": dict(row["resource_attributes"] or []),
                "events": [(names[j], dict(ev_attrs[j] or [])) for j in range(start, end)],
                "links": [dict(ln["attributes"] or []) for ln in row["links"] or []],
                "pii_found": dict(row["pii_found"] or []),
            }
        )
    return out
