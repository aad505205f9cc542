"""core.maps against plain Python on the shapes Arrow allows: null and empty maps, duplicate keys, null values,
entries hidden under null slots, slices (non-zero offsets) and chunked columns."""

from __future__ import annotations

import random
import textwrap
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import core.maps
from core.maps import MapColumn, MapLookup, NestedMapColumn, single_array
from core.schema import EVENT, SPANS, STR_MAP

Row = list[tuple[str, str | None]] | None


def random_maps(rng: random.Random, n: int) -> list[Row]:
    """Rows over a small key alphabet, so duplicates within a row are common."""
    rows: list[Row] = []
    for _ in range(n):
        shape = rng.random()
        if shape < 0.15:
            rows.append(None)
        elif shape < 0.3:
            rows.append([])
        else:
            rows.append(
                [(rng.choice("abcde"), None if rng.random() < 0.1 else str(rng.randint(0, 9))) for _ in range(5)][
                    : rng.randint(1, 5)
                ]
            )
    return rows


def with_hidden_entries(rows: list[Row]) -> pa.MapArray:
    """The same maps, but every null slot has entries under it (Arrow allows it; they are not data)."""
    offsets, keys, items = [0], [], []
    for row in rows:
        for k, v in row if row is not None else [("hidden", "x"), ("a", "hidden")]:
            keys.append(k)
            items.append(v)
        offsets.append(len(keys))
    mask = pa.array([row is None for row in rows])
    return pa.MapArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(keys), pa.array(items), STR_MAP, mask=mask)


def variants(rows: list[Row]) -> list[tuple[str, pa.MapArray | pa.ChunkedArray, list[Row]]]:
    """(name, column, the rows it holds): plain, hidden entries, slices, one chunk, several chunks."""
    plain = pa.array(rows, STR_MAP)
    hidden = with_hidden_entries(rows)
    n = len(rows)
    return [
        ("plain", plain, rows),
        ("hidden entries", hidden, rows),
        ("slice", plain.slice(3, n - 7), rows[3 : n - 4]),
        ("slice of hidden", hidden.slice(5), rows[5:]),
        ("one chunk", pa.chunked_array([plain.slice(2)]), rows[2:]),
        ("chunks", pa.chunked_array([plain.slice(0, 4), hidden.slice(4, 9), plain.slice(13)]), rows),
        ("empty", plain.slice(0, 0), []),
    ]


def unrebuilt(out: pa.Array, column: pa.Array | pa.ChunkedArray) -> bool:
    """`out` is the column's own data (its only chunk's buffers), not a rebuilt copy; several chunks are combined."""
    if isinstance(column, pa.ChunkedArray) and column.num_chunks > 1:
        return out.equals(column.combine_chunks())
    arr = single_array(column)
    addresses = [[b.address if b is not None else None for b in a.buffers()] for a in (out, arr)]
    return addresses[0] == addresses[1] and out.offset == arr.offset


def entries(rows: list[Row]) -> list[tuple[int, str, str | None]]:
    return [(i, k, v) for i, row in enumerate(rows) for k, v in row or []]


CASES = variants(random_maps(random.Random(7), 40))


@pytest.mark.parametrize(("name", "column", "rows"), CASES, ids=[c[0] for c in CASES])
def test_taken_apart_and_rebuilt_unchanged(name: str, column: Any, rows: list[Row]) -> None:
    maps = MapColumn.of(column)
    assert maps.num_rows == len(rows) and maps.offsets[0] == 0
    assert maps.valid.tolist() == [row is not None for row in rows]
    flat = entries(rows)
    assert list(zip(maps.parents.tolist(), maps.keys.to_pylist(), maps.items.to_pylist(), strict=True)) == flat
    assert maps.lengths.tolist() == [len(row or []) for row in rows]
    # nothing edited: the array it came from, not a copy
    assert not maps.changed and maps.to_arrow() is maps.original and unrebuilt(maps.to_arrow(), column)
    assert maps.to_arrow().to_pylist() == rows
    rebuilt = maps.with_items(maps.items)
    assert rebuilt.changed and rebuilt.to_arrow().to_pylist() == rows
    assert rebuilt.to_arrow().type == STR_MAP


@pytest.mark.parametrize(("name", "column", "rows"), CASES, ids=[c[0] for c in CASES])
def test_finding_entries(name: str, column: Any, rows: list[Row]) -> None:
    maps = MapColumn.of(column)
    flat = entries(rows)
    hit = maps.key_mask("a")
    assert hit.tolist() == [k == "a" for _, k, _ in flat]
    assert maps.key_mask("", regex="^[ab]$").tolist() == [k in ("a", "b") for _, k, _ in flat]
    assert maps.row_any(hit).tolist() == [any(k == "a" for k, _ in row or []) for row in rows]
    first = maps.first_index(hit)
    for i, row in enumerate(rows):
        keys = [k for k, _ in row or []]
        assert first[i] == (maps.offsets[i] + keys.index("a") if "a" in keys else -1)


@pytest.mark.parametrize(("name", "column", "rows"), CASES, ids=[c[0] for c in CASES])
def test_edits(name: str, column: Any, rows: list[Row]) -> None:
    maps = MapColumn.of(column)
    flat = entries(rows)
    # new values and keys for the same entries
    upper = maps.with_items(pc.utf8_upper(maps.items)).with_keys(pc.binary_join_element_wise(maps.keys, "!", ""))
    assert upper.to_arrow().to_pylist() == [
        None if row is None else [(k + "!", None if v is None else v.upper()) for k, v in row] for row in rows
    ]
    # dropping entries: the others keep their order, an emptied map stays a map, a null map stays null
    keep = ~maps.key_mask("b")
    assert maps.select(keep).to_arrow().to_pylist() == [
        None if row is None else [(k, v) for k, v in row if k != "b"] for row in rows
    ]
    assert maps.select(np.ones(len(flat), bool)) is maps
    # appending at the end of rows, in the given order, rows out of order, into null maps
    rng = random.Random(len(rows))
    targets = [rng.randrange(len(rows)) for _ in range(2 * len(rows))] if rows else []
    values = [f"new{j}" for j in range(len(targets))]
    appended = maps.append(
        np.array(targets, np.int64), pa.array([f"k{j}" for j in range(len(targets))]), pa.array(values)
    )
    expected: list[Row] = [None if row is None else list(row) for row in rows]
    for j, r in enumerate(targets):
        expected[r] = [*(expected[r] or []), (f"k{j}", values[j])]
    assert appended.to_arrow().to_pylist() == expected
    assert maps.append(np.zeros(0, np.int64), "k", pa.array([], pa.string())) is maps
    # edits compose, and the column they started from is untouched
    both = maps.select(keep).append(np.arange(len(rows)), "z", pa.array(["1"] * len(rows)))
    assert both.to_arrow().to_pylist() == [[(k, v) for k, v in row or [] if k != "b"] + [("z", "1")] for row in rows]
    assert maps.to_arrow().to_pylist() == rows


def test_append_columns_adds_present_values_in_key_order() -> None:
    maps = MapColumn.of(pa.array([[("a", "1")], None, [], [("x", "y")]], STR_MAP))
    out = maps.append_columns(
        np.array([0, 1, 3]),
        {"p": pa.array(["p0", None, "p3"]), "q": pa.array([None, None, "q3"]), "r": pa.array([1.5, None, 2.0])},
    )
    assert out.to_arrow().to_pylist() == [
        [("a", "1"), ("p", "p0"), ("r", "1.5")],
        None,  # every value null: nothing added, the null map stays null
        [],
        [("x", "y"), ("p", "p3"), ("q", "q3"), ("r", "2")],
    ]
    nothing = maps.append_columns(np.array([0, 2]), {"p": pa.nulls(2, pa.string())})
    assert not nothing.changed and nothing.to_arrow() is maps.to_arrow()
    with pytest.raises(ValueError, match="one per row"):
        maps.append_columns(np.array([0, 2]), {"p": pa.array(["only one"])})


def test_mismatched_lengths_are_refused() -> None:
    maps = MapColumn.of(pa.array([[("a", "1"), ("b", "2")]], STR_MAP))
    with pytest.raises(ValueError, match="1 values for 2 entries"):
        maps.with_items(pa.array(["x"]))
    with pytest.raises(ValueError, match="3 keys for 2 entries"):
        maps.with_keys(pa.array(["x", "y", "z"]))
    with pytest.raises(ValueError, match="for 1 rows"):
        maps.append(np.array([0]), pa.array(["k", "l"]), pa.array(["v"]))


def test_from_entries_and_other_value_types() -> None:
    counts = pa.map_(pa.string(), pa.int32())
    built = MapColumn.from_entries(
        4, np.array([2, 0, 2]), pa.array(["EMAIL", "PHONE", "CARD"]), pa.array([1, 2, 3], pa.int32()), counts
    )
    assert built.to_arrow().to_pylist() == [[("PHONE", 2)], [], [("EMAIL", 1), ("CARD", 3)], []]
    assert built.to_arrow().type == counts
    again = MapColumn.of(built.to_arrow()).append(np.array([1]), "EMAIL", pa.array([7], pa.int64()))
    assert again.to_arrow().to_pylist()[1] == [("EMAIL", 7)] and again.items.type == pa.int32()


def test_lookup_agrees_with_map_lookup() -> None:
    rows = random_maps(random.Random(3), 60)
    for name, column, _rows in variants(rows):
        keys = ["a", "b", "e", "absent"]
        lookup = MapLookup(column, keys)
        taken = MapLookup(MapColumn.of(column), keys)
        arr = single_array(column)
        for key in keys:
            expected = pc.map_lookup(arr, pa.scalar(key), "first").to_pylist() if len(arr) else []
            assert lookup(key).to_pylist() == expected, (name, key)
            assert taken(key).to_pylist() == expected, (name, key)
        assert len(lookup) == len(arr)


# -- maps inside events and links -------------------------------------------------------------------------
Event = dict[str, Any] | None


def random_events(rng: random.Random, n: int) -> list[list[Event] | None]:
    out: list[list[Event] | None] = []
    for i in range(n):
        if rng.random() < 0.15:
            out.append(None)
            continue
        events: list[Event] = []
        for j in range(rng.randint(0, 3)):
            if rng.random() < 0.1:
                events.append(None)  # a null event: its attributes are no data either
            else:
                attrs = random_maps(rng, 1)[0]
                events.append({"time": None, "name": f"e{i}.{j}", "attributes": attrs})
        out.append(events)
    return out


def with_hidden_events(rows: list[list[Event] | None]) -> pa.ListArray:
    values: list[Event] = []
    offsets = [0]
    for row in rows:
        values.extend(row if row is not None else [{"time": None, "name": "hidden", "attributes": [("k", "v")]}])
        offsets.append(len(values))
    mask = pa.array([row is None for row in rows])
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, EVENT), pa.list_(EVENT), mask=mask)


EVENT_ROWS = random_events(random.Random(5), 40)
EVENT_CASES = [
    ("plain", pa.array(EVENT_ROWS, pa.list_(EVENT)), EVENT_ROWS),
    ("hidden events", with_hidden_events(EVENT_ROWS), EVENT_ROWS),
    ("slice", pa.array(EVENT_ROWS, pa.list_(EVENT)).slice(6, 20), EVENT_ROWS[6:26]),
    ("slice of hidden", with_hidden_events(EVENT_ROWS).slice(3), EVENT_ROWS[3:]),
    (
        "chunks",
        pa.chunked_array([pa.array(EVENT_ROWS[:10], pa.list_(EVENT)), with_hidden_events(EVENT_ROWS[10:])]),
        EVENT_ROWS,
    ),
]


@pytest.mark.parametrize(("name", "column", "rows"), EVENT_CASES, ids=[c[0] for c in EVENT_CASES])
def test_nested_maps(name: str, column: Any, rows: list[list[Event] | None]) -> None:
    nested = NestedMapColumn.of(column)
    elements = [(i, j, e) for i, row in enumerate(rows) for j, e in enumerate(row or [])]
    assert nested.num_rows == len(rows)
    assert nested.element_rows.tolist() == [i for i, _, _ in elements]
    assert nested.element_index.tolist() == [j for _, j, _ in elements]
    assert nested.maps.to_arrow().to_pylist() == [None if e is None else e["attributes"] for _, _, e in elements]
    assert nested.entry_rows.tolist() == [i for i, _, e in elements for _ in (e or {}).get("attributes") or []]
    assert unrebuilt(nested.to_arrow(), column) and nested.to_arrow().to_pylist() == rows
    assert nested.with_maps(nested.maps).to_arrow() is nested.to_arrow()

    maps = nested.maps.with_items(pc.utf8_upper(nested.maps.items))
    maps = maps.select(~maps.key_mask("b"))
    out = nested.with_maps(maps).to_arrow()
    assert out.type == pa.list_(EVENT)

    def edit(e: Event) -> Event:
        if e is None:
            return None
        attrs = e["attributes"]
        new = None if attrs is None else [(k, None if v is None else v.upper()) for k, v in attrs if k != "b"]
        return {**e, "attributes": new}

    assert out.to_pylist() == [None if row is None else [edit(e) for e in row] for row in rows]
    with pytest.raises(ValueError, match="maps for"):
        nested.with_maps(MapColumn.of(pa.array([[]], STR_MAP)))


def test_the_documented_example_runs() -> None:
    """The example in core.maps' docstring, on a spans table, does what it says."""
    assert core.maps.__doc__ is not None
    blocks = core.maps.__doc__.split("drop a key from events):\n\n", 1)[1].split("\n\n", 2)[:2]
    code = textwrap.dedent("\n".join(blocks))
    attrs = [[("api.key", "sk-1"), ("app.tier", "pro")], [("x", "1")], None]
    events = [
        [{"time": None, "name": "exception", "attributes": [("exception.stacktrace", "…"), ("k", "v")]}],
        None,
        [],
    ]
    batch = pa.table(
        {f.name: pa.nulls(3, f.type) for f in SPANS}
        | {"attributes": pa.array(attrs, STR_MAP), "events": pa.array(events, pa.list_(EVENT))},
        schema=SPANS,
    )
    scope = {"MapColumn": MapColumn, "NestedMapColumn": NestedMapColumn, "np": np, "pa": pa, "pc": pc, "batch": batch}
    exec(code, scope)
    out = scope["batch"]
    assert out.column("attributes").to_pylist() == [
        [("api.key", "<redacted>"), ("app.tier", "pro")],
        [("x", "1"), ("app.tier", "free")],
        [("app.tier", "free")],
    ]
    assert out.column("events").to_pylist()[0][0]["attributes"] == [("k", "v")]
    assert out.column("events").to_pylist()[1:] == [None, []]
