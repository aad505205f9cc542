"""CostProcessor against hand-worked dollars, for every attribute dialect.

Prices are USD per million tokens. They are written here as numbers and checked against genai-prices'
own data (test_hand_worked_prices_are_genai_prices), so a package update that changes a price says
which; the arithmetic in every expected value is worked by hand in the comment beside it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest
from genai_prices import Usage, calc_price

from pipeline.testing import rows as as_rows
from pipeline.testing import spans_batch
from pipeline.trace_summary import TraceSummarizer
from processors.cost import CostConfig, CostProcessor
from processors.cost.testing import DIALECTS, Call, cost_attrs, span

# USD per million tokens, from genai-prices 0.2.3 (checked below)
GPT_4O = {"input": 2.5, "cache_read": 1.25, "output": 10.0}
CLAUDE_35_SONNET = {"input": 3.0, "cache_read": 0.3, "cache_write": 3.75, "output": 15.0}
O3_MINI = {"input": 1.1, "cache_read": 0.55, "output": 4.4}
EMBEDDING_3_SMALL = {"input": 0.02}

FT_OVERRIDE = {
    "model": "ft:gpt-4o-mini:*",
    "provider": "openai",
    "input_mtok": 0.30,
    "output_mtok": 1.20,
    "cache_read_mtok": 0.15,
}
OVERRIDES = CostConfig.model_validate(
    {"overrides": [{"model": "acme-llm-7b", "input_mtok": 0.10, "output_mtok": 0.20}, FT_OVERRIDE]}
)


def _mtok(data: Any, key: str) -> float | None:
    v = getattr(data, key, None)
    return None if v is None else float(v)


@pytest.mark.parametrize(
    ("provider", "model", "expected"),
    [
        ("openai", "gpt-4o-2024-08-06", GPT_4O),
        ("anthropic", "claude-3-5-sonnet-20241022", CLAUDE_35_SONNET),
        ("openai", "o3-mini-2025-01-31", O3_MINI),
        ("openai", "text-embedding-3-small", EMBEDDING_3_SMALL),
    ],
)
def test_hand_worked_prices_are_genai_prices(provider: str, model: str, expected: dict[str, float]) -> None:
    mp = calc_price(Usage(input_tokens=0, output_tokens=0), model, provider_id=provider).model_price
    got = {
        "input": _mtok(mp, "input_mtok"),
        "cache_read": _mtok(mp, "cache_read_mtok"),
        "cache_write": _mtok(mp, "cache_write_mtok"),
        "output": _mtok(mp, "output_mtok"),
    }
    assert {k: v for k, v in got.items() if v is not None} == expected


# (call, status, total, parts) — parts: input (uncached), cache_read, cache_write, output
SCENARIOS: dict[str, tuple[Call, str, float | None, tuple[float, float, float, float] | None]] = {
    # OpenAI with cache reads: 1500 input of which 1024 cached, 700 output (gpt-4o: 2.5 / 1.25 / 10)
    #   uncached 476 × 2.5 = 1190 µ$; cached 1024 × 1.25 = 1280 µ$; output 700 × 10 = 7000 µ$ → 9470 µ$
    "openai_cache_read": (
        Call("openai", "gpt-4o", "gpt-4o-2024-08-06", input=1500, output=700, cache_read=1024),
        "priced",
        0.00947,
        (0.00119, 0.00128, 0.0, 0.007),
    ),
    # Anthropic with cache writes: raw usage input 200 + cache_creation 3000 → input 3200, 400 output
    #   (claude-3-5-sonnet: 3 / cache write 3.75 / 15): 200 × 3 = 600; 3000 × 3.75 = 11250; 400 × 15 = 6000 → 17850 µ$
    "anthropic_cache_write": (
        Call("anthropic", "claude-3-5-sonnet-20241022", input=3200, output=400, cache_write=3000),
        "priced",
        0.01785,
        (0.0006, 0.0, 0.01125, 0.006),
    ),
    # Anthropic with both: 200 uncached + 5000 read + 1000 written = 6200 input, 100 output
    #   200 × 3 = 600; 5000 × 0.3 = 1500; 1000 × 3.75 = 3750; 100 × 15 = 1500 → 7350 µ$
    "anthropic_read_write": (
        Call("anthropic", "claude-3-5-sonnet-20241022", input=6200, output=100, cache_read=5000, cache_write=1000),
        "priced",
        0.00735,
        (0.0006, 0.0015, 0.00375, 0.0015),
    ),
    # reasoning model: 1800 output of which 1536 reasoning, billed as output (o3-mini: 1.1 / 4.4)
    #   2000 × 1.1 = 2200; 1800 × 4.4 = 7920 → 10120 µ$ (reasoning is not added again)
    "reasoning": (
        Call("openai", "o3-mini", "o3-mini-2025-01-31", input=2000, output=1800, reasoning=1536),
        "priced",
        0.01012,
        (0.0022, 0.0, 0.0, 0.00792),
    ),
    # override with a glob: ft:gpt-4o-mini:* at 0.30 / cache read 0.15 / 1.20
    #   10000 input of which 4000 cached, 500 output: 6000 × 0.30 = 1800; 4000 × 0.15 = 600; 500 × 1.2 = 600 → 3000 µ$
    "override_glob": (
        Call("openai", "ft:gpt-4o-mini:acme:support:9x2", input=10000, output=500, cache_read=4000),
        "priced",
        0.003,
        (0.0018, 0.0006, 0.0, 0.0006),
    ),
    # exact-name override of a self-hosted model (vllm has no list price): 1000 × 0.10 + 2000 × 0.20 = 500 µ$
    "override_exact": (
        Call("vllm", "acme-llm-7b", input=1000, output=2000),
        "priced",
        0.0005,
        (0.0001, 0.0, 0.0, 0.0004),
    ),
    # a model no override and no genai-prices entry knows: flagged, cost null (never 0)
    "unknown": (Call("openai", "acme-internal-13b", input=1000, output=100), "unknown_model", None, None),
    # an LLM span without token counts (e.g. the call failed): no_usage, cost null
    "no_usage": (Call("openai", "gpt-4o", "gpt-4o-2024-08-06"), "no_usage", None, None),
}


@pytest.mark.parametrize("dialect", list(DIALECTS))
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_dialect_every_scenario(dialect: str, scenario: str) -> None:
    call, status, total, parts = SCENARIOS[scenario]
    proc = CostProcessor(OVERRIDES)
    row = as_rows(proc.process(spans_batch([span(0, DIALECTS[dialect](call))])))[0]
    assert row["cost_status"] == status
    attrs = cost_attrs(row)
    if total is None:
        assert row["cost_usd"] is None
        assert not {k for k in attrs if k.endswith("_usd")}
    else:
        assert row["cost_usd"] == pytest.approx(total, abs=1e-12)
        assert parts is not None
        got = tuple(float(attrs[f"tracelake.cost.{p}_usd"]) for p in ("input", "cache_read", "cache_write", "output"))
        assert got == pytest.approx(parts, abs=1e-12)
        assert sum(got) == pytest.approx(total, abs=1e-12)
        source = attrs["tracelake.cost.source"]
        assert source.startswith("override" if scenario.startswith("override") else "genai-prices 0.2.3")
    # the typed token columns keep the GenAI arithmetic: input includes the cache, output the reasoning
    assert (row["input_tokens"], row["output_tokens"]) == (call.input, call.output)
    counted = {"priced": proc.stats["priced"], "no_usage": proc.stats["no_usage"]}
    counted["unknown_model"] = sum(proc.stats["unknown_model"].values())
    assert counted == {s: int(s == status) for s in counted}
    if status == "unknown_model":
        assert proc.stats["unknown_model"] == {"acme-internal-13b": 1}


def test_matches_calc_price_on_every_span_of_every_dialect() -> None:
    """The acceptance bar: cost_usd == genai_prices.calc_price(...).total_price to 1e-9, span by span."""
    calls = [c for c, status, _, _ in SCENARIOS.values() if status == "priced" and c.provider != "vllm"]
    calls = [c for c in calls if not c.model.startswith("ft:")]
    spans = [span(i * 3 + j, fn(c)) for i, c in enumerate(calls) for j, fn in enumerate(DIALECTS.values())]
    out = as_rows(CostProcessor().process(spans_batch(spans)))
    for row in out:
        ts = row["start_time"]
        expected = calc_price(
            Usage(
                input_tokens=row["input_tokens"],
                output_tokens=row["output_tokens"],
                cache_read_tokens=row["cache_read_tokens"],
                cache_write_tokens=row["cache_write_tokens"],
                output_reasoning_tokens=row["reasoning_tokens"],
            ),
            row["response_model"] or row["request_model"],
            provider_id=row["provider"],
            genai_request_timestamp=ts,
        ).total_price
        assert row["cost_usd"] == pytest.approx(float(expected), abs=1e-9)


def test_raw_anthropic_input_is_detected_and_the_cache_added_back() -> None:
    """input 200 < cache_write 3000: the count cannot include the cache, so it is Anthropic's raw input."""
    raw = Call("anthropic", "claude-3-5-sonnet-20241022", input=200, output=400, cache_write=3000)
    proc = CostProcessor()
    out = as_rows(proc.process(spans_batch([span(i, fn(raw)) for i, fn in enumerate(DIALECTS.values())])))
    for row in out:
        assert row["cost_usd"] == pytest.approx(0.01785, abs=1e-12)  # as anthropic_cache_write above
        assert row["input_tokens"] == 3200  # the column follows the GenAI rule from here on
        assert "cache_read + cache_write added" in cost_attrs(row)["tracelake.cost.note"]
    assert proc.stats["input_cache_added"] == 3


def test_input_excludes_cache_per_dialect() -> None:
    """A dialect configured as raw (input excludes cache): 200 + 100 cached is 300 input even when 200 ≥ 100."""
    call = Call("openai", "gpt-4o", "gpt-4o-2024-08-06", input=200, output=0, cache_read=100)
    proc = CostProcessor(CostConfig(input_excludes_cache=["openinference"]))
    rows = as_rows(proc.process(spans_batch([span(i, fn(call)) for i, fn in enumerate(DIALECTS.values())])))
    genai_row, oi_row, openllmetry_row = rows
    # included (genai, openllmetry): 100 uncached × 2.5 + 100 cached × 1.25 = 375 µ$
    assert genai_row["cost_usd"] == pytest.approx(0.000375, abs=1e-12)
    assert openllmetry_row["cost_usd"] == pytest.approx(0.000375, abs=1e-12)
    # excluded (openinference): 200 uncached × 2.5 + 100 cached × 1.25 = 625 µ$, input column 300
    assert oi_row["cost_usd"] == pytest.approx(0.000625, abs=1e-12)
    assert (oi_row["input_tokens"], genai_row["input_tokens"]) == (300, 200)


def test_reasoning_reported_outside_output_is_added() -> None:
    """output 200 < reasoning 800 (Gemini's candidates/thoughts split): output is 1000."""
    call = Call("openai", "o3-mini", input=2000, output=200, reasoning=800)
    row = as_rows(CostProcessor().process(spans_batch([span(0, DIALECTS["genai"](call))])))[0]
    # 2000 × 1.1 = 2200; 1000 × 4.4 = 4400 → 6600 µ$
    assert row["cost_usd"] == pytest.approx(0.0066, abs=1e-12)
    assert row["output_tokens"] == 1000


def test_negative_counts_are_not_priced() -> None:
    call = Call("openai", "gpt-4o", input=-5, output=10)
    proc = CostProcessor()
    row = as_rows(proc.process(spans_batch([span(0, DIALECTS["genai"](call))])))[0]
    assert (row["cost_status"], row["cost_usd"]) == ("no_usage", None)
    assert cost_attrs(row)["tracelake.cost.note"].startswith("negative")
    assert proc.stats["invalid_usage"] == 1


def test_embedding_spans_including_openinference_embedding_model_name() -> None:
    call = Call("openai", "text-embedding-3-small", input=1000, output=None, kind="embeddings")
    out = CostProcessor().process(spans_batch([span(i, fn(call)) for i, fn in enumerate(DIALECTS.values())]))
    for row in as_rows(out):
        assert row["span_type"] == "embedding"
        assert row["cost_usd"] == pytest.approx(0.00002, abs=1e-12)  # 1000 × 0.02 = 20 µ$


def test_span_types() -> None:
    usage = {"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 10}
    spans = [
        span(0, {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}),  # not an LLM call
        span(1, {"gen_ai.operation.name": "invoke_agent", **usage}),  # an agent repeating its children's totals
        span(2, {"openinference.span.kind": "CHAIN", "llm.token_count.prompt": 100}),
        span(3, usage),  # untyped, with tokens: an LLM call from an instrumentation without operation names
        span(4, {"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o"}),  # LLM without usage
    ]
    rows = as_rows(CostProcessor().process(spans_batch(spans)))
    assert [(r["span_type"], r["cost_status"]) for r in rows] == [
        ("tool", None),
        ("agent", None),
        ("chain", None),
        ("other", "priced"),
        ("llm", "no_usage"),
    ]
    assert [r["cost_usd"] for r in rows][:3] == [None, None, None]
    assert rows[3]["cost_usd"] == pytest.approx(0.00035, abs=1e-12)  # 100 × 2.5 + 10 × 10 = 350 µ$
    agents = as_rows(CostProcessor(CostConfig(usage_span_types=["agent"])).process(spans_batch(spans[1:2])))
    assert agents[0]["cost_status"] == "priced"


def _at(when: datetime) -> dict[str, int]:
    """make_request() start/end for a span that started at `when` and lasted a second."""
    start = int(when.timestamp()) * 1_000_000_000
    return {"start": start, "end": start + 1_000_000_000}


def test_price_history_by_span_start_time() -> None:
    """deepseek-chat costs double from 00:30 to 16:30 UTC; the span's start time decides."""
    call = Call("deepseek", "deepseek-chat", input=1_000_000, output=100_000, cache_read=200_000)
    attrs = DIALECTS["genai"](call)
    peak, off_peak = datetime(2025, 6, 2, 10, 0, tzinfo=UTC), datetime(2025, 6, 2, 20, 0, tzinfo=UTC)
    rows = as_rows(CostProcessor().process(spans_batch([span(0, attrs, **_at(peak)), span(1, attrs, **_at(off_peak))])))
    # peak (0.27 / cache 0.07 / 1.1): 800000 × 0.27 = 0.216; 200000 × 0.07 = 0.014; 100000 × 1.1 = 0.11 → 0.34
    assert rows[0]["cost_usd"] == pytest.approx(0.34, abs=1e-12)
    # off-peak (0.135 / 0.035 / 0.55): 0.108 + 0.007 + 0.055 → 0.17
    assert rows[1]["cost_usd"] == pytest.approx(0.17, abs=1e-12)
    assert "00:30-16:30 UTC" in cost_attrs(rows[0])["tracelake.cost.source"]


def test_input_size_tiers_apply_to_the_whole_call() -> None:
    """claude-sonnet-4-5 above 200k input tokens: every token of the call at the tier price."""
    tiered = calc_price(Usage(input_tokens=0, output_tokens=0), "claude-sonnet-4-5", provider_id="anthropic")
    tier = tiered.model_price.input_mtok.tiers[0]
    assert (tier.start, float(tier.price)) == (200_000, 6.0)
    when = _at(datetime(2025, 10, 1, 12, tzinfo=UTC))
    big = Call("anthropic", "claude-sonnet-4-5", input=250_000, output=1_000, cache_read=50_000)
    small = Call("anthropic", "claude-sonnet-4-5", input=150_000, output=1_000, cache_read=50_000)
    edge = Call("anthropic", "claude-sonnet-4-5", input=200_000, output=0)
    rows = as_rows(
        CostProcessor().process(
            spans_batch([span(i, DIALECTS["genai"](c), **when) for i, c in enumerate((big, small, edge))])
        )
    )
    # > 200k (6 / cache read 0.6 / 22.5): 200000 × 6 = 1.2; 50000 × 0.6 = 0.03; 1000 × 22.5 = 0.0225 → 1.2525
    assert rows[0]["cost_usd"] == pytest.approx(1.2525, abs=1e-12)
    assert "input > 200000 tokens" in cost_attrs(rows[0])["tracelake.cost.source"]
    # base (3 / 0.3 / 15): 100000 × 3 = 0.3; 50000 × 0.3 = 0.015; 1000 × 15 = 0.015 → 0.33
    assert rows[1]["cost_usd"] == pytest.approx(0.33, abs=1e-12)
    # exactly 200000 is not above the threshold: 200000 × 3 = 0.6
    assert rows[2]["cost_usd"] == pytest.approx(0.6, abs=1e-12)


def test_per_request_and_separately_priced_reasoning() -> None:
    sonar = Call("perplexity", "sonar", input=1000, output=500)
    deep = Call("perplexity", "sonar-deep-research", input=1000, output=5000, reasoning=4000)
    r0, r1 = as_rows(
        CostProcessor().process(spans_batch([span(0, DIALECTS["genai"](sonar)), span(1, DIALECTS["genai"](deep))]))
    )
    # sonar (1 / 1 / $12 per 1000 requests): 1000 × 1 + 500 × 1 = 1500 µ$ + 12000 µ$ per call → 13500 µ$
    assert r0["cost_usd"] == pytest.approx(0.0135, abs=1e-12)
    assert float(cost_attrs(r0)["tracelake.cost.request_usd"]) == pytest.approx(0.012, abs=1e-12)
    # deep research (2 / output 8 / reasoning 3): 1000 × 2 = 2000; (5000 − 4000) × 8 = 8000; 4000 × 3 = 12000 → 22000 µ$
    assert r1["cost_usd"] == pytest.approx(0.022, abs=1e-12)
    assert float(cost_attrs(r1)["tracelake.cost.reasoning_usd"]) == pytest.approx(0.012, abs=1e-12)
    assert "tracelake.cost.reasoning_usd" not in cost_attrs(r0)


def test_models_without_a_listed_rate_are_unknown_not_free() -> None:
    """genai-prices returns $0 for entries with no rate (subscriptions, delisted): never a silent zero."""
    call = Call("github-copilot", "gpt-4o", input=1000, output=100)
    assert (
        calc_price(Usage(input_tokens=1000, output_tokens=100), "gpt-4o", provider_id="github-copilot").total_price == 0
    )
    row = as_rows(CostProcessor().process(spans_batch([span(0, DIALECTS["genai"](call))])))[0]
    assert (row["cost_status"], row["cost_usd"]) == ("unknown_model", None)


def test_unknown_models_counted_by_name_and_bounded() -> None:
    spans = [span(i, DIALECTS["genai"](Call("vllm", f"m{i % 3}", input=1, output=1))) for i in range(7)]
    proc = CostProcessor(CostConfig(max_unknown_names=2))
    proc.process(spans_batch(spans))
    assert proc.stats["unknown_model"] == {"m0": 3, "m1": 2, "(other)": 2}


def test_trace_rollup() -> None:
    """TraceSummarizer over the processor's output: sum of priced calls, token sums, unpriced LLM calls."""
    calls = [SCENARIOS[k][0] for k in ("openai_cache_read", "anthropic_read_write", "unknown", "no_usage")]
    spans = [span(0, {"http.route": "/chat"}, name="POST /chat")]
    spans += [span(i + 1, DIALECTS["genai"](c), parent=f"{1:016x}") for i, c in enumerate(calls)]
    spans.append(span(9, {"gen_ai.operation.name": "execute_tool"}, parent=f"{1:016x}"))
    out = CostProcessor().process(spans_batch(spans))
    summarizer = TraceSummarizer(trace_idle=0.0)
    summarizer.observe(out, "test@1", (1, 1))
    (part,) = summarizer.due(force=True)
    row = part.rows.drop_columns(["start_time", "end_time"]).to_pylist()[0]
    assert row["cost_usd"] == pytest.approx(0.00947 + 0.00735, abs=1e-12)  # 9470 µ$ + 7350 µ$
    assert row["unpriced_calls"] == 2  # the unknown model and the call without usage
    assert row["llm_count"] == 4
    assert row["input_tokens"] == 1500 + 6200 + 1000
    assert row["cache_read_tokens"] == 1024 + 5000
    assert row["cache_write_tokens"] == 1000


def test_rerun_replaces_its_attributes_and_keeps_the_others() -> None:
    call = SCENARIOS["openai_cache_read"][0]
    batch = spans_batch([span(0, {**DIALECTS["genai"](call), "tracelake.cost.input_usd": "999"})])
    proc = CostProcessor()
    once = proc.process(batch)
    twice = proc.process(once)
    for table in (once, twice):
        keys = [k for k, _ in table.column("attributes").to_pylist()[0]]
        assert keys.count("tracelake.cost.input_usd") == 1
        assert "gen_ai.usage.input_tokens" in keys
        assert float(dict(table.column("attributes").to_pylist()[0])["tracelake.cost.input_usd"]) == pytest.approx(
            0.00119
        )
    assert once.column("attributes").to_pylist() == twice.column("attributes").to_pylist()


def test_multi_chunk_null_maps_and_empty_batches() -> None:
    call = SCENARIOS["reasoning"][0]
    one = spans_batch([span(0, DIALECTS["genai"](call)), span(1, {"http.route": "/x"})])
    both = pa.concat_tables([one, one])
    assert both.column("attributes").num_chunks == 2
    out = CostProcessor().process(both)
    assert out.column("cost_status").to_pylist() == ["priced", None, "priced", None]
    assert out.schema == both.schema
    nulled = both.set_column(
        both.schema.get_field_index("attributes"),
        "attributes",
        pa.array([None, None, None, None], both.schema.field("attributes").type),
    )
    rows = as_rows(CostProcessor().process(nulled))
    assert [r["cost_status"] for r in rows] == ["priced", None, "priced", None]
    assert rows[1]["attributes"] is None and cost_attrs(rows[0])["tracelake.cost.source"].startswith("genai")
    sliced = CostProcessor().process(both.slice(1, 2))  # offsets not starting at 0
    assert sliced.column("cost_status").to_pylist() == [None, "priced"]
    kept = [dict(a) for a in sliced.column("attributes").to_pylist()]
    assert kept[0] == {"http.route": "/x"} and kept[1]["gen_ai.request.model"] == "o3-mini"
    empty = both.slice(0, 0)
    assert CostProcessor().process(empty).num_rows == 0


def test_resolution_is_per_distinct_model_not_per_span() -> None:
    call = SCENARIOS["openai_cache_read"][0]
    proc = CostProcessor()
    proc.process(spans_batch([span(i, DIALECTS["genai"](call)) for i in range(50)]))
    proc.process(spans_batch([span(i, DIALECTS["openinference"](call)) for i in range(50)]))
    assert proc.prices.lookups == 1  # gpt-4o-2024-08-06 under provider openai, once
