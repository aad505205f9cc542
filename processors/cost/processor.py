"""CostProcessor: `cost_usd` / `cost_status` and `tracelake.cost.*` attributes on every LLM span.

Per batch, Python work is per *distinct* (provider, model names) — resolved once by PriceTable and
remembered — never per span: the spans get a price-row index through a dictionary encoding of that
key, the row is refined on columns for models whose price depends on the start time or the input
size, and the dollars are column arithmetic (README.md: "Token arithmetic").

Statuses (docs/design.md, contract 2): `priced`; `unknown_model` (no override and no genai-prices entry:
cost null, never 0); `no_usage` (an LLM span without usable token counts: cost null). Spans that are
not LLM calls get null cost and null status.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.conventions import alias_keys
from core.maps import MapColumn, MapLookup
from core.processor import ProcessorContext
from processors.cost.config import CostConfig, Dialect
from processors.cost.prices import PriceRow, PriceTable, ResolvedPrice

ATTR_PREFIX = "tracelake.cost."
LLM_TYPES = pa.array(["llm", "embedding"], pa.string())
STATUSES = pa.array(["priced", "unknown_model", "no_usage", None], pa.string())
PRICED, UNKNOWN, NO_USAGE, NONE = 0, 1, 2, 3
# The key that filled `input_tokens` names the span's dialect; tried in the order conventions tries them.
_DIALECT_OF: dict[str, Dialect] = {
    "gen_ai.usage.input_tokens": "genai",
    "gen_ai.usage.prompt_tokens": "openllmetry_legacy",
    "llm.token_count.prompt": "openinference",
}
DIALECT_KEYS: dict[Dialect, str] = {_DIALECT_OF[k]: k for k in alias_keys("input_tokens")}
ENTRY_KEYS = [
    f"{ATTR_PREFIX}{k}"
    for k in (
        "input_usd",
        "cache_read_usd",
        "cache_write_usd",
        "output_usd",
        "reasoning_usd",
        "request_usd",
        "source",
        "note",
    )
]
NOTE_CACHE_ADDED = "input_tokens excluded cache tokens: cache_read + cache_write added to input"
NOTE_REASONING_ADDED = "output_tokens excluded reasoning tokens: reasoning added to output"
NOTE_NEGATIVE = "negative token count: not priced"
_SEP = "\x1f"


@dataclass
class _RowArrays:
    first_row: np.ndarray  # per plan
    input: np.ndarray
    output: np.ndarray
    cache_read: np.ndarray  # 0 where not priced separately
    cache_read_priced: np.ndarray  # 1.0 / 0.0
    cache_write: np.ndarray
    cache_write_priced: np.ndarray
    reasoning: np.ndarray
    reasoning_priced: np.ndarray
    request: np.ndarray
    source: pa.Array


class _RowTable:
    """Every price row of every price seen so far, as columns; row 0 is a zero dummy."""

    def __init__(self) -> None:
        self.prices: list[ResolvedPrice] = []
        self._plan_of: dict[int, int] = {}
        self._first_row: list[int] = []
        self._rows: list[PriceRow] = [PriceRow(0.0, 0.0, None, None, None, 0.0)]
        self._sources: list[str | None] = [None]
        self._arrays: _RowArrays | None = None

    def plan(self, price: ResolvedPrice) -> int:
        found = self._plan_of.get(id(price))
        if found is not None:
            return found
        idx = len(self.prices)
        self.prices.append(price)  # keeps the object alive, so its id stays unique
        self._plan_of[id(price)] = idx
        self._first_row.append(len(self._rows))
        for row in price.rows:
            self._rows.append(row)
            self._sources.append(f"{price.source} [{row.label}]" if row.label else price.source)
        self._arrays = None
        return idx

    def arrays(self) -> _RowArrays:
        if self._arrays is None:
            rows = self._rows

            def col(get: Callable[[PriceRow], float | bool]) -> np.ndarray:
                return np.array([get(r) for r in rows], dtype=np.float64)

            self._arrays = _RowArrays(
                first_row=np.array(self._first_row or [0], dtype=np.int64),
                input=col(lambda r: r.input),
                output=col(lambda r: r.output),
                cache_read=col(lambda r: r.cache_read or 0.0),
                cache_read_priced=col(lambda r: r.cache_read is not None),
                cache_write=col(lambda r: r.cache_write or 0.0),
                cache_write_priced=col(lambda r: r.cache_write is not None),
                reasoning=col(lambda r: r.reasoning or 0.0),
                reasoning_priced=col(lambda r: r.reasoning is not None),
                request=col(lambda r: r.request),
                source=pa.array(self._sources, pa.string()),
            )
        return self._arrays


def _ints(col: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """int64 values (nulls as 0) and validity."""
    valid = col.is_valid().to_numpy(zero_copy_only=False)
    values = pc.fill_null(col, 0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    return values, valid


def _combined(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    """One Array; a single chunk is used as is (combine_chunks would copy it)."""
    if not isinstance(col, pa.ChunkedArray):
        return col
    return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()


def _masked(values: np.ndarray, keep: np.ndarray) -> pa.Array:
    return pa.array(values, pa.float64(), mask=~keep)


class CostProcessor:
    def __init__(
        self, config: CostConfig | None = None, context: ProcessorContext | None = None, table: PriceTable | None = None
    ) -> None:
        self.config = config or CostConfig()
        self.id = context.processor_id if context else "cost"
        self.prices = table or PriceTable(self.config)
        self._rows = _RowTable()
        self._plans: dict[str, tuple[int, str]] = {}  # joined key → (plan or -1, model name for stats)
        self._usage_types = pa.array(list(self.config.usage_span_types), pa.string())
        self.stats: dict[str, Any] = {
            "batches": 0,
            "priced": 0,  # spans with a cost
            "no_usage": 0,  # LLM spans without usable token counts (cost null)
            "invalid_usage": 0,  # of those, spans with a negative count
            "unknown_model": {},  # model name → spans (cost null)
            "input_cache_added": 0,  # spans whose input excluded cache tokens (README)
            "output_reasoning_added": 0,  # spans whose output excluded reasoning tokens
        }

    # -- the chain interface ------------------------------------------------------------------
    def process(self, batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        if n == 0:
            return batch
        self.stats["batches"] += 1
        span_type = _combined(batch.column("span_type"))
        attrs = MapColumn.of(batch.column("attributes"))
        inp = _combined(batch.column("input_tokens"))
        out = _combined(batch.column("output_tokens"))
        has_usage = pc.or_(pc.is_valid(inp), pc.is_valid(out))
        in_scope = pc.fill_null(
            pc.or_(pc.is_in(span_type, LLM_TYPES), pc.and_(has_usage, pc.is_in(span_type, self._usage_types))),
            False,
        )
        rows = np.flatnonzero(in_scope.to_numpy(zero_copy_only=False))
        sel = pa.array(rows, pa.int64())

        in_n, i_ok = _ints(inp.take(sel))
        out_n, o_ok = _ints(out.take(sel))
        cr, _ = _ints(_combined(batch.column("cache_read_tokens")).take(sel))
        cw, _ = _ints(_combined(batch.column("cache_write_tokens")).take(sel))
        rs, _ = _ints(_combined(batch.column("reasoning_tokens")).take(sel))
        usage = i_ok | o_ok
        negative = (in_n < 0) | (out_n < 0) | (cr < 0) | (cw < 0) | (rs < 0)
        invalid = usage & negative
        ok = usage & ~negative

        # token rules (README): input includes cache reads+writes, output includes reasoning — unless
        # the dialect is configured otherwise, or the counts cannot be read that way
        exclude = self._dialect_excludes_cache(attrs, sel) | (cr + cw > in_n)
        cache_added = ok & exclude & (cr + cw > 0)
        reasoning_added = ok & (rs > out_n)
        in_total = np.where(cache_added, in_n + cr + cw, in_n)
        out_total = np.where(reasoning_added, out_n + rs, out_n)

        plan, key_index, names = self._plans_for(batch, sel)
        known = plan >= 0
        priced = ok & known
        arr = self._rows.arrays()
        row = np.where(known, arr.first_row[np.maximum(plan, 0)], 0)
        if priced.any():
            start = _combined(batch.column("start_time")).take(sel).cast(pa.int64())
            now = time.time_ns()
            ts = pc.fill_null(start, now).to_numpy(zero_copy_only=False)
            for p in np.unique(plan[priced]):
                price = self._rows.prices[int(p)]
                if not price.simple:
                    mask = plan == p
                    row[mask] = arr.first_row[p] + price.select(ts[mask], in_total[mask])
        row = np.where(priced, row, 0)

        # dollars: leaf counts as genai-prices computes them (a part priced separately leaves its parent)
        f_in, f_out, f_cr, f_cw, f_rs = (x.astype(np.float64) for x in (in_total, out_total, cr, cw, rs))
        input_usd = arr.input[row] * (f_in - f_cr * arr.cache_read_priced[row] - f_cw * arr.cache_write_priced[row])
        cache_read_usd = arr.cache_read[row] * f_cr
        cache_write_usd = arr.cache_write[row] * f_cw
        output_usd = arr.output[row] * (f_out - f_rs * arr.reasoning_priced[row])
        reasoning_usd = arr.reasoning[row] * f_rs
        request_usd = arr.request[row]
        total = input_usd + cache_read_usd + cache_write_usd + output_usd + reasoning_usd + request_usd

        status_sub = np.where(priced, PRICED, np.where(ok, UNKNOWN, NO_USAGE))
        self._count(status_sub, invalid, cache_added, reasoning_added, key_index[ok & ~known], names)

        # full-length columns
        cost_full = np.zeros(n, np.float64)
        cost_full[rows] = total
        priced_full = np.zeros(n, bool)
        priced_full[rows] = priced
        status_full = np.full(n, NONE, np.int64)
        status_full[rows] = status_sub
        out_table = batch
        out_table = _set(out_table, "cost_usd", _masked(cost_full, priced_full))
        out_table = _set(out_table, "cost_status", STATUSES.take(pa.array(status_full)))
        if cache_added.any():
            out_table = _set(out_table, "input_tokens", _replace(inp, rows[cache_added], in_total[cache_added]))
        if reasoning_added.any():
            out_table = _set(
                out_table, "output_tokens", _replace(out, rows[reasoning_added], out_total[reasoning_added])
            )

        values = [
            pc.cast(_masked(input_usd, priced), pa.string()),
            pc.cast(_masked(cache_read_usd, priced), pa.string()),
            pc.cast(_masked(cache_write_usd, priced), pa.string()),
            pc.cast(_masked(output_usd, priced), pa.string()),
            pc.cast(_masked(reasoning_usd, priced & (arr.reasoning_priced[row] > 0)), pa.string()),
            pc.cast(_masked(request_usd, priced & (request_usd > 0)), pa.string()),
            pc.if_else(pa.array(priced), arr.source.take(pa.array(row)), pa.scalar(None, pa.string())),
            _notes(cache_added, reasoning_added, invalid),
        ]
        # what an earlier pass wrote (a replay, a second cost processor) goes; null values add no entry
        stale = pc.starts_with(attrs.keys, ATTR_PREFIX)
        if pc.any(stale).as_py():
            attrs = attrs.select(~stale.to_numpy(zero_copy_only=False))
        attrs = attrs.append_columns(rows, dict(zip(ENTRY_KEYS, values, strict=True)))
        if attrs.changed:
            out_table = _set(out_table, "attributes", attrs.to_arrow())
        return out_table

    # -- per distinct key ---------------------------------------------------------------------
    def _plans_for(self, batch: pa.Table, sel: pa.Array) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Per selected span: plan index (-1: unknown model) and distinct-key index; per key: model name."""
        if len(sel) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), []
        provider = _combined(batch.column("provider")).take(sel)
        response = _combined(batch.column("response_model")).take(sel)
        request = _combined(batch.column("request_model")).take(sel)
        key = pc.binary_join_element_wise(
            provider, response, request, _SEP, null_handling="replace", null_replacement=""
        )
        encoded = key.dictionary_encode()
        distinct = encoded.dictionary.to_pylist()
        resolved = [self._plan_for(k) for k in distinct]
        plan_of = np.array([p for p, _ in resolved], dtype=np.int64)
        indices = encoded.indices.to_numpy(zero_copy_only=False)
        return plan_of[indices], indices, [name for _, name in resolved]

    def _plan_for(self, key: str) -> tuple[int, str]:
        hit = self._plans.get(key)
        if hit is not None:
            return hit
        provider, *models = key.split(_SEP)
        res = self.prices.resolve(provider or None, models)
        plan = self._rows.plan(res.price) if res.price is not None else -1
        if len(self._plans) >= self.config.cache_entries:
            self._plans.clear()
        self._plans[key] = found = (plan, res.model or "(none)")
        return found

    def _dialect_excludes_cache(self, attrs: MapColumn, sel: pa.Array) -> np.ndarray:
        out = np.zeros(len(sel), bool)
        if not self.config.input_excludes_cache or len(sel) == 0:
            return out
        seen = np.zeros(len(sel), bool)
        found = MapLookup(attrs, DIALECT_KEYS.values())
        for dialect, key in DIALECT_KEYS.items():  # the first key present filled input_tokens
            present = pc.is_valid(found(key).take(sel))
            here = present.to_numpy(zero_copy_only=False) & ~seen
            if dialect in self.config.input_excludes_cache:
                out |= here
            seen |= here
        return out

    def _count(
        self,
        status: np.ndarray,
        invalid: np.ndarray,
        cache_added: np.ndarray,
        reasoning_added: np.ndarray,
        unknown_keys: np.ndarray,
        names: list[str],
    ) -> None:
        s = self.stats
        s["priced"] += int((status == PRICED).sum())
        s["no_usage"] += int((status == NO_USAGE).sum())
        s["invalid_usage"] += int(invalid.sum())
        s["input_cache_added"] += int(cache_added.sum())
        s["output_reasoning_added"] += int(reasoning_added.sum())
        if len(unknown_keys):
            per_model: dict[str, int] = s["unknown_model"]
            counts = np.bincount(unknown_keys, minlength=len(names))
            for i in np.flatnonzero(counts):
                name = names[i]
                if name not in per_model and len(per_model) >= self.config.max_unknown_names:
                    name = "(other)"
                per_model[name] = per_model.get(name, 0) + int(counts[i])


def _notes(cache_added: np.ndarray, reasoning_added: np.ndarray, invalid: np.ndarray) -> pa.Array:
    """tracelake.cost.note: what was corrected or refused; null on most spans."""
    m = len(invalid)
    if not (cache_added.any() or reasoning_added.any() or invalid.any()):
        return pa.nulls(m, pa.string())
    notes = np.full(m, None, dtype=object)
    notes[cache_added] = NOTE_CACHE_ADDED
    both = cache_added & reasoning_added
    notes[reasoning_added & ~both] = NOTE_REASONING_ADDED
    notes[both] = f"{NOTE_CACHE_ADDED}; {NOTE_REASONING_ADDED}"
    notes[invalid] = NOTE_NEGATIVE
    return pa.array(notes, pa.string())


def _set(table: pa.Table, name: str, column: pa.Array) -> pa.Table:
    idx = table.schema.get_field_index(name)
    field = table.schema.field(idx)
    if column.type != field.type:
        column = column.cast(field.type)
    return table.set_column(idx, field, column)


def _replace(column: pa.Array, positions: np.ndarray, values: np.ndarray) -> pa.Array:
    """`column` with `values` at `positions` (int64)."""
    current, valid = _ints(column)
    current = current.copy()
    current[positions] = values
    valid = valid.copy()
    valid[positions] = True
    return pa.array(current, pa.int64(), mask=~valid)
