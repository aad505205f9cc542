"""What each instrumentation family puts in the lake's typed columns, scenario by scenario.

Every row is what the library really sends (measured; versions pinned in pyproject.toml's `compat` extra).
A column whose value differs from the truth of the scenario (tests/compat/scenarios.py) must be named in
`gaps` with the reason: the tests check both directions, so a library that fixes a gap fails the suite
and the row (and README's "Works with" table) gets updated. A count of 0 that a library leaves out is not
a gap; a model, a count or a stop reason that is missing or wrong is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial

from tests.compat.scenarios import (
    BY_NAME,
    CLAUDE,
    CLAUDE_SNAPSHOT,
    GPT,
    GPT_SNAPSHOT,
    HAIKU,
    HAIKU_SNAPSHOT,
    OPUS,
    OPUS_SNAPSHOT,
    SCENARIOS,
    Scenario,
)

Tokens = tuple[int | None, int | None, int | None, int | None, int | None]  # input, output, cache read/write, reasoning
NONE: Tokens = (None, None, None, None, None)

OI_OPENAI = "openinference.instrumentation.openai"
OI_ANTHROPIC = "openinference.instrumentation.anthropic"
OL_OPENAI = "opentelemetry.instrumentation.openai.v1"
OL_ANTHROPIC = "opentelemetry.instrumentation.anthropic"
OG_OPENAI = "opentelemetry.instrumentation.genai.openai"
OG_ANTHROPIC = "opentelemetry.instrumentation.genai.anthropic"
SDK = "com.anthropic.sdk.python"

# What GenAI-normalising libraries turn the APIs' stop reasons into (both spellings are right)
GENAI_FINISH = {"stop": "stop", "end_turn": "stop", "tool_calls": "tool_call", "tool_use": "tool_call"}


@dataclass(frozen=True)
class Sent:
    """One span a library records for a scenario, as the lake's typed columns hold it."""

    scope: str
    span_type: str
    provider: str | None
    request_model: str | None
    response_model: str | None
    tokens: Tokens
    finish_reason: str | None
    status: str  # status_code: UNSET, OK, ERROR
    tool_name: str | None = None
    counted: bool = True  # False: duplicate_of names the span counted for the same call
    reply: int = 0  # the provider reply (tool-runner turn) the span describes
    own_trace: bool = False  # the span starts a trace of its own (its library did not make its span current)
    gaps: Mapping[str, str] = field(default_factory=dict)  # column → what the library gets wrong


@dataclass(frozen=True)
class Expect:
    spans: tuple[Sent, ...]
    calls_gap: str | None = None  # why `traces` cannot count the provider calls right (None: it does)


def sdk(name: str, counted: bool = True, reply: int = 0) -> Sent:
    """The anthropic SDK's own span of a call: it reports every count, 0s included, and the API's stop reason."""
    scenario = BY_NAME[name]
    if scenario.fails:
        return Sent(SDK, "llm", "anthropic", scenario.request_model, None, NONE, None, "ERROR", counted=counted)
    r = scenario.replies[reply]
    u = r.usage
    tokens = (u.input, u.output, u.cache_read, u.cache_write, None)
    return Sent(
        SDK, "llm", "anthropic", scenario.request_model, r.model, tokens, r.finish_reason, "OK", None, counted, reply
    )


SDK_AGENT = Sent(SDK, "agent", "anthropic", CLAUDE, None, NONE, None, "OK")
SDK_TOOL = Sent(SDK, "tool", "anthropic", None, None, NONE, None, "OK", tool_name="get_weather")


def chat(scope: str, provider: str, span_type: str = "llm") -> Callable[..., Sent]:
    """One library's call spans: (request model, response model, tokens, finish reason, status, **the rest)."""
    return partial(Sent, scope, span_type, provider)


def beside_sdk(name: str, row: Sent) -> Expect:
    """A call recorded by an instrumentor and by the anthropic SDK: the SDK's span is the one counted."""
    return Expect((replace(row, counted=False), sdk(name)))


def tool_runner(first: Sent, second: Sent) -> Expect:
    """The SDK's tool runner: its agent span, two calls (each also recorded by the instrumentor), its tool span."""
    name = "anthropic_tool_runner"
    return Expect(
        (
            SDK_AGENT,
            replace(first, counted=False),
            sdk(name),
            SDK_TOOL,
            replace(second, counted=False, reply=1),
            sdk(name, reply=1),
        )
    )


def two_traces(library: str) -> str:
    return f"without an application span, {library} and the SDK's own span are two traces: each counts the call"


EMBEDDING = "text-embedding-3-small"
O3, O3_SNAPSHOT = "o3-mini", "o3-mini-2025-01-31"
REFUSED = (None, NONE, None, "ERROR")  # response model, tokens, finish reason, status of a refused call

oi_openai, oi_embedding = chat(OI_OPENAI, "openai"), chat(OI_OPENAI, "openai", "embedding")
oi_anthropic = chat(OI_ANTHROPIC, "anthropic")
OPENINFERENCE: dict[str, Expect] = {
    "openai_chat": Expect((oi_openai(GPT, GPT_SNAPSHOT, (1300, 80, 1024, None, 0), "stop", "OK"),)),
    "openai_stream": Expect((oi_openai(GPT, GPT_SNAPSHOT, (900, 40, 512, None, 0), "stop", "OK"),)),
    "openai_tool_call": Expect((oi_openai(GPT, GPT_SNAPSHOT, (210, 18, 0, None, 0), "tool_calls", "OK"),)),
    "openai_embeddings": Expect((oi_embedding(EMBEDDING, EMBEDDING, (12, None, None, None, None), None, "OK"),)),
    "openai_reasoning": Expect((oi_openai(O3, O3_SNAPSHOT, (300, 900, 0, None, 640), "stop", "OK"),)),
    "openai_failure": Expect((oi_openai(GPT, *REFUSED),)),
    # the SDK's span nests under OpenInference's and reports more counts: it is the one counted
    "anthropic_cache_write": beside_sdk(
        "anthropic_cache_write", oi_anthropic(CLAUDE, CLAUDE_SNAPSHOT, (1020, 50, None, 1000, None), "end_turn", "OK")
    ),
    "anthropic_cache_read": beside_sdk(
        "anthropic_cache_read", oi_anthropic(CLAUDE, CLAUDE_SNAPSHOT, (1030, 60, 1000, None, None), "end_turn", "OK")
    ),
    # messages.stream: OpenInference's span is not made current, so the SDK's span is its sibling
    "anthropic_stream": beside_sdk(
        "anthropic_stream", oi_anthropic(CLAUDE, CLAUDE_SNAPSHOT, (1040, 70, 1000, None, None), "end_turn", "OK")
    ),
    "anthropic_tool_runner": tool_runner(
        oi_anthropic(CLAUDE, CLAUDE_SNAPSHOT, (400, 30, None, None, None), "tool_use", "OK"),
        oi_anthropic(CLAUDE, CLAUDE_SNAPSHOT, (450, 25, None, None, None), "end_turn", "OK"),
    ),
    "anthropic_failure": beside_sdk("anthropic_failure", oi_anthropic(CLAUDE, *REFUSED)),
    "anthropic_unwrapped": beside_sdk(
        "anthropic_unwrapped", oi_anthropic(HAIKU, HAIKU_SNAPSHOT, (700, 40, None, None, None), "end_turn", "OK")
    ),
    "anthropic_stream_unwrapped": Expect(
        (
            oi_anthropic(OPUS, OPUS_SNAPSHOT, (800, 30, None, None, None), "end_turn", "OK", own_trace=True),
            sdk("anthropic_stream_unwrapped"),
        ),
        calls_gap=two_traces("OpenInference's messages.stream span"),
    ),
}

STREAM_OFF_BY_ONE = "OpenLLMetry adds the first streamed event's output count to the final total"
ol_openai, ol_embedding = chat(OL_OPENAI, "openai"), chat(OL_OPENAI, "openai", "embedding")
ol_anthropic = chat(OL_ANTHROPIC, "anthropic")
OPENLLMETRY: dict[str, Expect] = {
    "openai_chat": Expect((ol_openai(GPT, GPT_SNAPSHOT, (1300, 80, 1024, None, 0), "stop", "UNSET"),)),
    "openai_stream": Expect((ol_openai(GPT, GPT_SNAPSHOT, (900, 40, 512, None, None), "stop", "OK"),)),
    "openai_tool_call": Expect((ol_openai(GPT, GPT_SNAPSHOT, (210, 18, 0, None, 0), "tool_call", "UNSET"),)),
    "openai_embeddings": Expect((ol_embedding(EMBEDDING, EMBEDDING, (12, None, 0, None, None), None, "UNSET"),)),
    "openai_reasoning": Expect((ol_openai(O3, O3_SNAPSHOT, (300, 900, 0, None, 640), "stop", "UNSET"),)),
    "openai_failure": Expect((ol_openai(GPT, *REFUSED),)),
    # OpenLLMetry's anthropic spans are never made current: the SDK's span is a sibling, counted (it starts later)
    "anthropic_cache_write": beside_sdk(
        "anthropic_cache_write", ol_anthropic(CLAUDE, CLAUDE_SNAPSHOT, (1020, 50, 0, 1000, None), "stop", "OK")
    ),
    "anthropic_cache_read": beside_sdk(
        "anthropic_cache_read", ol_anthropic(CLAUDE, CLAUDE_SNAPSHOT, (1030, 60, 1000, 0, None), "stop", "OK")
    ),
    "anthropic_stream": beside_sdk(
        "anthropic_stream",
        ol_anthropic(
            CLAUDE, CLAUDE_SNAPSHOT, (1040, 71, 1000, 0, None), "stop", "OK", gaps={"output_tokens": STREAM_OFF_BY_ONE}
        ),
    ),
    "anthropic_tool_runner": tool_runner(
        ol_anthropic(CLAUDE, CLAUDE_SNAPSHOT, (400, 30, 0, 0, None), "tool_call", "OK"),
        ol_anthropic(CLAUDE, CLAUDE_SNAPSHOT, (450, 25, 0, 0, None), "stop", "OK"),
    ),
    "anthropic_failure": beside_sdk("anthropic_failure", ol_anthropic(CLAUDE, *REFUSED)),
    "anthropic_unwrapped": Expect(
        (
            ol_anthropic(HAIKU, HAIKU_SNAPSHOT, (700, 40, 0, 0, None), "stop", "OK", own_trace=True),
            sdk("anthropic_unwrapped"),
        ),
        calls_gap=two_traces("OpenLLMetry's span"),
    ),
    "anthropic_stream_unwrapped": Expect(
        (
            ol_anthropic(
                OPUS,
                OPUS_SNAPSHOT,
                (800, 31, 0, 0, None),
                "stop",
                "OK",
                own_trace=True,
                gaps={"output_tokens": STREAM_OFF_BY_ONE},
            ),
            sdk("anthropic_stream_unwrapped"),
        ),
        calls_gap=two_traces("OpenLLMetry's span"),
    ),
}

og_openai, og_embedding = chat(OG_OPENAI, "openai"), chat(OG_OPENAI, "openai", "embedding")
og_anthropic = chat(OG_ANTHROPIC, "anthropic")
OTEL_GENAI: dict[str, Expect] = {
    "openai_chat": Expect((og_openai(GPT, GPT_SNAPSHOT, (1300, 80, 1024, None, None), "stop", "UNSET"),)),
    "openai_stream": Expect((og_openai(GPT, GPT_SNAPSHOT, (900, 40, 512, None, None), "stop", "UNSET"),)),
    "openai_tool_call": Expect((og_openai(GPT, GPT_SNAPSHOT, (210, 18, None, None, None), "tool_calls", "UNSET"),)),
    "openai_embeddings": Expect((og_embedding(EMBEDDING, EMBEDDING, (12, None, None, None, None), None, "UNSET"),)),
    "openai_reasoning": Expect((og_openai(O3, O3_SNAPSHOT, (300, 900, None, None, 640), "stop", "UNSET"),)),
    "openai_failure": Expect((og_openai(GPT, *REFUSED),)),
    # the official instrumentation makes its span current: the SDK's span nests under it, and is counted
    "anthropic_cache_write": beside_sdk(
        "anthropic_cache_write", og_anthropic(CLAUDE, CLAUDE_SNAPSHOT, (1020, 50, None, 1000, None), "stop", "UNSET")
    ),
    "anthropic_cache_read": beside_sdk(
        "anthropic_cache_read", og_anthropic(CLAUDE, CLAUDE_SNAPSHOT, (1030, 60, 1000, None, None), "stop", "UNSET")
    ),
    "anthropic_stream": beside_sdk(
        "anthropic_stream", og_anthropic(CLAUDE, CLAUDE_SNAPSHOT, (1040, 70, 1000, None, None), "stop", "UNSET")
    ),
    "anthropic_tool_runner": tool_runner(
        og_anthropic(CLAUDE, CLAUDE_SNAPSHOT, (400, 30, None, None, None), "tool_call", "UNSET"),
        og_anthropic(CLAUDE, CLAUDE_SNAPSHOT, (450, 25, None, None, None), "stop", "UNSET"),
    ),
    "anthropic_failure": beside_sdk("anthropic_failure", og_anthropic(CLAUDE, *REFUSED)),
    "anthropic_unwrapped": beside_sdk(
        "anthropic_unwrapped", og_anthropic(HAIKU, HAIKU_SNAPSHOT, (700, 40, None, None, None), "stop", "UNSET")
    ),
    "anthropic_stream_unwrapped": beside_sdk(
        "anthropic_stream_unwrapped", og_anthropic(OPUS, OPUS_SNAPSHOT, (800, 30, None, None, None), "stop", "UNSET")
    ),
}

ANTHROPIC_SDK: dict[str, Expect] = {
    s.name: Expect(
        (SDK_AGENT, sdk(s.name), SDK_TOOL, sdk(s.name, reply=1)) if s.api == "anthropic.tool_runner" else (sdk(s.name),)
    )
    for s in SCENARIOS
    if s.provider == "anthropic"
}

FAMILIES: dict[str, dict[str, Expect]] = {
    "openinference": OPENINFERENCE,
    "openllmetry": OPENLLMETRY,
    "otel_genai": OTEL_GENAI,
    "anthropic_sdk": ANTHROPIC_SDK,
}


def scenarios_of(family: str) -> list[Scenario]:
    return [BY_NAME[name] for name in FAMILIES[family]]
