"""`tracelake run` with several worker processes: traces stay whole, a killed worker loses nothing."""

from __future__ import annotations

import os
import signal
import textwrap
import threading
import time
from pathlib import Path

import grpc
import pyarrow.parquet as pq

from pipeline.query import connect
from tests.conftest import RunningTracelake, config_yaml, make_request

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _request(batch: int, traces: int = 20, spans: int = 3) -> bytes:
    rows = []
    for t in range(traces):
        trace_id = f"{batch:016x}{t:016x}"
        for s in range(spans):
            rows.append(
                {
                    "trace_id": trace_id,
                    "span_id": f"{batch:08x}{t:04x}{s:04x}",
                    "parent": f"{batch:08x}{t:04x}{0:04x}" if s else None,
                    "name": f"op-{s}",
                    "attrs": {"batch": batch},
                }
            )
    return make_request(rows).SerializeToString()


def _send_all(address: str, batches: range, sent: list[int]) -> None:
    with grpc.insecure_channel(address) as ch:
        export = ch.unary_unary(EXPORT)
        for b in batches:
            for _attempt in range(50):
                try:
                    export(_request(b), timeout=10)
                    sent.append(b)
                    break
                except grpc.RpcError as e:  # bus full while a worker restarts: retry like an SDK
                    assert e.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE), e
                    time.sleep(0.2)
            time.sleep(0.01)


def test_traces_stay_whole_across_worker_processes(tmp_path: Path) -> None:
    """Two processes each own a share of trace ids: every trace is summarised once, from all its spans."""
    tl = RunningTracelake(
        tmp_path, config_yaml(extra="bus: {capacity_spans: 100000}\n").replace("worker: {", "worker: {processes: 2, ")
    )
    try:
        assert "workers=2" in tl.log
        sent: list[int] = []
        _send_all(tl.grpc, range(1, 11), sent)
    finally:
        assert tl.stop() == 0, tl.log
    con = connect(tl.lake)
    assert con.execute("SELECT count(*), count(DISTINCT trace_id) FROM spans").fetchone() == (600, 200)
    rows = con.execute("SELECT count(*), min(span_count), max(span_count), max(parts) FROM traces").fetchone()
    assert rows == (200, 3, 3, 1), rows
    # both processes wrote: their partitions name the files
    names = {p.name.split("-")[2] for p in (tl.lake / "spans").rglob("*.parquet")}
    assert names == {"0", "1"}, names


def send_and_kill_worker_1(tl: RunningTracelake, batches: int, kill_after: int) -> dict[int, int]:
    """Send `batches` exports (3 spans × 20 traces each) while worker process 1 is SIGKILLed after `kill_after`
    of them were acknowledged; every export ends acknowledged. Returns the worker pids before the kill."""
    first = tl.worker_pids()
    assert set(first) == {0, 1}, tl.log
    sent: list[int] = []
    sender = threading.Thread(target=_send_all, args=(tl.grpc, range(1, batches + 1), sent))
    sender.start()
    while len(sent) < kill_after:
        time.sleep(0.05)
    os.kill(first[1], signal.SIGKILL)
    sender.join(120)
    assert len(sent) == batches
    return first


def test_a_killed_worker_process_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    tl = RunningTracelake(tmp_path, config_yaml().replace("worker: {", "worker: {processes: 2, "))
    try:
        first = send_and_kill_worker_1(tl, 60, 20)
        deadline = time.time() + 30
        while tl.worker_pids().get(1) == first[1] and time.time() < deadline:
            time.sleep(0.1)
        assert tl.worker_pids()[1] != first[1], "the dead worker process was not replaced:\n" + tl.log
        assert "died" in tl.log
    finally:
        assert tl.stop() == 0, tl.log
    con = connect(tl.lake)
    # every span of every acknowledged export, once
    assert con.execute("SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM spans").fetchone() == (3600, 3600)
    assert con.execute("SELECT count(*) FROM traces").fetchone() == (1200,)
    for path in tl.lake.rglob("*.parquet"):  # every file whole
        pq.read_table(path)


def test_a_program_that_never_stops_its_service_still_exits(tmp_path: Path) -> None:
    """Worker processes ignore SIGTERM (their parent decides when they stop), so an embedding program (or a
    test) that starts a Service and never stops it must not hang at exit waiting for them."""
    import subprocess
    import sys

    script = textwrap.dedent(
        f"""
        from pipeline.config import parse
        from pipeline.service import Service
        doc = {{"receivers": {{"otlp": {{"grpc": {{"endpoint": "127.0.0.1:0"}}}}}},
               "sinks": {{"parquet": {{"path": {str(tmp_path / "lake")!r}}}}},
               "worker": {{"processes": 2}}, "telemetry": {{"endpoint": None}}}}
        svc = Service(parse(doc, "embedded.yaml"))
        svc.start()
        print(*svc.workers.pids(), flush=True)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    pids = [int(p) for p in out.stdout.split()]
    assert len(pids) == 2
    time.sleep(0.5)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
