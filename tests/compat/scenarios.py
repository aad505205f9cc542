"""The calls the compatibility suite makes, and what the fake provider answers to each.

One table is the truth for both sides: `fake_provider` answers a request with the scenario's replies
(named by the `x-compat-scenario` header the app's client sends), `drive` makes the call through the
real SDK, and the tests compare the lake's columns with these numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SCENARIO_HEADER = "x-compat-scenario"
SCENARIO_ATTRIBUTE = "compat.scenario"

Api = Literal["openai.chat", "openai.embeddings", "anthropic.messages", "anthropic.tool_runner"]


@dataclass(frozen=True)
class Usage:
    """Tokens as the OTel GenAI convention counts them: input includes cache reads and writes, output
    includes reasoning. The fake provider turns them into each API's own shape."""

    input: int
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    reasoning: int = 0


@dataclass(frozen=True)
class Reply:
    model: str  # the response model (a dated snapshot, as the real APIs answer)
    usage: Usage
    finish_reason: str  # the API's own stop reason: stop, tool_calls, end_turn, tool_use
    tool: str | None = None  # the tool the model asks for


@dataclass(frozen=True)
class Scenario:
    name: str
    api: Api
    request_model: str
    replies: tuple[Reply, ...]  # one per provider request; empty: the provider refuses with HTTP 400
    stream: bool = False
    wrapped: bool = True  # made inside an application span (`compat <name>`), as most apps do

    @property
    def provider(self) -> str:
        return self.api.split(".")[0]

    @property
    def fails(self) -> bool:
        return not self.replies


GPT = "gpt-4o-mini"
GPT_SNAPSHOT = "gpt-4o-mini-2024-07-18"
CLAUDE = "claude-sonnet-4-5"
CLAUDE_SNAPSHOT = "claude-sonnet-4-5-20250929"
HAIKU = "claude-haiku-4-5"
HAIKU_SNAPSHOT = "claude-haiku-4-5-20251001"
OPUS = "claude-opus-4-5"
OPUS_SNAPSHOT = "claude-opus-4-5-20251101"

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "openai_chat",
        "openai.chat",
        GPT,
        (Reply(GPT_SNAPSHOT, Usage(input=1300, output=80, cache_read=1024), "stop"),),
    ),
    Scenario(
        "openai_stream",
        "openai.chat",
        GPT,
        (Reply(GPT_SNAPSHOT, Usage(input=900, output=40, cache_read=512), "stop"),),
        stream=True,
    ),
    Scenario(
        "openai_tool_call",
        "openai.chat",
        GPT,
        (Reply(GPT_SNAPSHOT, Usage(input=210, output=18), "tool_calls", tool="get_weather"),),
    ),
    Scenario(
        "openai_embeddings",
        "openai.embeddings",
        "text-embedding-3-small",
        (Reply("text-embedding-3-small", Usage(input=12), "stop"),),
    ),
    Scenario(
        "openai_reasoning",
        "openai.chat",
        "o3-mini",
        (Reply("o3-mini-2025-01-31", Usage(input=300, output=900, reasoning=640), "stop"),),
    ),
    Scenario("openai_failure", "openai.chat", GPT, ()),
    Scenario(
        "anthropic_cache_write",
        "anthropic.messages",
        CLAUDE,
        (Reply(CLAUDE_SNAPSHOT, Usage(input=1020, output=50, cache_write=1000), "end_turn"),),
    ),
    Scenario(
        "anthropic_cache_read",
        "anthropic.messages",
        CLAUDE,
        (Reply(CLAUDE_SNAPSHOT, Usage(input=1030, output=60, cache_read=1000), "end_turn"),),
    ),
    Scenario(
        "anthropic_stream",
        "anthropic.messages",
        CLAUDE,
        (Reply(CLAUDE_SNAPSHOT, Usage(input=1040, output=70, cache_read=1000), "end_turn"),),
        stream=True,
    ),
    Scenario(
        "anthropic_tool_runner",
        "anthropic.tool_runner",
        CLAUDE,
        (
            Reply(CLAUDE_SNAPSHOT, Usage(input=400, output=30), "tool_use", tool="get_weather"),
            Reply(CLAUDE_SNAPSHOT, Usage(input=450, output=25), "end_turn"),
        ),
    ),
    Scenario("anthropic_failure", "anthropic.messages", CLAUDE, ()),
    # no application span around the call: the spans an instrumentation does not make current start traces
    # of their own (found by their model, which no other scenario uses)
    Scenario(
        "anthropic_unwrapped",
        "anthropic.messages",
        HAIKU,
        (Reply(HAIKU_SNAPSHOT, Usage(input=700, output=40), "end_turn"),),
        wrapped=False,
    ),
    Scenario(
        "anthropic_stream_unwrapped",
        "anthropic.messages",
        OPUS,
        (Reply(OPUS_SNAPSHOT, Usage(input=800, output=30), "end_turn"),),
        stream=True,
        wrapped=False,
    ),
)

BY_NAME = {s.name: s for s in SCENARIOS}
