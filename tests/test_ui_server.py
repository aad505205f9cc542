"""The UI's server without a browser: inside `tracelake run`, access rules, the SQL sandbox, packaging.

The browser flows are in test_ui_browser.py; these tests speak HTTP to a real `tracelake run` with
`ui.enabled` and to `tracelake ui` processes, and run the SQL sandbox against a real lake.
"""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from pipeline.config import load
from pipeline.query import connect
from pipeline.ui import TOKEN_ENV, UiSetupError, ui_server
from pipeline.ui.server import UiServer
from pipeline.ui.sql_console import SqlRefused, SqlSandbox
from tests.conftest import RunningTracelake, config_yaml, make_request

REPO = Path(__file__).resolve().parent.parent
TRACE = "5b8efff798038103d269b633813fc60c"
ERROR_TRACE = "0af7651916cd43dd8448eb211c80319c"


def _request(
    base: str, method: str, path: str, body: str | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    url = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read().decode()
    finally:
        conn.close()


def _post_traces(http_endpoint: str) -> None:
    now = time.time_ns()
    req = make_request(
        [
            {"trace_id": TRACE, "span_id": "00f067aa0ba902b7", "name": "POST /chat", "start": now - 10**9, "end": now},
            {
                "trace_id": TRACE,
                "span_id": "00f067aa0ba902b8",
                "parent": "00f067aa0ba902b7",
                "name": "chat gpt-4o",
                "start": now - 9 * 10**8,
                "end": now - 10**8,
                "attrs": {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"},
            },
            {"trace_id": ERROR_TRACE, "span_id": "00f067aa0ba902b9", "name": "job", "error": "boom"},
        ]
    )
    host, port = http_endpoint.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("POST", "/v1/traces", req.SerializeToString(), {"Content-Type": "application/x-protobuf"})
    assert conn.getresponse().status == 200


def _wait(check: object, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _rows(lake: Path, sql: str) -> list[tuple]:
    try:
        return connect(lake).execute(sql).fetchall()
    except duckdb.Error:
        return []


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningTracelake, str]]:
    """`tracelake run` with the UI inside it, holding two traces; yields it and the UI's URL."""
    work = tmp_path_factory.mktemp("ui-in-run")
    tl = RunningTracelake(work, config_yaml(extra="ui: {enabled: true, endpoint: 127.0.0.1:0}\n"))
    try:
        ui = next(m.group(1) for line in tl.log_lines if (m := re.search(r"tracelake ui listening on (\S+)/$", line)))
        _post_traces(tl.http)
        _wait(lambda: len(_rows(tl.lake, "SELECT trace_id FROM traces")) == 2, "both traces' summaries")
        _wait(lambda: _rows(tl.lake, "SELECT 1 FROM spans"), "spans")
        yield tl, ui
    finally:
        tl.stop()


def test_the_ui_inside_run_serves_the_lake_and_sends_feedback_in_process(
    running: tuple[RunningTracelake, str],
) -> None:
    tl, ui = running
    status, headers, html = _request(ui, "GET", "/traces?range=all")
    assert status == 200 and TRACE in html and ERROR_TRACE in html
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"

    status, headers, _ = _request(
        ui,
        "POST",
        f"/traces/{TRACE}/feedback",
        "value=down&comment=wrong+answer",
        {"Content-Type": "application/x-www-form-urlencoded", "Origin": ui},
    )
    assert status == 303 and headers["location"] == f"/traces/{TRACE}?feedback=down"
    _wait(lambda: _rows(tl.lake, "SELECT 1 FROM feedback"), "the feedback row")
    assert _rows(tl.lake, "SELECT trace_id, name, value, comment, source FROM feedback") == [
        (TRACE, "user_thumbs", 0.0, "wrong answer", "ui")
    ]
    assert "this process&#39;s receiver" in _request(ui, "GET", f"/traces/{TRACE}")[2]


def test_cross_site_posts_and_foreign_host_names_are_refused(running: tuple[RunningTracelake, str]) -> None:
    _, ui = running
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert _request(ui, "POST", f"/traces/{TRACE}/feedback", "value=down", form)[0] == 403
    evil = {**form, "Origin": "http://evil.example"}
    assert _request(ui, "POST", f"/traces/{TRACE}/feedback", "value=down", evil)[0] == 403
    # DNS rebinding: a name that points at 127.0.0.1 but is not ours
    port = urllib.parse.urlsplit(ui).port
    status, _, body = _request(ui, "GET", "/traces", headers={"Host": f"evil.example:{port}"})
    assert status == 421 and "unexpected Host" in body
    assert _request(ui, "GET", "/traces", headers={"Host": f"localhost:{port}"})[0] == 200
    assert _request(ui, "POST", f"/traces/{TRACE}/feedback", "value=sideways", {**form, "Origin": ui})[0] == 400


def test_pages_answer_for_missing_things(running: tuple[RunningTracelake, str]) -> None:
    _, ui = running
    assert _request(ui, "GET", "/traces/" + "f" * 32)[0] == 404
    assert _request(ui, "GET", f"/traces/{TRACE}/spans/{'e' * 16}")[0] == 404
    assert _request(ui, "GET", "/artifacts/artifact:sha256:" + "0" * 64)[0] == 404
    assert _request(ui, "GET", "/static/../../pyproject.toml")[0] == 404
    status, headers, js = _request(ui, "GET", "/static/vendor/uplot/uPlot.iife.min.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript") and "uPlot" in js
    status, _, html = _request(ui, "GET", "/traces?min_cost=abc&range=all")
    assert status == 200 and "ignored min_cost" in html and TRACE in html
    assert _request(ui, "GET", f"/traces?q={TRACE.upper()}")[1].get("location") == f"/traces/{TRACE}"


# -- access ------------------------------------------------------------------------------------------
def test_a_non_loopback_address_needs_a_token(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "ui", "--lake", str(tmp_path), "--listen", "0.0.0.0:0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != TOKEN_ENV},
    )
    assert out.returncode == 2 and "needs a token" in out.stderr and TOKEN_ENV in out.stderr
    bad = tmp_path / "ui.yaml"
    bad.write_text("ui: {endpoint: '0.0.0.0:8890'}\n")
    check = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "validate", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert (
        check.returncode == 2
        and "ui: endpoint 0.0.0.0:8890 is not a loopback address: set ui.auth_token" in check.stderr
    )


def test_with_a_token_every_request_must_carry_it(tmp_path: Path) -> None:
    config = tmp_path / "ui.yaml"
    token = "s3cret-token-for-the-ui"
    config.write_text(f"ui: {{endpoint: '0.0.0.0:0', auth_token: {token}}}\nsinks: {{parquet: {{path: {tmp_path}}}}}\n")
    server: UiServer = ui_server(load(config))
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert _request(base, "GET", "/traces")[0] == 401
        assert _request(base, "GET", "/traces", headers={"Authorization": "Bearer wrong-token-wrong-token"})[0] == 401
        assert _request(base, "GET", "/traces", headers={"Authorization": f"Bearer {token}"})[0] == 200
        status, headers, _ = _request(base, "GET", f"/traces?range=all&token={token}")
        assert status == 303 and headers["location"] == "/traces?range=all"
        cookie = headers["set-cookie"].split(";")[0]
        assert "HttpOnly" in headers["set-cookie"] and "SameSite=Strict" in headers["set-cookie"]
        # any Host is fine with a token: the token is what a rebinding page cannot have
        assert _request(base, "GET", "/traces", headers={"Cookie": cookie, "Host": "ui.internal:8890"})[0] == 200
    finally:
        server.stop()
    plain = tmp_path / "plain.yaml"  # no token in the config: --listen off loopback is refused
    plain.write_text(f"sinks: {{parquet: {{path: {tmp_path}}}}}\n")
    with pytest.raises(UiSetupError, match="needs a token"):
        ui_server(load(plain), endpoint="0.0.0.0:0")


# -- the SQL sandbox -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sandbox(running: tuple[RunningTracelake, str]) -> Iterator[SqlSandbox]:
    box = SqlSandbox(running[0].lake, max_rows=2, timeout_s=1.0)
    yield box
    box.close()


@pytest.mark.parametrize(
    "sql",
    [
        "COPY (SELECT * FROM spans) TO '{lake}/out.csv'",
        "ATTACH '{lake}/x.duckdb' AS x",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET enable_external_access = true",
        "PRAGMA database_list",
        "CREATE TABLE t AS SELECT 1",
        "EXPORT DATABASE '{lake}/dump'",
        "SELECT 1; SELECT 2",
        "CALL pragma_version()",
    ],
)
def test_only_one_select_runs(sandbox: SqlSandbox, sql: str) -> None:
    with pytest.raises(SqlRefused):
        sandbox.run(sql.format(lake=sandbox.lake.root))
    assert sorted(p.name for p in Path(sandbox.lake.root).iterdir()) == ["feedback", "spans", "traces"]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_text('/etc/passwd')",
        "SELECT * FROM read_csv('{lake}/../ui.yaml')",
        "SELECT * FROM glob('/tmp/*')",
        "SELECT * FROM read_parquet('{repo}/**/*.parquet')",
    ],
)
def test_nothing_outside_the_lake_can_be_read(sandbox: SqlSandbox, sql: str) -> None:
    with pytest.raises(duckdb.PermissionException):
        sandbox.run(sql.format(lake=sandbox.lake.root, repo=REPO))


def test_the_lake_reads_with_limits(sandbox: SqlSandbox) -> None:
    result = sandbox.run("SELECT trace_id, span_count FROM traces ORDER BY trace_id")
    assert result.rows == [[ERROR_TRACE, "1"], [TRACE, "2"]] and not result.truncated
    assert result.trace_columns == [0] and result.chart is not None and result.chart["x_kind"] == "category"
    assert sandbox.run("SELECT * FROM range(10)").truncated
    files = sandbox.run(f"SELECT count(*) > 0 FROM glob('{sandbox.lake.root}/spans/*/*/*.parquet')")
    assert files.rows == [["true"]]
    with pytest.raises(duckdb.InterruptException, match="1 s time limit"):
        sandbox.run("SELECT count(*) FROM range(100000000000)")


# -- packaging -----------------------------------------------------------------------------------------
