"""The generator's shared state and helpers; each application (genai.py, openinference.py, openllmetry.py)
emits its traces through them, so a seeded run draws the same random numbers in the same order."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from pipeline.demo.corpus import ANSWER_BODIES, ANSWER_CLOSERS, ANSWER_OPENERS, FIRST, LAST, SUPPORT_SYSTEM, TENANTS
from pipeline.demo.models import Model

MS = 1_000_000  # nanoseconds per millisecond


class RateLimitError(Exception):
    """What an LLM client raises on HTTP 429."""

    __module__ = "pipeline.demo"  # spans record exception.type pipeline.demo.RateLimitError, as they always have


def to_json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


class Generator:
    """What every application draws on while it emits one trace: per-service tracers, the seeded rng,
    returning users' sessions, fake PII, answers, token usage, latency and outcome; counts spans as they end."""

    def __init__(self, providers: Mapping[str, TracerProvider], rng: random.Random) -> None:
        self.rng = rng
        self.providers = providers
        self.spans = 0
        self.sessions: list[tuple[str, str, str]] = []  # (session, user, tenant)
        self.baggage: dict[str, str] = {}

    def tracer(self, service: str, scope: str, version: str) -> trace.Tracer:
        return self.providers[service].get_tracer(scope, version)

    # -- helpers ------------------------------------------------------------------------------------
    def ms(self, lo: float, hi: float) -> int:
        return int(self.rng.uniform(lo, hi) * MS)

    def start(
        self,
        tracer: trace.Tracer,
        name: str,
        *,
        start_time: int,
        kind: SpanKind,
        attributes: Mapping[str, Any],
        context: Any = None,
    ) -> trace.Span:
        """Start a span carrying the trace's propagated attributes (what a baggage span processor,
        OpenInference's using_session() or Traceloop's association properties put on every span)."""
        return tracer.start_span(
            name, context=context, kind=kind, start_time=start_time, attributes={**attributes, **self.baggage}
        )

    def end(self, span: trace.Span, at: int) -> int:
        span.end(end_time=at)
        self.spans += 1
        return at

    def pick_model(self, table: list[tuple[Model, float]]) -> Model:
        return self.rng.choices([m for m, _ in table], [w for _, w in table])[0]

    def session(self) -> tuple[str, str, str]:
        """A returning user's session (60%) or a new one."""
        rng = self.rng
        if self.sessions and rng.random() < 0.6:
            return rng.choice(self.sessions)
        user = f"{rng.choice(FIRST)}.{rng.choice(LAST)}{rng.randint(1, 99)}"
        new = (f"sess-{rng.getrandbits(48):012x}", user, rng.choice(TENANTS))
        self.sessions.append(new)
        if len(self.sessions) > 40:
            self.sessions.pop(0)
        return new

    def pii(self) -> str:
        """Fake personal data a customer might paste into a chat (example.com, 555 numbers)."""
        rng = self.rng
        first, last = rng.choice(FIRST), rng.choice(LAST)
        return rng.choice(
            [
                f" My email is {first}.{last}@example.com if you need it.",
                f" You can reach me at +1 (415) 555-01{rng.randint(10, 99)}.",
                f" Contact: {first.title()} {last.title()}, {first}{rng.randint(1, 99)}@example.org, "
                f"phone 555-01{rng.randint(10, 99)}.",
            ]
        )

    def answer(self, docs: Sequence[tuple[str, str]], words: int | None = None) -> str:
        rng = self.rng
        parts = [rng.choice(ANSWER_OPENERS)]
        for doc_id, text in docs[:2]:
            sentences = [s.strip() for s in text.split(". ") if s.strip()]
            fact = ". ".join(sentences[: rng.randint(1, len(sentences))]).rstrip(".") + "."
            parts.append(rng.choice(ANSWER_BODIES).format(doc=doc_id, fact=fact[0].lower() + fact[1:]))
        parts.append(rng.choice(ANSWER_CLOSERS))
        text = " ".join(parts)
        if words is not None:  # cut off at max_tokens
            text = " ".join(text.split()[:words])
        return text

    def usage(self, model: Model, prompt: str, completion: str) -> dict[str, int]:
        rng = self.rng
        inp = _tokens(prompt) + rng.randint(40, 180)  # tool definitions, message framing
        out = _tokens(completion)
        u = {"input": inp, "output": out, "cache_read": 0, "cache_write": 0, "reasoning": 0}
        if model.caching and rng.random() < 0.5:
            u["cache_read"] = min(inp, _tokens(SUPPORT_SYSTEM) + rng.randint(0, 64))
        elif model.caching and model.provider == "anthropic" and rng.random() < 0.3:
            u["cache_write"] = min(inp, _tokens(SUPPORT_SYSTEM))
        if model.reasoning:
            u["reasoning"] = rng.randint(64, 1536)
            u["output"] += u["reasoning"]
        return u

    def latency(self, model: Model, output_tokens: int, slow: bool) -> int:
        ns = self.ms(250, 900) + int(output_tokens * model.ms_per_token * self.rng.uniform(0.8, 1.3) * MS)
        if slow:
            ns += self.ms(15_000, 40_000)
        return ns

    def outcome(self) -> str:
        r = self.rng.random()
        if r < 0.03:
            return "rate_limited"
        if r < 0.08:
            return "length"
        return "ok"
