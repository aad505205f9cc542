"""What an LLM span said: its messages, tool calls, tool results and retrieved documents.

The three attribute dialects (docs/design.md, "Conversations") spell the same conversation
differently; this module reads all of them into one typed `Conversation`, so that the terminal view
(`tracelake trace`), its `--json` document and any future UI show the same thing:

- OTel GenAI: `gen_ai.system_instructions`, `gen_ai.input.messages`, `gen_ai.output.messages` (JSON:
  role + parts), the older indexed `gen_ai.prompt.{i}.*` / `gen_ai.completion.{i}.*` (also what
  OpenLLMetry's legacy instrumentations send), `gen_ai.content.prompt` / `.completion` span events,
  `gen_ai.tool.call.*`, `gen_ai.retrieval.query.text` / `gen_ai.retrieval.documents`;
- OpenInference: `llm.input_messages.{i}.message.*` / `llm.output_messages.{i}.message.*` with
  `contents` and `tool_calls`, `llm.prompts`, `retrieval.documents.{i}.document.*`,
  `reranker.output_documents`, `tool.name` with `input.value` / `output.value`;
- OpenLLMetry: the GenAI names above, `traceloop.entity.input` / `.output`, and vector-store
  `db.query.result` span events.

Input is a span's attribute map as the lake stores it (`map<string,string>`, non-strings as JSON).
Values offloaded by `offload_artifacts` (`artifact:sha256:…`) are replaced by their text when the
caller passes it in `artifacts` (see `artifact_refs`); one whose object is gone stays a reference and
is listed in `Conversation.missing_artifacts`. Parsing never raises on odd input: what cannot be
read as messages is kept as plain text.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from sinks.artifacts.refs import is_ref

Attributes = Mapping[str, str]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the model asked for. `arguments` is the text as sent (usually JSON)."""

    name: str | None
    arguments: str | None = None
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Message:
    role: str  # system, user, assistant, tool, … as the instrumentation named it
    content: str = ""  # the text parts, joined; non-text parts as [image: …] placeholders
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None  # a tool message: the call it answers
    name: str | None = None
    finish_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Document:
    id: str | None
    content: str | None = None
    score: float | None = None
    metadata: str | None = None


@dataclass(frozen=True, slots=True)
class ToolExecution:
    """A tool span: what was called with which arguments, and what came back."""

    name: str | None
    arguments: str | None = None
    result: str | None = None
    call_id: str | None = None


@dataclass(frozen=True, slots=True)
class Conversation:
    input: tuple[Message, ...] = ()  # system instructions first, then the prompt / chat history
    output: tuple[Message, ...] = ()
    query: str | None = None  # what a retriever or reranker was asked
    documents: tuple[Document, ...] = ()
    tool: ToolExecution | None = None
    input_value: str | None = None  # generic input/output of chains and agents (no messages)
    output_value: str | None = None
    missing_artifacts: tuple[str, ...] = field(default=())

    def __bool__(self) -> bool:
        return bool(
            self.input
            or self.output
            or self.query
            or self.documents
            or self.tool
            or self.input_value
            or self.output_value
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- offloaded values -----------------------------------------------------------------------------
def artifact_refs(attributes: Attributes | None, events: Iterable[Mapping[str, Any]] | None = ()) -> set[str]:
    """The `artifact:sha256:…` references among a span's attribute and event-attribute values."""
    refs = {v for v in (attributes or {}).values() if is_ref(v)}
    for event in events or ():
        refs.update(v for v in (event.get("attributes") or {}).values() if is_ref(v))
    return refs


class _Values:
    """Attribute lookup with references replaced by their text; remembers the ones it could not read."""

    def __init__(self, attributes: Attributes, artifacts: Mapping[str, str | None]) -> None:
        self.attributes = attributes
        self.artifacts = artifacts
        self.missing: list[str] = []

    def text(self, value: str | None) -> str | None:
        if value is None or not is_ref(value):
            return value
        text = self.artifacts.get(value)
        if text is None:
            if value not in self.missing:
                self.missing.append(value)
            return value
        return text

    def get(self, *keys: str) -> str | None:
        for k in keys:
            v = self.attributes.get(k)
            if v is not None and v != "":
                return self.text(v)
        return None

    def indexed(self, prefix: str) -> list[dict[str, str]]:
        """`prefix.{i}.rest` attributes as one {rest: value} dict per index, in index order."""
        return _indexed(
            {k: self.text(v) or "" for k, v in self.attributes.items() if k.startswith(prefix + ".")}, prefix
        )


def _indexed(items: Mapping[str, str], prefix: str) -> list[dict[str, str]]:
    groups: dict[int, dict[str, str]] = {}
    start = len(prefix) + 1
    for key, value in items.items():
        if not key.startswith(prefix + "."):
            continue
        index, _, rest = key[start:].partition(".")
        if index.isdigit() and rest:
            groups.setdefault(int(index), {})[rest] = value
    return [groups[i] for i in sorted(groups)]


# -- JSON message shapes --------------------------------------------------------------------------
def _json(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return None


def _as_text(value: Any) -> str | None:
    """A JSON value as display text: strings as they are, anything else as compact JSON."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _part_text(part: Any) -> str:
    """One content part (GenAI `parts`, OpenAI / Anthropic content blocks) as text."""
    if isinstance(part, str):
        return part
    if not isinstance(part, dict):
        return _as_text(part) or ""
    kind = str(part.get("type") or "text")
    for key in ("content", "text"):
        if isinstance(part.get(key), str):
            return part[key] if kind in ("text", "input_text", "output_text") else f"[{kind}] {part[key]}"
    image = part.get("image_url")
    where = part.get("uri") or part.get("url") or (image.get("url") if isinstance(image, dict) else image)
    if where or kind in ("blob", "file", "uri", "image", "image_url", "audio", "video"):
        label = part.get("modality") or part.get("mime_type") or kind
        return f"[{label}: {where}]" if where else f"[{label}]"
    return _as_text(part) or ""


def _content(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return "\n".join(t for t in (_part_text(p) for p in value) if t)
    if isinstance(value, str):
        blocks = _json(value) if value[:1] == "[" else None  # OpenLLMetry sends content blocks as JSON text
        if isinstance(blocks, list) and blocks and all(isinstance(b, dict) and "type" in b for b in blocks):
            return _content(blocks)
        return value
    return _part_text(value)


def _openai_tool_calls(calls: Any) -> list[ToolCall]:
    out = []
    for c in calls if isinstance(calls, list) else ():
        if isinstance(c, dict):
            fn = c["function"] if isinstance(c.get("function"), dict) else c
            out.append(
                ToolCall(_as_text(fn.get("name")), _as_text(fn.get("arguments") or fn.get("input")), c.get("id"))
            )
    return out


def _json_message(doc: Any, default_role: str) -> Message | None:
    """A message in GenAI's role + parts shape, or the OpenAI-style role + content + tool_calls shape."""
    if isinstance(doc, str):
        return Message(default_role, doc)
    if not isinstance(doc, dict):
        return None
    if isinstance(doc.get("message"), dict):  # a "choice" wrapping its message
        inner = _json_message(doc["message"], default_role)
        reason = doc.get("finish_reason")
        return inner if inner is None or not reason else replace(inner, finish_reason=str(reason))
    role = str(doc.get("role") or default_role)
    texts: list[str] = []
    calls: list[ToolCall] = []
    call_id = (doc.get("tool_call_id") or doc.get("id")) if role == "tool" else doc.get("tool_call_id")
    parts = doc.get("parts")
    for part in parts if isinstance(parts, list) else ():
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "tool_call":
            calls.append(ToolCall(_as_text(part.get("name")), _as_text(part.get("arguments")), part.get("id")))
        elif kind == "tool_call_response":
            call_id = call_id or part.get("id")
            texts.append(_as_text(part.get("response", part.get("result"))) or "")
        else:
            texts.append(_part_text(part))
    if "content" in doc:
        texts.append(_content(doc.get("content")))
    calls += _openai_tool_calls(doc.get("tool_calls"))
    return Message(
        role,
        "\n".join(t for t in texts if t),
        tuple(calls),
        str(call_id) if call_id else None,
        _as_text(doc.get("name")),
        _as_text(doc.get("finish_reason")),
    )


def _json_messages(text: str | None, default_role: str) -> list[Message]:
    """A JSON array of messages (or one message); text that is not JSON is one message of `default_role`."""
    if text is None:
        return []
    doc = _json(text)
    if doc is None:
        return [Message(default_role, text)]
    if isinstance(doc, dict) and isinstance(doc.get("messages"), list):
        doc = doc["messages"]
    items = doc if isinstance(doc, list) else [doc]
    return [m for m in (_json_message(d, default_role) for d in items) if m is not None]


def _system_instructions(text: str | None) -> list[Message]:
    if text is None:
        return []
    doc = _json(text)
    content = _content(doc) if isinstance(doc, list | dict) else text
    return [Message("system", content)] if content else []


# -- the indexed dialects -------------------------------------------------------------------------
def _indexed_calls(fields: Mapping[str, str], prefix: str, inner: str = "") -> tuple[ToolCall, ...]:
    """`prefix.{j}.{inner}name/arguments/id` (OpenLLMetry) or `…tool_call.function.name` (OpenInference)."""
    calls = []
    for c in _indexed(fields, prefix):
        name = c.get(f"{inner}function.name") or c.get(f"{inner}name")
        args = c.get(f"{inner}function.arguments") or c.get(f"{inner}arguments")
        calls.append(ToolCall(name, args, c.get(f"{inner}id")))
    return tuple(calls)


def _genai_indexed(values: _Values, prefix: str, default_role: str) -> list[Message]:
    """`gen_ai.prompt.{i}.role/content/tool_call_id/tool_calls.{j}.*` and `gen_ai.completion.{i}.*`."""
    out = []
    for m in values.indexed(prefix):
        calls = _indexed_calls(m, "tool_calls")
        if not calls and m.get("function_call.name"):
            calls = (ToolCall(m["function_call.name"], m.get("function_call.arguments")),)
        out.append(
            Message(
                m.get("role") or default_role,
                _content(m.get("content")),
                calls,
                m.get("tool_call_id"),
                m.get("name"),
                m.get("finish_reason"),
            )
        )
    return out


def _openinference_messages(values: _Values, prefix: str, default_role: str) -> list[Message]:
    """`llm.input_messages.{i}.message.role/content/contents.{j}.message_content.*/tool_calls.{j}.tool_call.*`."""
    out = []
    for m in values.indexed(prefix):
        content = m.get("message.content") or "\n".join(
            _part_text(
                {
                    "type": c.get("message_content.type") or "text",
                    "text": c.get("message_content.text"),
                    "url": c.get("message_content.image.image.url"),
                }
            )
            for c in _indexed(m, "message.contents")
        )
        calls = _indexed_calls(m, "message.tool_calls", "tool_call.")
        if not calls and m.get("message.function_call_name"):
            calls = (ToolCall(m["message.function_call_name"], m.get("message.function_call_arguments_json")),)
        out.append(
            Message(
                m.get("message.role") or default_role,
                content,
                calls,
                m.get("message.tool_call_id"),
                m.get("message.name"),
                m.get("message.finish_reason"),
            )
        )
    return out


# -- documents ------------------------------------------------------------------------------------
def _score(value: Any) -> float | None:
    try:
        score = float(value)
    except (TypeError, ValueError):
        return None
    return score if math.isfinite(score) else None


def _json_documents(text: str | None) -> list[Document]:
    doc = _json(text)
    out = []
    for d in doc if isinstance(doc, list) else ():
        if isinstance(d, dict):
            content = d.get("content", d.get("text", d.get("page_content")))
            meta = d.get("metadata")
            out.append(Document(_as_text(d.get("id")), _as_text(content), _score(d.get("score")), _as_text(meta)))
        elif isinstance(d, str):
            out.append(Document(None, d))
    return out


def _indexed_documents(values: _Values, prefix: str) -> list[Document]:
    return [
        Document(
            d.get("document.id"), d.get("document.content"), _score(d.get("document.score")), d.get("document.metadata")
        )
        for d in values.indexed(prefix)
    ]


def _event_documents(events: Sequence[Mapping[str, Any]], values: _Values) -> list[Document]:
    """OpenLLMetry's vector-store instrumentations: one `db.query.result` event per hit."""
    out = []
    for e in events:
        if e.get("name") != "db.query.result":
            continue
        a = e.get("attributes") or {}
        score = a.get("db.query.result.score", a.get("db.query.result.distance"))
        out.append(
            Document(
                values.text(a.get("db.query.result.id")),
                values.text(a.get("db.query.result.document")),
                _score(score),
                values.text(a.get("db.query.result.metadata")),
            )
        )
    return out


def _event_messages(
    events: Sequence[Mapping[str, Any]], values: _Values, name: str, key: str, role: str
) -> list[Message]:
    """The GenAI convention before 1.28 (and OpenLLMetry with events): messages as span events."""
    out: list[Message] = []
    for e in events:
        if e.get("name") == name:
            out += _json_messages(values.text((e.get("attributes") or {}).get(key)), role)
    return out


# -- the whole span -------------------------------------------------------------------------------
def parse(
    attributes: Attributes | None,
    events: Sequence[Mapping[str, Any]] | None = (),
    artifacts: Mapping[str, str | None] | None = None,
) -> Conversation:
    """The conversation of one span; empty (falsy) when the span carries none.

    `events`: the span's events as the lake stores them ({name, attributes}); `artifacts`: the text
    of each offloaded reference the caller could read."""
    values = _Values(attributes or {}, artifacts or {})
    events = events or ()
    get = values.get

    inputs = _system_instructions(get("gen_ai.system_instructions"))
    inputs += (
        _json_messages(get("gen_ai.input.messages"), "user")
        or _genai_indexed(values, "gen_ai.prompt", "user")
        or _openinference_messages(values, "llm.input_messages", "user")
        or [Message("user", p.get("prompt.text", "")) for p in values.indexed("llm.prompts")]
        or _event_messages(events, values, "gen_ai.content.prompt", "gen_ai.prompt", "user")
    )
    if not inputs and (prompt := get("gen_ai.prompt", "llm.prompts")):
        inputs = _json_messages(prompt, "user")
    outputs = (
        _json_messages(get("gen_ai.output.messages"), "assistant")
        or _genai_indexed(values, "gen_ai.completion", "assistant")
        or _openinference_messages(values, "llm.output_messages", "assistant")
        or _event_messages(events, values, "gen_ai.content.completion", "gen_ai.completion", "assistant")
    )
    if not outputs and (completion := get("gen_ai.completion")):
        outputs = _json_messages(completion, "assistant")

    documents = (
        _json_documents(get("gen_ai.retrieval.documents"))
        or _indexed_documents(values, "retrieval.documents")
        or _indexed_documents(values, "reranker.output_documents")
        or _event_documents(events, values)
    )
    query = get("gen_ai.retrieval.query.text", "reranker.query")

    tool = None
    kind = (get("openinference.span.kind") or "").upper()
    traceloop_kind = get("traceloop.span.kind")
    generic_in = get("input.value", "traceloop.entity.input")
    generic_out = get("output.value", "traceloop.entity.output")
    if get("gen_ai.tool.call.arguments", "gen_ai.tool.call.result") is not None or (
        get("gen_ai.operation.name") == "execute_tool"
    ):
        tool = ToolExecution(
            get("gen_ai.tool.name"),
            get("gen_ai.tool.call.arguments"),
            get("gen_ai.tool.call.result"),
            get("gen_ai.tool.call.id"),
        )
    elif kind == "TOOL" or traceloop_kind == "tool":
        name = get("tool.name", "tool_call.function.name", "traceloop.entity.name")
        tool = ToolExecution(name, generic_in, generic_out, get("tool.id", "tool_call.id"))
        generic_in = generic_out = None
    if inputs or outputs:
        generic_in = generic_out = None  # the raw request/response JSON of an LLM span repeats the messages
    if documents and not query and generic_in is not None:
        query, generic_in = generic_in, None  # a retriever's input is its query
    return Conversation(
        tuple(inputs),
        tuple(outputs),
        query,
        tuple(documents),
        tool,
        generic_in,
        generic_out,
        tuple(values.missing),
    )
