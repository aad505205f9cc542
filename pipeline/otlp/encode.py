"""Write what an ingest chain did to a spans table back into the OTLP request it was decoded from.

The `ingest` stage runs processors in the receiver, before the bus (e.g. redaction, so raw PII never
reaches Kafka). The bus carries OTLP, so the processed table is folded back into the original
request: spans the chain dropped are removed; changed attribute values, status messages, event and
link attributes are replaced; unchanged values keep their original AnyValue type (an int stays an int
on the wire). Values a processor changed become strings, which is what the lake stores anyway.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from core.conventions import PII_FOUND_ATTRIBUTE
from pipeline.otlp.decode import any_value_to_str

if TYPE_CHECKING:
    from google.protobuf.internal.containers import RepeatedCompositeFieldContainer


def _rewrite(kvs: RepeatedCompositeFieldContainer[KeyValue], new: Iterable[tuple[str, str | None]] | None) -> None:
    """Make the repeated KeyValue field `kvs` hold `new`, keeping untouched values as they were."""
    if new is None:
        return
    before = {kv.key: kv for kv in kvs}
    after = list(new)
    unchanged = len(after) == len(before) and all(
        k in before and any_value_to_str(before[k].value) == v for k, v in after
    )
    if unchanged:
        return
    rebuilt = []
    for k, v in after:
        old = before.get(k)
        if old is not None and any_value_to_str(old.value) == v:
            rebuilt.append(old)
            continue
        kv = KeyValue(key=k)
        if v is not None:
            kv.value.string_value = v
        rebuilt.append(kv)
    del kvs[:]
    kvs.extend(rebuilt)


def _carry_pii_found(kvs: RepeatedCompositeFieldContainer[KeyValue], counts: list[tuple[str, int]]) -> None:
    """pii_found has no place in OTLP: it crosses the bus as a JSON attribute the worker reads back."""
    merged = dict(counts)
    for kv in list(kvs):
        if kv.key == PII_FOUND_ATTRIBUTE:
            kvs.remove(kv)
    kv = KeyValue(key=PII_FOUND_ATTRIBUTE)
    kv.value.string_value = json.dumps(merged, sort_keys=True)
    kvs.append(kv)


def _nested_attributes(column: pa.ChunkedArray) -> list[list[list[tuple[str, str | None]]] | None]:
    arr = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if len(arr) == 0:
        return []
    attrs = arr.values.field("attributes")
    offsets = arr.offsets
    if arr.offset or offsets[0].as_py():
        attrs = attrs.slice(offsets[0].as_py(), offsets[-1].as_py() - offsets[0].as_py())
        offsets = pc.subtract(offsets, offsets[0])
    return pa.ListArray.from_arrays(offsets, attrs, mask=arr.is_null()).to_pylist()


def apply_table(request: ExportTraceServiceRequest, table: pa.Table) -> ExportTraceServiceRequest:
    """Fold `table` (decoded from `request`, then processed) back into `request`, in place."""
    cols = table.select(["trace_id", "span_id", "status_message", "attributes", "resource_attributes"]).to_pydict()
    # only the attribute maps of events and links can change; their timestamps need not become Python
    cols["events"] = _nested_attributes(table.column("events"))
    cols["links"] = _nested_attributes(table.column("links"))
    found = table.column("pii_found").to_pylist() if "pii_found" in table.column_names else None
    rows = {(t, s): i for i, (t, s) in enumerate(zip(cols["trace_id"], cols["span_id"], strict=True))}
    for rs in request.resource_spans:
        resource_done = False
        for ss in rs.scope_spans:
            keep = []
            for sp in ss.spans:
                i = rows.get((sp.trace_id.hex(), sp.span_id.hex()))
                if i is None:
                    continue  # dropped by the chain
                keep.append(sp)
                _rewrite(sp.attributes, cols["attributes"][i])
                if found is not None and found[i]:
                    _carry_pii_found(sp.attributes, found[i])
                if not resource_done:
                    _rewrite(rs.resource.attributes, cols["resource_attributes"][i])
                    resource_done = True
                message = cols["status_message"][i]
                if (message or "") != sp.status.message:
                    sp.status.message = message or ""
                for ev, new_attrs in zip(sp.events, cols["events"][i] or [], strict=False):
                    _rewrite(ev.attributes, new_attrs)
                for ln, new_attrs in zip(sp.links, cols["links"][i] or [], strict=False):
                    _rewrite(ln.attributes, new_attrs)
            if len(keep) != len(ss.spans):
                kept = [type(sp)() for sp in keep]
                for dst, src in zip(kept, keep, strict=True):
                    dst.CopyFrom(src)
                del ss.spans[:]
                ss.spans.extend(kept)
    return request
