"""One LLM call, counted once: which spans describe a call another span of the trace already describes.

Two instrumentations on one client record every call twice: the anthropic SDK's own span nests under
an instrumentor's span (or sits beside it: OpenLLMetry does not make its span current), a LangChain LLM
span wraps the OpenAI instrumentor's span. Both are typed `llm` and priced. The rule (README, "One call
counted once"): two `llm` / `embedding` spans of one trace are the same call when

- they come from different instrumentation scopes (one instrumentation records a call once),
- they have the same span type, and the same provider (or one names none),
- they share a model name (either's request or response model equals either's),
- they are parent and child, or siblings whose time ranges overlap,
- the input-side counts they both report agree (input, cache read, cache write tokens; a span without
  usage agrees with any; output counts may differ: streaming instrumentations count the last chunk
  differently),
- and each is the other's nearest such candidate (start and end times) within its instrumentation scope,
  so two parallel identical calls stay two calls.

Spans linked by such pairs form one call. It is counted on the span that reports usage, then reports the
most token counts, then started last (closest to the wire), then has the greatest span id; every other
span of the call gets `duplicate_of` = that span's id.

Everything is column work (Arrow joins, numpy) over the LLM spans only.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.schema import TOKEN_COLUMNS

CALL_TYPES = pa.array(["llm", "embedding"], pa.string())
INPUT_SIDE = ("input_tokens", "cache_read_tokens", "cache_write_tokens")
# What the rule reads of a span; `start` and `end` are int64 nanoseconds.
CALL_COLUMNS = (
    "trace_id",
    "span_id",
    "parent_span_id",
    "scope_name",
    "span_type",
    "provider",
    "request_model",
    "response_model",
    "start",
    "end",
    *TOKEN_COLUMNS,
)
MARKS = pa.schema([("trace_id", pa.string()), ("span_id", pa.string()), ("duplicate_of", pa.string())])


def call_rows(spans: pa.Table, real: pa.Array | pa.ChunkedArray, extra: tuple[str, ...] = ()) -> pa.Table:
    """The LLM-call spans among the `real` rows of a spans table: CALL_COLUMNS, then the `extra` columns."""
    is_call = pc.and_(pc.fill_null(pc.is_in(spans.column("span_type"), CALL_TYPES), False), real)
    names = [c for c in CALL_COLUMNS if c not in ("start", "end")] + ["start_time", "end_time", *extra]
    calls = spans.select(names).filter(is_call)  # only the columns needed: a filter copies them
    columns = {c: calls.column(c) for c in (*CALL_COLUMNS, *extra) if c not in ("start", "end")}
    columns["start"] = calls.column("start_time").cast(pa.int64())
    columns["end"] = calls.column("end_time").cast(pa.int64())
    return pa.table({c: columns[c] for c in (*CALL_COLUMNS, *extra)})


def find_duplicates(calls: pa.Table) -> pa.Table:
    """(trace_id, span_id, duplicate_of) for every call span that repeats another span's call."""
    calls = calls.filter(_in_mixed_traces(calls)) if calls.num_rows >= 2 else calls
    n = calls.num_rows
    if n < 2:
        return MARKS.empty_table()
    calls = calls.combine_chunks()
    rows = pa.array(np.arange(n, dtype=np.int64))
    keyed = pa.table(
        {
            "trace_id": calls.column("trace_id"),
            "span_id": calls.column("span_id"),
            "parent": calls.column("parent_span_id"),
            "row": rows,
        }
    )
    child = keyed.join(keyed, ["trace_id", "parent"], ["trace_id", "span_id"], "inner", right_suffix="_p")
    sibling = keyed.join(keyed, ["trace_id", "parent"], ["trace_id", "parent"], "inner", right_suffix="_s")
    a = np.concatenate([_ints(child, "row"), _ints(sibling, "row")])
    b = np.concatenate([_ints(child, "row_p"), _ints(sibling, "row_s")])
    nested = np.concatenate([np.ones(child.num_rows, bool), np.zeros(sibling.num_rows, bool)])
    keep = a != b
    a, b, nested = a[keep], b[keep], nested[keep]
    if len(a) == 0:
        return MARKS.empty_table()
    same = _same_call(calls, a, b, nested)
    a, b = a[same], b[same]
    if len(a) == 0:
        return MARKS.empty_table()
    a, b = _mutual_nearest(calls, a, b)
    if len(a) == 0:
        return MARKS.empty_table()
    group = _components(n, a, b)
    counted = _preferred(calls, group)
    dup = np.flatnonzero(counted[group] != np.arange(n))
    target = counted[group[dup]]
    take = pa.array(dup)
    return pa.table(
        {
            "trace_id": calls.column("trace_id").take(take),
            "span_id": calls.column("span_id").take(take),
            "duplicate_of": calls.column("span_id").take(pa.array(target)),
        },
        schema=MARKS,
    )


def _in_mixed_traces(calls: pa.Table) -> np.ndarray:
    """The calls of traces whose calls come from two scopes or more: only those can pair (cheaper than a join)."""
    trace = np.asarray(pc.dictionary_encode(calls.column("trace_id")).combine_chunks().indices)
    scope_col = pc.fill_null(calls.column("scope_name"), "").combine_chunks()
    scope = np.asarray(scope_col.dictionary_encode().indices, np.int64)
    low = np.full(trace.max() + 1, np.iinfo(np.int64).max)
    high = np.full(trace.max() + 1, -1)
    np.minimum.at(low, trace, scope)
    np.maximum.at(high, trace, scope)
    return (low != high)[trace]


def _ints(table: pa.Table, column: str) -> np.ndarray:
    return np.asarray(pc.fill_null(table.column(column), 0).combine_chunks(), dtype=np.int64)


def _same_call(calls: pa.Table, a: np.ndarray, b: np.ndarray, nested: np.ndarray) -> np.ndarray:
    """Which candidate pairs (rows a, b) satisfy the rule's conditions, as a bool array."""
    ia, ib = pa.array(a), pa.array(b)

    def pair(column: str) -> tuple[pa.Array, pa.Array]:
        col = calls.column(column).combine_chunks()
        return col.take(ia), col.take(ib)

    def equal(x: pa.Array, y: pa.Array) -> np.ndarray:
        return np.asarray(pc.fill_null(pc.equal(x, y), False))

    def agree(x: pa.Array, y: pa.Array) -> np.ndarray:  # equal, or either missing
        return np.asarray(pc.fill_null(pc.equal(x, y), True))

    ok = ~equal(*pair("scope_name")) & equal(*pair("span_type")) & agree(*pair("provider"))
    req_a, req_b = pair("request_model")
    resp_a, resp_b = pair("response_model")
    ok &= equal(req_a, req_b) | equal(req_a, resp_b) | equal(resp_a, req_b) | equal(resp_a, resp_b)
    for column in INPUT_SIDE:
        ok &= agree(*pair(column))
    start, end = _ints(calls, "start"), _ints(calls, "end")
    overlap = (start[a] <= end[b]) & (start[b] <= end[a])
    return ok & (nested | overlap)


def _mutual_nearest(calls: pa.Table, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pairs in which each span is the other's nearest candidate from the other's scope."""
    a, b = np.concatenate([a, b]), np.concatenate([b, a])  # both directions
    start, end = _ints(calls, "start"), _ints(calls, "end")
    distance = np.abs(start[a] - start[b]) + np.abs(end[a] - end[b])
    scope = np.asarray(pc.fill_null(calls.column("scope_name"), "").combine_chunks().dictionary_encode().indices)
    order = np.lexsort((b, distance, scope[b], a))  # per (a, scope of b): nearest first
    a, b = a[order], b[order]
    first = np.ones(len(a), bool)
    first[1:] = (a[1:] != a[:-1]) | (scope[b[1:]] != scope[b[:-1]])
    a, b = a[first], b[first]
    n = calls.num_rows
    mutual = np.isin(b * n + a, a * n + b) & (a < b)  # (b, a) is a nearest pair too; each pair once
    return a[mutual], b[mutual]


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row, the smallest row linked to it through the pairs (a, b)."""
    label = np.arange(n)
    while True:
        low = np.minimum(label[a], label[b])
        new = label.copy()
        np.minimum.at(new, a, low)
        np.minimum.at(new, b, low)
        new = new[new]  # follow labels to their own label
        if np.array_equal(new, label):
            return label
        label = new


def _preferred(calls: pa.Table, group: np.ndarray) -> np.ndarray:
    """Per group label, the row counted for the call: usage, most token counts, latest start, greatest id."""
    reported = np.zeros(calls.num_rows, np.int64)
    for column in TOKEN_COLUMNS:
        reported += np.asarray(calls.column(column).combine_chunks().is_valid())
    span_rank = np.asarray(pc.rank(calls.column("span_id").combine_chunks(), "ascending"))
    order = np.lexsort((span_rank, _ints(calls, "start"), reported, reported > 0, group))
    counted = np.arange(calls.num_rows)
    last = np.ones(len(order), bool)
    last[:-1] = group[order[1:]] != group[order[:-1]]
    counted[group[order[last]]] = order[last]
    return counted
