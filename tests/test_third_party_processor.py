"""A third-party processor, written against processors/README.md only (tests/plugins/tracelake_example), found
through the `tracelake.processors` entry point of its distribution on PYTHONPATH, keeps the API's promises and
runs in a real `tracelake run` chain: it holds and releases spans, drops one trace, promotes it on late feedback,
counts on /metrics, is shut down once and called for nothing after that but its offsets and `forget`."""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from core.processor import ENTRY_POINT_GROUP, ProcessorFactory
from core.registry import FactoryRegistry
from pipeline.query import connect
from pipeline.testing import make_request
from tests.conftest import RunningTracelake
from tests.test_processor_conformance import check_processor, check_stateful

PLUGINS = Path(__file__).parent / "plugins"
KEEP, DROP, LAST = "1" * 32, "2" * 32, "3" * 32


def _example_factory(monkeypatch: pytest.MonkeyPatch) -> ProcessorFactory:
    monkeypatch.syspath_prepend(str(PLUGINS))
    factories = FactoryRegistry(ENTRY_POINT_GROUP, ProcessorFactory).factories()
    assert "example_hold" in factories, sorted(factories)
    return factories["example_hold"]


def test_the_example_keeps_the_api_like_the_built_ins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    factory = _example_factory(monkeypatch)
    check_processor(factory)
    check_stateful(factory)


def _post(url: str, body: bytes, content_type: str) -> int:
    req = urllib.request.Request(url, body, {"Content-Type": content_type})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.status


def _stat(tl: RunningTracelake, stat: str) -> float:
    with urllib.request.urlopen(f"http://{tl.telemetry}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    m = re.search(rf'^tracelake_processor_stat{{processor="example_hold",stat="{re.escape(stat)}"}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else -1.0


def _until(check: Callable[[], bool], what: str, tl: RunningTracelake, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen:\n{tl.log}"
        time.sleep(0.2)


def _spans(trace: str, n: int, **attrs: object) -> bytes:
    spans = [{"trace_id": trace, "span_id": f"{i + 1:016x}", "attrs": attrs} for i in range(n)]
    return make_request(spans).SerializeToString()


def test_a_third_party_processor_runs_in_tracelake_run(tmp_path: Path) -> None:
    record = tmp_path / "hooks.log"
    config = f"""\
receivers:
  otlp: {{grpc: {{endpoint: 127.0.0.1:0}}, http: {{endpoint: 127.0.0.1:0}}}}
processors:
  example_hold: {{hold: 1500ms, record: "{record}"}}
  attributes: {{actions: [{{key: after.hold, action: insert, value: "yes"}}]}}
sinks:
  parquet: {{path: "{{lake}}", roll_seconds: 1s}}
worker: {{processes: 1, trace_idle: 1s, max_batch_delay: 50ms}}
telemetry: {{endpoint: 127.0.0.1:0}}
pipelines:
  traces:
    process: [example_hold, attributes]
    sinks: [parquet]
"""
    env = {"PYTHONPATH": os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")])}
    tl = RunningTracelake(tmp_path, config, env=env)
    try:
        traces = f"http://{tl.http}/v1/traces"
        assert _post(traces, _spans(KEEP, 2), "application/x-protobuf") == 200
        assert _post(traces, _spans(DROP, 1, **{"example.drop": "yes"}), "application/x-protobuf") == 200
        # held for 1.5 s, then released by a tick: the dropped trace goes to the holdback area
        _until(lambda: _stat(tl, "dropped_spans") == 1, "the drop", tl)
        assert _stat(tl, "released_spans") == 3 and _stat(tl, "calls.tick") > 0
        thumbs_down = json.dumps({"trace_id": DROP, "name": "user_thumbs", "value": 0}).encode()
        assert _post(f"http://{tl.http}/v1/feedback", thumbs_down, "application/json") == 202
        _until(lambda: _stat(tl, "promotions") == 1, "the promotion", tl)
        _until(lambda: _stat(tl, "calls.take_promotions") > 0, "promotions taken", tl)
        # accepted just before the stop: the drain processes it, then shutdown() releases it
        assert _post(traces, _spans(LAST, 1), "application/x-protobuf") == 200
    finally:
        assert tl.stop() == 0, tl.log

    con = connect(tl.lake)
    spans = con.execute(
        "SELECT trace_id, count(*), bool_and(attributes['after.hold'] = 'yes') FROM spans GROUP BY 1 ORDER BY 1"
    ).fetchall()
    # KEEP released by a tick, DROP promoted from the holdback, LAST released at shutdown; all of them went
    # through the processor after the holder (attributes) — DROP before it was held back
    assert [(t, n) for t, n, _ in spans] == [(KEEP, 2), (DROP, 1), (LAST, 1)]
    assert all(after for _, _, after in spans)
    reasons = dict(con.execute("SELECT trace_id, keep_reasons FROM traces").fetchall())
    assert reasons[KEEP] == ["example_hold"] and "example_hold" in reasons[DROP]
    assert con.execute("SELECT trace_id, value FROM feedback").fetchall() == [(DROP, 0.0)]

    lines = [line.split(" ", 2) for line in record.read_text().splitlines()]
    pids = {pid for pid, *_ in lines}
    assert len(pids) == 1, "one worker process built it"
    hooks = [hook for _pid, hook, _detail in lines]
    assert hooks[0] == "build" and lines[0][2] == "process"
    assert not [h for h in hooks if h.startswith("AFTER-SHUTDOWN")], hooks[hooks.index("shutdown") :]
    assert hooks.count("shutdown") == 1
    after = hooks[hooks.index("shutdown") + 1 :]
    assert set(after) <= {"low_watermarks", "forget"} and "forget" in after
    assert {"process", "tick", "low_watermarks", "take_promotions"} <= set(hooks[: hooks.index("shutdown")])
    shutdown_detail = next(d for _p, h, d in lines if h == "shutdown")
    assert int(shutdown_detail) == 1, "LAST was still held at shutdown and released by it"
