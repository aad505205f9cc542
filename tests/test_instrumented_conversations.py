"""Conversations as real instrumentation libraries record them, read back from a real lake by `tracelake trace`.

The OpenAI SDK talks to a loopback fake of the chat completions API; OpenInference, OpenLLMetry and the
official OpenTelemetry GenAI instrumentation each record the same two calls (a tool call, then the answer
after the tool result). The spans are encoded by the OTLP exporter's own encoder, decoded and normalised
by tracelake, written by the Parquet sink and read back through the views by the trace view.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from core.conventions import normalize
from pipeline.conversation import Message, ToolCall
from pipeline.otlp.decode import SourcedRequest, decode
from pipeline.query import connect
from pipeline.trace_view import load_trace, render_text
from sinks.parquet.config import ParquetSinkConfig
from sinks.parquet.sink import ParquetSink

ARGS = '{"order_id": "A-1"}'
RESULT = '{"status": "shipped"}'
ANSWER = "Your order A-1 shipped yesterday."


class _FakeOpenAI(BaseHTTPRequestHandler):
    """`POST /v1/chat/completions`: a tool call first, the answer once the tool result is in the history."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        messages = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["messages"]
        if messages[-1]["role"] == "tool":
            message: dict[str, Any] = {"role": "assistant", "content": ANSWER}
            finish = "stop"
        else:
            call = {"id": "call_1", "type": "function", "function": {"name": "order_status", "arguments": ARGS}}
            message, finish = {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"
        body = json.dumps(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1,
                "model": "gpt-4o-2024-08-06",
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def _instrumentor(library: str) -> Any:
    if library == "openinference":
        from openinference.instrumentation.openai import OpenAIInstrumentor
    elif library == "openllmetry":
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor
    else:
        from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor
    return OpenAIInstrumentor()


@pytest.mark.parametrize("library", ["openinference", "openllmetry", "otel-genai"])
def test_real_instrumentations_conversation_in_the_trace_view(
    library: str, fake_openai: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # content capture, as each library documents it
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "gen_ai_latest_experimental")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "SPAN_ONLY")
    monkeypatch.setenv("TRACELOOP_TRACE_CONTENT", "true")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = _instrumentor(library)
    instrumentor.instrument(tracer_provider=provider)
    try:
        client = openai.OpenAI(base_url=fake_openai, api_key="test", max_retries=0)
        tools: Any = [{"type": "function", "function": {"name": "order_status", "parameters": {"type": "object"}}}]
        messages: list[Any] = [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Where is order A-1?"},
        ]
        tracer = provider.get_tracer("app")
        with tracer.start_as_current_span("support.answer"):  # one trace for both calls
            first = client.chat.completions.create(model="gpt-4o", messages=messages, tools=tools)
            call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
            messages += [
                {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                {"role": "tool", "tool_call_id": call.id, "content": RESULT},
            ]
            client.chat.completions.create(model="gpt-4o", messages=messages, tools=tools)
    finally:
        instrumentor.uninstrument()
    spans = exporter.get_finished_spans()
    trace_id = f"{spans[0].context.trace_id:032x}"
    sink = ParquetSink(ParquetSinkConfig(path=str(tmp_path)))
    sink.write("spans", normalize(decode([SourcedRequest(encode_spans(spans), "test")])))
    sink.flush_all()

    trace = load_trace(connect(tmp_path), trace_id)
    assert trace is not None
    llm = [trace.conversations[s.span_id] for s in trace.spans if s.span_type == "llm"]
    assert len(llm) == 2, [s.name for s in trace.spans]
    first_call, second_call = llm
    assert [(m.role, m.content) for m in first_call.input] == [("system", "Be brief."), ("user", "Where is order A-1?")]
    (asked,) = first_call.output
    assert asked.role == "assistant" and len(asked.tool_calls) == 1
    assert asked.tool_calls[0].name == "order_status" and json.loads(asked.tool_calls[0].arguments or "") == {
        "order_id": "A-1"
    }
    assert [m.role for m in second_call.input] == ["system", "user", "assistant", "tool"]
    tool_result = second_call.input[3]
    assert json.loads(tool_result.content) == {"status": "shipped"} and tool_result.tool_call_id == "call_1"
    assert second_call.input[2].tool_calls[0] == ToolCall(
        "order_status", second_call.input[2].tool_calls[0].arguments, "call_1"
    )
    assert second_call.output[0].role == "assistant" and second_call.output[0].content == ANSWER
    assert isinstance(second_call.output[0], Message)
    text = render_text(trace, width=100)
    print(text)
    assert "  system: Be brief." in text and "  user: Where is order A-1?" in text
    assert "→ order_status [call_1]:" in text and f": {ANSWER}" in text
    assert " messages as in span " in text  # the second call's history is not shown twice
