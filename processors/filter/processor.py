"""FilterProcessor: drop spans by name, type, status, kind, service or attribute values.

Each condition becomes one boolean column built with pyarrow.compute (RE2 regexes, `is_in`,
`map_lookup`); conditions are AND-ed within and OR-ed across, then one `Table.filter` drops rows.
No Python runs per span.

Synthetic feedback spans (scope `tracelake.feedback`) always pass: dropping one would lose a
user's feedback event, which is not a span anyone means to filter.
"""

from __future__ import annotations

import logging
from typing import TypeAlias

import pyarrow as pa
import pyarrow.compute as pc

from core.feedback import is_synthetic
from core.processor import ProcessorContext
from processors.filter.config import AttributeMatch, FilterConfig, SpanCondition, exact_string

log = logging.getLogger("tracelake.processor.filter")

Mask: TypeAlias = pa.ChunkedArray | pa.Array
# typed scalars: an untyped Python scalar makes pyarrow try `import dateutil` on every call (~0.3 ms)
FALSE = pa.scalar(False, pa.bool_())


def _text_match(values: Mask, pattern: AttributeMatch, strict: bool) -> Mask:
    """regex search for strings (unless strict), exact equality for everything else; null never matches."""
    if isinstance(pattern, str) and not strict:
        hit = pc.match_substring_regex(values, pattern)
    else:
        hit = pc.equal(values, pa.scalar(exact_string(pattern), pa.string()))
    return pc.fill_null(hit, FALSE)


def _in(values: Mask, allowed: list[str]) -> Mask:
    return pc.fill_null(pc.is_in(values, value_set=pa.array(allowed, pa.string())), FALSE)


def condition_mask(batch: pa.Table, cond: SpanCondition) -> Mask:
    """True for the rows where every field the condition sets matches."""
    strict = cond.match_type == "strict"
    parts: list[Mask] = []
    if cond.name is not None:
        parts.append(_text_match(batch.column("name"), cond.name, strict))
    if cond.service_name is not None:
        parts.append(_text_match(batch.column("service_name"), cond.service_name, strict))
    for column in ("span_type", "status_code", "kind"):
        allowed: list[str] | None = getattr(cond, column)
        if allowed is not None:
            parts.append(_in(batch.column(column), list(allowed)))
    for column in ("attributes", "resource_attributes"):
        wanted: dict[str, AttributeMatch] | None = getattr(cond, column)
        for key, pattern in (wanted or {}).items():
            found = pc.map_lookup(batch.column(column), pa.scalar(key, pa.string()), "first")
            parts.append(_text_match(found, pattern, strict))
    out = parts[0]
    for p in parts[1:]:
        out = pc.and_(out, p)
    return out


def any_match(batch: pa.Table, conditions: list[SpanCondition]) -> Mask:
    out = condition_mask(batch, conditions[0])
    for cond in conditions[1:]:
        out = pc.or_(out, condition_mask(batch, cond))
    return out


class FilterProcessor:
    """Keeps a span when it matches some include condition (if any are set) and no exclude condition."""

    def __init__(self, config: FilterConfig, context: ProcessorContext | None = None) -> None:
        self.config = config
        self.context = context or ProcessorContext(processor_id="filter")
        self.spans_dropped = 0
        self.stats: dict[str, int] = {}  # nothing on /metrics beyond the worker's spans in/out per processor

    def keep_mask(self, batch: pa.Table) -> Mask:
        spans = self.config.spans
        keep: Mask | None = None
        if spans.include is not None:
            keep = any_match(batch, spans.include)
        if spans.exclude is not None:
            drop = pc.invert(any_match(batch, spans.exclude))
            keep = drop if keep is None else pc.and_(keep, drop)
        assert keep is not None  # the config requires include or exclude
        return pc.or_(keep, is_synthetic(batch))

    def process(self, batch: pa.Table) -> pa.Table:
        if batch.num_rows == 0:
            return batch
        keep = self.keep_mask(batch)
        kept = pc.sum(keep).as_py() or 0
        if kept == batch.num_rows:
            return batch
        self.spans_dropped += batch.num_rows - kept
        return batch.filter(keep)
