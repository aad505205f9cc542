"""`support-bot`, the OTel GenAI semantic conventions: `POST /chat` → retrieval → chat, sometimes
chat → execute_tool → chat; rate limits, tool timeouts, max_tokens cut-offs."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from pipeline.demo.corpus import DOCS, PROMPT_VERSIONS, QUESTIONS, SUPPORT_SYSTEM, TOOLS
from pipeline.demo.generator import MS, Generator, RateLimitError, to_json
from pipeline.demo.models import GENAI_MODELS, Model

SERVICE = "support-bot"
RESOURCE = {"service.version": "1.14.2", "deployment.environment": "production"}


def emit(gen: Generator, t0: int) -> None:
    """One support-bot trace from `t0` (ns): the request span, retrieval, one or two chat calls, maybe a tool."""
    rng = gen.rng
    app = gen.tracer(SERVICE, "support_bot.http", "1.14.2")
    genai = gen.tracer(SERVICE, "opentelemetry.instrumentation.openai_v2", "2.1b0")
    session, user, tenant = gen.session()
    question, doc_ids = rng.choice(QUESTIONS)
    if rng.random() < 0.2:
        question += gen.pii()
    prompt_version = rng.choice(PROMPT_VERSIONS)
    gen.baggage = {"session.id": session, "tenant.id": tenant}
    root = gen.start(
        app,
        "POST /chat",
        kind=SpanKind.SERVER,
        start_time=t0,
        attributes={
            "http.request.method": "POST",
            "http.route": "/chat",
            "url.path": "/chat",
            "url.scheme": "https",
            "server.address": "support.acme.dev",
            "client.address": f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
            "user_agent.original": rng.choice(
                ["Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5)", "AcmeMobile/4.2 (iOS 18.1)"]
            ),
            "network.protocol.version": "1.1",
            "session.id": session,
            "user.id": user,
            "tenant.id": tenant,
            "app.prompt_version": prompt_version,
            "gen_ai.conversation.id": session,
        },
    )
    ctx = trace.set_span_in_context(root)
    t = t0 + gen.ms(1, 6)

    # retrieval
    docs = [d for d in DOCS if d[0] in doc_ids]
    docs += rng.sample([d for d in DOCS if d[0] not in doc_ids], rng.randint(1, 2))
    scores = sorted((round(rng.uniform(0.45, 0.93), 4) for _ in docs), reverse=True)
    ret = gen.start(
        genai,
        "retrieval product-docs",
        context=ctx,
        kind=SpanKind.CLIENT,
        start_time=t,
        attributes={
            "gen_ai.operation.name": "retrieval",
            "gen_ai.data_source.id": "product-docs",
            "gen_ai.retrieval.query.text": question,
            "gen_ai.retrieval.documents": to_json(
                [{"id": d[0], "score": s} for d, s in zip(docs, scores, strict=True)]
            ),
            "gen_ai.request.top_k": len(docs),
            "db.system.name": "qdrant",
            "db.collection.name": "product_docs_v3",
            "server.address": "qdrant.internal.acme.dev",
            "server.port": 6333,
        },
    )
    t = gen.end(ret, t + gen.ms(18, 140))

    model = gen.pick_model(GENAI_MODELS)
    outcome = gen.outcome()
    slow = rng.random() < 0.04
    context = "\n".join(f"[{d[0]}] {d[1]}" for d in docs)
    messages: list[dict[str, Any]] = [
        {
            "role": "user",
            "parts": [{"type": "text", "content": f"<context>\n{context}\n</context>\n\n{question}"}],
        }
    ]
    wants_tool = rng.random() < 0.3 and outcome == "ok"
    result: dict[str, Any] = {}
    tool_name = "get_order_status" if "order" in question else "get_invoice"
    t += gen.ms(1, 4)
    if outcome == "rate_limited":
        span = _chat_span(gen, genai, ctx, model, t, messages)
        t += gen.ms(90, 250)
        span.record_exception(
            RateLimitError(
                f"Error code: 429 - Rate limit reached for {model.request} in organization org-acme "
                "on tokens per min (TPM): Limit 800000, Used 799412, Requested 2311. "
                "Please try again in 172ms."
            ),
            timestamp=t,
        )
        span.set_attribute("error.type", "RateLimitError")
        span.set_status(Status(StatusCode.ERROR, "429 Too Many Requests: rate limit reached"))
        t = gen.end(span, t + gen.ms(1, 3))
        root.set_attributes({"http.response.status_code": 503, "error.type": "RateLimitError"})
        root.set_status(Status(StatusCode.ERROR, "upstream LLM rate limited"))
        gen.end(root, t + gen.ms(2, 10))
        return

    if wants_tool:
        call_id = f"call_{rng.getrandbits(96):024x}"
        args = (
            {"order_id": f"A-{rng.randint(100000, 999999)}"}
            if tool_name == "get_order_status"
            else {"month": f"2026-{rng.randint(1, 12):02d}"}
        )
        out_msgs = [
            {
                "role": "assistant",
                "parts": [{"type": "tool_call", "id": call_id, "name": tool_name, "arguments": args}],
                "finish_reason": "tool_calls",
            }
        ]
        t = _chat(gen, genai, ctx, model, t, messages, out_msgs, "tool_calls", False, max_tokens=1024)
        # the tool
        timeout = rng.random() < 0.12
        tool = gen.start(
            genai,
            f"execute_tool {tool_name}",
            context=ctx,
            kind=SpanKind.INTERNAL,
            start_time=t + gen.ms(1, 3),
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": tool_name,
                "gen_ai.tool.type": "function",
                "gen_ai.tool.description": TOOLS[tool_name]["description"],
                "gen_ai.tool.call.id": call_id,
                "gen_ai.tool.call.arguments": to_json(args),
            },
        )
        if timeout:
            t_end = t + 10_000 * MS + gen.ms(1, 30)
            tool.record_exception(TimeoutError(f"{tool_name} did not answer within 10s"), timestamp=t_end)
            tool.set_attribute("error.type", "TimeoutError")
            tool.set_status(Status(StatusCode.ERROR, f"tool {tool_name} timed out after 10s"))
            result = {"error": "timeout"}
        else:
            t_end = t + gen.ms(40, 900)
            if tool_name == "get_order_status":
                result = {
                    "order_id": args.get("order_id"),
                    "status": rng.choice(["picking", "shipped", "delivered"]),
                    "carrier": rng.choice(["DHL", "UPS"]),
                    "tracking": f"1Z{rng.getrandbits(40):010X}",
                }
            else:
                result = {
                    "month": args.get("month"),
                    "total_usd": round(rng.uniform(50, 5000), 2),
                    "status": rng.choice(["paid", "open"]),
                    "pdf": f"https://billing.acme.dev/inv/{rng.getrandbits(32):08x}.pdf",
                }
            tool.set_attribute("gen_ai.tool.call.result", to_json(result))
        t = gen.end(tool, t_end)
        messages = [
            *messages,
            *out_msgs,
            {
                "role": "tool",
                "parts": [{"type": "tool_call_response", "id": call_id, "response": result}],
            },
        ]
        t += gen.ms(1, 4)

    max_tokens = 1024
    words: int | None = None
    finish = "stop"
    if outcome == "length":
        max_tokens, words, finish = 96, 72, "length"
    text = gen.answer(docs, words)
    if wants_tool and "error" in result:
        text = (
            "I'm sorry, I couldn't look that up right now because our "
            f"{tool_name.replace('_', ' ')} service "
            "did not respond in time. Please try again in a few minutes or reply here to open a ticket."
        )
    out = [{"role": "assistant", "parts": [{"type": "text", "content": text}], "finish_reason": finish}]
    t = _chat(gen, genai, ctx, model, t, messages, out, finish, slow, max_tokens=max_tokens)
    root.set_attribute("http.response.status_code", 200)
    gen.end(root, t + gen.ms(2, 12))


def _chat_span(
    gen: Generator,
    tracer: trace.Tracer,
    ctx: Any,
    model: Model,
    t: int,
    messages: list[dict[str, Any]],
    max_tokens: int = 1024,
) -> trace.Span:
    """A chat span as the OpenAI instrumentation starts it: request parameters and input messages."""
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": model.provider,
        "gen_ai.request.model": model.request,
        "gen_ai.request.temperature": 0.2,
        "gen_ai.request.max_tokens": max_tokens,
        "gen_ai.system_instructions": to_json([{"type": "text", "content": SUPPORT_SYSTEM}]),
        "gen_ai.input.messages": to_json(messages),
        "server.address": model.server,
        "server.port": 443,
    }
    return gen.start(tracer, f"chat {model.request}", context=ctx, kind=SpanKind.CLIENT, start_time=t, attributes=attrs)


def _chat(
    gen: Generator,
    tracer: trace.Tracer,
    ctx: Any,
    model: Model,
    t: int,
    messages: list[dict[str, Any]],
    out: list[dict[str, Any]],
    finish: str,
    slow: bool,
    max_tokens: int,
) -> int:
    """A whole chat call (response, usage, finish reason, latency); returns the time it ended."""
    span = _chat_span(gen, tracer, ctx, model, t, messages, max_tokens)
    prompt = SUPPORT_SYSTEM + to_json(messages)
    u = gen.usage(model, prompt, to_json(out))
    if finish == "length":  # max_tokens bounds the whole completion, reasoning included
        u["reasoning"] = min(u["reasoning"], max_tokens // 2)
        u["output"] = max_tokens
    attrs: dict[str, Any] = {
        "gen_ai.response.model": model.response,
        "gen_ai.response.id": f"chatcmpl-{gen.rng.getrandbits(96):024x}",
        "gen_ai.response.finish_reasons": [finish],
        "gen_ai.output.messages": to_json(out),
        "gen_ai.usage.input_tokens": u["input"],
        "gen_ai.usage.output_tokens": u["output"],
    }
    if u["cache_read"]:
        attrs["gen_ai.usage.cache_read.input_tokens"] = u["cache_read"]
    if u["cache_write"]:
        attrs["gen_ai.usage.cache_write.input_tokens"] = u["cache_write"]
    if u["reasoning"]:
        attrs["gen_ai.usage.reasoning.output_tokens"] = u["reasoning"]
    span.set_attributes(attrs)
    return gen.end(span, t + gen.latency(model, u["output"], slow))
