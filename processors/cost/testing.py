"""Test support for the cost tests: LLM calls as the attributes of each dialect (batches: pipeline.testing)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TRACE = "c0" * 16


@dataclass(frozen=True)
class Call:
    """One LLM call as the provider billed it. `input` includes cache reads and writes (the GenAI rule)."""

    provider: str
    model: str
    response_model: str | None = None
    input: int | None = None
    output: int | None = None
    cache_read: int = 0
    cache_write: int = 0
    reasoning: int = 0  # included in `output`
    kind: str = "chat"  # chat | embeddings
    extra: dict[str, Any] = field(default_factory=dict)


def _put(attrs: dict[str, Any], key: str, value: int | None, nonzero: bool = False) -> None:
    if value is not None and (value or not nonzero):
        attrs[key] = value


def genai(c: Call) -> dict[str, Any]:
    """OTel GenAI semconv (also what current OpenLLMetry instrumentations emit)."""
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "embeddings" if c.kind == "embeddings" else "chat",
        "gen_ai.provider.name": c.provider,
        "gen_ai.request.model": c.model,
    }
    if c.response_model:
        attrs["gen_ai.response.model"] = c.response_model
    _put(attrs, "gen_ai.usage.input_tokens", c.input)
    _put(attrs, "gen_ai.usage.output_tokens", c.output)
    _put(attrs, "gen_ai.usage.cache_read.input_tokens", c.cache_read, nonzero=True)
    _put(attrs, "gen_ai.usage.cache_write.input_tokens", c.cache_write, nonzero=True)
    _put(attrs, "gen_ai.usage.reasoning.output_tokens", c.reasoning, nonzero=True)
    return {**attrs, **c.extra}


def openinference(c: Call) -> dict[str, Any]:
    """OpenInference: llm.token_count.prompt includes the prompt_details cache counts."""
    attrs: dict[str, Any] = {"openinference.span.kind": "EMBEDDING" if c.kind == "embeddings" else "LLM"}
    attrs["llm.provider"] = c.provider
    if c.kind == "embeddings":
        attrs["embedding.model_name"] = c.response_model or c.model
    else:
        attrs["llm.model_name"] = c.response_model or c.model
    _put(attrs, "llm.token_count.prompt", c.input)
    _put(attrs, "llm.token_count.completion", c.output)
    if c.input is not None and c.output is not None:
        attrs["llm.token_count.total"] = c.input + c.output
    _put(attrs, "llm.token_count.prompt_details.cache_read", c.cache_read, nonzero=True)
    _put(attrs, "llm.token_count.prompt_details.cache_write", c.cache_write, nonzero=True)
    _put(attrs, "llm.token_count.completion_details.reasoning", c.reasoning, nonzero=True)
    return {**attrs, **c.extra}


def openllmetry(c: Call) -> dict[str, Any]:
    """OpenLLMetry's legacy names (gen_ai.usage.prompt_tokens & co.), gen_ai.system in its own spelling."""
    attrs: dict[str, Any] = {
        "llm.request.type": "embedding" if c.kind == "embeddings" else "chat",
        "gen_ai.system": c.provider.capitalize(),
        "gen_ai.request.model": c.model,
    }
    if c.response_model:
        attrs["gen_ai.response.model"] = c.response_model
    _put(attrs, "gen_ai.usage.prompt_tokens", c.input)
    _put(attrs, "gen_ai.usage.completion_tokens", c.output)
    if c.input is not None and c.output is not None:
        attrs["llm.usage.total_tokens"] = c.input + c.output
    _put(attrs, "gen_ai.usage.cache_read_input_tokens", c.cache_read, nonzero=True)
    _put(attrs, "gen_ai.usage.cache_write.input_tokens", c.cache_write, nonzero=True)
    _put(attrs, "llm.usage.reasoning_tokens", c.reasoning, nonzero=True)
    return {**attrs, **c.extra}


DIALECTS = {"genai": genai, "openinference": openinference, "openllmetry": openllmetry}


def span(i: int, attrs: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {"trace_id": TRACE, "span_id": f"{i + 1:016x}", "attrs": attrs, **kw}


def cost_attrs(row: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in (row["attributes"] or []) if k.startswith("tracelake.cost.")}
