"""Reloading a running `tracelake run` (README "Changing a chain"): SIGHUP under load swaps the chain of every
worker process without losing or duplicating a span, the old tail sampler's held traces are decided by its own
policies and written at the swap, an invalid or restart-only config changes nothing, `tracelake reload` and
/metrics tell what runs. One server for the module; the tests run in order against it."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.query import connect
from tests.conftest import RunningTracelake, config_yaml
from tests.test_worker_processes import _send_all

TRACES_PER_BATCH, SPANS_PER_TRACE = 20, 3  # tests.test_worker_processes._request


def _config(process: str, processors: str, extra: str = "") -> str:
    return config_yaml(
        process=process, processors=processors, extra="compaction: {background: false}\n" + extra
    ).replace("worker: {", "worker: {processes: 2, ")


def _sampler(name: str, wait: str) -> str:
    return f"{{decision_wait: {wait}, early_release: false, policies: [{{name: {name}, type: always_sample}}]}}"


OLD = _config("[tail_sampling]", f"{{tail_sampling: {_sampler('old_policy', '60s')}}}")


def _new(generation: int) -> str:
    processors = (
        f"{{attributes/gen: {{actions: [{{key: reload.gen, action: insert, value: '{generation}'}}]}}, "
        f"tail_sampling: {_sampler('new_policy', '1s')}}}"
    )
    return _config("[attributes/gen, tail_sampling]", processors)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTracelake]:
    tl = RunningTracelake(tmp_path_factory.mktemp("reload"), OLD)
    try:
        yield tl
    finally:
        tl.kill()


def _write(tl: RunningTracelake, text: str) -> None:
    tl.config.write_text(text.replace("{lake}", str(tl.lake)))


def _post_reload(tl: RunningTracelake, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body or {}).encode()
    request = urllib.request.Request(f"http://{tl.telemetry}/-/reload", data, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=180) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def _metric(tl: RunningTracelake, name: str) -> float:
    with urllib.request.urlopen(f"http://{tl.telemetry}/metrics", timeout=10) as resp:
        m = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", resp.read().decode(), re.M)
    assert m, name
    return float(m.group(1))


def _spans_of(tl: RunningTracelake, batches: range) -> int:
    """Spans of these batches in the lake now (trace ids start with the batch number, as _request makes them)."""
    prefixes = ", ".join(f"'{b:016x}'" for b in batches)
    con = connect(tl.lake)
    return con.execute(f"SELECT count(*) FROM spans WHERE trace_id[1:16] IN ({prefixes})").fetchone()[0]


def _wait_for(check, what: str, tl: RunningTracelake, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen:\n{tl.log}"
        time.sleep(0.2)


def test_sighup_under_load_swaps_every_worker_and_writes_what_the_old_sampler_held(server: RunningTracelake) -> None:
    tl = server
    sent: list[int] = []
    _send_all(tl.grpc, range(1, 11), sent)  # A: held by the old sampler (decision_wait 60s)
    assert len(sent) == 10
    assert _spans_of(tl, range(1, 11)) == 0, "held for decision_wait before the reload"
    later: list[int] = []
    sender = threading.Thread(target=_send_all, args=(tl.grpc, range(11, 41), later))  # B: during the reload
    sender.start()
    while len(later) < 5:
        time.sleep(0.05)
    _write(tl, _new(2))
    tl.proc.send_signal(signal.SIGHUP)
    _wait_for(lambda: "reload ok" in tl.log, "the reload", tl)
    assert tl.proc.poll() is None, "SIGHUP ended the server"
    # the old sampler decided everything it held at the swap and the new sinks wrote it, long before its 60s
    _wait_for(lambda: _spans_of(tl, range(1, 11)) == 600, "A written at the reload", tl, timeout=20)
    sender.join(120)
    assert len(later) == 30
    assert len(re.findall(r"reload: now running processors \[attributes/gen, tail_sampling\]", tl.log)) == 2, tl.log
    assert _metric(tl, "tracelake_config_generation") == 2
    assert _metric(tl, "tracelake_config_reloads_total") == 1
    assert _metric(tl, "tracelake_config_reload_failures_total") == 0


def test_an_invalid_reload_changes_nothing(server: RunningTracelake) -> None:
    tl = server
    _write(tl, _new(9).replace("action: insert", "action: inzert"))
    status, answer = _post_reload(tl)
    assert status == 422 and not answer["ok"] and not answer["changed"], answer
    assert any("processors.attributes/gen.actions.0.action" in e for e in answer["errors"]), answer
    assert answer["generation"] == 2
    # restart-only keys are refused, each by name
    _write(
        tl,
        _new(9).replace("http: {endpoint: 127.0.0.1:0}", "http: {endpoint: 127.0.0.1:1}")
        + "bus: {capacity_spans: 5000}\n",
    )
    status, answer = _post_reload(tl)
    assert status == 422 and not answer["changed"], answer
    keys = sorted(e.split(": ")[1] for e in answer["errors"])
    assert keys == ["bus.capacity_spans", "receivers.otlp.http.endpoint"], answer
    assert all("needs a restart" in e for e in answer["errors"])
    # still generation 2: spans sent now get reload.gen = 2 (checked at the end)
    sent: list[int] = []
    _send_all(tl.grpc, range(41, 46), sent)
    assert len(sent) == 5
    assert _metric(tl, "tracelake_config_generation") == 2
    assert _metric(tl, "tracelake_config_reload_failures_total") == 2
    assert re.search(r"reload: \S+tracelake\.yaml: processors\.attributes/gen\.actions\.0\.action", tl.log), tl.log


def test_the_reload_command_reports_what_the_server_did(server: RunningTracelake, tmp_path: Path) -> None:
    tl = server
    _write(tl, _new(2))  # the same chain as running: a reload that changes nothing but the generation
    cmd = [sys.executable, "-m", "pipeline.cli", "reload", "--config", str(tl.config), "--endpoint", tl.telemetry]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=200)
    assert out.returncode == 0, out.stderr
    assert "reloaded (generation 3" in out.stdout
    other = tmp_path / "other.yaml"
    other.write_text(tl.config.read_text())
    cmd[cmd.index(str(tl.config))] = str(other)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=200)
    assert out.returncode == 1
    assert f"runs {tl.config}" in out.stderr and "refused" in out.stderr, out.stderr


def test_nothing_lost_or_written_twice(server: RunningTracelake) -> None:
    tl = server
    assert tl.stop() == 0, tl.log
    total_traces = 45 * TRACES_PER_BATCH
    con = connect(tl.lake)
    assert con.execute("SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM spans").fetchone() == (
        total_traces * SPANS_PER_TRACE,
        total_traces * SPANS_PER_TRACE,
    )
    files = [pq.read_table(p) for p in (tl.lake / "spans").rglob("*.parquet")]
    assert sum(t.num_rows for t in files) == total_traces * SPANS_PER_TRACE, "a span was written twice"
    assert not list((tl.lake / "_holdback").rglob("*.parquet")), "always_sample drops nothing"
    reasons = dict(
        con.execute(
            "SELECT trace_id[1:16] <= '000000000000000a', list_distinct(flatten(list(keep_reasons))) "
            "FROM traces GROUP BY 1"
        ).fetchall()
    )
    assert reasons[True] == ["old_policy"], reasons  # A: decided by the old sampler at the swap
    assert set(reasons[False]) <= {"old_policy", "new_policy"} and "new_policy" in reasons[False], reasons
    assert con.execute("SELECT count(*) FROM traces").fetchone() == (total_traces,)
    # after the reload every span went through attributes/gen (generation 2, then the same chain as 3)
    after = con.execute(
        "SELECT count(*), count(attributes['reload.gen']) FROM spans WHERE trace_id[1:16] >= '0000000000000029'"
    ).fetchone()
    assert after == (5 * TRACES_PER_BATCH * SPANS_PER_TRACE,) * 2, after
    gens = {g for (g,) in con.execute("SELECT DISTINCT attributes['reload.gen'] FROM spans").fetchall()}
    assert gens == {None, "2"}, gens
