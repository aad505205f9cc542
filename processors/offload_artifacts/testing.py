"""Test support shared by the offload and artifact-store tests: spans batches the way the worker builds them."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from core.conventions import normalize
from pipeline.otlp.decode import SourcedRequest, decode


def spans_batch(spans: list[dict[str, Any]], source: str = "test@1") -> pa.Table:
    """make_request() spans (+ optional "events": [(name, {attr: value})]) → decode → normalize."""
    from tests.conftest import kv, make_request

    req = make_request(spans)
    for span, proto in zip(spans, req.resource_spans[0].scope_spans[0].spans, strict=True):
        for name, attrs in span.get("events", []):
            ev = proto.events.add()
            ev.name = name
            ev.time_unix_nano = proto.start_time_unix_nano
            for k, v in attrs.items():
                ev.attributes.append(kv(k, v))
    return normalize(decode([SourcedRequest(req, source)]))


def plain(table: pa.Table, columns: list[str]) -> list[dict[str, Any]]:
    """Rows as Python values; event times as int ns (datetime cannot hold nanoseconds)."""
    table = table.select(columns)
    if "events" in columns:
        ev = table.column("events")
        value = ev.type.value_type
        fields = [pa.field(f.name, pa.int64()) if f.name == "time" else f for f in value]
        table = table.set_column(columns.index("events"), "events", ev.cast(pa.list_(pa.struct(fields))))
    return table.to_pylist()


def attrs(row: dict[str, Any]) -> dict[str, str]:
    return dict(row["attributes"] or [])
