"""The three attribute dialects land in the same typed columns (README's mapping table)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from core.conventions import COLUMN_ALIASES, CorrelationKeys, MapLookup, normalize
from pipeline.otlp.decode import SourcedRequest, decode
from tests.conftest import make_request

TRACE = "cd" * 16


def _row(attrs: dict[str, object], resource: dict[str, object] | None = None, keys: CorrelationKeys | None = None):
    req = make_request([{"trace_id": TRACE, "span_id": "0000000000000001", "attrs": attrs}], resource=resource)
    table = normalize(decode([SourcedRequest(req, "t@1")]), keys)
    return table.drop_columns(["start_time", "end_time", "events"]).to_pylist()[0]


@pytest.mark.parametrize(
    ("attrs", "span_type"),
    [
        ({"gen_ai.operation.name": "chat"}, "llm"),
        ({"gen_ai.operation.name": "generate_content"}, "llm"),
        ({"gen_ai.operation.name": "embeddings"}, "embedding"),
        ({"gen_ai.operation.name": "execute_tool"}, "tool"),
        ({"gen_ai.operation.name": "invoke_agent"}, "agent"),
        ({"gen_ai.operation.name": "invoke_workflow"}, "chain"),
        ({"openinference.span.kind": "RETRIEVER"}, "retrieval"),
        ({"openinference.span.kind": "RERANKER"}, "rerank"),
        ({"openinference.span.kind": "GUARDRAIL"}, "guardrail"),
        ({"openinference.span.kind": "CHAIN"}, "chain"),
        ({"traceloop.span.kind": "workflow"}, "chain"),
        ({"traceloop.span.kind": "tool"}, "tool"),
        ({"llm.request.type": "chat", "traceloop.span.kind": "task"}, "llm"),
        ({"llm.request.type": "embedding"}, "embedding"),
        ({"gen_ai.operation.name": "something_new"}, "other"),
        ({}, "other"),
    ],
)
def test_span_type(attrs: dict[str, object], span_type: str) -> None:
    assert _row(attrs)["span_type"] == span_type


def test_genai_semconv() -> None:
    r = _row(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "azure.ai.openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o-2024-08-06",
            "gen_ai.usage.input_tokens": 1500,
            "gen_ai.usage.output_tokens": 700,
            "gen_ai.usage.cache_read.input_tokens": 1024,
            "gen_ai.usage.cache_creation.input_tokens": 12,
            "gen_ai.usage.reasoning.output_tokens": 500,
            "gen_ai.conversation.id": "conv-9",
        }
    )
    assert (r["provider"], r["request_model"], r["response_model"]) == (
        "azure.ai.openai",
        "gpt-4o",
        "gpt-4o-2024-08-06",
    )
    tokens = [
        r[c] for c in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens")
    ]
    assert tokens == [1500, 700, 1024, 12, 500]
    assert r["session_id"] == "conv-9"


def test_openinference() -> None:
    r = _row(
        {
            "openinference.span.kind": "LLM",
            "llm.system": "anthropic",
            "llm.model_name": "claude-3-5-sonnet-20241022",
            "llm.token_count.prompt": 900,
            "llm.token_count.completion": 50,
            "llm.token_count.prompt_details.cache_read": 800,
            "llm.token_count.prompt_details.cache_write": 100,
            "llm.token_count.completion_details.reasoning": 7,
            "session.id": "s-1",
            "user.id": "u-1",
        }
    )
    assert (r["span_type"], r["provider"], r["request_model"]) == ("llm", "anthropic", "claude-3-5-sonnet-20241022")
    assert (r["input_tokens"], r["output_tokens"], r["cache_read_tokens"], r["cache_write_tokens"]) == (
        900,
        50,
        800,
        100,
    )
    assert (r["reasoning_tokens"], r["session_id"], r["user_id"]) == (7, "s-1", "u-1")


def test_openllmetry_legacy() -> None:
    r = _row(
        {
            "llm.request.type": "chat",
            "gen_ai.system": "Cohere",
            "gen_ai.request.model": "command-r",
            "gen_ai.usage.prompt_tokens": 11,
            "gen_ai.usage.completion_tokens": 22,
            "gen_ai.usage.cache_read_input_tokens": 3,
            "gen_ai.usage.reasoning_tokens": 4,
            "gen_ai.completion.0.finish_reason": "COMPLETE",
            "gen_ai.prompt.0.content": "hi",
        }
    )
    assert (r["provider"], r["input_tokens"], r["output_tokens"], r["cache_read_tokens"]) == ("cohere", 11, 22, 3)
    assert (r["reasoning_tokens"], r["finish_reason"]) == (4, "COMPLETE")


def test_cache_writes_under_the_current_name_win_over_the_deprecated_ones() -> None:
    """semantic-conventions-genai #440 renamed cache_creation to cache_write; the anthropic SDK and the official
    anthropic instrumentation send the new name, OpenLLMetry still the old one."""
    assert _row({"gen_ai.usage.cache_write.input_tokens": 1000})["cache_write_tokens"] == 1000
    assert _row({"gen_ai.usage.cache_creation.input_tokens": 900})["cache_write_tokens"] == 900
    assert _row({"gen_ai.usage.cache_creation_input_tokens": 800})["cache_write_tokens"] == 800
    both = {"gen_ai.usage.cache_creation.input_tokens": 900, "gen_ai.usage.cache_write.input_tokens": 1000}
    assert _row(both)["cache_write_tokens"] == 1000


def test_alias_table_lists_current_names_before_deprecated_ones() -> None:
    for column, aliases in COLUMN_ALIASES.items():
        flags = [a.deprecated for a in aliases]
        assert flags == sorted(flags), column  # no current name after a deprecated one
        assert all(a.source for a in aliases), column
        assert len({a.key for a in aliases}) == len(aliases), column


def test_readme_mapping_table_names_every_alias() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    start, end = readme.index("### How the three dialects map to columns"), readme.index("### One call counted once")
    table = readme[start:end]
    missing = [a.key for aliases in COLUMN_ALIASES.values() for a in aliases if f"`{a.key}`" not in table]
    assert missing == []


def test_openinference_openai_models_from_invocation_parameters() -> None:
    """openinference-instrumentation-openai: llm.model_name is the response's snapshot; the requested model is
    only in the invocation parameters' JSON."""
    r = _row(
        {
            "openinference.span.kind": "LLM",
            "llm.system": "openai",
            "llm.invocation_parameters": '{"temperature": 0.2, "model": "gpt-4o-mini", "stream": true}',
            "llm.model_name": "gpt-4o-mini-2024-07-18",
        }
    )
    assert (r["request_model"], r["response_model"]) == ("gpt-4o-mini", "gpt-4o-mini-2024-07-18")
    escaped = _row({"llm.invocation_parameters": '{"model": "ft:gpt-4o-mini:acme:\\"q\\"", "n": 1}'})
    assert escaped["request_model"] == 'ft:gpt-4o-mini:acme:"q"'  # not for the fast path: parsed as JSON
    failed = _row({"llm.invocation_parameters": '{"model": "gpt-4o-mini"}', "openinference.span.kind": "LLM"})
    assert (failed["request_model"], failed["response_model"]) == ("gpt-4o-mini", None)
    embedding = _row(
        {
            "openinference.span.kind": "EMBEDDING",
            "embedding.invocation_parameters": '{"model": "text-embedding-3-small", "encoding_format": "base64"}',
            "embedding.model_name": "text-embedding-3-small-v2",
        }
    )
    assert (embedding["request_model"], embedding["response_model"]) == (
        "text-embedding-3-small",
        "text-embedding-3-small-v2",
    )
    named_only = _row({"openinference.span.kind": "EMBEDDING", "embedding.model_name": "text-embedding-3-small"})
    assert (named_only["request_model"], named_only["response_model"]) == ("text-embedding-3-small", None)


@pytest.mark.parametrize(
    "params",
    [
        '{"max_tokens": 256}',  # OpenInference's anthropic instrumentor: no model in the parameters
        "not json",
        '["model", "gpt-4o"]',
        '{"model": {"name": "gpt-4o"}}',
        '{"extra_body": {"model": "gpt-4o"}}',
    ],
)
def test_invocation_parameters_without_a_usable_model(params: str) -> None:
    r = _row({"llm.invocation_parameters": params, "llm.model_name": "claude-sonnet-4-5"})
    assert (r["request_model"], r["response_model"]) == ("claude-sonnet-4-5", None)


def test_anthropic_sdk_stop_reason_is_the_finish_reason() -> None:
    assert _row({"anthropic.message.stop_reason": "end_turn"})["finish_reason"] == "end_turn"
    both = {"gen_ai.response.finish_reasons": '["stop"]', "anthropic.message.stop_reason": "end_turn"}
    assert _row(both)["finish_reason"] == "stop"


def test_finish_reasons_array_and_tool_names() -> None:
    req = make_request([{"trace_id": TRACE, "span_id": "0000000000000001"}])
    sp = req.resource_spans[0].scope_spans[0].spans[0]
    kv = sp.attributes.add()
    kv.key = "gen_ai.response.finish_reasons"
    for reason in ("stop", "length"):
        kv.value.array_value.values.add().string_value = reason
    row = normalize(decode([SourcedRequest(req, "t@1")])).select(["finish_reason", "attributes"]).to_pylist()[0]
    assert row["finish_reason"] == "stop,length"
    assert row["attributes"] == [("gen_ai.response.finish_reasons", '["stop","length"]')]
    assert _row({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"})["tool_name"] == "search"
    assert _row({"openinference.span.kind": "TOOL", "tool.name": "calc"})["tool_name"] == "calc"
    assert _row({"traceloop.span.kind": "tool", "traceloop.entity.name": "lookup"})["tool_name"] == "lookup"
    assert _row({"traceloop.span.kind": "task", "traceloop.entity.name": "lookup"})["tool_name"] is None


def test_garbage_numbers_become_null_not_errors() -> None:
    r = _row({"gen_ai.usage.input_tokens": "lots", "gen_ai.usage.output_tokens": "12.0", "llm.token_count.prompt": "9"})
    assert r["input_tokens"] is None  # the first key present wins, even when it is unusable
    assert r["output_tokens"] == 12


def test_correlation_keys_from_resource_and_configurable() -> None:
    r = _row({"app.prompt_version": "v7"}, resource={"tenant.id": "acme", "enduser.id": "bob"})
    assert (r["tenant_id"], r["user_id"], r["prompt_version"]) == ("acme", "bob", "v7")
    keys = CorrelationKeys(session=("traceloop.association.properties.session_id",), tenant=("org",))
    r = _row({"traceloop.association.properties.session_id": "s9", "org": "globex", "tenant.id": "x"}, keys=keys)
    assert (r["session_id"], r["tenant_id"]) == ("s9", "globex")


def test_multi_chunk_and_empty_tables() -> None:
    one = decode(
        [
            SourcedRequest(
                make_request(
                    [{"trace_id": TRACE, "span_id": "0000000000000001", "attrs": {"gen_ai.operation.name": "chat"}}]
                ),
                "t@1",
            )
        ]
    )
    both = pa.concat_tables([one, one])
    assert both.column("attributes").num_chunks == 2
    assert normalize(both).column("span_type").to_pylist() == ["llm", "llm"]
    empty = decode([])
    assert normalize(empty).num_rows == 0


@pytest.mark.parametrize(
    ("carried", "expected"),
    [
        ('{"EMAIL_ADDRESS": 2, "PHONE_NUMBER": 1}', [("EMAIL_ADDRESS", 2), ("PHONE_NUMBER", 1)]),
        ("not json", None),  # a client may send anything under our key: ignored, never a crash
        ('["EMAIL_ADDRESS"]', None),
        (None, None),
    ],
)
def test_pii_counts_carried_across_the_bus(carried: str | None, expected: list[tuple[str, int]] | None) -> None:
    attrs: dict[str, object] = {"gen_ai.operation.name": "chat"}
    if carried is not None:
        attrs["tracelake.pii_found"] = carried
    assert _row(attrs)["pii_found"] == expected


def test_map_lookup_agrees_with_arrow_on_nulls_duplicates_and_slices() -> None:
    maps = pa.array(
        [
            [("a", "1"), ("b", "2"), ("a", "3")],  # duplicate key: the first wins
            None,  # a null map
            [],
            [("b", None), ("c", "x")],  # a null value is a found value
            [("c", "y"), ("a", "4")],
        ],
        pa.map_(pa.string(), pa.string()),
    )
    for arr in (maps, maps.slice(1), maps.slice(2, 2)):
        lookup = MapLookup(arr, ["a", "b", "c", "absent"])
        for key in ("a", "b", "c", "absent"):
            assert lookup(key).to_pylist() == pc.map_lookup(arr, pa.scalar(key), "first").to_pylist(), key
