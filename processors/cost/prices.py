"""PriceTable: (provider, model) → the price in force, from YAML overrides or genai-prices.

genai-prices is asked once per distinct (provider, model names) — `calc_price` resolves versioned ids
and raises LookupError for unknown models — and the answer is kept as a `ResolvedPrice`: every
price row the model can have (its price history × its input-size tiers) as USD per token. The
processor then picks a row per span on columns (span start time, input tokens), so a price change on
a date, an off-peak window or a 200k-token tier is applied exactly as `calc_price` would, without a
Python call per span. `describe()` is what `tracelake prices MODEL` prints.
"""

from __future__ import annotations

import fnmatch
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal

import genai_prices
import numpy as np
from genai_prices import Usage, calc_price, data_snapshot
from genai_prices.data_units import unit_data
from genai_prices.types import (
    ConditionalPrice,
    ModelInfo,
    ModelPrice,
    Provider,
    StartDateConstraint,
    TieredPrices,
    TimeOfDateConstraint,
)
from genai_prices.units import UnitRegistry

from processors.cost.config import CostConfig, OverrideSource, PriceOverride

GENAI_PRICES_VERSION: str = genai_prices.__version__
DAY_NS = 86_400 * 1_000_000_000

# Span provider names (OTel GenAI gen_ai.provider.name, OpenInference llm.provider/llm.system,
# OpenLLMetry gen_ai.system, lower-cased) → genai-prices provider id. None: a self-hosted runtime
# with no list price — only an override prices it. Names not listed: a genai-prices id or
# provider_match (e.g. "bedrock" → aws) if one fits, else the model is matched alone.
PROVIDER_ALIASES: dict[str, str | None] = {
    # OTel GenAI well-known values (semantic-conventions-genai model/gen-ai/registry.yaml)
    "openai": "openai",
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "anthropic": "anthropic",
    "aws.bedrock": "aws",
    "gcp.vertex_ai": "google",
    "gcp.gemini": "google",
    "gcp.gen_ai": "google",
    "cohere": "cohere",
    "deepseek": "deepseek",
    "groq": "groq",
    "mistral_ai": "mistral",
    "perplexity": "perplexity",
    "x_ai": "x-ai",
    "moonshot_ai": "moonshotai",
    # OpenInference llm.provider / llm.system values
    "azure": "azure",
    "aws": "aws",
    "google": "google",
    "mistralai": "mistral",
    "vertexai": "google",
    "xai": "x-ai",
    # other spellings instrumentations send (OpenLLMetry gen_ai.system is lower-cased here)
    "azureopenai": "azure",
    "azure_openai": "azure",
    "bedrock": "aws",
    "aws_bedrock": "aws",
    "vertex_ai": "google",
    "gemini": "google",
    "google_genai": "google",
    "mistral": "mistral",
    "together_ai": "together",
    "togetherai": "together",
    # self-hosted runtimes: the model name says nothing about a price; overrides only
    "ollama": None,
    "vllm": None,
    "lmstudio": None,
    "lm_studio": None,
    "llama.cpp": None,
    "llamacpp": None,
    "localai": None,
    "tgi": None,
    "sglang": None,
}

_REGISTRY = UnitRegistry(unit_data)
# our token columns → genai-prices price keys (README: "genai-prices usage units")
PRICE_KEYS: dict[str, str] = {
    "input": "input_mtok",
    "output": "output_mtok",
    "cache_read": "cache_read_mtok",
    "cache_write": "cache_write_mtok",
    "reasoning": "output_reasoning_mtok",
    "request": "requests_kcount",
}
_PER: dict[str, int] = {part: _REGISTRY.unit_for_price_key(key).per for part, key in PRICE_KEYS.items()}


@dataclass(frozen=True)
class PriceRow:
    """One price: USD per token (`request`: per call). None: not priced separately (see README)."""

    input: float
    output: float
    cache_read: float | None
    cache_write: float | None
    reasoning: float | None
    request: float
    label: str = ""  # which history entry / tier this row is, for tracelake.cost.source


@dataclass(frozen=True, eq=False)
class Variant:
    """A price-history entry: active when its constraint holds (None: always), one row per tier level."""

    constraint: StartDateConstraint | TimeOfDateConstraint | None
    rows: tuple[PriceRow, ...]


@dataclass(frozen=True, eq=False)
class ResolvedPrice:
    """Everything needed to price any span of one model: history × tiers, as flat rows."""

    source: str
    provider_id: str | None
    model_id: str
    model_name: str | None
    is_override: bool
    # input-token thresholds: a span's tier level is how many of them its input count exceeds
    breakpoints: tuple[int, ...]
    variants: tuple[Variant, ...]

    @property
    def levels(self) -> int:
        return len(self.breakpoints) + 1

    @property
    def rows(self) -> list[PriceRow]:
        """Row r = variant * levels + level."""
        return [row for v in self.variants for row in v.rows]

    @property
    def simple(self) -> bool:
        return len(self.variants) == 1 and not self.breakpoints

    def select(self, start_ns: np.ndarray, input_tokens: np.ndarray) -> np.ndarray:
        """Row offset per span: the last active history entry (genai-prices' rule), then the tier."""
        variant = np.zeros(len(start_ns), dtype=np.int64)
        for i, v in enumerate(self.variants):
            if v.constraint is None:
                variant[:] = i
            else:
                variant[_active(v.constraint, start_ns)] = i
        level = np.zeros(len(start_ns), dtype=np.int64)
        for b in self.breakpoints:
            level += input_tokens > b
        return variant * self.levels + level

    def row_at(self, when: datetime, input_tokens: int = 0) -> PriceRow:
        ts = np.array([_ns(when)], dtype=np.int64)
        return self.rows[int(self.select(ts, np.array([input_tokens], dtype=np.int64))[0])]


@dataclass(frozen=True)
class ProviderMatch:
    """How a span's provider name maps to genai-prices."""

    name: str | None  # as sent, lower-cased
    id: str | None  # genai-prices provider id; None: match by model alone (or self-hosted)
    how: str  # alias, config, id, provider_match, self_hosted, unknown, missing

    def describe(self) -> str:
        shown = self.name or "(none)"
        if self.how == "self_hosted":
            return f"{shown} → self-hosted runtime: no list price, only overrides price it"
        if self.id is None:
            return f"{shown} → not a genai-prices provider: the model is matched by name alone"
        why = {
            "alias": "built-in provider table",
            "config": "cost.providers",
            "id": "a genai-prices provider id",
            "provider_match": "genai-prices provider_match",
        }[self.how]
        return f"{shown} → genai-prices provider {self.id!r} ({why})"


@dataclass(frozen=True)
class Resolution:
    price: ResolvedPrice | None
    model: str | None  # the model name that matched (or, unknown, the first one tried)
    provider: ProviderMatch
    reason: str = ""  # why there is no price


def _ns(when: datetime) -> int:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = when.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def _tod_ns(value: time) -> int:
    """Time of day in UTC, as genai-prices reads it (naive times are UTC)."""
    if value.tzinfo is not None:
        value = datetime.combine(date(1970, 1, 1), value).astimezone(UTC).timetz()
    return ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000_000 + value.microsecond * 1_000


def _active(constraint: StartDateConstraint | TimeOfDateConstraint, start_ns: np.ndarray) -> np.ndarray:
    if isinstance(constraint, StartDateConstraint):
        # active from 00:00 UTC of start_date (genai-prices compares UTC dates)
        return start_ns >= _ns(datetime.combine(constraint.start_date, time(0), UTC))
    tod = start_ns % DAY_NS
    lo, hi = _tod_ns(constraint.start_time), _tod_ns(constraint.end_time)
    if hi < lo:  # the window wraps midnight
        return (tod >= lo) | (tod < hi)
    return (tod >= lo) & (tod < hi)


def _hhmm(ns: int) -> str:
    minutes = ns // 60_000_000_000
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _constraint_label(c: StartDateConstraint | TimeOfDateConstraint | None) -> str:
    if isinstance(c, StartDateConstraint):
        return f"from {c.start_date.isoformat()}"
    if isinstance(c, TimeOfDateConstraint):
        return f"{_hhmm(_tod_ns(c.start_time))}-{_hhmm(_tod_ns(c.end_time))} UTC"
    return ""


def _tiered(model_price: ModelPrice) -> list[TieredPrices]:
    return [v for k in PRICE_KEYS.values() if isinstance(v := getattr(model_price, k, None), TieredPrices)]


def _price_at(value: Decimal | TieredPrices | None, applicable: set[int]) -> Decimal | None:
    """The price of one key at a tier level: the highest tier whose start the input exceeds."""
    if value is None or not isinstance(value, TieredPrices):
        return value
    chosen = value.base
    for tier in sorted(value.tiers, key=lambda t: t.start):
        if tier.start in applicable:
            chosen = tier.price
    return chosen


def _row(model_price: ModelPrice, applicable: set[int], label: str) -> PriceRow:
    def per_unit(part: str) -> float | None:
        value = _price_at(getattr(model_price, PRICE_KEYS[part], None), applicable)
        return None if value is None else float(value) / _PER[part]

    return PriceRow(
        input=per_unit("input") or 0.0,
        output=per_unit("output") or 0.0,
        cache_read=per_unit("cache_read"),
        cache_write=per_unit("cache_write"),
        reasoning=per_unit("reasoning"),
        request=per_unit("request") or 0.0,
        label=label,
    )


def _prices_token_or_request(model_price: ModelPrice) -> bool:
    return any(getattr(model_price, PRICE_KEYS[p], None) is not None for p in ("input", "output", "request"))


def package_price(provider: Provider, model: ModelInfo) -> ResolvedPrice | None:
    """All price rows of one genai-prices model; None when it has no token or request price at all."""
    history: list[ConditionalPrice] = (
        [ConditionalPrice(prices=model.prices)] if isinstance(model.prices, ModelPrice) else list(model.prices)
    )
    if not any(_prices_token_or_request(cp.prices) for cp in history):
        return None  # e.g. priced per audio hour: a token-priced span would silently cost $0
    breakpoints = tuple(sorted({t.start for cp in history for tp in _tiered(cp.prices) for t in tp.tiers}))
    variants = []
    for cp in history:
        rows = []
        for level in range(len(breakpoints) + 1):
            labels = [x for x in (_constraint_label(cp.constraint),) if x]
            if level:
                labels.append(f"input > {breakpoints[level - 1]} tokens")
            rows.append(_row(cp.prices, set(breakpoints[:level]), ", ".join(labels)))
        variants.append(Variant(cp.constraint, tuple(rows)))
    return ResolvedPrice(
        source=f"genai-prices {GENAI_PRICES_VERSION} {provider.id}/{model.id}",
        provider_id=provider.id,
        model_id=model.id,
        model_name=model.name,
        is_override=False,
        breakpoints=breakpoints,
        variants=tuple(variants),
    )


def override_price(override: PriceOverride, source: OverrideSource) -> ResolvedPrice:
    def mtok(value: float | None) -> float | None:
        return None if value is None else value / 1_000_000

    row = PriceRow(
        input=override.input_mtok / 1_000_000,
        output=override.output_mtok / 1_000_000,
        cache_read=mtok(override.cache_read_mtok),
        cache_write=mtok(override.cache_write_mtok),
        reasoning=mtok(override.reasoning_mtok),
        request=0.0,
    )
    return ResolvedPrice(
        source=f"override ({source.label()}: {override.model})",
        provider_id=override.provider,
        model_id=override.model,
        model_name=None,
        is_override=True,
        breakpoints=(),
        variants=(Variant(None, (row,)),),
    )


class PriceTable:
    """Resolves (provider, model names) once and remembers the answer (LRU of `cache_entries`)."""

    def __init__(self, config: CostConfig | None = None) -> None:
        self.config = config or CostConfig()
        self._overrides = [(o, src, override_price(o, src)) for o, src in self.config.all_overrides()]
        self._aliases: dict[str, str | None] = {**PROVIDER_ALIASES}
        self._configured = dict(self.config.providers)
        self._snapshot = data_snapshot.get_snapshot()
        self._ids = {p.id for p in self._snapshot.providers}
        self._cache: OrderedDict[tuple[str | None, tuple[str, ...]], Resolution] = OrderedDict()
        self._by_model: dict[tuple[str, str], ResolvedPrice | None] = {}
        self._by_name: dict[tuple[str | None, str], tuple[ResolvedPrice | None, str]] = {}
        self.lookups = 0  # genai-prices resolutions done (not cache hits)

    def provider(self, name: str | None) -> ProviderMatch:
        if name is None or not name.strip():
            return ProviderMatch(None, None, "missing")
        key = name.strip().lower()
        for table, how in ((self._configured, "config"), (self._aliases, "alias")):
            if key in table:
                pid = table[key]
                return ProviderMatch(key, pid, how if pid is not None else "self_hosted")
        if key in self._ids:
            return ProviderMatch(key, key, "id")
        if "azure" in key:  # provider_match would read "azure_openai" as openai
            return ProviderMatch(key, "azure", "alias")
        found = data_snapshot.find_provider_by_id(self._snapshot.providers, key)
        if found is not None:
            return ProviderMatch(key, found.id, "provider_match")
        return ProviderMatch(key, None, "unknown")

    def resolve(self, provider: str | None, models: Sequence[str | None]) -> Resolution:
        names = tuple(dict.fromkeys(m.strip() for m in models if m and m.strip()))
        key = (provider, names)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        res = self._resolve(provider, names)
        self._cache[key] = res
        if len(self._cache) > self.config.cache_entries:
            self._cache.popitem(last=False)
        return res

    def _override_for(self, match: ProviderMatch, model: str) -> ResolvedPrice | None:
        lowered = model.lower()
        for o, _src, price in self._overrides:
            if o.provider is not None and o.provider.lower() not in {match.name, match.id}:
                continue
            if fnmatch.fnmatchcase(lowered, o.model.lower()):
                return price
        return None

    def _resolve(self, provider: str | None, names: tuple[str, ...]) -> Resolution:
        match = self.provider(provider)
        first = names[0] if names else None
        for name in names:  # overrides win over the package, for every candidate name
            if (price := self._override_for(match, name)) is not None:
                return Resolution(price, name, match)
        if not names:
            return Resolution(None, None, match, "the span names no model")
        if match.how == "self_hosted":
            return Resolution(None, first, match, f"{match.name} is self-hosted: add an override for its models")
        reasons = []
        for name in names:
            price, reason = self._package(match.id, name)
            if price is not None:
                return Resolution(price, name, match)
            reasons.append(reason)
        return Resolution(None, first, match, "; ".join(reasons))

    def _package(self, provider_id: str | None, name: str) -> tuple[ResolvedPrice | None, str]:
        """genai-prices' answer for one (provider id, model name), asked once."""
        key = (provider_id, name.lower())
        found = self._by_name.get(key)
        if found is not None:
            return found
        self.lookups += 1
        try:
            calc = calc_price(Usage(input_tokens=0, output_tokens=0), name, provider_id=provider_id)
        except LookupError as e:
            found = (None, str(e))
        except ValueError as e:  # price data genai-prices itself refuses
            found = (None, f"{name}: {e}")
        else:
            k = (calc.provider.id, calc.model.id)
            if k not in self._by_model:
                self._by_model[k] = package_price(calc.provider, calc.model)
            price = self._by_model[k]
            reason = "" if price is not None else f"{k[0]}/{k[1]} lists no token price in genai-prices"
            found = (price, reason)
        if len(self._by_name) >= self.config.cache_entries:
            self._by_name.clear()
        self._by_name[key] = found
        return found


# -- tracelake prices MODEL [--provider P] -------------------------------------------------------
def _usd(per_token: float | None, per: int = 1_000_000) -> str:
    if per_token is None:
        return "-"
    return f"${per_token * per:.6g}"


def _row_lines(row: PriceRow, indent: str = "  ") -> list[str]:
    lines = [f"{indent}input        {_usd(row.input)} / MTok (uncached input tokens)"]
    if row.cache_read is not None:
        lines.append(f"{indent}cache read   {_usd(row.cache_read)} / MTok (taken out of input)")
    else:
        lines.append(f"{indent}cache read   not priced separately: cache reads cost the input price")
    if row.cache_write is not None:
        lines.append(f"{indent}cache write  {_usd(row.cache_write)} / MTok (taken out of input)")
    else:
        lines.append(f"{indent}cache write  not priced separately: cache writes cost the input price")
    lines.append(f"{indent}output       {_usd(row.output)} / MTok")
    if row.reasoning is not None:
        lines.append(f"{indent}reasoning    {_usd(row.reasoning)} / MTok (taken out of output)")
    else:
        lines.append(f"{indent}reasoning    part of output, at the output price")
    if row.request:
        lines.append(f"{indent}per request  {_usd(row.request, 1)}")
    return lines


def _brief(row: PriceRow) -> str:
    parts = [f"input {_usd(row.input)}"]
    if row.cache_read is not None:
        parts.append(f"cache read {_usd(row.cache_read)}")
    if row.cache_write is not None:
        parts.append(f"cache write {_usd(row.cache_write)}")
    parts.append(f"output {_usd(row.output)}")
    return ", ".join(parts) + " / MTok" + (f" + {_usd(row.request, 1)} per request" if row.request else "")


def _history_lines(price: ResolvedPrice) -> list[str]:
    """Every price the model has had (genai-prices keeps dated and time-of-day prices), with its tiers."""
    if price.is_override:
        return ["price history: none (an override has one price, for every time)"]
    if len(price.variants) == 1 and price.variants[0].constraint is None:
        return [f"price history: one price, unchanged in genai-prices {GENAI_PRICES_VERSION} (the price above)"]
    out = [f"price history in genai-prices {GENAI_PRICES_VERSION} (the last entry whose condition holds wins):"]
    for v in price.variants:
        cond = _constraint_label(v.constraint) or "always (default)"
        out.append(f"  {cond}: {_brief(v.rows[0])}")
        for b, row in zip(price.breakpoints, v.rows[1:], strict=True):
            if _brief(row) != _brief(v.rows[0]):
                out.append(f"    input > {b} tokens: {_brief(row)}")
    return out


def describe(
    model: str, provider: str | None = None, config: CostConfig | None = None, at: datetime | None = None
) -> str:
    """What `tracelake prices MODEL [--provider P]` prints: the price a span would get, and from where."""
    when = at or datetime.now(UTC)
    table = PriceTable(config)
    res = table.resolve(provider, [model])
    out = [f"model:     {model}", f"provider:  {res.provider.describe()}"]
    price = res.price
    if price is None:
        out.append(f"price:     none ({res.reason}); spans get cost_status unknown_model and a null cost_usd")
        out.append("add an override to price it (USD per million tokens):")
        out.append("  cost:")
        out.append("    overrides:")
        prov = f", provider: {res.provider.name}" if res.provider.name else ""
        out.append(f"      - {{model: {model!r}{prov}, input_mtok: 0.0, output_mtok: 0.0}}")
        return "\n".join(out)
    if price.is_override:
        out.append(f"price:     {price.source} — wins over genai-prices {GENAI_PRICES_VERSION}")
    else:
        named = f" ({price.model_name})" if price.model_name else ""
        out.append(f"price:     {price.source}{named}")
    stamp = when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    out.append(f"in force at {stamp} (a span's own start time picks its price):")
    current = price.row_at(when)
    out.extend(_row_lines(current))
    if price.breakpoints:
        out.append("input-size tiers (the tier applies to every token of the call, as genai-prices computes):")
        for b in price.breakpoints:
            tier = price.row_at(when, b + 1)
            same = _row_lines(tier) == _row_lines(current)
            out.append(f"  input > {b} tokens:" + (" same prices (no tier in the price in force)" if same else ""))
            if not same:
                out.extend(_row_lines(tier, "    "))
    out.extend(_history_lines(price))
    out.append(
        "token rules: input includes cache reads and writes, output includes reasoning (processors/cost/README.md)"
    )
    return "\n".join(out)
