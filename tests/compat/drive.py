"""The application side of the compatibility suite: the real SDKs, instrumented by one family.

Run as `python -m tests.compat.drive FAMILY` with COMPAT_PROVIDER_URL (the fake provider) and
OTEL_EXPORTER_OTLP_ENDPOINT (a running tracelake) set. Instrumentors patch the SDKs globally, so each
family runs in a process of its own. Every scenario runs under a root span `compat <name>` with the
attribute `compat.scenario`, so the tests find its trace.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import anthropic
import openai
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from tests.compat.scenarios import SCENARIO_ATTRIBUTE, SCENARIO_HEADER, SCENARIOS, Scenario


def _openinference(provider: TracerProvider) -> None:
    from openinference.instrumentation.anthropic import AnthropicInstrumentor
    from openinference.instrumentation.openai import OpenAIInstrumentor

    OpenAIInstrumentor().instrument(tracer_provider=provider)
    AnthropicInstrumentor().instrument(tracer_provider=provider)


def _openllmetry(provider: TracerProvider) -> None:
    from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor

    OpenAIInstrumentor().instrument(tracer_provider=provider)
    AnthropicInstrumentor().instrument(tracer_provider=provider)


def _otel_genai(provider: TracerProvider) -> None:
    from opentelemetry.instrumentation.genai.anthropic import AnthropicInstrumentor
    from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor

    OpenAIInstrumentor().instrument(tracer_provider=provider)
    AnthropicInstrumentor().instrument(tracer_provider=provider)


def _anthropic_sdk(provider: TracerProvider) -> None:
    """Nothing to install: the anthropic SDK traces its own calls through the global tracer provider."""


FAMILIES: dict[str, Callable[[TracerProvider], None]] = {
    "openinference": _openinference,
    "openllmetry": _openllmetry,
    "otel_genai": _otel_genai,
    "anthropic_sdk": _anthropic_sdk,
}


def get_weather(city: str) -> str:
    """The weather in a city.

    Args:
        city: the city's name
    """
    return f"sunny in {city}"


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
SYSTEM = [{"type": "text", "text": "You answer weather questions.", "cache_control": {"type": "ephemeral"}}]


def call(scenario: Scenario, base_url: str) -> None:
    """One scenario's call, as an application would make it."""
    headers = {SCENARIO_HEADER: scenario.name}
    if scenario.provider == "openai":
        oa = openai.OpenAI(base_url=f"{base_url}/v1", api_key="sk-compat", default_headers=headers, max_retries=0)
        if scenario.api == "openai.embeddings":
            oa.embeddings.create(model=scenario.request_model, input="What is the weather in Paris?")
        elif scenario.stream:
            stream = oa.chat.completions.create(
                model=scenario.request_model, messages=QUESTION, stream=True, stream_options={"include_usage": True}
            )
            for _ in stream:
                pass
        else:
            tools = [WEATHER_TOOL] if any(r.tool for r in scenario.replies) else openai.omit
            oa.chat.completions.create(model=scenario.request_model, messages=QUESTION, tools=tools)
        return
    an = anthropic.Anthropic(base_url=base_url, api_key="sk-ant-compat", default_headers=headers, max_retries=0)
    if scenario.api == "anthropic.tool_runner":
        runner = an.beta.messages.tool_runner(
            model=scenario.request_model, max_tokens=256, tools=[anthropic.beta_tool(get_weather)], messages=QUESTION
        )
        runner.until_done()
    elif scenario.stream:
        with an.messages.stream(
            model=scenario.request_model, max_tokens=256, system=SYSTEM, messages=QUESTION
        ) as stream:
            for _ in stream:
                pass
    else:
        an.messages.create(model=scenario.request_model, max_tokens=256, system=SYSTEM, messages=QUESTION)


def run(family: str, exporter: SpanExporter, base_url: str, schedule_delay_ms: int = 100) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": f"compat-{family}"}))
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=schedule_delay_ms))
    trace.set_tracer_provider(provider)
    FAMILIES[family](provider)
    tracer = trace.get_tracer("tests.compat")
    for scenario in SCENARIOS:
        if family == "anthropic_sdk" and scenario.provider != "anthropic":
            continue
        if not scenario.wrapped:
            call_expecting(scenario, base_url)
            continue
        with tracer.start_as_current_span(f"compat {scenario.name}", attributes={SCENARIO_ATTRIBUTE: scenario.name}):
            call_expecting(scenario, base_url)
    provider.shutdown()


def call_expecting(scenario: Scenario, base_url: str) -> None:
    """The call; it fails exactly when the scenario says so."""
    try:
        call(scenario, base_url)
    except (openai.BadRequestError, anthropic.BadRequestError):
        if not scenario.fails:
            raise
    else:
        if scenario.fails:
            raise AssertionError(f"{scenario.name}: the call should have failed")


def main() -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    run(sys.argv[1], OTLPSpanExporter(insecure=True), os.environ["COMPAT_PROVIDER_URL"])


if __name__ == "__main__":
    main()
