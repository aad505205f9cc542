"""Normalise the three attribute dialects into the typed columns of the `spans` table.

OTel GenAI semconv, OpenInference and OpenLLMetry name the same facts differently (see
../shared/CONVENTIONS.md and the mapping table in README.md). Each typed column is a
coalesce over attribute lookups in priority order, computed on whole columns with
pyarrow.compute; the original attributes stay untouched in `attributes`.

Token columns follow the OTel GenAI arithmetic: input includes cache reads and writes,
output includes reasoning. Dialects that report otherwise are the cost processor's concern.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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

PROVIDER_KEYS = ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
REQUEST_MODEL_KEYS = ("gen_ai.request.model", "llm.request.model_name", "llm.model_name")
RESPONSE_MODEL_KEYS = ("gen_ai.response.model", "llm.response.model_name")
INPUT_TOKEN_KEYS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt")
OUTPUT_TOKEN_KEYS = (
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.token_count.completion",
)
CACHE_READ_KEYS = (
    "gen_ai.usage.cache_read.input_tokens",
    "llm.token_count.prompt_details.cache_read",
    "gen_ai.usage.cache_read_input_tokens",
)
CACHE_WRITE_KEYS = (
    "gen_ai.usage.cache_creation.input_tokens",
    "llm.token_count.prompt_details.cache_write",
    "gen_ai.usage.cache_creation_input_tokens",
)
REASONING_KEYS = (
    "gen_ai.usage.reasoning.output_tokens",
    "llm.token_count.completion_details.reasoning",
    "gen_ai.usage.reasoning_tokens",
    "llm.usage.reasoning_tokens",
)
FINISH_REASON_KEYS = (
    "gen_ai.response.finish_reasons",
    "llm.finish_reason",
    "gen_ai.response.finish_reason",
    "gen_ai.completion.0.finish_reason",
)
TOOL_NAME_KEYS = ("gen_ai.tool.name", "tool.name", "tool_call.function.name")


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


class MapLookup:
    """The first value of each of a fixed set of keys in every row of a map<string,string> column.

    `pc.map_lookup` walks every row's map once per key, and normalize asks for about 45 keys. This
    finds all of them in one hash lookup per map entry; each key then costs one `take`."""

    def __init__(self, maps: pa.MapArray, keys: Iterable[str]) -> None:
        self._keys = {k: i for i, k in enumerate(dict.fromkeys(keys))}
        n = self._rows = len(maps)
        offsets = np.asarray(maps.offsets)
        first, count = int(offsets[0]), int(offsets[-1] - offsets[0])
        self._values = maps.items.slice(first, count)
        wanted = pc.index_in(maps.keys.slice(first, count), value_set=pa.array(list(self._keys), pa.string()))
        code = np.asarray(pc.fill_null(wanted, -1))
        entries = np.flatnonzero(code >= 0)
        rows = np.repeat(np.arange(n), np.diff(offsets))[entries]
        if maps.null_count:
            valid = ~np.asarray(maps.is_null())
            entries, rows = entries[valid[rows]], rows[valid[rows]]
        # np.unique's return_index is the first occurrence: the "first" of map_lookup
        slots, first_entry = np.unique(code[entries].astype(np.int64) * n + rows, return_index=True)
        index = np.full(len(self._keys) * n, -1, np.int64)
        index[slots] = entries[first_entry]
        self._index = index.reshape(len(self._keys), n)

    def __len__(self) -> int:
        return self._rows

    def __call__(self, key: str) -> pa.Array:
        at = self._index[self._keys[key]]
        missing = at < 0
        if missing.all():
            return pa.nulls(self._rows, pa.string())
        return self._values.take(pa.array(at, mask=missing))


def _coalesce_keys(maps: MapLookup, keys: tuple[str, ...]) -> pa.Array:
    found = [maps(k) for k in keys]
    if len(found) == 1:
        return _empty_to_null(found[0])
    return _empty_to_null(pc.coalesce(*found))


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
    return _empty_to_null(pc.coalesce(_coalesce_keys(attrs, TOOL_NAME_KEYS), traceloop_tool))


def _correlation(attrs: MapLookup, resource: MapLookup, keys: tuple[str, ...]) -> pa.Array:
    if not keys:
        return pa.nulls(len(attrs), pa.string())
    return pc.coalesce(_coalesce_keys(attrs, keys), _coalesce_keys(resource, keys))


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
    *PROVIDER_KEYS,
    *REQUEST_MODEL_KEYS,
    *RESPONSE_MODEL_KEYS,
    *INPUT_TOKEN_KEYS,
    *OUTPUT_TOKEN_KEYS,
    *CACHE_READ_KEYS,
    *CACHE_WRITE_KEYS,
    *REASONING_KEYS,
    *FINISH_REASON_KEYS,
    *TOOL_NAME_KEYS,
    "traceloop.entity.name",
    PII_FOUND_ATTRIBUTE,
)


def normalize(table: pa.Table, keys: CorrelationKeys | None = None) -> pa.Table:
    """Fill the typed columns of a spans table from its attribute maps."""
    keys = keys or CorrelationKeys()
    if table.num_rows == 0:
        return table
    correlation = (*keys.session, *keys.user, *keys.tenant, *keys.prompt_version)
    attrs = MapLookup(table.column("attributes").combine_chunks(), (*_SPAN_KEYS, *correlation))
    resource = MapLookup(table.column("resource_attributes").combine_chunks(), correlation)
    provider = _coalesce_keys(attrs, PROVIDER_KEYS)
    derived: dict[str, pa.Array] = {
        "span_type": _span_type(attrs),
        "provider": pc.utf8_lower(provider),
        "request_model": _coalesce_keys(attrs, REQUEST_MODEL_KEYS),
        "response_model": _coalesce_keys(attrs, RESPONSE_MODEL_KEYS),
        "input_tokens": _to_int(_coalesce_keys(attrs, INPUT_TOKEN_KEYS)),
        "output_tokens": _to_int(_coalesce_keys(attrs, OUTPUT_TOKEN_KEYS)),
        "cache_read_tokens": _to_int(_coalesce_keys(attrs, CACHE_READ_KEYS)),
        "cache_write_tokens": _to_int(_coalesce_keys(attrs, CACHE_WRITE_KEYS)),
        "reasoning_tokens": _to_int(_coalesce_keys(attrs, REASONING_KEYS)),
        "finish_reason": _finish_reason(_coalesce_keys(attrs, FINISH_REASON_KEYS)),
        "tool_name": _tool_name(attrs),
        "session_id": _correlation(attrs, resource, keys.session),
        "user_id": _correlation(attrs, resource, keys.user),
        "tenant_id": _correlation(attrs, resource, keys.tenant),
        "prompt_version": _correlation(attrs, resource, keys.prompt_version),
    }
    carried = attrs(PII_FOUND_ATTRIBUTE)
    if carried.null_count < len(carried):
        derived["pii_found"] = _carried_pii_found(carried, table.schema.field("pii_found").type)
    for name, arr in derived.items():
        idx = table.schema.get_field_index(name)
        table = table.set_column(idx, table.schema.field(idx), arr.cast(table.schema.field(idx).type))
    return table
