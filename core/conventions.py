"""Normalise the three attribute dialects into the typed columns of the `spans` table.

OTel GenAI semconv, OpenInference and OpenLLMetry name the same facts differently (see
docs/conventions.md and the mapping table in README.md). Each typed column is a
coalesce over its aliases in COLUMN_ALIASES (the one table of names), computed on whole
columns with pyarrow.compute; the original attributes stay untouched in `attributes`.

Token columns follow the OTel GenAI arithmetic: input includes cache reads and writes,
output includes reasoning. Dialects that report otherwise are the cost processor's concern.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.maps import MapLookup
from core.schema import TOKEN_COLUMNS

SPAN_TYPE_SOURCES: tuple[tuple[str, dict[str, str]], ...] = (
    (
        "gen_ai.operation.name",
        {
            "chat": "llm",
            "generate_content": "llm",
            "text_completion": "llm",
            "embeddings": "embedding",
            "retrieval": "retrieval",
            "create_agent": "agent",
            "invoke_agent": "agent",
            "plan": "agent",
            "execute_tool": "tool",
            "invoke_workflow": "chain",
        },
    ),
    (
        "openinference.span.kind",
        {
            "llm": "llm",
            "embedding": "embedding",
            "retriever": "retrieval",
            "reranker": "rerank",
            "tool": "tool",
            "agent": "agent",
            "chain": "chain",
            "guardrail": "guardrail",
            "evaluator": "other",
            "prompt": "chain",
        },
    ),
    (
        "llm.request.type",
        {"chat": "llm", "completion": "llm", "embedding": "embedding", "rerank": "rerank"},
    ),
    # workflow/task wrap other work: less specific than llm.request.type on the same span
    ("traceloop.span.kind", {"workflow": "chain", "task": "chain", "agent": "agent", "tool": "tool"}),
)


@dataclass(frozen=True)
class Alias:
    """One attribute key that fills a typed column, and where that name is defined."""

    key: str
    source: str
    deprecated: bool = False
    json_field: str | None = None  # the value is a JSON object: this field of it


# OTel GenAI semantic conventions: open-telemetry/semantic-conventions (≤ 1.39), then
# open-telemetry/semantic-conventions-genai. OpenLLMetry: opentelemetry-semantic-conventions-ai.
_GENAI = "OTel GenAI"
_OI = "OpenInference (openinference-semantic-conventions)"
_LLMETRY = "OpenLLMetry (opentelemetry-semantic-conventions-ai)"

# Per typed column, the attribute keys that fill it, first present wins: every convention's current name
# first, then the deprecated names. This is the one table of aliases; README "How the three dialects map to
# columns" shows it, and tests/compat checks it against what the instrumentation libraries really send.
COLUMN_ALIASES: dict[str, tuple[Alias, ...]] = {
    "provider": (
        Alias("gen_ai.provider.name", f"{_GENAI} ≥ 1.37 (semantic-conventions #2046)"),
        Alias("llm.provider", _OI),
        Alias("llm.system", _OI),
        Alias("gen_ai.system", f"{_GENAI} < 1.37, renamed to gen_ai.provider.name (#2046); {_LLMETRY}", True),
    ),
    "request_model": (
        Alias("gen_ai.request.model", f"{_GENAI}; {_LLMETRY}"),
        Alias("llm.request.model_name", f"{_OI} ≥ 0.1.40"),
        # OpenInference's OpenAI instrumentor names the requested model only here; llm.model_name is then the
        # response's model (see RESPONSE_MODEL_FROM_MODEL_NAME)
        Alias("llm.invocation_parameters", f"{_OI} (openinference-instrumentation-openai)", json_field="model"),
        Alias("embedding.invocation_parameters", f"{_OI} embedding spans", json_field="model"),
        Alias("llm.model_name", f"{_OI} < 0.1.40 (no request/response split)", True),
        Alias("embedding.model_name", f"{_OI} embedding spans", True),
    ),
    "response_model": (
        Alias("gen_ai.response.model", f"{_GENAI}; {_LLMETRY}"),
        Alias("llm.response.model_name", f"{_OI} ≥ 0.1.40"),
    ),
    "input_tokens": (
        Alias("gen_ai.usage.input_tokens", f"{_GENAI} ≥ 1.27 (semantic-conventions #1200); {_LLMETRY}"),
        Alias("llm.token_count.prompt", _OI),
        Alias("gen_ai.usage.prompt_tokens", f"{_GENAI} < 1.27, renamed (#1200); {_LLMETRY} legacy", True),
    ),
    "output_tokens": (
        Alias("gen_ai.usage.output_tokens", f"{_GENAI} ≥ 1.27 (semantic-conventions #1200); {_LLMETRY}"),
        Alias("llm.token_count.completion", _OI),
        Alias("gen_ai.usage.completion_tokens", f"{_GENAI} < 1.27, renamed (#1200); {_LLMETRY} legacy", True),
    ),
    "cache_read_tokens": (
        Alias("gen_ai.usage.cache_read.input_tokens", f"{_GENAI} ≥ 1.40 (semantic-conventions #3163); {_LLMETRY}"),
        Alias("llm.token_count.prompt_details.cache_read", _OI),
        Alias("gen_ai.usage.cache_read_input_tokens", f"{_LLMETRY} < 0.5", True),
    ),
    "cache_write_tokens": (
        Alias("gen_ai.usage.cache_write.input_tokens", f"{_GENAI} (semantic-conventions-genai #440); anthropic SDK"),
        Alias("llm.token_count.prompt_details.cache_write", _OI),
        Alias(
            "gen_ai.usage.cache_creation.input_tokens",
            f"{_GENAI} 1.40 (#3163), renamed to cache_write (semantic-conventions-genai #440); {_LLMETRY} ≥ 0.5",
            True,
        ),
        Alias("gen_ai.usage.cache_creation_input_tokens", f"{_LLMETRY} < 0.5", True),
    ),
    "reasoning_tokens": (
        Alias("gen_ai.usage.reasoning.output_tokens", f"{_GENAI} ≥ 1.41 (semantic-conventions #3383)"),
        Alias("llm.token_count.completion_details.reasoning", _OI),
        Alias("gen_ai.usage.reasoning_tokens", _LLMETRY, True),
        Alias("llm.usage.reasoning_tokens", f"{_LLMETRY} < 0.5", True),
    ),
    "finish_reason": (
        Alias("gen_ai.response.finish_reasons", f"{_GENAI} (string[]); {_LLMETRY}"),
        Alias("llm.finish_reason", _OI),
        Alias("anthropic.message.stop_reason", "anthropic SDK 2.x spans (they send no gen_ai.response.finish_reasons)"),
        Alias("gen_ai.response.finish_reason", _LLMETRY, True),
        Alias("llm.response.finish_reason", f"{_LLMETRY} < 0.5", True),
        Alias("gen_ai.completion.0.finish_reason", f"{_LLMETRY} legacy indexed completions", True),
    ),
    "tool_name": (
        Alias("gen_ai.tool.name", _GENAI),
        Alias("tool.name", _OI),
        Alias("tool_call.function.name", _OI),
        # traceloop.entity.name counts only on a traceloop.span.kind=tool span: see _tool_name
    ),
}

# When a span names its requested model in invocation parameters (OpenInference's OpenAI instrumentor),
# its llm.model_name / embedding.model_name is the model that answered: the response model.
RESPONSE_MODEL_FROM_MODEL_NAME = ("llm.model_name", "embedding.model_name")


def alias_keys(column: str) -> tuple[str, ...]:
    """The attribute keys that fill `column`, in the order they are tried."""
    return tuple(a.key for a in COLUMN_ALIASES[column])


@dataclass(frozen=True)
class CorrelationKeys:
    """Attribute keys (span first, then resource) that fill session/user/tenant/prompt columns."""

    session: tuple[str, ...] = ("session.id", "gen_ai.conversation.id")
    user: tuple[str, ...] = ("user.id", "enduser.id")
    tenant: tuple[str, ...] = ("tenant.id",)
    prompt_version: tuple[str, ...] = ("app.prompt_version", "prompt.version")


@dataclass(frozen=True)
class Normalizer:
    keys: CorrelationKeys = field(default_factory=CorrelationKeys)

    def __call__(self, table: pa.Table) -> pa.Table:
        return normalize(table, self.keys)


def _coalesce_keys(maps: MapLookup, keys: tuple[str, ...]) -> pa.Array:
    found = [maps(k) for k in keys]
    if len(found) == 1:
        return _empty_to_null(found[0])
    return _empty_to_null(pc.coalesce(*found))


def _aliased(attrs: MapLookup, column: str, parsed: dict[str, pa.Array] | None = None) -> pa.Array:
    """The first present alias of `column` (COLUMN_ALIASES order) in every row; `parsed` holds the fields
    of the JSON-valued aliases."""
    found = [(parsed or {})[a.key] if a.json_field else attrs(a.key) for a in COLUMN_ALIASES[column]]
    return _empty_to_null(pc.coalesce(*found) if len(found) > 1 else found[0])


def _json_field(objects: pa.Array, name: str) -> pa.Array:
    """`name`'s string value in JSON objects; null where absent, not a string, or not JSON. An object whose first
    key it is (OpenInference writes the model first) is read with RE2; only other rows that mention it are
    parsed, one by one."""
    first = pc.extract_regex(objects, rf'^\s*\{{\s*"{name}"\s*:\s*"(?P<value>[^"\\]*)"')
    found = pc.struct_field(first, "value")
    rest = pc.and_(pc.fill_null(pc.match_substring(objects, f'"{name}"'), False), pc.is_null(found))
    rows = np.flatnonzero(np.asarray(rest))
    if len(rows) == 0:
        return found
    values = []
    for text in objects.take(pa.array(rows)).to_pylist():
        try:
            value = json.loads(text).get(name)
        except (ValueError, AttributeError):  # not JSON, or not an object
            value = None
        values.append(value if isinstance(value, str) else None)
    return pc.replace_with_mask(found, rest, pa.array(values, pa.string()))


def _empty_to_null(arr: pa.Array) -> pa.Array:
    return pc.if_else(pc.equal(arr, ""), pa.scalar(None, arr.type), arr)


_NUMBER = r"^\s*-?\d+(\.\d*)?([eE][+-]?\d+)?\s*$"


def _to_int(arr: pa.Array) -> pa.Array:
    """Parse integer-valued strings; anything that is not a number becomes null, never an error."""
    if arr.null_count == len(arr):
        return pa.nulls(len(arr), pa.int64())
    ok = pc.match_substring_regex(arr, _NUMBER)
    clean = pc.if_else(ok, pc.utf8_trim_whitespace(arr), pa.scalar(None, pa.string()))
    as_float = pc.cast(clean, pa.float64())
    return pc.cast(pc.round(as_float), pa.int64(), safe=False)


def _map_values(arr: pa.Array, mapping: dict[str, str]) -> pa.Array:
    lowered = pc.utf8_lower(arr)
    idx = pc.index_in(lowered, value_set=pa.array(list(mapping.keys()), pa.string()))
    return pc.take(pa.array(list(mapping.values()), pa.string()), idx)


def _finish_reason(arr: pa.Array) -> pa.Array:
    # gen_ai.response.finish_reasons is a string[]; it arrives JSON-encoded: ["stop"] → stop
    stripped = pc.replace_substring_regex(arr, r'^\s*\[\s*"?|"?\s*\]\s*$', "")
    return _empty_to_null(pc.replace_substring_regex(stripped, r'"\s*,\s*"', ","))


def _span_type(attrs: MapLookup) -> pa.Array:
    candidates = [_map_values(attrs(key), mapping) for key, mapping in SPAN_TYPE_SOURCES]
    return pc.fill_null(pc.coalesce(*candidates), "other")


def _tool_name(attrs: MapLookup) -> pa.Array:
    traceloop_tool = pc.if_else(
        pc.equal(pc.utf8_lower(attrs("traceloop.span.kind")), "tool"),
        attrs("traceloop.entity.name"),
        pa.scalar(None, pa.string()),
    )
    return _empty_to_null(pc.coalesce(_aliased(attrs, "tool_name"), traceloop_tool))


def _correlation(attrs: MapLookup, resource: MapLookup, keys: tuple[str, ...]) -> pa.Array:
    if not keys:
        return pa.nulls(len(attrs), pa.string())
    return pc.coalesce(_coalesce_keys(attrs, keys), _coalesce_keys(resource, keys))


# The tenant an authenticating receiver vouches for (pipeline/receiver/tenants.py), on every resource it
# accepts; receivers remove it from whatever no token vouches for, so a client cannot set it.
TENANT_ATTRIBUTE = "tracelake.tenant"

# What a redact_pii in the receiver's ingest chain found crosses the bus in this span attribute (JSON
# counts per entity type): OTLP has no place for the pii_found column.
PII_FOUND_ATTRIBUTE = "tracelake.pii_found"


def _carried_pii_found(carried: pa.Array, type_: pa.DataType) -> pa.Array:
    rows = []
    for text in carried.to_pylist():
        try:
            counts = json.loads(text) if text else None
            rows.append([(str(k), int(v)) for k, v in counts.items()] if isinstance(counts, dict) else None)
        except (ValueError, TypeError, AttributeError):
            rows.append(None)  # not ours to trust: a client may send anything
    return pa.array(rows, type_)


_SPAN_KEYS = (
    *(key for key, _ in SPAN_TYPE_SOURCES),
    *(a.key for aliases in COLUMN_ALIASES.values() for a in aliases),
    "traceloop.entity.name",
    PII_FOUND_ATTRIBUTE,
)


def _models(attrs: MapLookup) -> tuple[pa.Array, pa.Array]:
    """request_model and response_model. Where the requested model comes from invocation parameters,
    llm.model_name (or embedding.model_name) is the model that answered (OpenInference's OpenAI instrumentor)."""
    parsed = {a.key: _json_field(attrs(a.key), a.json_field) for a in COLUMN_ALIASES["request_model"] if a.json_field}
    request = _aliased(attrs, "request_model", parsed)
    response = _aliased(attrs, "response_model")
    invoked = pc.is_valid(pc.coalesce(*parsed.values()))
    if not pc.any(invoked).as_py():
        return request, response
    answered = _coalesce_keys(attrs, RESPONSE_MODEL_FROM_MODEL_NAME)
    return request, pc.coalesce(response, pc.if_else(invoked, answered, pa.scalar(None, pa.string())))


def normalize(table: pa.Table, keys: CorrelationKeys | None = None) -> pa.Table:
    """Fill the typed columns of a spans table from its attribute maps."""
    keys = keys or CorrelationKeys()
    if table.num_rows == 0:
        return table
    correlation = (*keys.session, *keys.user, *keys.tenant, *keys.prompt_version)
    attrs = MapLookup(table.column("attributes"), (*_SPAN_KEYS, *correlation))
    resource = MapLookup(table.column("resource_attributes"), (*correlation, TENANT_ATTRIBUTE))
    request_model, response_model = _models(attrs)
    derived: dict[str, pa.Array] = {
        "span_type": _span_type(attrs),
        "provider": pc.utf8_lower(_aliased(attrs, "provider")),
        "request_model": request_model,
        "response_model": response_model,
        **{c: _to_int(_aliased(attrs, c)) for c in TOKEN_COLUMNS},
        "finish_reason": _finish_reason(_aliased(attrs, "finish_reason")),
        "tool_name": _tool_name(attrs),
        "session_id": _correlation(attrs, resource, keys.session),
        "user_id": _correlation(attrs, resource, keys.user),
        # the tenant an authenticating receiver stamped wins over whatever the client claims
        "tenant_id": pc.coalesce(resource(TENANT_ATTRIBUTE), _correlation(attrs, resource, keys.tenant)),
        "prompt_version": _correlation(attrs, resource, keys.prompt_version),
    }
    carried = attrs(PII_FOUND_ATTRIBUTE)
    if carried.null_count < len(carried):
        derived["pii_found"] = _carried_pii_found(carried, table.schema.field("pii_found").type)
    for name, arr in derived.items():
        idx = table.schema.get_field_index(name)
        table = table.set_column(idx, table.schema.field(idx), arr.cast(table.schema.field(idx).type))
    return table
