"""PriceTable: provider names, model resolution, overrides, price history/tiers, describe()."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest
from genai_prices import Usage, calc_price, data_snapshot

from core import schema
from processors.cost import CostConfig, CostProcessor, PriceTable, describe
from processors.cost.prices import PROVIDER_ALIASES

GENAI_PRICES_IDS = {p.id for p in data_snapshot.get_snapshot().providers}


@pytest.mark.parametrize(
    ("name", "provider_id", "how"),
    [
        # OTel GenAI gen_ai.provider.name well-known values
        ("openai", "openai", "alias"),
        ("azure.ai.openai", "azure", "alias"),
        ("azure.ai.inference", "azure", "alias"),
        ("aws.bedrock", "aws", "alias"),
        ("gcp.vertex_ai", "google", "alias"),
        ("gcp.gemini", "google", "alias"),
        ("gcp.gen_ai", "google", "alias"),
        ("anthropic", "anthropic", "alias"),
        ("mistral_ai", "mistral", "alias"),
        ("x_ai", "x-ai", "alias"),
        ("moonshot_ai", "moonshotai", "alias"),
        ("groq", "groq", "alias"),
        ("deepseek", "deepseek", "alias"),
        ("cohere", "cohere", "alias"),
        ("perplexity", "perplexity", "alias"),
        # OpenInference llm.provider / llm.system values
        ("azure", "azure", "alias"),
        ("aws", "aws", "alias"),
        ("google", "google", "alias"),
        ("mistralai", "mistral", "alias"),
        ("vertexai", "google", "alias"),
        ("xai", "x-ai", "alias"),
        # other spellings
        ("VertexAI", "google", "alias"),
        ("Azure_OpenAI", "azure", "alias"),
        ("my-azure-proxy", "azure", "alias"),
        ("together", "together", "id"),
        ("amazon-bedrock-converse", "aws", "provider_match"),
        # self-hosted: overrides only; unknown: the model alone
        ("ollama", None, "self_hosted"),
        ("vllm", None, "self_hosted"),
        ("ibm.watsonx.ai", None, "unknown"),
        ("acme-gateway", None, "unknown"),
        (None, None, "missing"),
    ],
)
def test_provider_names(name: str | None, provider_id: str | None, how: str) -> None:
    match = PriceTable().provider(name)
    assert (match.id, match.how) == (provider_id, how)


def test_every_alias_is_a_genai_prices_id() -> None:
    assert {v for v in PROVIDER_ALIASES.values() if v is not None} <= GENAI_PRICES_IDS


def test_configured_provider_names_win() -> None:
    table = PriceTable(CostConfig(providers={"LiteLLM-Proxy": "openai", "openai": None}))
    assert (table.provider("litellm-proxy").id, table.provider("litellm-proxy").how) == ("openai", "config")
    assert table.provider("openai").how == "self_hosted"


@pytest.mark.parametrize(
    ("provider", "model", "provider_id", "model_id"),
    [
        ("openai", "gpt-4o-2024-08-06", "openai", "gpt-4o"),
        ("anthropic", "claude-3-5-sonnet-20241022", "anthropic", "claude-3-5-sonnet"),
        ("azure.ai.openai", "gpt-4o", "azure", "gpt-4o"),
        ("aws.bedrock", "anthropic.claude-3-5-sonnet-20241022-v2:0", "aws", None),
        ("gcp.vertex_ai", "gemini-1.5-flash-002", "google", "gemini-1.5-flash"),
        ("acme-gateway", "gpt-4o-mini", "openai", "gpt-4o-mini"),  # unknown provider: the model alone
        (None, "claude-3-5-sonnet-20241022", "anthropic", "claude-3-5-sonnet"),
    ],
)
def test_resolution(provider: str | None, model: str, provider_id: str, model_id: str | None) -> None:
    res = PriceTable().resolve(provider, [model])
    assert res.price is not None
    assert res.price.provider_id == provider_id
    if model_id is not None:
        assert res.price.model_id == model_id


def test_response_model_first_then_request_model() -> None:
    table = PriceTable()
    # an Azure deployment name as request model, the real model in the response
    res = table.resolve("azure.ai.openai", ["gpt-4o-mini-2024-07-18", "support-bot-prod"])
    assert res.price is not None and (res.model, res.price.model_id) == ("gpt-4o-mini-2024-07-18", "gpt-4o-mini")
    res = table.resolve("openai", [None, "gpt-4o"])
    assert res.price is not None and res.model == "gpt-4o"


def test_unknown_model_and_self_hosted() -> None:
    table = PriceTable()
    res = table.resolve("openai", ["acme-internal-13b"])
    assert (res.price, res.model) == (None, "acme-internal-13b")
    assert "acme-internal-13b" in res.reason
    res = table.resolve("ollama", ["mistral"])  # would match Mistral's cloud price by name alone
    assert res.price is None and "self-hosted" in res.reason
    assert table.resolve("openai", []).price is None


def test_overrides_win_first_match_and_provider_filter() -> None:
    config = CostConfig.model_validate(
        {
            "overrides": [
                {"model": "gpt-4o", "provider": "azure", "input_mtok": 2.0, "output_mtok": 8.0},  # negotiated
                {"model": "GPT-4O*", "input_mtok": 9.0, "output_mtok": 9.0},
                {"model": "gpt-4o", "input_mtok": 1.0, "output_mtok": 1.0},  # never reached
            ]
        }
    )
    table = PriceTable(config)
    azure = table.resolve("azure.ai.openai", ["gpt-4o"]).price  # provider given as the genai-prices id
    assert azure is not None and azure.is_override and azure.rows[0].input == pytest.approx(2.0e-6)
    openai = table.resolve("openai", ["gpt-4o-2024-08-06"]).price  # the glob, case-insensitively
    assert openai is not None and openai.rows[0].input == pytest.approx(9.0e-6)
    assert "overrides entry 1" in openai.source
    named = PriceTable(CostConfig.model_validate({"overrides": [config.overrides[0].model_dump()]}))
    other = named.resolve("openai", ["gpt-4o"]).price
    assert other is not None and not other.is_override  # the provider filter held: package price


def test_override_on_request_model_beats_package_price_on_response_model() -> None:
    config = CostConfig.model_validate({"overrides": [{"model": "my-deploy", "input_mtok": 1, "output_mtok": 1}]})
    res = PriceTable(config).resolve("azure.ai.openai", ["gpt-4o-2024-08-06", "my-deploy"])
    assert res.price is not None and res.price.is_override and res.model == "my-deploy"


def test_cache_per_distinct_pair() -> None:
    table = PriceTable(CostConfig(cache_entries=16))
    for _ in range(3):
        table.resolve("openai", ["gpt-4o"])
        table.resolve("OpenAI", ["GPT-4o"])
    assert table.lookups == 1
    for i in range(40):  # bounded
        table.resolve("openai", [f"m{i}"])
    assert len(table._cache) <= 16


# -- every genai-prices entry, against calc_price ---------------------------------------------
WHEN = [
    datetime(2025, 1, 15, 12, 0, tzinfo=UTC),
    datetime(2026, 5, 1, 3, 0, tzinfo=UTC),  # inside some off-peak windows
    datetime(2026, 5, 1, 8, 30, tzinfo=UTC),
    datetime(2026, 9, 20, 2, 0, tzinfo=UTC),  # after later price changes
]
# (input incl. cache, output incl. reasoning, cache read, cache write, reasoning)
USAGES = [(1000, 500, 0, 0, 0), (300_000, 2000, 100_000, 20_000, 1000), (5000, 3000, 4000, 0, 2500)]


def test_every_genai_prices_entry_matches_calc_price() -> None:
    """All providers × models × times × usages (tiers, history, off-peak, per-request, reasoning)."""
    rows, expected, unlisted = [], [], 0
    for provider in data_snapshot.get_snapshot().providers:
        for model in provider.models:
            for when in WHEN:
                for i, o, cr, cw, rs in USAGES:
                    usage = Usage(
                        input_tokens=i,
                        output_tokens=o,
                        cache_read_tokens=cr,
                        cache_write_tokens=cw,
                        output_reasoning_tokens=rs,
                    )
                    try:
                        calc = calc_price(usage, model.id, provider_id=provider.id, genai_request_timestamp=when)
                    except LookupError:  # an id its own match rules do not resolve back to it
                        continue
                    rows.append((provider.id, model.id, i, o, cr, cw, rs, int(when.timestamp()) * 10**9))
                    expected.append(calc)
    cols = list(zip(*rows, strict=True))
    n = len(rows)
    table = pa.table(
        {
            "provider": pa.array(cols[0], pa.string()),
            "response_model": pa.array(cols[1], pa.string()),
            "span_type": pa.array(["llm"] * n, pa.string()),
            **{
                name: pa.array(cols[k], pa.int64())
                for k, name in enumerate(
                    ["input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens"],
                    start=2,
                )
            },
            "start_time": pa.array(cols[7], pa.int64()).cast(schema.TS),
            "attributes": pa.array([[] for _ in range(n)], schema.STR_MAP),
        }
    )
    out = CostProcessor().process(schema.conform(table, schema.SPANS))
    compared = 0
    for calc, cost, status in zip(
        expected, out.column("cost_usd").to_pylist(), out.column("cost_status").to_pylist(), strict=True
    ):
        listed = any(
            getattr(calc.model_price, k, None) is not None for k in ("input_mtok", "output_mtok", "requests_kcount")
        )
        if not listed:  # genai-prices says $0 without a rate: we say unknown_model, never a silent zero
            assert (status, cost, calc.total_price) == ("unknown_model", None, 0)
            unlisted += 1
            continue
        assert status == "priced"
        assert cost == pytest.approx(float(calc.total_price), abs=1e-9, rel=1e-12)
        compared += 1
    assert compared > 20_000 and unlisted < compared / 5


# -- tracelake prices MODEL -------------------------------------------------------------------
def test_describe_package_price() -> None:
    text = describe("gpt-4o-2024-08-06", "azure.ai.openai")
    assert "azure.ai.openai → genai-prices provider 'azure'" in text
    assert "genai-prices 0.2.3 azure/gpt-4o" in text
    assert "cache read   $1.25 / MTok" in text and "output       $10 / MTok" in text


def test_describe_history_tiers_and_time() -> None:
    peak = describe("deepseek-chat", "deepseek", at=datetime(2025, 6, 2, 10, tzinfo=UTC))
    assert "input        $0.27 / MTok" in peak and "00:30-16:30 UTC" in peak
    off = describe("deepseek-chat", "deepseek", at=datetime(2025, 6, 2, 20, tzinfo=UTC))
    assert "input        $0.135 / MTok" in off
    tiers = describe("claude-sonnet-4-5", "anthropic", at=datetime(2025, 10, 1, tzinfo=UTC))
    assert "input > 200000 tokens:" in tiers and "$6 / MTok" in tiers


def test_describe_shows_price_history_or_says_there_is_none() -> None:
    """genai-prices dates price changes: claude-sonnet-4-6 lost its >200k-token tier on 2026-03-13."""
    lines = describe("claude-sonnet-4-6", "anthropic").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("price history in genai-prices"))
    assert lines[start + 1 : start + 4] == [
        "  always (default): input $3, cache read $0.3, cache write $3.75, output $15 / MTok",
        "    input > 200000 tokens: input $6, cache read $0.6, cache write $7.5, output $22.5 / MTok",
        "  from 2026-03-13: input $3, cache read $0.3, cache write $3.75, output $15 / MTok",
    ]
    assert "price history: one price, unchanged in genai-prices" in describe("gpt-4o", "openai")
    override = CostConfig.model_validate({"overrides": [{"model": "m", "input_mtok": 1, "output_mtok": 2}]})
    assert "price history: none (an override has one price" in describe("m", None, override)


def test_describe_override_and_unknown() -> None:
    config = CostConfig.model_validate(
        {"overrides": [{"model": "acme-llm-*", "provider": "vllm", "input_mtok": 0.1, "output_mtok": 0.2}]}
    )
    text = describe("acme-llm-7b", "vllm", config)
    assert "override (overrides entry 0: acme-llm-*)" in text and "wins over genai-prices" in text
    assert "input        $0.1 / MTok" in text
    unknown = describe("acme-llm-7b", "vllm")
    assert "price:     none" in unknown and "unknown_model" in unknown
    assert "{model: 'acme-llm-7b', provider: vllm, input_mtok:" in unknown
