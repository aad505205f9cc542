"""The UI's pages: URL → lake reads → a Jinja2 template (autoescaped: span data is user input).

| URL | page |
|---|---|
| `/traces?…filters…` | the traces list |
| `/traces/<trace_id>?span=<span_id>` | a trace: waterfall, selected span, feedback |
| `/traces/<trace_id>/spans/<span_id>` | the span pane alone (the trace page swaps it in on click) |
| `POST /traces/<trace_id>/feedback` | thumbs up / down and a comment, sent to `/v1/feedback` |
| `/artifacts/<ref>` | an offloaded value, as text, loaded when asked for |
| `/dashboards?range=…&tenant=…` | charts over the list's time range, of one tenant or all |
| `/sql?q=…` or `/sql?saved=NAME&p.KEY=VALUE` | the SQL console |
| `/static/…` | the UI's CSS, script and the vendored chart library |
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from importlib.metadata import version
from pathlib import Path
from urllib.parse import urlencode

import duckdb
from jinja2 import Environment, PackageLoader, select_autoescape

from pipeline.maintenance import saved_queries
from pipeline.ui import dashboards, trace_detail, trace_list
from pipeline.ui.feedback_client import FeedbackPost, FeedbackUnavailable, error_message
from pipeline.ui.lake import LakeReader
from pipeline.ui.server import Request, Response
from pipeline.ui.sql_console import SqlRefused, SqlSandbox
from sinks.artifacts.refs import is_ref
from sinks.artifacts.store import ArtifactNotFoundError, ArtifactStore
from sinks.parquet.layout import Lake

_TRACE = re.compile(r"^/traces/([0-9a-fA-F]{32})$")
_SPAN = re.compile(r"^/traces/([0-9a-fA-F]{32})/spans/([0-9a-fA-F]{16})$")
_FEEDBACK = re.compile(r"^/traces/([0-9a-fA-F]{32})/feedback$")
_ARTIFACT = re.compile(r"^/artifacts/(artifact:sha256:[0-9a-f]{64})$")
STATIC_TYPES = {".css": "text/css", ".js": "text/javascript", ".txt": "text/plain", ".md": "text/plain"}
FEEDBACK_NAME = "user_thumbs"


@dataclass(frozen=True)
class UiSettings:
    lake: Lake
    artifact_stores: Sequence[ArtifactStore]
    sql_max_rows: int = 5000
    sql_timeout_s: float = 30.0


def _utc(ns: int | None, seconds: bool = False) -> str:
    if ns is None:
        return "–"
    text = datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return text[:19] if seconds else text[:23]


def _money(usd: float | None) -> str:
    if usd is None:
        return "–"
    return f"${usd:.4f}" if usd == 0 or usd >= 0.001 else f"${usd:.6f}"


def _num(n: int | float | None) -> str:
    if n is None:
        return "–"
    if n < 10_000:
        return f"{n:g}" if isinstance(n, float) else str(n)
    return f"{n / 1000:.1f}k" if n < 1_000_000 else f"{n / 1e6:.1f}M"


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} KiB" if n < 1024**2 else f"{n / 1024**2:.1f} MiB"


def _static_files() -> dict[str, tuple[bytes, str]]:
    """Every file under static/, read once: only these names are ever served (no path from the URL)."""
    root = resources.files("pipeline.ui") / "static"
    out: dict[str, tuple[bytes, str]] = {}

    def walk(node: resources.abc.Traversable, prefix: str) -> None:
        for child in node.iterdir():
            name = f"{prefix}{child.name}"
            if child.is_dir():
                walk(child, name + "/")
            elif Path(child.name).suffix in STATIC_TYPES:
                out[name] = (child.read_bytes(), STATIC_TYPES[Path(child.name).suffix] + "; charset=utf-8")

    walk(root, "")
    return out


class UiApp:
    """Routes requests to pages. Thread-safe: every page reads the lake on its own DuckDB cursor."""

    def __init__(self, settings: UiSettings, feedback: FeedbackPost | None, feedback_target: str) -> None:
        self.settings = settings
        self.lake = LakeReader(settings.lake)
        # the id index of a big lake takes a few seconds to read: do it now, not in the first request
        threading.Thread(target=self.lake.warm, name="ui-index", daemon=True).start()
        self.sql = SqlSandbox(
            settings.lake, settings.artifact_stores, max_rows=settings.sql_max_rows, timeout_s=settings.sql_timeout_s
        )
        self.feedback = feedback
        self.feedback_target = feedback_target
        self.static = _static_files()
        self.env = Environment(
            loader=PackageLoader("pipeline.ui", "templates"),
            autoescape=select_autoescape(["html"], default=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(
            utc=_utc,
            money=_money,
            num=_num,
            ms=trace_detail.format_ms,
            size=_size,
            pretty_json=trace_detail.pretty_json,
        )
        self.env.globals.update(version=version("tracelake"), lake=str(settings.lake))

    def close(self) -> None:
        self.lake.close()
        self.sql.close()

    # -- dispatch -------------------------------------------------------------------------------
    def handle(self, req: Request) -> Response:
        path = req.path.rstrip("/") or "/"
        if req.method == "POST":
            if m := _FEEDBACK.match(path):
                return self.post_feedback(req, m.group(1).lower())
            return Response.text(405, "POST goes to /traces/<trace_id>/feedback only")
        if path == "/":
            return Response.redirect("/traces", 302)
        if path == "/healthz":
            return Response.text(200, "ok")
        if path == "/favicon.ico":
            return Response(204, b"", "image/x-icon", {"Cache-Control": "max-age=86400"})
        if path == "/traces":
            return self.traces(req)
        if m := _TRACE.match(path):
            return self.trace(req, m.group(1).lower())
        if m := _SPAN.match(path):
            return self.span(req, m.group(1).lower(), m.group(2).lower())
        if m := _ARTIFACT.match(req.path):
            return self.artifact(m.group(1))
        if path == "/dashboards":
            return self.dashboards(req)
        if path == "/sql":
            return self.sql_console(req)
        if path.startswith("/static/") and (asset := self.static.get(path[len("/static/") :])):
            return Response(200, asset[0], asset[1], {"Cache-Control": "max-age=3600"})
        return self.page("not_found.html", status=404, title="Not found", path=req.path)

    def page(self, template: str, status: int = 200, **context: object) -> Response:
        html = self.env.get_template(template).render(**context)
        return Response(status, html.encode())

    # -- pages ------------------------------------------------------------------------------------
    def traces(self, req: Request) -> Response:
        q, errors = trace_list.TraceQuery.from_params(req.query)
        if trace_list.TRACE_ID.match(q.q.lower()):  # a pasted trace id: straight to the trace
            return Response.redirect(f"/traces/{q.q.lower()}", 302)
        page = trace_list.list_traces(self.lake, q)
        facets = trace_list.facets(self.lake, q)
        return self.page(
            "traces.html",
            title="Traces",
            nav="traces",
            q=q,
            page=page,
            errors=errors,
            facets=facets,
            shared_query=_shared_query(q),
        )

    def trace(self, req: Request, trace_id: str) -> Response:
        detail = trace_detail.load_trace(self.lake, trace_id)
        if detail is None:
            return self.page("not_found.html", status=404, title="Trace not found", trace_id=trace_id, path=req.path)
        span_id = req.arg("span").lower() or detail.default_span()
        span = trace_detail.load_span(self.lake, trace_id, span_id, self.artifact_text) if span_id else None
        return self.page(
            "trace.html",
            title=f"Trace {trace_id}",
            nav="traces",
            trace=detail,
            span=span,
            selected=span_id,
            sent=req.arg("feedback"),
            feedback_enabled=self.feedback is not None,
            feedback_target=self.feedback_target,
        )

    def span(self, req: Request, trace_id: str, span_id: str) -> Response:
        span = trace_detail.load_span(self.lake, trace_id, span_id, self.artifact_text)
        if span is None:
            return Response.text(404, f"span {span_id} of trace {trace_id} is not in the lake")
        return self.page("span_pane.html", span=span, trace_id=trace_id)

    def post_feedback(self, req: Request, trace_id: str) -> Response:
        back = f"/traces/{trace_id}"
        if self.feedback is None:
            return Response.text(503, "feedback is off: this UI knows no receiver (set ui.feedback_url)")
        value = {"up": 1.0, "down": 0.0}.get(req.arg("value"))
        if value is None:
            return Response.text(400, "value: expected up or down")
        event = {"trace_id": trace_id, "name": FEEDBACK_NAME, "value": value, "source": "ui"}
        if comment := req.arg("comment").strip():
            event["comment"] = comment
        try:
            status, body = self.feedback(json.dumps(event).encode(), trace_detail.trace_tenant(self.lake, trace_id))
        except FeedbackUnavailable as e:
            return self.page("error.html", status=502, title="Feedback not sent", message=str(e), back=back)
        if status != 202:
            message = f"the receiver refused the feedback ({error_message(status, body)})"
            return self.page("error.html", status=502, title="Feedback not sent", message=message, back=back)
        return Response.redirect(f"{back}?feedback={'up' if value else 'down'}")

    def read_artifact(self, ref: str) -> bytes | None:
        """An offloaded value from the first store that has it; None when none has (deleted by gc)."""
        for store in self.settings.artifact_stores:
            try:
                return store.get(ref)
            except ArtifactNotFoundError:
                continue
        return None

    def artifact_text(self, ref: str) -> str | None:
        data = self.read_artifact(ref)
        return None if data is None else data.decode("utf-8", errors="replace")

    def artifact(self, ref: str) -> Response:
        if not is_ref(ref):
            return Response.text(400, "not an artifact reference")
        data = self.read_artifact(ref)
        if data is None:
            return Response.text(404, f"{ref} is in none of the artifact stores (deleted by gc?)")
        return Response(200, data, "text/plain; charset=utf-8", {"Content-Disposition": "inline"})

    def dashboards(self, req: Request) -> Response:
        q, errors = trace_list.TraceQuery.from_params(req.query)
        lo, hi = q.window()
        board = dashboards.build_dashboard(self.lake, lo, hi, q.tenant or None)
        step = 3600 if board.bucket == "hour" else 86400
        charts = [
            {"id": c.id, "title": c.title, "unit": c.unit, "kind": c.kind, "x": c.x, "series": c.series, "step": step}
            for c in board.charts
        ]
        return self.page(
            "dashboards.html",
            title="Dashboards",
            nav="dashboards",
            q=q,
            board=board,
            charts=charts,
            errors=errors,
            charts_needed=True,
            shared_query=_shared_query(q),
        )

    def sql_console(self, req: Request) -> Response:
        saved_list = saved_queries.list_saved()
        sql = req.arg("q")
        saved_name = req.arg("saved")
        params = {k[2:]: v[-1] for k, v in req.query.items() if k.startswith("p.") and v}
        result = error = saved = None
        t0 = time.perf_counter()
        try:
            if saved_name:
                saved, result = self.sql.run_saved(saved_name, params)
                sql = sql or ""
            elif sql.strip():
                result = self.sql.run(sql)
        except (SqlRefused, saved_queries.SavedQueryError) as e:
            error = str(e)
        except duckdb.Error as e:
            error = str(e)
        return self.page(
            "sql.html",
            title="SQL",
            nav="sql",
            sql=sql,
            saved=saved,
            saved_list=saved_list,
            params=params,
            result=result,
            error=error,
            chart=result.chart if result is not None else None,
            charts_needed=result is not None and result.chart is not None,
            seconds=time.perf_counter() - t0,
            max_rows=self.settings.sql_max_rows,
        )


def _shared_query(q: trace_list.TraceQuery) -> str:
    """`?range=…` (or from/to), and `tenant=…`, so that Traces and Dashboards keep the same range and tenant."""
    params = q.shared_params()
    return "?" + urlencode(params) if params else ""
