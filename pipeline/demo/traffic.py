"""The demo traffic: the three applications in their mix, one TracerProvider each, traces spread over time."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator

from pipeline.demo import genai, openinference, openllmetry
from pipeline.demo.generator import MS, Generator

SERVICES: dict[str, dict[str, str]] = {app.SERVICE: app.RESOURCE for app in (genai, openinference, openllmetry)}


class SeededIdGenerator(IdGenerator):
    """Trace and span ids from a `random.Random`, so a seeded run repeats its ids."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def generate_span_id(self) -> int:
        while True:
            value = self._rng.getrandbits(64)
            if value:
                return value

    def generate_trace_id(self) -> int:
        while True:
            value = self._rng.getrandbits(128)
            if value:
                return value

    def is_trace_id_random(self) -> bool:
        return True


def make_providers(processor: SpanProcessor, rng: random.Random) -> dict[str, TracerProvider]:
    """One TracerProvider per demo application (each has its own Resource), all feeding `processor`."""
    ids = SeededIdGenerator(rng)
    providers = {}
    for name, attrs in SERVICES.items():
        tp = TracerProvider(
            resource=Resource.create({"service.name": name, **attrs}),
            id_generator=ids,
            shutdown_on_exit=False,
        )
        tp.add_span_processor(processor)
        providers[name] = tp
    return providers


def _emit(gen: Generator, start: int) -> None:
    """One trace of one application: support-bot 60%, research-assistant 25%, ticket-summarizer 15%."""
    r = gen.rng.random()
    if r < 0.60:
        genai.emit(gen, start)
    elif r < 0.85:
        openinference.emit(gen, start)
    else:
        openllmetry.emit(gen, start)


def emit_traces(
    providers: Mapping[str, TracerProvider],
    rng: random.Random,
    traces: int,
    start_ns: int | None = None,
    after_trace: Callable[[int], None] | None = None,
) -> int:
    """Emit `traces` demo traces into `providers` (from `make_providers`); returns the number of spans.

    Traces start about 250 ms apart, from `start_ns` (default: far enough back that the last one
    starts a minute ago). `after_trace(i)` runs after trace i (1-based) has ended all its spans."""
    gen = Generator(providers, rng)
    if start_ns is None:
        start_ns = time.time_ns() - int((traces * 0.25 + 60) * 1e9)
    t = start_ns
    for i in range(traces):
        _emit(gen, t)
        t += int(rng.expovariate(4.0) * 1e9) + MS
        if after_trace is not None:
            after_trace(i + 1)
    return gen.spans
