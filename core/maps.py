"""Map columns taken apart and rebuilt: the one way processors work on attribute maps.

A map column (`attributes`, `resource_attributes`, the `attributes` of every event and link) is, in Arrow,
per-row offsets into one flat array of keys and one of items (values). Processors work on those flat arrays
with one compute call or numpy index over every entry of a batch, never a Python loop over spans, and build
the column again once. This module holds the pieces, for tracelake's processors and third-party ones:

- `MapColumn`: a map column taken apart (offsets from 0, keys, items, which rows are null maps). Edits return
  a new MapColumn and leave the old one as it was: `with_items` / `with_keys` (same entries, new values or
  keys), `select` (keep some entries, drop the rest), `append` / `append_columns` (new entries at the end of
  their rows). `to_arrow()` builds the column; when nothing was edited it returns the array the MapColumn
  was taken from, so a processor that changed nothing costs no rebuild.
- `NestedMapColumn`: the same for the maps inside a list<struct<…, attributes>> column (`events`, `links`),
  with the span row of every event and every entry.
- `MapLookup`: the first value of many keys in every row at once (one hash lookup per entry for all keys).

A processor step (replace the values of one key, add a key to the spans without it, drop a key from events):

    maps = MapColumn.of(batch.column("attributes"))
    secret = maps.key_mask("api.key")  # bool per entry
    maps = maps.with_items(pc.if_else(pa.array(secret), pa.scalar("<redacted>", pa.string()), maps.items))
    rows = np.flatnonzero(~maps.row_any(maps.key_mask("app.tier")))  # spans without app.tier
    maps = maps.append(rows, "app.tier", pa.repeat(pa.scalar("free", pa.string()), len(rows)))
    batch = batch.set_column(batch.schema.get_field_index("attributes"), "attributes", maps.to_arrow())

    events = NestedMapColumn.of(batch.column("events"))
    kept = events.maps.select(~events.maps.key_mask("exception.stacktrace"))
    batch = batch.set_column(batch.schema.get_field_index("events"), "events", events.with_maps(kept).to_arrow())

What every class here promises, whatever the input:
- Entry positions index `keys` and `items` directly: row i's entries are `offsets[i]:offsets[i + 1]`, and
  `offsets[0] == 0`, also for a slice of a larger array (its keys and items are sliced to it).
- A null map holds no entries. Arrow allows entries under a null slot; they are not data, and they are left
  out when a column is taken apart (the only case in which taking apart copies keys and items).
- A chunked column of one chunk is used as it is; more chunks are combined (a copy).
- Duplicate keys in one map stay as they are, in order; lookups take the first, like `pc.map_lookup(…,
  "first")`. A null value is an entry like any other (edits keep it); a lookup answers null for it.
- Only what an edit names changes: the order of a row's entries, its other entries and every other row stay.

After changing attributes that typed columns are copied from (models, token counts, user and session ids),
run `ProcessorContext.normalizer` on the batch, or keep those columns in step yourself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# typed scalars: an untyped Python scalar makes pyarrow try `import dateutil` on every call (~0.3 ms)
_FALSE = pa.scalar(False, pa.bool_())


def single_array(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One Array for a column: its only chunk as it is (`combine_chunks` would copy it), or the chunks combined."""
    if not isinstance(column, pa.ChunkedArray):
        return column
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


@dataclass(frozen=True)
class _Layout:
    """A list-like array's offsets from 0, its validity, and where its child values are."""

    offsets: np.ndarray  # int64, rows + 1, from 0, null rows empty
    valid: np.ndarray  # bool per row
    start: int  # the first child value of the array (a slice starts inside its child)
    count: int  # child values from `start`, including those under null slots
    visible: np.ndarray | None  # per child value from start: not under a null slot; None when all are

    @classmethod
    def of(cls, arr: pa.ListArray) -> _Layout:
        offsets = arr.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
        start, count = int(offsets[0]), int(offsets[-1] - offsets[0])
        if start:
            offsets -= start
        if not arr.null_count:
            return cls(offsets, np.ones(len(arr), bool), start, count, None)
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
        lengths = np.diff(offsets)
        if not lengths[~valid].any():
            return cls(offsets, valid, start, count, None)
        visible = np.repeat(valid, lengths)
        offsets = np.concatenate(([0], np.cumsum(np.where(valid, lengths, 0))))
        return cls(offsets, valid, start, count, visible)

    def children(self, child: pa.Array) -> pa.Array:
        """`child` (the array's whole child: keys, items or list values) cut to this array's visible values."""
        out = child.slice(self.start, self.count)
        return out if self.visible is None else out.filter(pa.array(self.visible))


@dataclass(frozen=True, eq=False)
class MapColumn:
    """A map column taken apart: row i holds entries `offsets[i]:offsets[i + 1]` of `keys` and `items`.

    Immutable: every edit returns a new MapColumn. Entry masks (`key_mask`, `select`'s `keep`) are numpy bool
    arrays over all entries; row masks are numpy bool arrays over rows."""

    offsets: np.ndarray  # int64, num_rows + 1, offsets[0] == 0
    keys: pa.Array
    items: pa.Array
    valid: np.ndarray  # bool per row; False is a null map (it holds no entries)
    type: pa.MapType
    original: pa.Array | None = None  # the array this was taken from, while nothing was edited

    @classmethod
    def of(cls, column: pa.MapArray | pa.ChunkedArray) -> MapColumn:
        """Take a map column (an Array or a ChunkedArray, sliced or not) apart."""
        arr = single_array(column)
        layout = _Layout.of(arr)
        return cls(layout.offsets, layout.children(arr.keys), layout.children(arr.items), layout.valid, arr.type, arr)

    @classmethod
    def from_entries(
        cls, num_rows: int, rows: np.ndarray, keys: pa.Array, items: pa.Array, map_type: pa.MapType
    ) -> MapColumn:
        """A column of `num_rows` maps (empty where no entry names the row) from entries: `keys[j]` =
        `items[j]` in row `rows[j]`. Entries of one row keep their order."""
        rows = np.asarray(rows, np.int64)
        if len(rows) > 1 and (np.diff(rows) < 0).any():
            order = np.argsort(rows, kind="stable")
            rows, keys, items = rows[order], keys.take(pa.array(order)), items.take(pa.array(order))
        offsets = np.concatenate(([0], np.cumsum(np.bincount(rows, minlength=num_rows))))
        return cls(offsets, keys, items, np.ones(num_rows, bool), map_type)

    # -- shape -----------------------------------------------------------------------------------------------
    @property
    def num_rows(self) -> int:
        return len(self.offsets) - 1

    @property
    def changed(self) -> bool:
        """Whether `to_arrow` builds a new array (an edit was made, or this was not taken from one)."""
        return self.original is None

    @property
    def lengths(self) -> np.ndarray:
        """Entries per row."""
        return np.diff(self.offsets)

    @cached_property
    def parents(self) -> np.ndarray:
        """For every entry, the row it belongs to (ascending)."""
        return np.repeat(np.arange(self.num_rows), self.lengths)

    # -- finding entries -------------------------------------------------------------------------------------
    def key_mask(self, key: str, regex: str | None = None) -> np.ndarray:
        """Per entry: is its key `key` (or, given an RE2 `regex`, does the key match it)."""
        if len(self.keys) == 0:
            return np.zeros(0, dtype=bool)
        if regex is not None:
            hit = pc.match_substring_regex(self.keys, regex)
        else:
            hit = pc.equal(self.keys, pa.scalar(key, self.keys.type))
        return pc.fill_null(hit, _FALSE).to_numpy(zero_copy_only=False)

    def row_any(self, entries: np.ndarray) -> np.ndarray:
        """Per row: does any of its entries have `entries` set."""
        out = np.zeros(self.num_rows, dtype=bool)
        out[self.parents[np.flatnonzero(entries)]] = True
        return out

    def first_index(self, entries: np.ndarray) -> np.ndarray:
        """Per row: the position of its first entry with `entries` set, -1 when none."""
        out = np.full(self.num_rows, -1, dtype=np.int64)
        pos = np.flatnonzero(entries)
        if len(pos):
            rows = self.parents[pos]  # ascending, so a row's first hit is where the row number changes
            first = np.concatenate(([True], rows[1:] != rows[:-1]))
            out[rows[first]] = pos[first]
        return out

    # -- edits -----------------------------------------------------------------------------------------------
    def _edited(self, **changes: object) -> MapColumn:
        return replace(self, original=None, **changes)  # type: ignore[arg-type]

    def with_items(self, items: pa.Array) -> MapColumn:
        """The same entries with new values (`items[j]` for entry j)."""
        if len(items) != len(self.items):
            raise ValueError(f"with_items: {len(items)} values for {len(self.items)} entries")
        return self._edited(items=_as_type(items, self.type.item_type))

    def with_keys(self, keys: pa.Array) -> MapColumn:
        """The same entries with new keys (`keys[j]` for entry j)."""
        if len(keys) != len(self.keys):
            raise ValueError(f"with_keys: {len(keys)} keys for {len(self.keys)} entries")
        return self._edited(keys=_as_type(keys, self.type.key_type))

    def select(self, keep: np.ndarray) -> MapColumn:
        """Only the entries with `keep` set (bool per entry); rows shrink accordingly, a null map stays null."""
        if keep.all():
            return self
        offsets = np.concatenate(([0], np.cumsum(keep)))[self.offsets]
        mask = pa.array(keep)
        return self._edited(offsets=offsets, keys=self.keys.filter(mask), items=self.items.filter(mask))

    def append(self, rows: np.ndarray, keys: pa.Array | str, items: pa.Array) -> MapColumn:
        """New entries `keys[j]` = `items[j]` at the end of row `rows[j]` (a key string: that key for all), in
        the order given; a null map they are added to becomes a map. One gather over old and new entries."""
        rows = np.asarray(rows, np.int64)
        k = len(rows)
        if k == 0:
            return self
        if isinstance(keys, str):
            keys = pa.repeat(pa.scalar(keys, self.type.key_type), k)
        if len(keys) != k or len(items) != k:
            raise ValueError(f"append: {len(keys)} keys and {len(items)} values for {k} rows")
        if k > 1 and (np.diff(rows) < 0).any():
            order = np.argsort(rows, kind="stable")
            rows, keys, items = rows[order], keys.take(pa.array(order)), items.take(pa.array(order))
        added = np.bincount(rows, minlength=self.num_rows)
        before = np.cumsum(added) - added  # new entries in the rows before each row
        m = len(self.keys)
        gather = np.empty(m + k, dtype=np.int64)
        gather[np.arange(m) + before[self.parents]] = np.arange(m)
        # new entry j of row r lands after r's old entries and the new entries of rows before r:
        # offsets[r] + before[r] + lengths[r] + (j - before[r]) = offsets[r + 1] + j
        gather[self.offsets[rows + 1] + np.arange(k)] = m + np.arange(k)
        order = pa.array(gather)
        return self._edited(
            offsets=self.offsets + np.concatenate(([0], np.cumsum(added))),
            keys=pa.concat_arrays([self.keys, _as_type(keys, self.type.key_type)]).take(order),
            items=pa.concat_arrays([self.items, _as_type(items, self.type.item_type)]).take(order),
            valid=self.valid | (added > 0),
        )

    def append_columns(self, rows: np.ndarray, columns: Mapping[str, pa.Array]) -> MapColumn:
        """For every key of `columns` (in its order), `key` = `columns[key][i]` at the end of row `rows[i]`;
        a null value adds no entry. E.g. computed attributes for the rows a processor selected."""
        rows = np.asarray(rows, np.int64)
        m, k = len(rows), len(columns)
        if m == 0 or k == 0:
            return self
        if any(len(v) != m for v in columns.values()):
            raise ValueError(f"append_columns: every column needs {m} values, one per row")
        # row-major: all new entries of rows[0] (in key order), then those of rows[1], ...
        order = (np.arange(m)[:, None] + np.arange(k)[None, :] * m).ravel()
        items = pa.concat_arrays([_as_type(v, self.type.item_type) for v in columns.values()]).take(pa.array(order))
        keys = pa.array(list(columns), self.type.key_type).take(pa.array(np.tile(np.arange(k), m)))
        entry_rows = np.repeat(rows, k)
        if items.null_count:
            present = items.is_valid()
            keys, items = keys.filter(present), items.filter(present)
            entry_rows = entry_rows[present.to_numpy(zero_copy_only=False)]
        return self.append(entry_rows, keys, items)

    # -- back to Arrow ---------------------------------------------------------------------------------------
    def to_arrow(self) -> pa.MapArray:
        """The map column; the array it was taken from when nothing was edited."""
        if self.original is not None:
            return self.original
        mask = None if self.valid.all() else pa.array(~self.valid)
        return pa.MapArray.from_arrays(
            pa.array(self.offsets, pa.int32()), self.keys, self.items, type=self.type, mask=mask
        )


@dataclass(frozen=True, eq=False)
class NestedMapColumn:
    """The maps inside a list<struct<…, attributes: map>> column (span events, links), taken apart.

    `maps` has one row per list element (event, link) of the whole column; `element_rows` says the span row
    of each element and `entry_rows` the span row of each map entry. Edit `maps`, then `with_maps(maps)`."""

    offsets: np.ndarray  # int64, num_rows + 1, from 0: row i holds elements offsets[i]:offsets[i + 1]
    valid: np.ndarray  # bool per row; False is a null list
    struct: pa.StructArray  # the elements
    children: tuple[pa.Array, ...]  # the struct's fields, its nulls and offset applied
    field: str  # the map field's name
    maps: MapColumn
    type: pa.ListType
    original: pa.Array | None = None  # the array this was taken from, while nothing was edited

    @classmethod
    def of(cls, column: pa.ListArray | pa.ChunkedArray, field: str = "attributes") -> NestedMapColumn:
        """Take a list<struct> column apart down to the map in its struct field `field`."""
        arr = single_array(column)
        layout = _Layout.of(arr)
        struct = layout.children(arr.values)
        children = tuple(struct.flatten())  # unlike .field(), merges the struct's own nulls into its fields
        maps = MapColumn.of(children[struct.type.get_field_index(field)])
        return cls(layout.offsets, layout.valid, struct, children, field, maps, arr.type, arr)

    @property
    def num_rows(self) -> int:
        return len(self.offsets) - 1

    @cached_property
    def element_rows(self) -> np.ndarray:
        """For every element (event, link), the row it belongs to."""
        return np.repeat(np.arange(self.num_rows), np.diff(self.offsets))

    @cached_property
    def element_index(self) -> np.ndarray:
        """For every element, its position in its row's list (events[i])."""
        return np.arange(len(self.element_rows)) - self.offsets[self.element_rows]

    @cached_property
    def entry_rows(self) -> np.ndarray:
        """For every entry of `maps`, the row (span) it belongs to."""
        return self.element_rows[self.maps.parents]

    def with_maps(self, maps: MapColumn) -> NestedMapColumn:
        """The same lists and elements with `maps` (one row per element) in the map field."""
        if maps.num_rows != self.maps.num_rows:
            raise ValueError(f"with_maps: {maps.num_rows} maps for {self.maps.num_rows} elements")
        return replace(self, maps=maps, original=self.original if not maps.changed else None)

    def to_arrow(self) -> pa.ListArray:
        """The list column; the array it was taken from when its maps were not edited."""
        if self.original is not None:
            return self.original
        children = list(self.children)
        children[self.struct.type.get_field_index(self.field)] = self.maps.to_arrow()
        struct_mask = self.struct.is_null() if self.struct.null_count else None
        struct = pa.StructArray.from_arrays(children, fields=list(self.struct.type), mask=struct_mask)
        mask = None if self.valid.all() else pa.array(~self.valid)
        return pa.ListArray.from_arrays(pa.array(self.offsets, pa.int32()), struct, type=self.type, mask=mask)


class MapLookup:
    """The first value of each of a fixed set of keys in every row of a map column.

    `pc.map_lookup` walks every row's map once per key, and normalize asks for about 45 keys. This finds all
    of them in one hash lookup per map entry; each key then costs one `take`. Same answers as
    `pc.map_lookup(column, key, "first")`: null where the key is absent, the map is null, or the value is."""

    def __init__(self, maps: MapColumn | pa.MapArray | pa.ChunkedArray, keys: Iterable[str]) -> None:
        if not isinstance(maps, MapColumn):
            maps = MapColumn.of(maps)
        self._keys = {k: i for i, k in enumerate(dict.fromkeys(keys))}
        n = self._rows = maps.num_rows
        self._values = maps.items
        wanted = pc.index_in(maps.keys, value_set=pa.array(list(self._keys), maps.keys.type))
        code = np.asarray(pc.fill_null(wanted, -1))
        entries = np.flatnonzero(code >= 0)
        rows = maps.parents[entries]
        # np.unique's return_index is the first occurrence: the "first" of map_lookup
        slots, first_entry = np.unique(code[entries].astype(np.int64) * n + rows, return_index=True)
        index = np.full(len(self._keys) * n, -1, np.int64)
        index[slots] = entries[first_entry]
        self._index = index.reshape(len(self._keys), n)

    def __len__(self) -> int:
        return self._rows

    def __call__(self, key: str) -> pa.Array:
        """The value of `key` in every row (one of the keys given at construction)."""
        at = self._index[self._keys[key]]
        missing = at < 0
        if missing.all():
            return pa.nulls(self._rows, self._values.type)
        return self._values.take(pa.array(at, mask=missing))


def _as_type(arr: pa.Array, type_: pa.DataType) -> pa.Array:
    return arr if arr.type == type_ else arr.cast(type_)
