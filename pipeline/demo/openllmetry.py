"""`ticket-summarizer`, OpenLLMetry (Traceloop) with the legacy indexed `gen_ai.prompt.N.*` attributes:
workflow → task → LLM (Vertex AI Gemini or a local Ollama model), sometimes a tool."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from pipeline.demo.corpus import FIRST, LAST, NEXT_STEPS, TICKET_BODIES
from pipeline.demo.generator import MS, Generator, RateLimitError, to_json
from pipeline.demo.models import OPENLLMETRY_MODELS

SERVICE = "ticket-summarizer"
RESOURCE = {
    "service.version": "2.3.1",
    "deployment.environment": "production",
    "tenant.id": "globex",  # a single-tenant deployment: the tenant is on the resource, not on the spans
}


def emit(gen: Generator, t0: int) -> None:
    """One ticket-summarizer trace from `t0` (ns): workflow, task, the LLM call, sometimes a tool."""
    rng = gen.rng
    tl = gen.tracer(SERVICE, "traceloop.sdk", "0.40.7")
    session, user, _tenant = gen.session()
    ticket_id = f"T-{rng.randint(10000, 99999)}"
    first, last = rng.choice(FIRST), rng.choice(LAST)
    body = rng.choice(TICKET_BODIES)
    if rng.random() < 0.5:
        body += (
            f" Reporter: {first.title()} {last.title()} <{first}.{last}@example.com>, "
            f"+1 212 555 01{rng.randint(10, 99)}."
        )
    gen.baggage = {
        "traceloop.association.properties.session_id": session,
        "traceloop.association.properties.user_id": user,
    }
    root = gen.start(
        tl,
        "summarize_ticket.workflow",
        kind=SpanKind.INTERNAL,
        start_time=t0,
        attributes={
            "traceloop.span.kind": "workflow",
            "traceloop.entity.name": "summarize_ticket",
            "traceloop.workflow.name": "summarize_ticket",
            "traceloop.entity.input": to_json({"args": [], "kwargs": {"ticket_id": ticket_id}}),
        },
    )
    ctx = trace.set_span_in_context(root)
    t = t0 + gen.ms(1, 4)
    task = gen.start(
        tl,
        "load_ticket.task",
        context=ctx,
        kind=SpanKind.INTERNAL,
        start_time=t,
        attributes={
            "traceloop.span.kind": "task",
            "traceloop.entity.name": "load_ticket",
            "traceloop.workflow.name": "summarize_ticket",
            "traceloop.entity.input": to_json({"args": [ticket_id], "kwargs": {}}),
            "traceloop.entity.output": to_json({"id": ticket_id, "body": body}),
        },
    )
    t = gen.end(task, t + gen.ms(15, 90))

    model = gen.pick_model(OPENLLMETRY_MODELS)
    outcome = gen.outcome()
    instructions = (
        "Summarise the support ticket below for the on-call engineer in at most three bullet points: "
        "the customer's problem, what they already tried, and the most likely next step. Classify the "
        "ticket as one of billing, access, performance, compliance or bug, and rate its urgency from 1 "
        "to 4. Do not include the customer's contact details in the summary; refer to them as 'the "
        "customer'. Answer in English even if the ticket is written in another language.\n\n"
    )
    prompt = f"{instructions}Ticket {ticket_id}:\n{body}"
    system = model.provider
    op = "vertexai.generate_content" if system == "VertexAI" else "ollama.chat"
    attrs: dict[str, Any] = {
        "llm.request.type": "completion" if system == "VertexAI" else "chat",
        "gen_ai.system": system,
        "gen_ai.request.model": model.request,
        "gen_ai.request.temperature": 0.1,
        "gen_ai.request.max_tokens": 256,
        "gen_ai.prompt.0.role": "user",
        "gen_ai.prompt.0.content": prompt,
        "traceloop.workflow.name": "summarize_ticket",
    }
    t += gen.ms(1, 3)
    llm = gen.start(tl, op, context=ctx, kind=SpanKind.CLIENT, start_time=t, attributes=attrs)
    if outcome == "rate_limited":
        llm.record_exception(
            RateLimitError("429 Resource has been exhausted (e.g. check quota)."), timestamp=t + 120 * MS
        )
        llm.set_status(Status(StatusCode.ERROR, "429 Resource has been exhausted (e.g. check quota)."))
        t = gen.end(llm, t + gen.ms(121, 200))
        root.set_status(Status(StatusCode.ERROR, "ResourceExhausted"))
        gen.end(root, t + gen.ms(1, 4))
        return
    category = rng.choice(["billing", "access", "performance", "compliance", "bug"])
    summary = (
        f"- Problem: {body.split('. ')[0].replace('Customer', 'The customer')}.\n"
        f"- Tried: {body.split('. ')[1] if '. ' in body else 'nothing yet'}.\n"
        f"- Next step: {rng.choice(NEXT_STEPS)}.\n"
        f"Category: {category}; urgency: {rng.randint(1, 4)}"
    )
    finish = "STOP" if system == "VertexAI" else "stop"
    if outcome == "length":
        summary = " ".join(summary.split()[:30])
        finish = "MAX_TOKENS" if system == "VertexAI" else "length"
    u = gen.usage(model, prompt, summary)
    llm.set_attributes(
        {
            "gen_ai.response.model": model.response,
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.content": summary,
            "gen_ai.completion.0.finish_reason": finish,
            "gen_ai.usage.prompt_tokens": u["input"],
            "gen_ai.usage.completion_tokens": u["output"],
            "llm.usage.total_tokens": u["input"] + u["output"],
        }
    )
    t = gen.end(llm, t + gen.latency(model, u["output"], rng.random() < 0.05))
    if rng.random() < 0.4:
        tool = gen.start(
            tl,
            "update_ticket.tool",
            context=ctx,
            kind=SpanKind.INTERNAL,
            start_time=t + gen.ms(1, 3),
            attributes={
                "traceloop.span.kind": "tool",
                "traceloop.entity.name": "update_ticket",
                "traceloop.workflow.name": "summarize_ticket",
                "traceloop.entity.input": to_json({"ticket_id": ticket_id, "category": category}),
                "traceloop.entity.output": to_json({"ok": True}),
            },
        )
        t = gen.end(tool, t + gen.ms(30, 250))
    root.set_attribute("traceloop.entity.output", to_json({"ticket_id": ticket_id, "summary": summary}))
    gen.end(root, t + gen.ms(1, 4))
