"""`research-assistant`, OpenInference (LangChain instrumentation): agent → retriever → LLM, sometimes a
`web_search` tool and a second LLM call; indexed `llm.input_messages.N.*` attributes."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from pipeline.demo.corpus import DOCS, RESEARCH_TOPICS, TOOLS
from pipeline.demo.generator import MS, Generator, RateLimitError, to_json
from pipeline.demo.models import OPENINFERENCE_MODELS, Model

SERVICE = "research-assistant"
RESOURCE = {"service.version": "0.9.0", "deployment.environment": "staging"}


def emit(gen: Generator, t0: int) -> None:
    """One research-assistant trace from `t0` (ns): agent, retriever, LLM, maybe web_search and a second LLM."""
    rng = gen.rng
    oi = gen.tracer(SERVICE, "openinference.instrumentation.langchain", "0.1.51")
    session, user, tenant = gen.session()
    topic = rng.choice(RESEARCH_TOPICS)
    question = f"Summarise {topic} in a short briefing with sources."
    if rng.random() < 0.15:
        question += gen.pii()
    root = gen.start(
        oi,
        "ResearchAgent",
        kind=SpanKind.INTERNAL,
        start_time=t0,
        attributes={
            "openinference.span.kind": "AGENT",
            "input.value": question,
            "input.mime_type": "text/plain",
            "session.id": session,
            "user.id": user,
            "tenant.id": tenant,
            "app.prompt_version": "research-v2",
            "metadata": to_json({"prompt_version": "research-v2", "ls_run_depth": 0}),
        },
    )
    ctx = trace.set_span_in_context(root)
    t = t0 + gen.ms(2, 10)
    docs = rng.sample(DOCS, 3)
    ret_attrs: dict[str, Any] = {"openinference.span.kind": "RETRIEVER", "input.value": question}
    for i, (doc_id, text) in enumerate(docs):
        ret_attrs[f"retrieval.documents.{i}.document.id"] = doc_id
        ret_attrs[f"retrieval.documents.{i}.document.score"] = round(rng.uniform(0.3, 0.9), 4)
        ret_attrs[f"retrieval.documents.{i}.document.content"] = text
    ret = gen.start(
        oi,
        "VectorStoreRetriever",
        context=ctx,
        kind=SpanKind.INTERNAL,
        start_time=t,
        attributes=ret_attrs,
    )
    t = gen.end(ret, t + gen.ms(25, 180))

    model = gen.pick_model(OPENINFERENCE_MODELS)
    outcome = gen.outcome()
    system = (
        "You are a research assistant. Write concise, well-sourced briefings for engineers. Cite the "
        "document ids you rely on in square brackets, prefer primary sources, flag uncertainty "
        "explicitly, and never fabricate citations. Use the web_search tool when the context is "
        "insufficient or older than six months."
    )
    context = "\n".join(f"[{d}] {txt}" for d, txt in docs)
    user_msg = f"Context:\n{context}\n\nTask: {question}"
    msgs = [("system", system), ("user", user_msg)]
    use_tool = rng.random() < 0.35 and outcome == "ok"
    t += gen.ms(1, 5)
    if use_tool:
        call = f"toolu_{rng.getrandbits(80):020x}"
        query = topic[:60]
        call_args = to_json({"query": query})
        t = _llm(gen, oi, ctx, model, t, msgs, "", "tool_calls", False, tool_call=(call, call_args))
        timeout = rng.random() < 0.1
        tool = gen.start(
            oi,
            "web_search",
            context=ctx,
            kind=SpanKind.INTERNAL,
            start_time=t + gen.ms(1, 3),
            attributes={
                "openinference.span.kind": "TOOL",
                "tool.name": "web_search",
                "tool.description": TOOLS["web_search"]["description"],
                "tool.parameters": to_json(TOOLS["web_search"]["parameters"]),
                "input.value": call_args,
            },
        )
        if timeout:
            t_end = t + 15_000 * MS
            tool.record_exception(TimeoutError("web_search: read timed out after 15s"), timestamp=t_end)
            tool.set_status(Status(StatusCode.ERROR, "web_search timed out"))
            found = "web_search failed: timeout"
        else:
            t_end = t + gen.ms(300, 2500)
            found = " ".join(
                f"{i + 1}. https://example.com/{topic.split()[1]}-{rng.randint(10, 99)} — {rng.choice(DOCS)[1][:120]}"
                for i in range(3)
            )
            tool.set_attributes({"output.value": found, "output.mime_type": "text/plain"})
        t = gen.end(tool, t_end)
        msgs += [("assistant", f"web_search({call_args})"), ("tool", found)]
        t += gen.ms(1, 4)
    words = 80 if outcome == "length" else None
    finish = "length" if outcome == "length" else "stop"
    answer = gen.answer(docs, words)
    if outcome == "rate_limited":
        span = _llm_span(gen, oi, ctx, model, t, msgs)
        span.record_exception(RateLimitError(f"Error code: 429 - {model.provider} rate_limit_error"), timestamp=t)
        span.set_status(Status(StatusCode.ERROR, "rate_limit_error: Number of request tokens has exceeded your limit"))
        t = gen.end(span, t + gen.ms(80, 300))
        root.set_status(Status(StatusCode.ERROR, "RateLimitError"))
        gen.end(root, t + gen.ms(1, 5))
        return
    t = _llm(gen, oi, ctx, model, t, msgs, answer, finish, rng.random() < 0.04)
    root.set_attributes({"output.value": answer, "output.mime_type": "text/plain"})
    gen.end(root, t + gen.ms(1, 8))


def _llm_span(
    gen: Generator, tracer: trace.Tracer, ctx: Any, model: Model, t: int, msgs: list[tuple[str, str]]
) -> trace.Span:
    """An LLM span as OpenInference starts it: provider, model, parameters and indexed input messages."""
    attrs: dict[str, Any] = {
        "openinference.span.kind": "LLM",
        "llm.provider": model.provider,
        "llm.system": model.provider,
        "llm.model_name": model.request,
        "llm.invocation_parameters": to_json({"model": model.request, "temperature": 0.3, "max_tokens": 1024}),
    }
    for i, (role, content) in enumerate(msgs):
        attrs[f"llm.input_messages.{i}.message.role"] = role
        attrs[f"llm.input_messages.{i}.message.content"] = content
    name = {"anthropic": "ChatAnthropic", "openai": "ChatOpenAI"}.get(model.provider, "ChatGoogleGenerativeAI")
    return gen.start(tracer, name, context=ctx, kind=SpanKind.INTERNAL, start_time=t, attributes=attrs)


def _llm(
    gen: Generator,
    tracer: trace.Tracer,
    ctx: Any,
    model: Model,
    t: int,
    msgs: list[tuple[str, str]],
    answer: str,
    finish: str,
    slow: bool,
    tool_call: tuple[str, str] | None = None,
) -> int:
    """A whole LLM call (output message or tool call, token counts, latency); returns the time it ended."""
    span = _llm_span(gen, tracer, ctx, model, t, msgs)
    u = gen.usage(model, "".join(c for _, c in msgs), answer or to_json(tool_call))
    attrs: dict[str, Any] = {"llm.output_messages.0.message.role": "assistant"}
    if tool_call is not None:
        prefix = "llm.output_messages.0.message.tool_calls.0.tool_call"
        attrs[f"{prefix}.id"] = tool_call[0]
        attrs[f"{prefix}.function.name"] = "web_search"
        attrs[f"{prefix}.function.arguments"] = tool_call[1]
    else:
        attrs["llm.output_messages.0.message.content"] = answer
    attrs |= {
        "llm.token_count.prompt": u["input"],
        "llm.token_count.completion": u["output"],
        "llm.token_count.total": u["input"] + u["output"],
        "llm.finish_reason": finish,
    }
    if u["cache_read"]:
        attrs["llm.token_count.prompt_details.cache_read"] = u["cache_read"]
    if u["cache_write"]:
        attrs["llm.token_count.prompt_details.cache_write"] = u["cache_write"]
    span.set_attributes(attrs)
    return gen.end(span, t + gen.latency(model, u["output"], slow))
