"""Every string a span carries, as one flat keys/values column pair, and the batch rebuilt from new values.

Span attributes, resource attributes, event attributes, link attributes (the MapArrays' flattened keys and
items, with the row each entry belongs to, from the offsets) and the status message (under the key
`status_message`) become one column each of keys, values and rows. Redaction works on those; `rebuild`
puts changed values back, rebuilding only the columns that changed (offsets and keys are reused, dropped
entries shrink the offsets).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

STATUS_KEY = "status_message"
SOURCES = ("attributes", "resource_attributes", "events", "links", STATUS_KEY)


@dataclass
class MapParts:
    """A MapArray taken apart: offsets rebased to 0, its keys and items sliced to its range."""

    offsets: np.ndarray
    keys: pa.Array
    items: pa.Array
    mask: pa.Array | None
    type: pa.DataType

    @classmethod
    def of(cls, arr: pa.MapArray) -> MapParts:
        offsets = arr.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
        start, end = int(offsets[0]), int(offsets[-1])
        return cls(
            offsets - start,
            arr.keys.slice(start, end - start),
            arr.items.slice(start, end - start),
            arr.is_null() if arr.null_count else None,
            arr.type,
        )

    def parents(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.offsets) - 1), np.diff(self.offsets))

    def rebuild(self, items: pa.Array, keep: np.ndarray | None) -> pa.MapArray:
        keys, offsets = self.keys, self.offsets
        if keep is not None:
            kept = np.concatenate([[0], np.cumsum(keep)])
            offsets = kept[offsets]
            mask = pa.array(keep)
            keys, items = keys.filter(mask), items.filter(mask)
        return pa.MapArray.from_arrays(pa.array(offsets, pa.int32()), keys, items, type=self.type, mask=self.mask)


@dataclass
class NestedMaps:
    """list<struct<…, attributes map>> (events, links) taken apart down to the attribute maps."""

    list_offsets: np.ndarray
    list_mask: pa.Array | None
    struct: pa.StructArray
    maps: MapParts
    rows: np.ndarray  # row of every map entry

    @classmethod
    def of(cls, arr: pa.ListArray) -> NestedMaps:
        offsets = arr.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
        struct = arr.flatten()  # sliced to this array's range
        # StructArray.flatten (unlike .field) honours the struct's own offset
        children = dict(zip([f.name for f in struct.type], struct.flatten(), strict=True))
        maps = MapParts.of(children["attributes"])
        item_rows = np.repeat(np.arange(len(arr)), np.diff(offsets))
        return cls(
            offsets - offsets[0], arr.is_null() if arr.null_count else None, struct, maps, item_rows[maps.parents()]
        )

    def rebuild(self, items: pa.Array, keep: np.ndarray | None) -> pa.ListArray:
        fields = list(self.struct.type)
        children = list(self.struct.flatten())
        children[self.struct.type.get_field_index("attributes")] = self.maps.rebuild(items, keep)
        mask = self.struct.is_null() if self.struct.null_count else None
        struct = pa.StructArray.from_arrays(children, fields=fields, mask=mask)
        return pa.ListArray.from_arrays(pa.array(self.list_offsets, pa.int32()), struct, mask=self.list_mask)


@dataclass
class BatchStrings:
    """The flat view of one batch: keys, values and rows of every string entry, in SOURCES order."""

    keys: pa.Array
    values: pa.Array
    rows: np.ndarray
    bounds: dict[str, tuple[int, int]]  # source → (start, end) in the flat arrays
    attrs: MapParts
    resource: MapParts
    events: NestedMaps
    links: NestedMaps

    @classmethod
    def of(cls, batch: pa.Table) -> BatchStrings:
        n = batch.num_rows
        attrs = MapParts.of(batch.column("attributes").combine_chunks())
        resource = MapParts.of(batch.column("resource_attributes").combine_chunks())
        events = NestedMaps.of(batch.column("events").combine_chunks())
        links = NestedMaps.of(batch.column("links").combine_chunks())
        status = batch.column(STATUS_KEY).combine_chunks()
        status = status.cast(pa.string()) if status.type != pa.string() else status
        parts = (
            (attrs.keys, attrs.items, attrs.parents()),
            (resource.keys, resource.items, resource.parents()),
            (events.maps.keys, events.maps.items, events.rows),
            (links.maps.keys, links.maps.items, links.rows),
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
                out = set_column(out, name, source.rebuild(piece, kept))
                maps_changed = True
            else:
                nested = self.events if name == "events" else self.links
                out = set_column(out, name, nested.rebuild(piece, kept))
        return out, maps_changed


def set_column(table: pa.Table, name: str, arr: pa.Array) -> pa.Table:
    """Replace (or append) a column, cast to the table's type for it."""
    idx = table.schema.get_field_index(name)
    if idx < 0:
        return table.append_column(pa.field(name, arr.type), arr)
    field_ = table.schema.field(idx)
    return table.set_column(idx, field_, arr.cast(field_.type) if arr.type != field_.type else arr)
