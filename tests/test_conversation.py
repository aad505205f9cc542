"""pipeline.conversation: messages, tool calls, tool results and documents out of all three dialects."""

from __future__ import annotations

import json
from collections import defaultdict

import duckdb
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from core.conventions import normalize
from pipeline import conversation
from pipeline.conversation import Document, Message, ToolCall, ToolExecution
from pipeline.demo import build_requests
from pipeline.otlp.decode import SourcedRequest, decode
from sinks.artifacts.refs import make_ref


def _demo_spans() -> list[dict]:
    requests = []
    for body in build_requests(120, seed=5, start_ns=1_780_000_000_000_000_000):
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        requests.append(SourcedRequest(req, "test"))
    con = duckdb.connect()
    con.register("demo", normalize(decode(requests)))
    # the attribute maps and events as the lake's views return them (DuckDB over the same Arrow columns)
    sql = """SELECT service_name, span_type, status_code, attributes,
                    [{'name': e.name, 'attributes': e.attributes} FOR e IN coalesce(events, [])] FROM demo"""
    cols = ("service_name", "span_type", "status_code", "attributes", "events")
    return [dict(zip(cols, r, strict=True)) for r in con.sql(sql).fetchall()]


def test_every_demo_span_of_every_dialect_has_its_conversation() -> None:
    """The demo speaks each dialect the way its instrumentations do; every LLM, tool and retrieval span parses."""
    seen: dict[tuple[str, str], int] = defaultdict(int)
    for row in _demo_spans():
        attrs = row["attributes"]
        c = conversation.parse(attrs, row["events"])
        key = (row["service_name"], row["span_type"])
        if row["span_type"] == "llm":
            assert c.input and c.input[-1].role in ("user", "tool", "assistant"), (key, attrs)
            if row["status_code"] != "ERROR":
                assert c.output and (c.output[0].content or c.output[0].tool_calls), (key, attrs)
            seen[key] += 1
        elif row["span_type"] == "tool":
            assert c.tool is not None and c.tool.name and c.tool.arguments, (key, attrs)
            seen[key] += 1
        elif row["span_type"] == "retrieval":
            assert c.query and c.documents and all(d.id and d.score is not None for d in c.documents), (key, attrs)
            seen[key] += 1
    for service in ("support-bot", "research-assistant", "ticket-summarizer"):
        assert seen[(service, "llm")] > 5, seen
    assert seen[("support-bot", "retrieval")] and seen[("research-assistant", "retrieval")]
    assert (
        seen[("support-bot", "tool")] and seen[("research-assistant", "tool")] and seen[("ticket-summarizer", "tool")]
    )


def test_genai_json_messages_with_tool_calls_and_system_instructions() -> None:
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "Be brief."}]),
        "gen_ai.input.messages": json.dumps(
            [
                {"role": "user", "parts": [{"type": "text", "content": "Where is order A-1?"}]},
                {
                    "role": "assistant",
                    "parts": [{"type": "tool_call", "id": "c1", "name": "order", "arguments": {"id": "A-1"}}],
                },
                {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1", "response": {"s": "shipped"}}]},
                {"role": "user", "parts": [{"type": "uri", "modality": "image", "uri": "https://x/y.png"}]},
            ]
        ),
        "gen_ai.output.messages": json.dumps(
            [{"role": "assistant", "parts": [{"type": "text", "content": "Shipped."}], "finish_reason": "stop"}]
        ),
    }
    c = conversation.parse(attrs)
    assert c.input == (
        Message("system", "Be brief."),
        Message("user", "Where is order A-1?"),
        Message("assistant", "", (ToolCall("order", '{"id": "A-1"}', "c1"),)),
        Message("tool", '{"s": "shipped"}', tool_call_id="c1"),
        Message("user", "[image: https://x/y.png]"),
    )
    assert c.output == (Message("assistant", "Shipped.", finish_reason="stop"),)
    assert c.input_value is None and c.tool is None


def test_openllmetry_indexed_prompts_with_tool_calls_and_content_blocks() -> None:
    attrs = {
        "gen_ai.prompt.0.role": "system",
        "gen_ai.prompt.0.content": "Be brief.",
        "gen_ai.prompt.1.role": "user",
        # Anthropic content blocks arrive as JSON text
        "gen_ai.prompt.1.content": json.dumps([{"type": "text", "text": "Weather in Paris?"}]),
        "gen_ai.prompt.2.role": "assistant",
        "gen_ai.prompt.2.tool_calls.0.id": "t1",
        "gen_ai.prompt.2.tool_calls.0.name": "weather",
        "gen_ai.prompt.2.tool_calls.0.arguments": '{"city": "Paris"}',
        "gen_ai.prompt.3.role": "tool",
        "gen_ai.prompt.3.tool_call_id": "t1",
        "gen_ai.prompt.3.content": "18C",
        "gen_ai.prompt.10.role": "user",  # indices sort as numbers, not text
        "gen_ai.prompt.10.content": "And tomorrow?",
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.finish_reason": "tool_calls",
        "gen_ai.completion.0.tool_calls.0.name": "weather",
        "gen_ai.completion.0.tool_calls.0.arguments": '{"city": "Paris", "day": 1}',
        "traceloop.entity.input": '{"ignored": "the messages say it all"}',
    }
    c = conversation.parse(attrs)
    assert [(m.role, m.content) for m in c.input] == [
        ("system", "Be brief."),
        ("user", "Weather in Paris?"),
        ("assistant", ""),
        ("tool", "18C"),
        ("user", "And tomorrow?"),
    ]
    assert c.input[2].tool_calls == (ToolCall("weather", '{"city": "Paris"}', "t1"),)
    assert c.input[3].tool_call_id == "t1"
    assert c.output == (
        Message("assistant", "", (ToolCall("weather", '{"city": "Paris", "day": 1}'),), finish_reason="tool_calls"),
    )
    assert c.input_value is None  # an LLM span's raw input repeats its messages


def test_openinference_messages_contents_tool_calls_and_documents() -> None:
    p = "llm.input_messages"
    attrs = {
        "openinference.span.kind": "LLM",
        f"{p}.0.message.role": "system",
        f"{p}.0.message.content": "Be brief.",
        f"{p}.1.message.role": "user",
        f"{p}.1.message.contents.0.message_content.type": "text",
        f"{p}.1.message.contents.0.message_content.text": "What is in this picture?",
        f"{p}.1.message.contents.1.message_content.type": "image",
        f"{p}.1.message.contents.1.message_content.image.image.url": "https://x/cat.png",
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.tool_calls.0.tool_call.id": "call_9",
        "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "describe",
        "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": '{"detail": "high"}',
        "input.value": '{"messages": "raw request"}',
    }
    c = conversation.parse(attrs)
    assert c.input == (
        Message("system", "Be brief."),
        Message("user", "What is in this picture?\n[image: https://x/cat.png]"),
    )
    assert c.output == (Message("assistant", "", (ToolCall("describe", '{"detail": "high"}', "call_9"),)),)
    assert c.input_value is None

    retriever = {
        "openinference.span.kind": "RETRIEVER",
        "input.value": "refund policy",
        "retrieval.documents.0.document.id": "kb-1",
        "retrieval.documents.0.document.score": "0.91",
        "retrieval.documents.0.document.content": "Refunds within 30 days.",
        "retrieval.documents.1.document.id": "kb-2",
        "retrieval.documents.1.document.score": "not a number",
        "retrieval.documents.1.document.metadata": '{"source": "faq"}',
    }
    c = conversation.parse(retriever)
    assert c.query == "refund policy" and c.input_value is None
    assert c.documents == (
        Document("kb-1", "Refunds within 30 days.", 0.91),
        Document("kb-2", None, None, '{"source": "faq"}'),
    )
    tool = {"openinference.span.kind": "TOOL", "tool.name": "search", "input.value": '{"q": 1}', "output.value": "ok"}
    assert conversation.parse(tool).tool == ToolExecution("search", '{"q": 1}', "ok")


def test_genai_tool_and_retrieval_and_legacy_events() -> None:
    tool = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "get_invoice",
        "gen_ai.tool.call.id": "call_1",
        "gen_ai.tool.call.arguments": '{"month": "2026-11"}',
        "gen_ai.tool.call.result": '{"total": 12}',
    }
    assert conversation.parse(tool).tool == ToolExecution(
        "get_invoice", '{"month": "2026-11"}', '{"total": 12}', "call_1"
    )
    retrieval = {
        "gen_ai.retrieval.query.text": "invoices",
        "gen_ai.retrieval.documents": '[{"id": "d1", "score": 0.5}, {"id": "d2", "score": 0.25, "content": "text"}]',
    }
    c = conversation.parse(retrieval)
    assert c.query == "invoices" and c.documents == (Document("d1", None, 0.5), Document("d2", "text", 0.25))
    events = [
        {"name": "gen_ai.content.prompt", "attributes": {"gen_ai.prompt": '[{"role": "user", "content": "hi"}]'}},
        {"name": "gen_ai.content.completion", "attributes": {"gen_ai.completion": "hello"}},
        {"name": "db.query.result", "attributes": {"db.query.result.id": "v7", "db.query.result.score": "0.8"}},
    ]
    c = conversation.parse({}, events)
    assert c.input == (Message("user", "hi"),) and c.output == (Message("assistant", "hello"),)
    assert c.documents == (Document("v7", None, 0.8),)
    assert not conversation.parse({"http.route": "/chat"})  # nothing said: an empty conversation is falsy


def test_offloaded_values_are_read_back_and_missing_ones_named() -> None:
    messages = json.dumps([{"role": "user", "parts": [{"type": "text", "content": "long prompt " * 500}]}])
    ref, gone = make_ref("a" * 64), make_ref("b" * 64)
    attrs = {"gen_ai.input.messages": ref, "gen_ai.output.messages": gone}
    events = [{"name": "gen_ai.content.prompt", "attributes": {"gen_ai.prompt": make_ref("c" * 64)}}]
    assert conversation.artifact_refs(attrs, events) == {ref, gone, make_ref("c" * 64)}
    c = conversation.parse(attrs, (), {ref: messages, gone: None})
    assert c.input == (Message("user", "long prompt " * 499 + "long prompt "),)
    assert c.output == (Message("assistant", gone),) and c.missing_artifacts == (gone,)
    assert json.loads(json.dumps(c.to_dict()))["input"][0]["role"] == "user"


def test_odd_values_never_raise() -> None:
    """Attributes are whatever a client sent: what cannot be read as messages is kept as text, never an error."""
    odd = [
        "",
        "null",
        "5",
        "[1, null, true]",
        '{"parts": 5}',
        '[{"parts": [{"type": "image_url", "image_url": "x"}]}]',
        '[{"role": 7, "content": {"a": 1}, "tool_calls": "no"}]',
        '[{"message": 3}]',
        "{",
        "[[]]",
    ]
    keys = [
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.system_instructions",
        "gen_ai.retrieval.documents",
        "gen_ai.prompt.0.content",
        "gen_ai.completion.x.content",
        "llm.input_messages.0.message.contents.z",
        "retrieval.documents.0.document.score",
        "gen_ai.tool.call.arguments",
        "llm.prompts",
        "gen_ai.prompt",
    ]
    for value in odd:
        c = conversation.parse(dict.fromkeys(keys, value), [{"name": "db.query.result", "attributes": None}])
        json.dumps(c.to_dict())
