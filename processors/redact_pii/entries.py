"""Every string a span carries, as one flat keys/values column pair, and the batch rebuilt from new values.

Span attributes, resource attributes, event attributes, link attributes (taken apart by core.maps: the
flattened keys and items, with the span row each entry belongs to) and the status message (under the key
`status_message`) become one column each of keys, values and rows. Redaction works on those; `rebuild`
puts changed values back, rebuilding only the columns that changed (offsets and keys are reused, dropped
entries shrink the offsets).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.maps import MapColumn, NestedMapColumn, single_array

STATUS_KEY = "status_message"
SOURCES = ("attributes", "resource_attributes", "events", "links", STATUS_KEY)


@dataclass
class BatchStrings:
    """The flat view of one batch: keys, values and rows of every string entry, in SOURCES order."""

    keys: pa.Array
    values: pa.Array
    rows: np.ndarray
    bounds: dict[str, tuple[int, int]]  # source → (start, end) in the flat arrays
    attrs: MapColumn
    resource: MapColumn
    events: NestedMapColumn
    links: NestedMapColumn

    @classmethod
    def of(cls, batch: pa.Table) -> BatchStrings:
        n = batch.num_rows
        attrs = MapColumn.of(batch.column("attributes"))
        resource = MapColumn.of(batch.column("resource_attributes"))
        events = NestedMapColumn.of(batch.column("events"))
        links = NestedMapColumn.of(batch.column("links"))
        status = single_array(batch.column(STATUS_KEY))
        status = status.cast(pa.string()) if status.type != pa.string() else status
        parts = (
            (attrs.keys, attrs.items, attrs.parents),
            (resource.keys, resource.items, resource.parents),
            (events.maps.keys, events.maps.items, events.entry_rows),
            (links.maps.keys, links.maps.items, links.entry_rows),
            (pa.array([STATUS_KEY] * n, pa.string()), status, np.arange(n)),
        )
        bounds, pos = {}, 0
        for name, (keys, _values, _rows) in zip(SOURCES, parts, strict=True):
            bounds[name] = (pos, pos + len(keys))
            pos += len(keys)
        return cls(
            pa.concat_arrays([p[0] for p in parts]),
            pa.concat_arrays([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]),
            bounds,
            attrs,
            resource,
            events,
            links,
        )

    def rebuild(
        self, batch: pa.Table, new_values: pa.Array | None, keep: np.ndarray | None, changed: np.ndarray
    ) -> tuple[pa.Table, bool]:
        """The batch with `new_values` (None: unchanged) and without the entries `keep` rules out; only the
        columns with a changed or dropped entry are rebuilt. Returns the table and whether a map changed."""
        values = new_values if new_values is not None else self.values
        out, maps_changed = batch, False
        for name in SOURCES:
            start, end = self.bounds[name]
            kept = keep[start:end] if keep is not None and not keep[start:end].all() else None
            if kept is None and not ((changed >= start) & (changed < end)).any():
                continue
            piece = values.slice(start, end - start)
            if name == STATUS_KEY:
                if kept is not None:
                    piece = pc.if_else(pa.array(kept), piece, pa.scalar(None, pa.string()))
                out = set_column(out, name, piece)
                continue
            source = {"attributes": self.attrs, "resource_attributes": self.resource}.get(name)
            if source is not None:
                out = set_column(out, name, _edit(source, piece, kept).to_arrow())
                maps_changed = True
            else:
                nested = self.events if name == "events" else self.links
                out = set_column(out, name, nested.with_maps(_edit(nested.maps, piece, kept)).to_arrow())
        return out, maps_changed


def _edit(maps: MapColumn, items: pa.Array, keep: np.ndarray | None) -> MapColumn:
    maps = maps.with_items(items)
    return maps if keep is None else maps.select(keep)


def set_column(table: pa.Table, name: str, arr: pa.Array) -> pa.Table:
    """Replace (or append) a column, cast to the table's type for it."""
    idx = table.schema.get_field_index(name)
    if idx < 0:
        return table.append_column(pa.field(name, arr.type), arr)
    field_ = table.schema.field(idx)
    return table.set_column(idx, field_, arr.cast(field_.type) if arr.type != field_.type else arr)
