"""Test support for the redact_pii tests: batches of made-up spans, rows with every map as a dict."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from core.conventions import CorrelationKeys, Normalizer
from pipeline.testing import spans_batch

TEST_HASH_KEY = "redact-pii-tests-0123456789abcdef"


def make_batch(
    spans: list[dict[str, Any]], resource: dict[str, object] | None = None, keys: CorrelationKeys | None = None
) -> pa.Table:
    """spans: `pipeline.testing.make_request` dicts without ids ("attrs", "error", "events", "links");
    trace and span ids are made up."""
    with_ids = [{**s, "trace_id": f"{i + 1:032x}", "span_id": f"{i + 1:016x}"} for i, s in enumerate(spans)]
    return spans_batch(with_ids, resource=resource, normalizer=Normalizer(keys or CorrelationKeys()))


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
