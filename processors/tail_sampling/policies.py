"""Sampling policies: one small class per `type`.

A policy never looks at spans one by one. It names the per-trace *features* it needs (a per-row
Arrow column plus how to aggregate it over a trace: min, max, sum or any); the processor computes
every distinct feature once per batch with a single group_by, folds the results into per-trace
state, and at decision time asks each policy about that state (one Python call per trace).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from core.feedback import FEEDBACK_SCOPE
from processors.tail_sampling import config as cfg

NUMERIC = r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$"
# Typed scalars everywhere: pyarrow infers the type of a bare Python value, and each inference tries
# `import dateutil` (absent from this venv, so the failed import repeats): ~45 µs per compute call,
# more than most kernels cost on a batch.
NULL_STR = pa.scalar(None, pa.string())
_NULL_F64 = pa.scalar(None, pa.float64())
_NULL_I64 = pa.scalar(None, pa.int64())
TRUE = pa.scalar(True, pa.bool_())
FALSE = pa.scalar(False, pa.bool_())
_FEEDBACK_SCOPE = pa.scalar(FEEDBACK_SCOPE, pa.string())
_UNNAMED = pa.scalar("feedback", pa.string())


class Rows:
    """Per-row columns of one batch that several features share, each computed once."""

    def __init__(self, batch: pa.Table) -> None:
        self.batch = batch
        self._attrs: dict[str, pa.ChunkedArray] = {}

    def _lookup(self, column: str, key: str) -> pa.ChunkedArray:
        return pc.map_lookup(self.batch.column(column), pa.scalar(key, pa.string()), "first")

    @cached_property
    def real(self) -> pa.ChunkedArray:
        """Spans of the trace, as opposed to synthetic feedback spans (POST /v1/feedback)."""
        return pc.fill_null(pc.not_equal(self.batch.column("scope_name"), _FEEDBACK_SCOPE), TRUE)

    @cached_property
    def feedback_raw(self) -> pa.ChunkedArray:
        return self._lookup("attributes", "feedback.value")

    @cached_property
    def is_feedback(self) -> pa.ChunkedArray:
        """Same test as the worker's feedback table: the row has a `feedback.value` attribute."""
        return pc.is_valid(self.feedback_raw)

    @cached_property
    def feedback_value(self) -> pa.ChunkedArray:
        return as_number(self.feedback_raw)

    @cached_property
    def feedback_name(self) -> pa.ChunkedArray:
        return pc.fill_null(self._lookup("attributes", "feedback.name"), _UNNAMED)

    def attribute(self, key: str) -> pa.ChunkedArray:
        """Span attribute first, then resource attribute."""
        if key not in self._attrs:
            self._attrs[key] = pc.coalesce(self._lookup("attributes", key), self._lookup("resource_attributes", key))
        return self._attrs[key]

    def only_real(self, mask: pa.ChunkedArray) -> pa.ChunkedArray:
        return pc.and_(pc.fill_null(mask, FALSE), self.real)

    def time_ns(self, column: str) -> pa.ChunkedArray:
        return pc.if_else(self.real, self.batch.column(column).cast(pa.int64()), _NULL_I64)


def as_number(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """Attribute strings as float64; null where not a plain number (JSON arrays, text, NaN)."""
    ok = pc.match_substring_regex(values, NUMERIC)
    return pc.cast(pc.if_else(ok, pc.utf8_trim_whitespace(values), NULL_STR), pa.float64())


@dataclass(frozen=True)
class Feature:
    """A per-trace aggregate: `compute` gives one value per row, `agg` folds a trace's rows."""

    key: str
    agg: str  # "min" | "max" | "sum" | "any"
    compute: Callable[[Rows], Any]


def merge(agg: str, old: Any, new: Any) -> Any:
    """Fold one batch's aggregate into the trace's running value (None: no value yet)."""
    if old is None:
        return new
    if new is None:
        return old
    if agg == "min":
        return min(old, new)
    if agg == "max":
        return max(old, new)
    if agg == "sum":
        return old + new
    return old or new  # any


START = Feature("start_min", "min", lambda r: r.time_ns("start_time"))
END = Feature("end_max", "max", lambda r: r.time_ns("end_time"))
SPANS = Feature("span_count", "sum", lambda r: pc.cast(r.real, pa.int64()))
COST = Feature("cost_sum", "sum", lambda r: pc.if_else(r.real, r.batch.column("cost_usd"), _NULL_F64))


class Policy:
    """Base: a named rule over per-trace features; `evaluate` sees the features in `index` order."""

    type: ClassVar[str]
    features: tuple[Feature, ...] = ()

    def __init__(self, name: str) -> None:
        self.name = name
        self.slots: dict[str, int] = {}

    def bind(self, index: dict[str, int]) -> None:
        """Learn where each of this policy's features sits in a trace's value list."""
        self.slots = {f.key: index[f.key] for f in self.features}

    def value(self, values: Sequence[Any], feature: Feature) -> Any:
        return values[self.slots[feature.key]]

    def prepare(self, trace_ids: list[str]) -> None:
        """Called before `evaluate` runs for many traces, so a policy can answer for all of them at once."""

    def evaluate(self, trace_id: str, values: Sequence[Any]) -> bool:
        raise NotImplementedError

    @property
    def monotone(self) -> bool:
        """True when a trace this policy keeps stays kept whatever more of it arrives (an error stays an
        error, a cost sum only grows): such a keep is final before decision_wait, so the trace can be
        released early. Policies with an upper bound or an inverted match are not."""
        return True


class StatusCode(Policy):
    type = "status_code"

    def __init__(self, name: str, block: cfg.StatusCodeBlock) -> None:
        super().__init__(name)
        codes = pa.array(sorted(set(block.status_codes)), pa.string())
        self.feature = Feature(
            f"status:{','.join(codes.to_pylist())}",
            "any",
            lambda r: r.only_real(pc.is_in(r.batch.column("status_code"), value_set=codes)),
        )
        self.features = (self.feature,)

    def evaluate(self, trace_id: str, values: Sequence[Any]) -> bool:
        return bool(self.value(values, self.feature))


class Feedback(Policy):
    """Keeps a trace whose lowest feedback value is <= max_value (thumbs-down, low scores)."""

    type = "feedback"

    def __init__(self, name: str, block: cfg.FeedbackBlock) -> None:
        super().__init__(name)
        self.max_value = block.max_value
        names = None if block.names is None else pa.array(sorted(set(block.names)), pa.string())

        def compute(r: Rows) -> pa.ChunkedArray:
            if names is None:
                return r.feedback_value
            return pc.if_else(pc.is_in(r.feedback_name, value_set=names), r.feedback_value, _NULL_F64)

        self.feature = Feature(f"feedback:{None if names is None else names.to_pylist()}", "min", compute)
        self.features = (self.feature,)

    def matches(self, min_value: float | None) -> bool:
        return min_value is not None and min_value <= self.max_value

    def evaluate(self, trace_id: str, values: Sequence[Any]) -> bool:
        return self.matches(self.value(values, self.feature))


class Cost(Policy):
    """Sum of cost_usd over the trace's spans; unpriced spans count 0, a trace priced nowhere never matches."""

    type = "cost"
    features = (COST,)

    def __init__(self, name: str, block: cfg.CostBlock) -> None:
        super().__init__(name)
        self.min_usd = block.min_usd

    def evaluate(self, trace_id: str, values: Sequence[Any]) -> bool:
        cost = self.value(values, COST)
        return cost is not None and cost >= self.min_usd


class Latency(Policy):
    """Earliest start to latest end, as the Collector measures it (gaps included)."""

    type = "latency"
    features = (START, END)

    def __init__(self, name: str, block: cfg.LatencyBlock) -> None:
        super().__init__(name)
        self.low_ns = block.threshold_ms * 1e6
        self.high_ns = None if block.upper_threshold_ms is None else block.upper_threshold_ms * 1e6

    @property
    def monotone(self) -> bool:
        return self.high_ns is None  # more spans can only make a trace longer

    def evaluate(self, trace_id: str, values: Sequence[Any]) -> bool:
        start, end = self.value(values, START), self.value(values, END)
        if start is None or end is None:
            return False
        duration = end - start
        return duration >= self.low_ns and (self.high_ns is None or duration <= self.high_ns)


class StringAttribute(Policy):
    type = "string_attribute"

    def __init__(self, name: str, block: cfg.StringAttributeBlock) -> None:
        super().__init__(name)
        self.invert = block.invert_match
        key = block.key
        if block.enabled_regex_matching:
            pattern = "|".join(f"(?:{v})" for v in block.values)

            def compute(r: Rows) -> pa.ChunkedArray:
                return r.only_real(pc.match_substring_regex(r.attribute(key), pattern))

            identity = f"re:{pattern}"
        else:
            wanted = pa.array(sorted(set(block.values)), pa.string())

            def compute(r: Rows) -> pa.ChunkedArray:
                return r.only_real(pc.is_in(r.attribute(key), value_set=wanted))

            identity = f"in:{wanted.to_pylist()}"
        self.feature = Feature(f"string:{key!r}:{identity}", "any", compute)
        self.features = (self.feature,)

    @property
    def monotone(self) -> bool:
        return not self.invert

    def evaluate(self, trace_id: str, values: Sequence[Any]) -> bool:
        # invert_match (Collector semantics): keep unless some span or resource has a matching value
        return bool(self.value(values, self.feature)) != self.invert


class NumericAttribute(Policy):
    type = "numeric_attribute"

    def __init__(self, name: str, block: cfg.NumericAttributeBlock) -> None:
        super().__init__(name)
        self.invert = block.invert_match
        key, low, high = block.key, block.min_value, block.max_value

        def compute(r: Rows) -> pa.ChunkedArray:
            number = as_number(r.attribute(key))
            ok = pc.is_valid(number)
            if low is not None:
                ok = pc.and_kleene(ok, pc.greater_equal(number, pa.scalar(low, pa.float64())))
            if high is not None:
                ok = pc.and_kleene(ok, pc.less_equal(number, pa.scalar(high, pa.float64())))
            return r.only_real(ok)

        self.feature = Feature(f"numeric:{key!r}:{low}:{high}", "any", compute)
        self.features = (self.feature,)

    @property
    def monotone(self) -> bool:
        return not self.invert

    def evaluate(self, trace_id: str, values: Sequence[Any]) -> bool:
        return bool(self.value(values, self.feature)) != self.invert


class SpanCount(Policy):
    """Spans of the trace seen before the decision (synthetic feedback spans not counted)."""

    type = "span_count"
    features = (SPANS,)

    def __init__(self, name: str, block: cfg.SpanCountBlock) -> None:
        super().__init__(name)
        self.low, self.high = block.min_spans, block.max_spans

    @property
    def monotone(self) -> bool:
        return self.high is None

    def evaluate(self, trace_id: str, values: Sequence[Any]) -> bool:
        n = self.value(values, SPANS) or 0
        return n >= self.low and (self.high is None or n <= self.high)


FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
MAX_U64 = 2**64 - 1
DEFAULT_SALT = "default-hash-seed"  # the Collector's default, so equal configs keep equal traces


def fnv1a_64(data: bytes, h: int = FNV_OFFSET) -> int:
    for byte in data:
        h = ((h ^ byte) * FNV_PRIME) & MAX_U64
    return h


def collector_threshold(ratio: float) -> int:
    """uint64(big.Float(MaxUint64) * ratio) as the Collector computes it: product rounded to a
    64-bit mantissa (half to even), then truncated."""
    exact = Fraction(ratio) * MAX_U64
    if exact <= 0:
        return 0
    scale = 64 - int(exact).bit_length()
    return int(round(exact * 2**scale) // 2**scale)


class Probabilistic(Policy):
    """FNV-1a-64(salt ‖ trace id bytes) <= percentage × MaxUint64: the Collector's rule, so the decision
    depends on the trace id alone (same in every worker, on every replay, and in a Collector)."""

    type = "probabilistic"

    def __init__(self, name: str, block: cfg.ProbabilisticBlock) -> None:
        super().__init__(name)
        self.threshold = collector_threshold(block.sampling_percentage / 100)
        self._salted = fnv1a_64((block.hash_salt or DEFAULT_SALT).encode())
        self._prepared: dict[str, bool] = {}

    def hash(self, trace_id: str) -> int:
        try:
            raw = bytes.fromhex(trace_id)
        except ValueError:  # not hex: still deterministic
            raw = trace_id.encode()
        return fnv1a_64(raw, self._salted)

    def sample(self, trace_ids: list[str]) -> list[bool]:
        """`evaluate` for many trace ids: the same FNV-1a on Arrow uint64 columns (multiply wraps
        like Go's), one byte position at a time; about 10x faster than the Python loop per trace."""
        if not trace_ids or any(len(t) != 32 for t in trace_ids):
            return [self.hash(t) <= self.threshold for t in trace_ids]
        try:
            raw = bytes.fromhex("".join(trace_ids))
        except ValueError:
            return [self.hash(t) <= self.threshold for t in trace_ids]
        octets = pa.Array.from_buffers(pa.uint8(), len(raw), [None, pa.py_buffer(raw)])
        ids = pa.FixedSizeListArray.from_arrays(octets, 16)
        h: Any = pa.repeat(pa.scalar(self._salted, pa.uint64()), len(trace_ids))
        prime = pa.scalar(FNV_PRIME, pa.uint64())
        for i in range(16):
            h = pc.multiply(
                pc.bit_wise_xor(h, pc.cast(pc.list_element(ids, pa.scalar(i, pa.int32())), pa.uint64())), prime
            )
        return pc.less_equal(h, pa.scalar(self.threshold, pa.uint64())).to_pylist()

    def prepare(self, trace_ids: list[str]) -> None:
        self._prepared = dict(zip(trace_ids, self.sample(trace_ids), strict=True))

    def evaluate(self, trace_id: str, values: Sequence[Any]) -> bool:
        known = self._prepared.get(trace_id)
        return self.hash(trace_id) <= self.threshold if known is None else known


class AlwaysSample(Policy):
    type = "always_sample"

    def evaluate(self, trace_id: str, values: Sequence[Any]) -> bool:
        return True


class And(Policy):
    """Keeps a trace when every sub-policy does; the keep reason is the `and` policy's own name."""

    type = "and"

    def __init__(self, name: str, block: cfg.AndBlock) -> None:
        super().__init__(name)
        self.children = [build(p) for p in block.and_sub_policy]
        unique: dict[str, Feature] = {}
        for child in self.children:
            for f in child.features:
                unique.setdefault(f.key, f)
        self.features = tuple(unique.values())

    def bind(self, index: dict[str, int]) -> None:
        super().bind(index)
        for child in self.children:
            child.bind(index)

    def prepare(self, trace_ids: list[str]) -> None:
        for child in self.children:
            child.prepare(trace_ids)

    @property
    def monotone(self) -> bool:
        return all(child.monotone for child in self.children)

    def evaluate(self, trace_id: str, values: Sequence[Any]) -> bool:
        return all(child.evaluate(trace_id, values) for child in self.children)


def build(policy: Any) -> Policy:
    """A policy object from its validated config entry."""
    if isinstance(policy, cfg.AlwaysSamplePolicy):
        return AlwaysSample(policy.name)
    if isinstance(policy, cfg.AndPolicy):
        return And(policy.name, policy.and_)
    kinds: dict[str, Callable[[str, Any], Policy]] = {
        "status_code": StatusCode,
        "feedback": Feedback,
        "cost": Cost,
        "latency": Latency,
        "string_attribute": StringAttribute,
        "numeric_attribute": NumericAttribute,
        "span_count": SpanCount,
        "probabilistic": Probabilistic,
    }
    return kinds[policy.type](policy.name, getattr(policy, policy.type))
