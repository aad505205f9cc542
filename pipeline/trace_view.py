"""`tracelake trace TRACE_ID`: one trace as a header, a span tree with a waterfall, what was said, and feedback.

The view answers "what happened in this request, where did the time/money go, what did the model see and
answer, and what failed" without writing SQL. It reads the lake through the DuckDB views (so replayed
duplicates are already gone) with a handful of parameterized queries scoped to one trace, into one
`Trace`; `render_text` lays it out for a terminal (plain text unless `color` is asked for, so tests and
pipes get stable bytes) and `trace_document` gives the same trace as one JSON document. Conversations
are parsed by `pipeline.conversation` (shared with any other front end); offloaded values are read back
from the artifact store through the connection's `artifact()` function.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol, TypeVar

import duckdb

from pipeline import conversation
from pipeline.conversation import Conversation, Message
from pipeline.terminal_text import BOLD, RED, cells, clean, fit, pad, paint, wrap

_SPANS_SQL = """
SELECT span_id, coalesce(parent_span_id, ''), coalesce(name, ''), status_code, status_message,
       epoch_ns(start_time), coalesce(epoch_ns(end_time), epoch_ns(start_time)), duration_ms, span_type,
       coalesce(response_model, request_model), input_tokens, output_tokens, cost_usd, cost_status,
       [concat_ws(': ', e.attributes['exception.type'], e.attributes['exception.message'])
        FOR e IN coalesce(events, []) IF e.name = 'exception'],
       CAST(to_json(s) AS VARCHAR)
FROM spans s WHERE trace_id = ? ORDER BY start_time, span_id
"""
# Same rules as the `traces` summary (unpriced = an llm call the cost processor could not price; a span that
# repeats another span's call, duplicate_of, is not counted again).
_HEADER_SQL = """
SELECT arg_min(name, start_time) FILTER (WHERE coalesce(parent_span_id, '') = ''),
       coalesce(arg_min(service_name, start_time) FILTER (WHERE coalesce(parent_span_id, '') = ''),
                any_value(service_name)),
       min(epoch_ns(start_time)), max(coalesce(epoch_ns(end_time), epoch_ns(start_time))), count(*),
       count(*) FILTER (WHERE status_code = 'ERROR'), sum(input_tokens) FILTER (WHERE duplicate_of IS NULL),
       sum(output_tokens) FILTER (WHERE duplicate_of IS NULL), sum(cost_usd) FILTER (WHERE duplicate_of IS NULL),
       count(*) FILTER (WHERE span_type = 'llm' AND cost_status IS NOT NULL AND cost_status <> 'priced'
                        AND duplicate_of IS NULL),
       list_sort(list(DISTINCT coalesce(response_model, request_model))),
       list_sort(list(DISTINCT session_id)), list_sort(list(DISTINCT user_id)),
       list_sort(list(DISTINCT tenant_id)), list_sort(list(DISTINCT prompt_version))
FROM spans WHERE trace_id = ?
"""
_TRACE_SQL = """
SELECT root_name, service_name, epoch_ns(start_time), epoch_ns(end_time), span_count, error_count,
       input_tokens, output_tokens, cost_usd, unpriced_calls, kept, keep_reasons, CAST(to_json(t) AS VARCHAR)
FROM traces t WHERE trace_id = ?
"""
_FEEDBACK_SQL = "SELECT CAST(to_json(f) AS VARCHAR) FROM feedback f WHERE trace_id = ? ORDER BY time, name"
_ARTIFACTS_SQL = "SELECT r, artifact(r) FROM unnest(?::VARCHAR[]) AS t(r)"

# Columns holding times, written in JSON as RFC 3339 UTC (DuckDB's text is "2026-11-01 10:00:00.5+00").
_TIME_KEYS = ("start_time", "end_time", "time")

_EIGHTHS = "▏▎▍▌▋▊▉█"


class _Span(NamedTuple):
    span_id: str
    parent: str
    name: str
    status: str | None
    status_message: str | None
    start_ns: int
    end_ns: int
    duration_ms: float | None
    span_type: str | None
    model: str | None
    tokens_in: int | None
    tokens_out: int | None
    cost: float | None
    cost_status: str | None
    exceptions: list[str]
    doc: dict[str, Any]  # every column of the row, as JSON values


@dataclass(frozen=True)
class Trace:
    """Everything the lake knows about one trace, read once."""

    trace_id: str
    spans: list[_Span]
    conversations: dict[str, Conversation]  # span_id -> what the span said (empty ones left out)
    header: tuple[Any, ...] | None  # _HEADER_SQL over the spans; None without spans
    summary: tuple[Any, ...] | None  # the `traces` row (_TRACE_SQL), None when not summarised yet
    feedback: list[dict[str, Any]]
    artifact_errors: list[str]  # offloaded values that could not be read (store unreachable, damaged)


def _rfc3339(doc: dict[str, Any]) -> dict[str, Any]:
    for key in _TIME_KEYS:
        v = doc.get(key)
        if isinstance(v, str) and v.endswith("+00"):
            doc[key] = v[:-3].replace(" ", "T", 1) + "Z"
    for event in doc.get("events") or ():
        _rfc3339(event)
    return doc


def _read_artifacts(con: duckdb.DuckDBPyConnection, refs: set[str]) -> tuple[dict[str, str | None], list[str]]:
    """Texts of offloaded values (None: not in any store). One unreadable object does not hide the rest."""
    if not refs:
        return {}, []
    try:
        return dict(con.execute(_ARTIFACTS_SQL, [sorted(refs)]).fetchall()), []
    except duckdb.Error:
        pass
    texts: dict[str, str | None] = {}
    errors = []
    for ref in sorted(refs):
        try:
            texts.update(con.execute(_ARTIFACTS_SQL, [[ref]]).fetchall())
        except duckdb.Error as e:
            errors.append(f"{ref}: {clean(e)}")
    return texts, errors


def load_trace(con: duckdb.DuckDBPyConnection, trace_id: str) -> Trace | None:
    """The trace from the lake's views; None when the lake has no span, summary or feedback of it."""
    trace_id = trace_id.strip().lower()  # ids are stored as lowercase hex; users paste them from anywhere
    rows = con.execute(_SPANS_SQL, [trace_id]).fetchall()
    spans = [_Span._make((*r[:15], _rfc3339(json.loads(r[15])))) for r in rows]
    summary = con.execute(_TRACE_SQL, [trace_id]).fetchone()
    feedback = [_rfc3339(json.loads(r[0])) for r in con.execute(_FEEDBACK_SQL, [trace_id]).fetchall()]
    if not spans and summary is None and not feedback:
        return None
    refs: set[str] = set()
    for s in spans:
        refs |= conversation.artifact_refs(s.doc.get("attributes"), s.doc.get("events"))
    texts, errors = _read_artifacts(con, refs)
    conversations = {}
    for s in spans:
        conv = conversation.parse(s.doc.get("attributes"), s.doc.get("events"), texts)
        if conv or conv.missing_artifacts:
            conversations[s.span_id] = conv
    header = con.execute(_HEADER_SQL, [trace_id]).fetchone() if spans else None
    return Trace(trace_id, spans, conversations, header, summary, feedback, errors)


def trace_document(t: Trace) -> dict[str, Any]:
    """The whole trace as one JSON-ready document: the summary row, every span with all its columns
    (typed columns, attributes, events, links, artifacts) and its parsed conversation, the feedback."""
    summary = _rfc3339(json.loads(t.summary[12])) if t.summary is not None else None
    spans = []
    for s in t.spans:
        conv = t.conversations.get(s.span_id)
        spans.append({**s.doc, "conversation": conv.to_dict() if conv is not None else None})
    doc: dict[str, Any] = {"trace_id": t.trace_id, "summary": summary, "spans": spans, "feedback": t.feedback}
    if t.artifact_errors:
        doc["artifact_errors"] = t.artifact_errors
    return doc


def _ms(ms: float | None) -> str:
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms:.1f}ms" if ms < 10 else f"{ms:.0f}ms"
    sec = ms / 1000
    return f"{sec:.2f}s" if sec < 10 else f"{sec:.1f}s" if sec < 60 else f"{sec / 60:.1f}m"


def _num(n: int | None) -> str:
    if n is None:
        return "-"
    return str(n) if n < 10_000 else f"{n / 1000:.1f}k" if n < 1_000_000 else f"{n / 1e6:.1f}M"


def _money(usd: float) -> str:
    return f"${usd:.4f}" if usd == 0 or usd >= 0.001 else f"${usd:.6f}"


def _facts(
    root: str | None,
    service: str | None,
    start: int | None,
    end: int | None,
    spans: int | None,
    errors: int | None,
    t_in: int | None,
    t_out: int | None,
    cost: float | None,
    unpriced: int | None,
) -> list[str]:
    """The headline numbers, in one place for kept traces (from spans) and sampled-out ones (summary row).
    A trace whose LLM calls could not be priced never reads as "$0": the unpriced calls are counted."""
    dur = _ms((end - start) / 1e6) if start is not None and end is not None else "-"
    stamp = datetime.fromtimestamp((start or 0) / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:23]
    when = "-" if start is None else stamp
    money = "-" if cost is None else _money(cost)
    if unpriced:
        money = f"unpriced ({unpriced} llm calls)" if cost is None else f"{money} (+{unpriced} unpriced)"
    return [
        f"root: {root or '-'}",
        f"service: {service or '-'}",
        f"start: {when} UTC",
        f"duration: {dur}",
        f"spans: {spans or 0}",
        f"errors: {errors or 0}",
        f"tokens: {t_in or 0:,} in / {t_out or 0:,} out",
        f"cost: {money}",
    ]


def _pack(items: list[str], width: int, indent: str = "  ") -> list[str]:
    """Header facts joined by " · ", wrapped (not cut) at `width` so that none is silently lost."""
    lines: list[str] = []
    cur = ""
    for item in (fit(indent + clean(i), width)[len(indent) :] for i in items if i):
        if cur and cells(cur + " · " + item) > width:
            lines.append(cur)
            cur = ""
        cur = f"{cur} · {item}" if cur else indent + item
    return [*lines, cur] if cur else lines


def _bar(a: float, b: float, w: int) -> str:
    """The span's [a, b] (fractions of the trace timeline) as `w` cells: a waterfall row in one column."""
    a, b = a * w, b * w
    out = []
    for k in range(w):
        cov = min(b, k + 1) - max(a, k)
        if cov <= 0:
            out.append("·")
        elif a > k and b < k + 1:  # starts and ends inside this cell
            out.append("▏" if cov < 0.5 else "▌")
        elif a > k:  # covers the right part of the cell: only right-aligned blocks will do
            out.append("▕" if cov < 0.375 else "▐" if cov < 0.75 else "█")
        else:
            out.append(_EIGHTHS[max(1, min(8, round(cov * 8))) - 1])
    if all(c == "·" for c in out):  # zero-length span: still show where it happened
        out[min(max(int(a), 0), w - 1)] = "▏"
    return "".join(out)


class SpanNode(Protocol):
    @property
    def span_id(self) -> str: ...
    @property
    def parent(self) -> str: ...


Node = TypeVar("Node", bound=SpanNode)


def span_tree(rows: list[Node]) -> list[tuple[Node, int, bool]]:
    """Spans depth-first in start order: (span, depth, orphan). Orphans (parent not in the lake, or a
    parent cycle that no root reaches) go to the top level, flagged, instead of vanishing. The terminal
    view and the web UI (`pipeline.ui.trace_detail`) both lay a trace out with it."""
    ids = {r.span_id for r in rows}
    children: dict[str, list[Node]] = defaultdict(list)
    tops: list[tuple[Node, int, bool]] = []
    for r in rows:
        if r.parent and r.parent in ids and r.parent != r.span_id:
            children[r.parent].append(r)
        else:
            tops.append((r, 0, bool(r.parent)))
    out: list[tuple[Node, int, bool]] = []
    seen: set[str] = set()
    for top in [*tops, *((r, 0, True) for r in rows)]:  # the tail only matters for cycles
        stack = [top]  # iterative: deep agent loops must not hit the recursion limit
        while stack:
            r, depth, orphan = stack.pop()
            if r.span_id in seen:
                continue
            seen.add(r.span_id)
            out.append((r, depth, orphan))
            stack.extend((c, depth + 1, False) for c in reversed(children.get(r.span_id, [])))
    return out


def _details(r: _Span) -> tuple[str, str]:
    """(model, "tokens cost status") of a row; only the model is shortened when the line is too long."""
    cost = _money(r.cost) if r.cost is not None else "unpriced" if r.cost_status == "unknown_model" else ""
    tokens = f"{_num(r.tokens_in)}→{_num(r.tokens_out)}" if r.tokens_in or r.tokens_out else ""
    status = {"ERROR": "ERROR", "OK": "ok"}.get(r.status or "", "")  # UNSET is the default: omitted
    return clean(r.model or ""), " ".join(x for x in (tokens, cost, status) if x)


def _span_lines(nodes: list[tuple[_Span, int, bool]], t0: int, t1: int, width: int, color: bool) -> list[str]:
    """One row per span, columns aligned across rows so durations and bars compare at a glance."""
    rows = [r for r, _, _ in nodes]
    labels = [" " * (2 * d) + ("↳? " if o else "") + clean(r.name) for r, d, o in nodes]
    details = [_details(r) for r, _, _ in nodes]
    bar_w, type_w = min(20, max(8, width // 5)), max(len(r.span_type or "") for r in rows)
    fixed = 2 + 1 + bar_w + 1 + 6 + 1 + type_w + 1
    # names keep at least 16 cells so the tree stays readable; what is left goes to model/tokens/cost
    widest = max(cells(f"{m} {t}") for m, t in details)
    name_w = min(max(cells(s) for s in labels), max(16, width - fixed - widest))
    total, lines = max(t1 - t0, 1), []
    for (r, depth, _), label, (model, tail) in zip(nodes, labels, details, strict=True):
        err = r.status == "ERROR"
        ms = r.duration_ms if r.duration_ms is not None else (r.end_ns - r.start_ns) / 1e6
        bar = _bar((r.start_ns - t0) / total, (r.end_ns - t0) / total, bar_w)
        kind = pad(r.span_type or "", type_w)
        head = f"{'✗ ' if err else '  '}{pad(label, name_w)} {bar} {_ms(ms):>6} {kind} "
        room = width - cells(head) - cells(tail) - (1 if tail else 0)
        line = head + " ".join(x for x in (fit(model, room) if room >= 4 else "", tail) if x)
        lines.append(paint(fit(line.rstrip(), width), RED, color and err))
        excs = [clean(e) for e in r.exceptions if e]
        status_msg = clean(r.status_message or "") if err else ""
        msgs = [f"status: {status_msg}"] if status_msg and not any(status_msg in e for e in excs) else []
        msgs += [f"exception: {e}" for e in dict.fromkeys(excs)]  # retries often record the same one
        lines.extend(paint(fit(" " * (4 + 2 * depth) + m, width), RED, color) for m in msgs)
    return lines


# -- what was said ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Limits:
    """How much of each conversation the default view shows (None: everything, `--full`)."""

    lines: int | None = 4  # wrapped lines per text value
    messages: int | None = 3  # the last input messages (system instructions are always shown)
    documents: int | None = 5


SCREEN, FULL = _Limits(), _Limits(None, None, None)
_MORE = "(--full shows everything)"


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _block(label: str, text: str | None, indent: str, width: int, limit: int | None) -> list[str]:
    """`label text`, wrapped at `width` with a hanging indent, cut to `limit` lines saying what was left out."""
    lines = wrap(f"{label} {text or ''}".rstrip(), max(width - len(indent) - 2, 16))
    cut = len(lines) - limit if limit is not None and len(lines) > limit else 0
    out = [indent + (line if i == 0 else "  " + line) for i, line in enumerate(lines[: len(lines) - cut])]
    if cut:
        out.append(f"{indent}  … {_plural(cut, 'more line')} {_MORE}")
    return out


def _message_lines(m: Message, indent: str, width: int, limits: _Limits) -> list[str]:
    role = clean(m.role) or "?"
    if m.name:
        role += f" {clean(m.name)}"
    if m.tool_call_id:
        role += f" [{clean(m.tool_call_id)}]"
    if m.finish_reason:
        role += f" ({clean(m.finish_reason)})"
    out = _block(f"{role}:", m.content, indent, width, limits.lines) if m.content or not m.tool_calls else []
    for call in m.tool_calls:
        label = f"{role} → {clean(call.name or '?')}" if not out else f"  → {clean(call.name or '?')}"
        label += f" [{clean(call.id)}]" if call.id else ""
        out += _block(f"{label}:", call.arguments, indent, width, limits.lines)
    return out


def _input_lines(c: Conversation, seen: dict[Message, str], width: int, limits: _Limits) -> list[str]:
    """The prompt of a call. On a screen, messages an earlier span already showed (the system prompt, the
    chat history an agent sends again with every call) become one line naming that span, and only the
    last `limits.messages` new ones are shown."""
    ind = "  "
    if limits.messages is None:
        return [line for m in c.input for line in _message_lines(m, ind, width, limits)]
    runs: list[tuple[str, list[Message]]] = []  # ("span id", repeated run) or ("", new messages)
    for m in c.input:
        where = seen.get(m, "")
        if runs and runs[-1][0] == where:
            runs[-1][1].append(m)
        else:
            runs.append((where, [m]))
    new = [m for m in c.input if m not in seen and m.role != "system"]
    hide = set(new[: max(len(new) - limits.messages, 0)])
    out: list[str] = []
    for where, run in runs:
        if where:
            out.append(f"{ind}… {_plural(len(run), 'message')} as in span {where} above")
            continue
        hidden = sum(m in hide for m in run)
        for m in run:
            if m not in hide:
                out += _message_lines(m, ind, width, limits)
            elif hidden:  # where the first of them was
                out.append(f"{ind}… {_plural(hidden, 'earlier message')} {_MORE}")
                hidden = 0
    return out


def _conversation_lines(
    c: Conversation, span_id: str, seen: dict[Message, str], width: int, limits: _Limits
) -> list[str]:
    ind = "  "
    out = _input_lines(c, seen, width, limits)
    for m in c.input:
        seen.setdefault(m, span_id)
    for m in c.output:
        out += _message_lines(m, ind, width, limits)
        seen.setdefault(m, span_id)  # the next call's history repeats this answer
    if c.tool is not None:
        head = f"tool {clean(c.tool.name or '?')}" + (f" [{clean(c.tool.call_id)}]" if c.tool.call_id else "")
        out.append(ind + fit(head, width - len(ind)))
        out += _block("arguments:", c.tool.arguments, ind + "  ", width, limits.lines)
        out += _block("result:", c.tool.result, ind + "  ", width, limits.lines)
    if c.query:
        out += _block("query:", c.query, ind, width, limits.lines)
    if c.documents:
        shown = c.documents if limits.documents is None else c.documents[: limits.documents]
        out.append(f"{ind}documents ({len(c.documents)}):")
        for i, d in enumerate(shown, 1):
            score = f" · score {d.score:.4g}" if d.score is not None else ""
            out += _block(f"{i}. {clean(d.id or '-')}{score}", None, ind + "  ", width, None)
            if d.content:
                out += _block("", d.content, ind + "     ", width, None if limits.lines is None else 2)
            if d.metadata and limits.lines is None:
                out += _block("metadata:", d.metadata, ind + "     ", width, None)
        if len(shown) < len(c.documents):
            out.append(f"{ind}  … {_plural(len(c.documents) - len(shown), 'more document')} {_MORE}")
    if c.input_value is not None:
        out += _block("input:", c.input_value, ind, width, limits.lines)
    if c.output_value is not None:
        out += _block("output:", c.output_value, ind, width, limits.lines)
    return out


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} KiB" if n < 1024**2 else f"{n / 1024**2:.1f} MiB"


def _artifact_lines(s: _Span, missing: tuple[str, ...], width: int) -> list[str]:
    """What offload_artifacts moved out of the span: key, size and the whole reference (never cut; on a
    line of its own when it does not fit after the key)."""
    out = []
    for a in s.doc.get("artifacts") or ():
        ref = str(a.get("ref") or "")
        head = f"  offloaded {clean(a.get('key'))} ({_size(a.get('bytes'))}):"
        out += [f"{head} {ref}"] if cells(head) + 1 + len(ref) <= width else [fit(head, width), f"    {ref}"]
        if ref in missing:
            out += _block("missing from the artifact store; preview:", a.get("preview"), "    ", width, 2)
    return out


def _span_title(s: _Span, width: int) -> str:
    tail = f" · span {s.span_id}"  # the id is copied into queries: never cut
    name = clean(s.name) + (f" · {clean(s.model)}" if s.model else "")
    return "── " + fit(name, max(width - 3 - cells(tail), 8)) + tail


def _said_lines(t: Trace, order: list[_Span], width: int, color: bool, limits: _Limits) -> list[str]:
    out: list[str] = []
    seen: dict[Message, str] = {}
    for s in order:
        conv = t.conversations.get(s.span_id)
        body = _conversation_lines(conv, s.span_id, seen, width, limits) if conv is not None else []
        body += _artifact_lines(s, conv.missing_artifacts if conv is not None else (), width)
        if body:
            out += ["", paint(_span_title(s, width), BOLD, color), *body]
    if t.artifact_errors:
        out += ["", "offloaded values that could not be read:", *(f"  {e}" for e in t.artifact_errors)]
    return out


def _feedback_lines(feedback: list[dict[str, Any]], width: int) -> list[str]:
    out = ["", f"feedback ({len(feedback)}):"] if feedback else []
    for f in feedback:
        value = f.get("value")
        text = f"  {clean(f.get('name'))}={'-' if value is None else f'{value:g}'}"
        text += f" — {clean(f['comment'])}" if f.get("comment") else ""
        span = f" [span {f['span_id']}]" if f.get("span_id") else ""
        out.append(fit(text, width - cells(span)) + span)
    return out


def render_text(t: Trace, width: int = 80, color: bool = False, limits: _Limits = SCREEN) -> str:
    """The trace as text, at most `width` cells a line except where a whole id or reference needs more."""
    width = max(width, 20)
    title = paint(fit(f"trace {t.trace_id}", max(width, 38)), BOLD, color)
    said = _feedback_lines(t.feedback, width)
    summary = t.summary
    if not t.spans:
        if summary is not None and summary[10] is False:
            note = "sampled out: its spans were not kept, the summary below is all the lake has"
        else:
            note = "no spans of this trace in the lake (not written yet, past retention, or never sent)"
            note += ": what there is" if summary is not None or t.feedback else ""
        facts = []
        if summary is not None:
            facts = [*_facts(*summary[:10]), f"keep_reasons: {', '.join(summary[11] or []) or 'none'}"]
        return "\n".join([title, *wrap(note, width - 2), *_pack(facts, width), *said])
    agg = t.header
    assert agg is not None  # an aggregate always returns one row
    facts = _facts(agg[0] or (summary[0] if summary else None) or t.spans[0].name, *agg[1:10])
    for label, values in zip(("models", "session", "user", "tenant", "prompt"), agg[10:], strict=True):
        if present := [v for v in values or [] if v]:
            facts.append(f"{label}: {', '.join(present)}")
    if summary is not None and summary[10] and summary[11]:
        facts.append(f"kept: {', '.join(summary[11])}")
    nodes = span_tree(t.spans)
    body = _span_lines(nodes, agg[2], agg[3], width, color)
    order = [s for s, _, _ in nodes]
    return "\n".join([title, *_pack(facts, width), "", *body, *_said_lines(t, order, width, color, limits), *said])


def render_trace(
    con: duckdb.DuckDBPyConnection, trace_id: str, width: int = 80, color: bool = False, full: bool = False
) -> str | None:
    """`tracelake trace`: the text of `render_text`, or None when the lake knows nothing of the trace."""
    t = load_trace(con, trace_id)
    return None if t is None else render_text(t, width, color, FULL if full else SCREEN)
