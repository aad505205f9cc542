"""`tracelake ui` in a real browser (Debian's chromium, headless) over a lake the real pipeline wrote.

One `tracelake run` (cost, tail sampling with a holdback, artifact offloading) takes the demo's traffic
from the OpenTelemetry SDK (all three attribute conventions) plus one hostile trace whose prompt and
span name carry markup; one `tracelake ui --config` process serves the UI over that lake and posts
feedback to the run's receiver. The tests click through it as a user would.

Screenshots of each page are saved under the test's temporary directory; with
TRACELAKE_UI_SCREENSHOTS=docs they replace the ones in docs/ that the README shows.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from pipeline import conversation
from pipeline.conversation import Conversation
from pipeline.demo import run_demo
from pipeline.query import connect
from sinks.artifacts.store import ArtifactStore
from tests.browser import chromium
from tests.conftest import RunningTracelake, config_yaml

REPO = Path(__file__).resolve().parent.parent
MS = 1_000_000
SCRIPT = "<script>window.__xss = 1</script>"
NEEDLE = "zebra-refund-4711"  # a word only the hostile trace's prompt has
HOSTILE_NAME = '<img src=x onerror="window.__xss2 = 1">agent'
DEMO_TRACES = 40
EARLIER_TRACES = 12
HOUR_NS = 3600 * 10**9

PROCESSORS = (
    "{cost: {}, tail_sampling: {decision_wait: 1s, late_feedback_window: 1h, policies: ["
    "{name: errors, type: status_code, status_code: {status_codes: [ERROR]}},"
    " {name: thumbs_down, type: feedback, feedback: {max_value: 0}},"
    " {name: baseline, type: probabilistic, probabilistic: {sampling_percentage: 50}}]},"
    " offload_artifacts: {min_bytes: 1KiB, store: '{lake}/_artifacts'}}"
)


def _send_hostile_trace(endpoint: str) -> str:
    """A support-bot trace through the real SDK: a chat span whose prompt holds markup and whose call failed."""
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot", "tenant.id": "acme"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"http://{endpoint}", insecure=True)))
    tracer = provider.get_tracer("tests.ui")
    t0 = time.time_ns() - 30_000 * MS
    root = tracer.start_span(HOSTILE_NAME, kind=SpanKind.SERVER, start_time=t0)
    trace_id = f"{root.get_span_context().trace_id:032x}"
    from opentelemetry import trace as otel_trace

    ctx = otel_trace.set_span_in_context(root)
    messages = [
        {"role": "system", "parts": [{"type": "text", "content": "You are a support agent."}]},
        {"role": "user", "parts": [{"type": "text", "content": f"{SCRIPT} Why was I charged twice? {NEEDLE}"}]},
    ]
    chat = tracer.start_span("chat gpt-4o", context=ctx, kind=SpanKind.CLIENT, start_time=t0 + 20 * MS)
    chat.set_attributes(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.input.messages": json.dumps(messages),
            "gen_ai.usage.input_tokens": 420,
            "gen_ai.usage.output_tokens": 0,
        }
    )
    chat.record_exception(RuntimeError(f"upstream refused {SCRIPT}"), timestamp=t0 + 900 * MS)
    chat.set_status(Status(StatusCode.ERROR, "rate limited"))
    chat.end(end_time=t0 + 950 * MS)
    root.set_status(Status(StatusCode.ERROR, "chat failed"))
    root.end(end_time=t0 + 1000 * MS)
    provider.shutdown()
    return trace_id


def _wait_for(check: Any, timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _lake_rows(lake: Path, sql: str, params: list[Any] | None = None) -> list[tuple]:
    try:
        return connect(lake).execute(sql, params or []).fetchall()
    except duckdb.Error:
        return []


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningTracelake, str]]:
    work = tmp_path_factory.mktemp("ui-pipeline")
    tl = RunningTracelake(
        work, config_yaml(process="[cost, tail_sampling, offload_artifacts]", processors=PROCESSORS), name="run"
    )
    try:
        for hours_ago, seed in ((20, 1), (9, 2), (3, 3)):  # earlier traffic too: several hours to page through
            run_demo(tl.grpc, traces=EARLIER_TRACES, seed=seed, start_ns=time.time_ns() - hours_ago * HOUR_NS)
        run_demo(tl.grpc, traces=DEMO_TRACES, seed=5)
        hostile = _send_hostile_trace(tl.grpc)
        _wait_for(
            lambda: (
                (_lake_rows(tl.lake, "SELECT count(*) FROM traces")[0:1] or [(0,)])[0][0]
                >= DEMO_TRACES + 3 * EARLIER_TRACES + 1
            ),
            what="every trace's summary in the lake",
        )
        _wait_for(
            lambda: _lake_rows(tl.lake, "SELECT 1 FROM spans WHERE trace_id = ?", [hostile]),
            what="the hostile trace's spans",
        )
        yield tl, hostile
    finally:
        tl.stop()


@pytest.fixture(scope="module")
def ui(pipeline: tuple[RunningTracelake, str]) -> Iterator[str]:
    """`tracelake ui --config` on a free port, feedback to the run's OTLP/HTTP receiver; yields its URL."""
    tl, _ = pipeline
    config = tl.workdir / "ui.yaml"
    text = tl.config.read_text().replace(
        "receivers:\n", f"ui:\n  feedback_url: http://{tl.http}/v1/feedback\nreceivers:\n"
    )
    config.write_text(text)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "ui", "--config", str(config), "--listen", "127.0.0.1:0"],
        cwd=tl.workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url: list[str] = []
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if m := re.search(r"open (http://\S+/)", line):
                url.append(m.group(1).rstrip("/"))

    threading.Thread(target=read, daemon=True).start()
    try:
        _wait_for(lambda: url, timeout=30, what="tracelake ui to listen:\n" + "".join(lines))
        yield url[0]
    finally:
        proc.terminate()
        assert proc.wait(10) == 0, "".join(lines)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    pg = context.new_page()
    problems: list[str] = []
    pg.on("pageerror", lambda e: problems.append(f"script error: {e}"))
    pg.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    yield pg
    context.close()
    assert not problems, problems


def _screenshot(page: Any, name: str, tmp_path: Path) -> None:
    page.screenshot(path=str(tmp_path / f"ui-{name}.png"))
    if os.environ.get("TRACELAKE_UI_SCREENSHOTS") == "docs":
        page.screenshot(path=str(REPO / "docs" / f"ui-{name}.png"))


# -- the list ---------------------------------------------------------------------------------------
def test_list_filters_search_and_shareable_urls(page: Any, ui: str, pipeline: tuple[RunningTracelake, str]) -> None:
    tl, hostile = pipeline
    page.goto(f"{ui}/")
    assert page.url.endswith("/traces")
    rows = page.locator("table#traces tbody tr[data-trace]")
    expected = _lake_rows(tl.lake, "SELECT count(*) FROM traces")[0][0]
    assert rows.count() == min(50, expected)
    # newest first
    starts = rows.locator("td:first-child").all_inner_texts()
    assert starts == sorted(starts, reverse=True)
    # sampled-out traces are listed too, marked as summary-only
    assert page.locator("table#traces .summary-tag").count() >= 1
    _screenshot(page, "traces", tl.workdir)

    page.fill("input[name=service]", "ticket-summarizer")
    page.click("form#filters button[type=submit]")
    page.wait_for_url(re.compile(r"service=ticket-summarizer"))
    services = page.locator("table#traces tbody tr[data-trace] td:nth-child(3)").all_inner_texts()
    lake_count = _lake_rows(tl.lake, "SELECT count(*) FROM traces WHERE service_name = 'ticket-summarizer'")[0][0]
    assert services and set(services) == {"ticket-summarizer"} and len(services) == lake_count

    shared = page.url  # a filtered view is a URL: opening it again shows the same rows
    other = page.context.new_page()
    other.goto(shared)
    assert other.locator("table#traces tbody tr[data-trace]").count() == len(services)
    other.close()

    page.goto(f"{ui}/traces")
    page.fill("input[name=q]", NEEDLE)  # a word inside a prompt, not in any name
    page.press("input[name=q]", "Enter")
    page.wait_for_url(re.compile(NEEDLE))
    found = page.locator("table#traces tbody tr[data-trace]")
    assert [found.nth(i).get_attribute("data-trace") for i in range(found.count())] == [hostile]
    # the hostile root span name is shown as text, never as an element
    assert page.locator("table#traces a.trace-link").first.inner_text() == HOSTILE_NAME
    assert page.locator("table#traces img").count() == 0

    page.goto(f"{ui}/traces?status=error&sort=cost")
    errors = _lake_rows(tl.lake, "SELECT count(*) FROM traces WHERE error_count > 0")[0][0]
    assert page.locator("table#traces tbody tr.has-error").count() == min(errors, 50) > 0


# -- a trace ----------------------------------------------------------------------------------------
def _llm_trace(lake: Path) -> tuple[str, int, str, str]:
    """A kept demo trace with two LLM calls and an offloaded value: (trace id, spans, a chat span id, ref)."""
    rows = _lake_rows(
        lake,
        """SELECT s.trace_id, t.span_count, arg_max(s.span_id, s.start_time), arg_max(s.artifacts[1].ref, s.start_time)
           FROM spans s JOIN traces t USING (trace_id)
           WHERE s.span_type = 'llm' AND len(s.artifacts) > 0 AND t.llm_count >= 2 AND t.error_count = 0
           GROUP BY ALL ORDER BY s.trace_id LIMIT 1""",
    )
    assert rows, "the demo traffic should hold a kept trace with two LLM calls and an offloaded prompt"
    return rows[0]


def test_trace_page_waterfall_span_pane_and_artifacts(
    page: Any, ui: str, pipeline: tuple[RunningTracelake, str]
) -> None:
    tl, _ = pipeline
    trace_id, span_count, last_chat, ref = _llm_trace(tl.lake)
    page.goto(f"{ui}/traces?range=all&q={trace_id}")  # a pasted id goes straight to the trace
    page.wait_for_url(re.compile(f"/traces/{trace_id}"))
    rows = page.locator("#waterfall a.wf-row")
    assert rows.count() == span_count
    styles = rows.evaluate_all("rows => rows.map(r => r.querySelector('.bar').getAttribute('style'))")
    widths = [float(re.findall(r"width: ([\d.]+)%", style)[0]) for style in styles]
    assert max(widths) == pytest.approx(100.0, abs=0.01) and all(w >= 0 for w in widths)
    assert page.locator("#waterfall .wf-row.type-llm").count() >= 2
    assert page.locator("#waterfall .tick").count() >= 2

    chat = page.locator(f'#waterfall a.wf-row[data-span="{last_chat}"]')
    chat.click()
    page.wait_for_selector(f'#span-detail[data-span="{last_chat}"]')
    assert f"span={last_chat}" in page.url  # the selected span is part of the URL
    assert page.locator(f'#waterfall a.wf-row.selected[data-span="{last_chat}"]').count() == 1
    assert page.locator("#span-attributes tr").count() > 3

    # the offloaded value arrives only when asked for, and is the stored text
    button = page.locator(f'.load-artifact[data-ref="{ref}"]').first
    text = ArtifactStore(str(tl.lake / "_artifacts")).get(ref).decode()
    assert page.locator(".artifact-text:visible").count() == 0
    button.click()
    shown = page.locator(".artifact-text:visible").first
    shown.wait_for()
    assert shown.inner_text() == text


def test_hostile_prompt_is_shown_as_text(page: Any, ui: str, pipeline: tuple[RunningTracelake, str]) -> None:
    _, hostile = pipeline
    page.goto(f"{ui}/traces/{hostile}")
    # the failed chat call is the span shown first, and it stands out
    assert page.locator("#waterfall a.wf-row.error").count() == 2
    pane = page.locator("#span-pane")
    assert "rate limited" in page.locator("#span-status").inner_text()
    assert pane.locator(".exception").first.inner_text().count(SCRIPT) == 1
    assert SCRIPT in pane.inner_text()
    user = page.locator('#conversation .msg[data-role="user"]')
    assert SCRIPT in user.inner_text() and NEEDLE in user.inner_text()  # the prompt, as text, in the chat
    assert pane.locator("script, img").count() == 0
    assert page.locator("h1").inner_text() == HOSTILE_NAME
    assert page.evaluate("window.__xss") is None and page.evaluate("window.__xss2") is None


# -- conversations ----------------------------------------------------------------------------------
def _expected_conversation(lake: Path, sql: str, params: list[Any]) -> tuple[str, str, Conversation]:
    """(trace id, span id, pipeline.conversation's reading) of the span `sql` picks."""
    rows = _lake_rows(lake, sql, params)
    assert rows, sql
    trace_id, span_id, attributes, events = rows[0]
    events = [{"name": e["name"], "attributes": e["attributes"]} for e in events or []]
    store = ArtifactStore(str(lake / "_artifacts"))
    texts = {ref: store.get(ref).decode() for ref in conversation.artifact_refs(attributes, events)}
    return trace_id, span_id, conversation.parse(attributes, events, texts)


def _text(s: str) -> str:
    """Text without whitespace: JSON is shown indented, prose wrapped."""
    return "".join(s.split())


@pytest.mark.parametrize(
    "service", ["support-bot", "research-assistant", "ticket-summarizer"], ids=["genai", "openinference", "openllmetry"]
)
def test_llm_conversation_in_every_convention(
    page: Any, ui: str, pipeline: tuple[RunningTracelake, str], service: str
) -> None:
    tl, _ = pipeline
    trace_id, span_id, want = _expected_conversation(  # the last call of the busiest agent loop
        tl.lake,
        """SELECT s.trace_id, s.span_id, s.attributes, s.events FROM spans s JOIN traces t USING (trace_id)
           WHERE s.service_name = ? AND s.span_type = 'llm' AND t.error_count = 0
           ORDER BY t.tool_count DESC, t.llm_count DESC, s.trace_id, s.start_time DESC LIMIT 1""",
        [service],
    )
    assert want.input and want.output, "the demo's LLM spans carry prompts and completions"
    page.goto(f"{ui}/traces/{trace_id}?span={span_id}")
    conv = page.locator("#conversation")
    roles = conv.locator(".msg").evaluate_all("ms => ms.map(m => m.dataset.role)")
    assert roles == [m.role for m in (*want.input, *want.output)]
    shown = _text(conv.inner_text())
    for m in (*want.input, *want.output):
        assert _text(m.content)[:200] in shown
        for call in m.tool_calls:
            assert call.name in shown
    if service == "support-bot":
        _screenshot(page, "trace", tl.workdir)


def test_retrieved_documents_and_tool_calls(page: Any, ui: str, pipeline: tuple[RunningTracelake, str]) -> None:
    tl, _ = pipeline
    trace_id, span_id, want = _expected_conversation(
        tl.lake,
        """SELECT trace_id, span_id, attributes, events FROM spans
           WHERE span_type = 'retrieval' ORDER BY cardinality(attributes) DESC, trace_id LIMIT 1""",
        [],
    )
    assert want.documents and any(d.score is not None for d in want.documents)
    page.goto(f"{ui}/traces/{trace_id}?span={span_id}")
    docs = page.locator("#conversation .document")
    assert docs.count() == len(want.documents)
    scores = page.locator("#conversation .document .score").all_inner_texts()
    assert scores == [f"score {d.score:.4g}" for d in want.documents if d.score is not None]

    trace_id, span_id, want = _expected_conversation(
        tl.lake,
        """SELECT trace_id, span_id, attributes, events FROM spans
           WHERE span_type = 'tool' ORDER BY cardinality(attributes) DESC, trace_id LIMIT 1""",
        [],
    )
    assert want.tool is not None
    page.goto(f"{ui}/traces/{trace_id}?span={span_id}")
    tool = page.locator("#conversation .tool-execution")
    assert want.tool.name in tool.inner_text()
    if want.tool.arguments:
        assert _text(want.tool.arguments)[:40] in _text(tool.inner_text()) or tool.locator("pre.json").count() > 0


# -- feedback -------------------------------------------------------------------------------------
def test_thumbs_down_on_a_sampled_out_trace_lands_and_rescues_it(
    page: Any, ui: str, pipeline: tuple[RunningTracelake, str]
) -> None:
    tl, _ = pipeline
    page.goto(f"{ui}/traces?kept=summary&range=all")
    link = page.locator("table#traces a.trace-link").first
    trace_id = link.locator("xpath=ancestor::tr").get_attribute("data-trace")
    link.click()
    page.wait_for_selector("#sampled-out")
    assert page.locator("#waterfall").count() == 0

    page.fill(".feedback-form input[name=comment]", "wrong refund amount <b>bold</b>")
    page.click(".feedback-form button[value=down]")
    page.wait_for_selector("#feedback-sent")

    def landed() -> bool:
        return bool(_lake_rows(tl.lake, "SELECT 1 FROM feedback WHERE trace_id = ? AND value = 0", [trace_id]))

    _wait_for(landed, what="the thumbs-down in the feedback table")
    # the late thumbs-down promoted the held-back spans: the trace page now draws them
    _wait_for(lambda: _lake_rows(tl.lake, "SELECT 1 FROM spans WHERE trace_id = ?", [trace_id]), what="promotion")
    page.goto(f"{ui}/traces/{trace_id}")
    assert page.locator("#waterfall a.wf-row").count() > 0
    row = page.locator("table.feedback-rows tbody tr.down")
    assert row.count() == 1 and "wrong refund amount <b>bold</b>" in row.inner_text()
    assert page.locator("table.feedback-rows b").count() == 0
    source = _lake_rows(tl.lake, "SELECT source, name FROM feedback WHERE trace_id = ?", [trace_id])
    assert source == [("ui", "user_thumbs")]


# -- SQL and dashboards -----------------------------------------------------------------------------
def test_sql_console_runs_read_only_queries_and_links_traces(
    page: Any, ui: str, pipeline: tuple[RunningTracelake, str]
) -> None:
    tl, _ = pipeline
    page.goto(f"{ui}/sql")
    top5 = "SELECT trace_id, cost_usd, llm_count FROM traces ORDER BY cost_usd DESC NULLS LAST, trace_id LIMIT 5"
    page.fill("#sql", top5)
    page.click("#sql-form button[type=submit]")
    page.wait_for_selector("#sql-result")
    expected = _lake_rows(tl.lake, "SELECT trace_id FROM traces ORDER BY cost_usd DESC NULLS LAST, trace_id LIMIT 5")
    links = page.locator("#sql-result a.trace-link")
    assert links.all_inner_texts() == [r[0] for r in expected]
    assert page.locator('[data-chart="sql"] canvas').count() >= 1  # the quick chart
    _screenshot(page, "sql", tl.workdir)
    links.first.click()
    page.wait_for_url(re.compile(f"/traces/{expected[0][0]}"))

    page.goto(f"{ui}/sql")
    page.click("text=top_cost_traces")  # a saved query, one click away
    page.wait_for_selector("#sql-result")
    assert page.locator("#sql-result tbody tr").count() > 0

    page.goto(f"{ui}/sql")
    outside = tl.workdir / "run.yaml"
    page.fill("#sql", f"COPY (SELECT * FROM spans) TO '{tl.lake}/stolen.csv'")
    page.click("#sql-form button[type=submit]")
    assert "read-only" in page.locator("#sql-error").inner_text()
    page.fill("#sql", f"SELECT * FROM read_text('{outside}')")
    page.click("#sql-form button[type=submit]")
    assert "Permission Error" in page.locator("#sql-error").inner_text()
    assert not (tl.lake / "stolen.csv").exists()


def test_dashboards_draw_charts(page: Any, ui: str, pipeline: tuple[RunningTracelake, str]) -> None:
    page.goto(f"{ui}/traces?range=24h")
    page.click("header nav >> text=Dashboards")  # keeps the list's time range
    page.wait_for_url(re.compile(r"/dashboards\?range=24h"))
    page.wait_for_selector("body[data-charts-ready]")
    for chart in ("cost_model", "cost_tenant", "calls_model", "p95_model", "errors", "tokens"):
        assert page.locator(f"#chart-{chart} canvas").count() >= 1, chart
    legend = page.locator("#chart-cost_model .u-legend").inner_text()
    assert "gpt-4o" in legend
    _screenshot(page, "dashboards", pipeline[0].workdir)
