"""`tracelake trace TRACE_ID`: one trace replayed as a header, a span tree with a waterfall, and feedback.

The view answers "what happened in this request, where did the time/money go, and what failed" without
writing SQL. It reads the lake through the DuckDB views (so replayed duplicates are already gone) with a
handful of parameterized queries scoped to one trace; Python only lays out rows of that one trace.
Output is plain text unless `color` is asked for, so tests and pipes get stable bytes.
"""

from __future__ import annotations

import unicodedata
from collections import defaultdict
from datetime import UTC, datetime
from typing import NamedTuple, Protocol, TypeVar

import duckdb

from sinks.artifacts.display import artifact_lines

_SPANS_SQL = """
SELECT span_id, coalesce(parent_span_id, ''), coalesce(name, ''), status_code, status_message,
       epoch_ns(start_time), coalesce(epoch_ns(end_time), epoch_ns(start_time)), duration_ms, span_type,
       coalesce(response_model, request_model), input_tokens, output_tokens, cost_usd, cost_status,
       [concat_ws(': ', e.attributes['exception.type'], e.attributes['exception.message'])
        FOR e IN coalesce(events, []) IF e.name = 'exception'],
       artifacts
FROM spans WHERE trace_id = ? ORDER BY start_time, span_id
"""
# Same rules as the `traces` summary (unpriced = an llm call the cost processor could not price).
_HEADER_SQL = """
SELECT arg_min(name, start_time) FILTER (WHERE coalesce(parent_span_id, '') = ''),
       coalesce(arg_min(service_name, start_time) FILTER (WHERE coalesce(parent_span_id, '') = ''),
                any_value(service_name)),
       min(epoch_ns(start_time)), max(coalesce(epoch_ns(end_time), epoch_ns(start_time))), count(*),
       count(*) FILTER (WHERE status_code = 'ERROR'), sum(input_tokens), sum(output_tokens), sum(cost_usd),
       count(*) FILTER (WHERE span_type = 'llm' AND cost_status IS NOT NULL AND cost_status <> 'priced'),
       list_sort(list(DISTINCT coalesce(response_model, request_model))),
       list_sort(list(DISTINCT session_id)), list_sort(list(DISTINCT user_id)),
       list_sort(list(DISTINCT tenant_id)), list_sort(list(DISTINCT prompt_version))
FROM spans WHERE trace_id = ?
"""
_TRACE_SQL = """
SELECT root_name, service_name, epoch_ns(start_time), epoch_ns(end_time), span_count, error_count,
       input_tokens, output_tokens, cost_usd, unpriced_calls, kept, keep_reasons
FROM traces WHERE trace_id = ?
"""
_FEEDBACK_SQL = "SELECT name, value, comment, span_id FROM feedback WHERE trace_id = ? ORDER BY time, name"

_EIGHTHS = "▏▎▍▌▋▊▉█"
_RED, _BOLD = "\x1b[31m", "\x1b[1m"


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
    artifacts: list[dict[str, object]] | None  # what offload_artifacts moved out of the span


def _clean(text: object) -> str:
    """One line of printable text: span data is untrusted and must not inject newlines or terminal escapes."""
    return " ".join("".join(c if c.isprintable() else " " for c in str(text)).split())


def _cw(c: str) -> int:
    if unicodedata.combining(c):
        return 0
    return 2 if unicodedata.east_asian_width(c) in "WF" else 1


def _cells(text: str) -> int:
    return sum(_cw(c) for c in text)


def _fit(text: str, n: int) -> str:
    """Cut to `n` terminal cells, marking the cut with … (wide CJK characters count as two cells)."""
    if _cells(text) <= n:
        return text
    used = 0
    for i, c in enumerate(text):  # one pass: status messages can be kilobytes long
        if used + _cw(c) > n - 1:
            return text[:i] + "…" if n > 0 else ""
        used += _cw(c)
    return text


def _pad(text: str, n: int) -> str:
    text = _fit(text, n)
    return text + " " * (n - _cells(text))


def _paint(text: str, code: str, color: bool) -> str:
    return f"{code}{text}\x1b[0m" if color and text else text


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
    for item in (_fit(indent + _clean(i), width)[len(indent) :] for i in items if i):
        if cur and _cells(cur + " · " + item) > width:
            lines.append(cur)
            cur = ""
        cur = f"{cur} · {item}" if cur else indent + item
    return [*lines, cur] if cur else lines


def _bar(a: float, b: float, w: int) -> str:
    """The span's [a, b] (fractions of the trace timeline) as `w` cells: a waterfall row in one column."""
    a, b = a * w, b * w
    cells = []
    for k in range(w):
        cov = min(b, k + 1) - max(a, k)
        if cov <= 0:
            cells.append("·")
        elif a > k and b < k + 1:  # starts and ends inside this cell
            cells.append("▏" if cov < 0.5 else "▌")
        elif a > k:  # covers the right part of the cell: only right-aligned blocks will do
            cells.append("▕" if cov < 0.375 else "▐" if cov < 0.75 else "█")
        else:
            cells.append(_EIGHTHS[max(1, min(8, round(cov * 8))) - 1])
    if all(c == "·" for c in cells):  # zero-length span: still show where it happened
        cells[min(max(int(a), 0), w - 1)] = "▏"
    return "".join(cells)


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
    return _clean(r.model or ""), " ".join(x for x in (tokens, cost, status) if x)


def _span_lines(rows: list[_Span], t0: int, t1: int, width: int, color: bool) -> list[str]:
    """One row per span, columns aligned across rows so durations and bars compare at a glance."""
    nodes = span_tree(rows)
    labels = [" " * (2 * d) + ("↳? " if o else "") + _clean(r.name) for r, d, o in nodes]
    details = [_details(r) for r, _, _ in nodes]
    bar_w, type_w = min(20, max(8, width // 5)), max(len(r.span_type or "") for r in rows)
    fixed = 2 + 1 + bar_w + 1 + 6 + 1 + type_w + 1
    # names keep at least 16 cells so the tree stays readable; what is left goes to model/tokens/cost
    widest = max(_cells(f"{m} {t}") for m, t in details)
    name_w = min(max(_cells(s) for s in labels), max(16, width - fixed - widest))
    total, lines = max(t1 - t0, 1), []
    for (r, depth, _), label, (model, tail) in zip(nodes, labels, details, strict=True):
        err = r.status == "ERROR"
        ms = r.duration_ms if r.duration_ms is not None else (r.end_ns - r.start_ns) / 1e6
        bar = _bar((r.start_ns - t0) / total, (r.end_ns - t0) / total, bar_w)
        kind = _pad(r.span_type or "", type_w)
        head = f"{'✗ ' if err else '  '}{_pad(label, name_w)} {bar} {_ms(ms):>6} {kind} "
        room = width - _cells(head) - _cells(tail) - (1 if tail else 0)
        line = head + " ".join(x for x in (_fit(model, room) if room >= 4 else "", tail) if x)
        lines.append(_paint(_fit(line.rstrip(), width), _RED, color and err))
        excs = [_clean(e) for e in r.exceptions if e]
        status_msg = _clean(r.status_message or "") if err else ""
        msgs = [f"status: {status_msg}"] if status_msg and not any(status_msg in e for e in excs) else []
        msgs += [f"exception: {e}" for e in dict.fromkeys(excs)]  # retries often record the same one
        lines.extend(_paint(_fit(" " * (4 + 2 * depth) + m, width), _RED, color) for m in msgs)
        pad = " " * (4 + 2 * depth)
        lines.extend(_fit(pad + _clean(a), width) for a in artifact_lines(r.artifacts, width=width, indent=pad))
    return lines


def _feedback_lines(con: duckdb.DuckDBPyConnection, trace_id: str, width: int) -> list[str]:
    rows = con.execute(_FEEDBACK_SQL, [trace_id]).fetchall()
    out = ["", f"feedback ({len(rows)}):"] if rows else []
    for name, value, comment, span_id in rows:
        text = f"  {_clean(name)}={'-' if value is None else f'{value:g}'}"
        text += (f" — {_clean(comment)}" if comment else "") + (f" [span {span_id}]" if span_id else "")
        out.append(_fit(text, width))
    return out


def render_trace(con: duckdb.DuckDBPyConnection, trace_id: str, width: int = 80, color: bool = False) -> str | None:
    """The trace as text, every line at most `width` cells; None when the lake knows nothing to show.

    A trace that tail sampling dropped has no spans but still has its summary row (100% of traces are
    summarised): the user then learns why the tree is missing and sees what the summary knows."""
    trace_id = trace_id.strip().lower()  # ids are stored as lowercase hex; users paste them from anywhere
    width = max(width, 20)
    title = _paint(_fit(f"trace {trace_id}", width), _BOLD, color)
    summary = con.execute(_TRACE_SQL, [trace_id]).fetchone()
    rows = [_Span(*r) for r in con.execute(_SPANS_SQL, [trace_id]).fetchall()]
    if not rows:
        if summary is None or summary[10] is not False:
            return None
        note = _fit("  sampled out: its spans were not kept, the summary below is all the lake has", width)
        facts = [*_facts(*summary[:10]), f"keep_reasons: {', '.join(summary[11] or []) or 'none'}"]
        return "\n".join([title, note, *_pack(facts, width), *_feedback_lines(con, trace_id, width)])
    agg = con.execute(_HEADER_SQL, [trace_id]).fetchone()
    assert agg is not None  # an aggregate always returns one row
    facts = _facts(agg[0] or (summary[0] if summary else None) or rows[0].name, *agg[1:10])
    for label, values in zip(("models", "session", "user", "tenant", "prompt"), agg[10:], strict=True):
        if present := [v for v in values or [] if v]:
            facts.append(f"{label}: {', '.join(present)}")
    if summary is not None and summary[10] and summary[11]:
        facts.append(f"kept: {', '.join(summary[11])}")
    body = _span_lines(rows, agg[2], agg[3], width, color)
    return "\n".join([title, *_pack(facts, width), "", *body, *_feedback_lines(con, trace_id, width)])
