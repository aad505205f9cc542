"""Tail sampling through `tracelake run`: SDK traffic, every trace counted, errors kept, and a thumbs-down
that arrives after a restart still brings a dropped trace back whole."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

from pipeline.demo import run_demo
from pipeline.query import connect
from tests.conftest import RunningTracelake, config_yaml

PROCESSORS = (
    "{cost: {}, tail_sampling: {decision_wait: 1s, late_feedback_window: 1h, policies: ["
    "{name: errors, type: status_code, status_code: {status_codes: [ERROR]}}, "
    "{name: thumbs_down, type: feedback, feedback: {max_value: 0}}, "
    "{name: baseline, type: probabilistic, probabilistic: {sampling_percentage: 20}}]}}"
)


def _lake_state(lake: Path) -> tuple[int, int, int]:
    con = connect(lake)
    row = con.execute(
        "SELECT (SELECT count(*) FROM traces), (SELECT count(*) FROM traces WHERE kept), (SELECT count(*) FROM spans)"
    ).fetchone()
    assert row is not None
    return row


def test_mixed_traffic_and_late_thumbs_down_across_a_restart(tmp_path: Path) -> None:
    cfg = config_yaml(process="[cost, tail_sampling]", processors=PROCESSORS)
    tl = RunningTracelake(tmp_path, cfg)
    try:
        sent = run_demo(tl.grpc, traces=60, seed=11)
    finally:
        assert tl.stop() == 0, tl.log
    lake = tmp_path / "lake"
    con = connect(lake)
    traces, kept, spans = _lake_state(lake)
    assert traces == sent.traces  # every trace has its summary, kept or not
    assert 0 < kept < traces
    # must-keep: every trace with an error is kept, with the reason
    assert con.execute("SELECT count(*) FROM traces WHERE error_count > 0 AND NOT kept").fetchone() == (0,)
    errors = con.execute("SELECT count(*) FROM traces WHERE error_count > 0").fetchone()
    assert errors is not None and errors[0] > 0
    assert con.execute(
        "SELECT bool_and(list_contains(keep_reasons, 'errors')) FROM traces WHERE error_count > 0"
    ).fetchone() == (True,)
    # spans of kept traces are whole: the summary's span_count matches what `spans` holds
    whole = con.execute(
        "SELECT count(*) FROM traces t WHERE kept AND span_count <> (SELECT count(*) FROM spans s "
        "WHERE s.trace_id = t.trace_id)"
    ).fetchone()
    assert whole == (0,)
    assert spans < sent.spans and list((lake / "_holdback").rglob("*.parquet"))
    dropped = con.execute("SELECT trace_id, span_count FROM traces WHERE NOT kept ORDER BY trace_id LIMIT 1").fetchone()
    assert dropped is not None

    # a new process: no decision cache, no pending state; the thumbs-down arrives now
    tl2 = RunningTracelake(tmp_path, cfg, name="second")
    try:
        body = json.dumps({"trace_id": dropped[0], "name": "user_thumbs", "value": 0, "comment": "wrong refund"})
        req = urllib.request.Request(
            f"http://{tl2.http}/v1/feedback", body.encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 202
        time.sleep(3)  # the worker's tick promotes it from the holdback
    finally:
        assert tl2.stop() == 0, tl2.log
    con = connect(lake)
    promoted = con.execute("SELECT count(*) FROM spans WHERE trace_id = ?", [dropped[0]]).fetchone()
    assert promoted == (dropped[1],)  # the whole trace, every span
    row = con.execute("SELECT kept, keep_reasons, feedback_min FROM traces WHERE trace_id = ?", [dropped[0]]).fetchone()
    assert row is not None and row[0] is True and "thumbs_down" in row[1] and row[2] == 0
    assert con.execute("SELECT comment FROM feedback WHERE trace_id = ?", [dropped[0]]).fetchone() == ("wrong refund",)
    assert _lake_state(lake)[0] == sent.traces  # feedback made no phantom trace
