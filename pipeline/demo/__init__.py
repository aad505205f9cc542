"""Demo traffic: realistic LLM-application traces sent with the real OpenTelemetry SDK.

`tracelake demo` calls `run_demo()`, which exports over OTLP/gRPC or OTLP/HTTP exactly as an
instrumented application would (TracerProvider, BatchSpanProcessor, OTLPSpanExporter).
`build_requests()` runs the same generator into an in-memory exporter and returns serialized
`ExportTraceServiceRequest`s, for benchmarks and tests that want the bytes without a network.

Three applications, one per attribute dialect, so every convention tracelake reads appears:

- `support-bot` (OTel GenAI semconv, ~60% of traces): `POST /chat` → retrieval → chat, sometimes
  chat → execute_tool → chat. Models gpt-4o, gpt-4o-mini, o3-mini (reasoning tokens),
  claude-3-5-sonnet-20241022 (cache reads/writes), gemini-1.5-flash and a self-hosted model no
  price table knows.
- `research-assistant` (OpenInference, ~25%): agent → retriever → LLM, sometimes a tool and a
  second LLM call.
- `ticket-summarizer` (OpenLLMetry with the legacy indexed prompt attributes, ~15%): workflow →
  task → LLM (Vertex AI Gemini or a local Ollama model), sometimes a tool.

A few percent of traces fail (tool timeouts recorded with `record_exception`, 429 rate limits on
the LLM span), some stop at max_tokens (finish reason `length`), some are slow. Some prompts
contain fake PII (example.com emails, 555 phone numbers) for redaction tests. Span times are
set explicitly, so durations look real without sleeping. With a seed, everything except the
wall-clock base time is repeatable, trace and span ids included.

One module per job: corpus.py (what the applications say), models.py (which models they call),
generator.py (the shared helpers and seeded randomness), genai.py / openinference.py / openllmetry.py
(one application per attribute dialect), traffic.py (the mix, providers and ids), transport.py (OTLP or
bytes). It needs the OpenTelemetry SDK and exporters: the `demo` extra (`pip install 'tracelake[demo]'`).
"""

from pipeline.demo.generator import RateLimitError
from pipeline.demo.traffic import SeededIdGenerator, emit_traces, make_providers
from pipeline.demo.transport import DemoResult, build_requests, run_demo

__all__ = [
    "DemoResult",
    "RateLimitError",
    "SeededIdGenerator",
    "build_requests",
    "emit_traces",
    "make_providers",
    "run_demo",
]
