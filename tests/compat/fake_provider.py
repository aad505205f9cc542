"""A loopback stand-in for the OpenAI and Anthropic HTTP APIs, answering with known usage blocks.

It speaks just enough of each API for the real SDKs: OpenAI chat completions (JSON and server-sent
events with `stream_options.include_usage`), embeddings (float or base64), Anthropic messages (JSON
and events). What it answers is the scenario named by the request's `x-compat-scenario` header.
"""

from __future__ import annotations

import base64
import json
import struct
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.compat.scenarios import BY_NAME, SCENARIO_HEADER, Reply, Scenario

TEXT = "It is sunny in Paris."
TOOL_INPUT = {"city": "Paris"}


def openai_usage(reply: Reply) -> dict[str, Any]:
    u = reply.usage
    return {
        "prompt_tokens": u.input,
        "completion_tokens": u.output,
        "total_tokens": u.input + u.output,
        "prompt_tokens_details": {"cached_tokens": u.cache_read, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning, "audio_tokens": 0},
    }


def anthropic_usage(reply: Reply) -> dict[str, Any]:
    """Anthropic's input_tokens exclude the cache reads and writes."""
    u = reply.usage
    return {
        "input_tokens": u.input - u.cache_read - u.cache_write,
        "cache_creation_input_tokens": u.cache_write,
        "cache_read_input_tokens": u.cache_read,
        "output_tokens": u.output,
    }


def openai_chat(reply: Reply) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": TEXT, "refusal": None}
    if reply.tool:
        message["content"] = None
        message["tool_calls"] = [
            {"id": "call_1", "type": "function", "function": {"name": reply.tool, "arguments": json.dumps(TOOL_INPUT)}}
        ]
    return {
        "id": "chatcmpl-compat",
        "object": "chat.completion",
        "created": 1767225600,
        "model": reply.model,
        "system_fingerprint": "fp_compat",
        "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason, "logprobs": None}],
        "usage": openai_usage(reply),
    }


def openai_chunks(reply: Reply) -> Iterator[dict[str, Any]]:
    base = {"id": "chatcmpl-compat", "object": "chat.completion.chunk", "created": 1767225600, "model": reply.model}
    deltas = [{"role": "assistant", "content": ""}, {"content": "It is sunny"}, {"content": " in Paris."}]
    for delta in deltas:
        yield {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}], "usage": None}
    yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": reply.finish_reason}], "usage": None}
    yield {**base, "choices": [], "usage": openai_usage(reply)}


def embeddings(reply: Reply, encoding: str | None) -> dict[str, Any]:
    vector = [0.25, -0.5, 0.125, 1.0]
    data: Any = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode() if encoding == "base64" else vector
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": data}],
        "model": reply.model,
        "usage": {"prompt_tokens": reply.usage.input, "total_tokens": reply.usage.input},
    }


def anthropic_message(reply: Reply) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": TEXT}]
    if reply.tool:
        content = [{"type": "tool_use", "id": "toolu_compat", "name": reply.tool, "input": TOOL_INPUT}]
    return {
        "id": "msg_compat",
        "type": "message",
        "role": "assistant",
        "model": reply.model,
        "content": content,
        "stop_reason": reply.finish_reason,
        "stop_sequence": None,
        "usage": anthropic_usage(reply),
    }


def anthropic_events(reply: Reply) -> Iterator[tuple[str, dict[str, Any]]]:
    start = {**anthropic_message(reply), "content": [], "stop_reason": None}
    start["usage"] = {**anthropic_usage(reply), "output_tokens": 1}
    yield "message_start", {"type": "message_start", "message": start}
    block = {"type": "text", "text": ""}
    yield "content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}
    for piece in ("It is sunny", " in Paris."):
        delta = {"type": "text_delta", "text": piece}
        yield "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
    yield "content_block_stop", {"type": "content_block_stop", "index": 0}
    delta = {"stop_reason": reply.finish_reason, "stop_sequence": None}
    yield "message_delta", {"type": "message_delta", "delta": delta, "usage": {"output_tokens": reply.usage.output}}
    yield "message_stop", {"type": "message_stop"}


def tool_results(body: dict[str, Any]) -> int:
    """How many tool results the conversation carries: the turn of a tool-runner loop."""
    return sum(
        1
        for m in body.get("messages", [])
        if isinstance(m.get("content"), list)
        for block in m["content"]
        if isinstance(block, dict) and block.get("type") == "tool_result"
    )


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        name = self.headers.get(SCENARIO_HEADER, "")
        scenario = BY_NAME.get(name)
        if scenario is None:
            self._json(404, {"error": {"message": f"unknown scenario {name!r}", "type": "not_found_error"}})
            return
        if scenario.fails:
            self._refuse(scenario)
            return
        if self.path.endswith("/embeddings"):
            self._json(200, embeddings(scenario.replies[0], body.get("encoding_format")))
        elif self.path.endswith("/chat/completions"):
            reply = scenario.replies[0]
            if body.get("stream"):
                self._events((None, chunk) for chunk in openai_chunks(reply))
            else:
                self._json(200, openai_chat(reply))
        elif self.path.endswith("/messages"):
            reply = scenario.replies[min(tool_results(body), len(scenario.replies) - 1)]
            if body.get("stream"):
                self._events(anthropic_events(reply), done=False)
            else:
                self._json(200, anthropic_message(reply))
        else:
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found_error"}})

    def _refuse(self, scenario: Scenario) -> None:
        if scenario.provider == "anthropic":
            error = {"type": "error", "error": {"type": "invalid_request_error", "message": "prompt is too long"}}
        else:
            message = "This model's maximum context length is 128000 tokens."
            error = {
                "error": {
                    "message": message,
                    "type": "invalid_request_error",
                    "param": "messages",
                    "code": "context_length_exceeded",
                }
            }
        self._json(400, error)

    def _json(self, status: int, doc: dict[str, Any]) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", "req_compat")
        self.end_headers()
        self.wfile.write(data)

    def _events(self, events: Iterator[tuple[str | None, dict[str, Any]]], done: bool = True) -> None:
        parts = []
        for event, doc in events:
            head = f"event: {event}\n" if event else ""
            parts.append(f"{head}data: {json.dumps(doc)}\n\n")
        if done:
            parts.append("data: [DONE]\n\n")
        data = "".join(parts).encode()
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class FakeProvider:
    """The server on a free loopback port, in a daemon thread; `url` is its base URL."""

    def __init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
