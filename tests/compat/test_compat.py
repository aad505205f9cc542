"""Real SDKs, real instrumentation libraries, a real `tracelake run`: every typed column, the cost, and one call
counted once (tests/compat/expected.py says what each library sends, and where it falls short)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
from genai_prices import Usage, calc_price

from core.schema import TOKEN_COLUMNS
from tests.compat.conftest import Lake
from tests.compat.expected import FAMILIES, GENAI_FINISH, Expect, Sent
from tests.compat.scenarios import BY_NAME, Scenario

CASES = [pytest.param(family, name, id=f"{family}-{name}") for family, table in FAMILIES.items() for name in table]


def _columns(span: dict[str, Any]) -> dict[str, Any]:
    return {
        "scope": span["scope_name"],
        "span_type": span["span_type"],
        "provider": span["provider"],
        "request_model": span["request_model"],
        "response_model": span["response_model"],
        "tokens": tuple(span[c] for c in TOKEN_COLUMNS),
        "finish_reason": span["finish_reason"],
        "status": span["status_code"],
        "tool_name": span["tool_name"],
        "counted": span["duplicate_of"] is None,
    }


def _expected(sent: Sent) -> dict[str, Any]:
    return {
        "scope": sent.scope,
        "span_type": sent.span_type,
        "provider": sent.provider,
        "request_model": sent.request_model,
        "response_model": sent.response_model,
        "tokens": sent.tokens,
        "finish_reason": sent.finish_reason,
        "status": sent.status,
        "tool_name": sent.tool_name,
        "counted": sent.counted,
    }


def _matched(got: list[dict[str, Any]], expect: Expect) -> list[tuple[Sent, dict[str, Any]]]:
    """Expected rows paired with the spans, per (scope, span type) in start order."""
    spans: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for span in got:
        spans[(span["scope_name"], span["span_type"])].append(span)
    rows: dict[tuple[str, str], list[Sent]] = defaultdict(list)
    for sent in expect.spans:
        rows[(sent.scope, sent.span_type)].append(sent)
    assert {k: len(v) for k, v in spans.items()} == {k: len(v) for k, v in rows.items()}
    return [(sent, span) for key, sents in rows.items() for sent, span in zip(sents, spans[key], strict=True)]


def _wrong(sent: Sent, scenario: Scenario) -> set[str]:
    """The columns in which `sent` differs from the truth of the scenario."""
    wrong = set()
    call = sent.span_type in ("llm", "embedding")
    reply = None if scenario.fails else scenario.replies[sent.reply]
    truth: dict[str, Any] = {
        "provider": scenario.provider,
        "request_model": scenario.request_model if sent.span_type != "tool" else None,
        "response_model": reply.model if call and reply else None,
        "tool_name": reply.tool if sent.span_type == "tool" and reply else None,
    }
    wrong |= {c for c, v in truth.items() if getattr(sent, c) != v}
    usage = reply.usage if call and reply else None
    counts = (usage.input, usage.output, usage.cache_read, usage.cache_write, usage.reasoning) if usage else (0,) * 5
    for column, value, true in zip(TOKEN_COLUMNS, sent.tokens, counts, strict=True):
        if value != true and not (value is None and true == 0):
            wrong.add(column)
    if call and reply and sent.span_type == "llm":
        if sent.finish_reason not in (reply.finish_reason, GENAI_FINISH[reply.finish_reason]):
            wrong.add("finish_reason")
    elif sent.finish_reason is not None:
        wrong.add("finish_reason")
    if (sent.status == "ERROR") != (call and scenario.fails):
        wrong.add("status")
    return wrong


@pytest.mark.parametrize(("family", "name"), CASES)
def test_typed_columns(lake: Lake, family: str, name: str) -> None:
    scenario, expect = BY_NAME[name], FAMILIES[family][name]
    for sent, span in _matched(lake.of(family, scenario), expect):
        assert _columns(span) == _expected(sent), span["name"]
        # a value that differs from the truth is a documented gap of the library, and a documented gap is real
        assert _wrong(sent, scenario) == set(sent.gaps), span["name"]


@pytest.mark.parametrize(("family", "name"), CASES)
def test_cost_is_genai_prices_own_calculation(lake: Lake, family: str, name: str) -> None:
    for span in lake.of(family, BY_NAME[name]):
        counts = [span[c] for c in TOKEN_COLUMNS]
        if span["span_type"] not in ("llm", "embedding"):
            assert (span["cost_usd"], span["cost_status"]) == (None, None)
        elif all(c is None for c in counts[:2]):
            assert (span["cost_usd"], span["cost_status"]) == (None, "no_usage")
        else:
            inp, out, cache_read, cache_write, reasoning = (c or 0 for c in counts)
            usage = Usage(
                input_tokens=inp,
                output_tokens=out,
                cache_read_tokens=cache_read,
                cache_write_tokens=cache_write,
                output_reasoning_tokens=reasoning,
            )
            price = calc_price(
                usage,
                span["response_model"] or span["request_model"],
                provider_id=span["provider"],
                genai_request_timestamp=span["start_time"],
            )
            assert span["cost_status"] == "priced"
            assert span["cost_usd"] == pytest.approx(float(price.total_price), rel=1e-9, abs=1e-15)


@pytest.mark.parametrize(("family", "name"), CASES)
def test_one_call_counted_once(lake: Lake, family: str, name: str) -> None:
    scenario, expect = BY_NAME[name], FAMILIES[family][name]
    spans = lake.of(family, scenario)
    counted = [s for s in spans if s["span_type"] in ("llm", "embedding") and s["duplicate_of"] is None]
    by_id = {s["span_id"]: s for s in spans}
    for span in spans:  # a duplicate names a counted span of the same trace
        if span["duplicate_of"] is not None:
            assert by_id[span["duplicate_of"]] in counted
            assert by_id[span["duplicate_of"]]["trace_id"] == span["trace_id"]
    traces = [lake.traces[t] for t in sorted({s["trace_id"] for s in spans})]
    assert len(traces) == 1 + sum(s.own_trace for s in expect.spans)
    calls = 0 if scenario.api == "openai.embeddings" else len(scenario.replies) or 1  # llm_count: LLM calls only
    assert (sum(t["llm_count"] for t in traces) != calls) == (expect.calls_gap is not None), expect.calls_gap
    for column in TOKEN_COLUMNS:
        assert _sum(t[column] for t in traces) == _sum(s[column] for s in counted), column
    assert _sum(t["cost_usd"] for t in traces) == pytest.approx(_sum(s["cost_usd"] for s in counted), abs=1e-15)
    if expect.calls_gap is None and not any(s.gaps for s in expect.spans if s.counted):
        usages = [r.usage for r in scenario.replies]
        truth = [sum(getattr(u, f) for u in usages) for f in ("input", "output", "cache_read", "cache_write")]
        assert [_sum(t[c] for t in traces) or 0 for c in TOKEN_COLUMNS[:4]] == truth


def _sum(values: Any) -> Any:
    present = [v for v in values if v is not None]
    return sum(present) if present else None
