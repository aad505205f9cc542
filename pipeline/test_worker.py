"""The worker's own promises, in one process on the embedded bus with the real sinks and processors."""

from __future__ import annotations

import threading
from pathlib import Path

import duckdb

from pipeline.build import build_worker, build_worker_chain
from pipeline.bus.embedded import EmbeddedBus
from pipeline.config import load
from pipeline.testing import make_request
from sinks.parquet.layout import table_files

# Tail sampling that keeps nothing (no span is an error): every span goes to the holdback area.
CONFIG = """
receivers: {otlp: {grpc: {endpoint: "127.0.0.1:0"}}}
processors:
  tail_sampling:
    decision_wait: 1ms
    early_release: false
    late_feedback_window: 1h
    policies: [{name: errors, type: status_code, status_code: {status_codes: [ERROR]}}]
sinks: {parquet: {path: "%s"}}
pipelines: {traces: {process: [tail_sampling], sinks: [parquet]}}
"""


def _publish(bus: EmbeddedBus, first: int, traces: int) -> None:
    spans = [{"trace_id": f"{t:032x}", "span_id": f"{t:016x}"} for t in range(first, first + traces)]
    bus.publish(make_request(spans), None, len(spans))


def test_after_a_reload_dropped_spans_reach_the_new_sinks_holdback(tmp_path: Path) -> None:
    """A reload swaps the sinks: the holdback writes what the sampler drops to the new ones, which the worker
    flushes and whose low watermarks hold back the commit (it kept writing to the replaced sinks, which
    nothing flushed again: the spans were lost and their offsets committed)."""
    lake = tmp_path / "lake"
    (tmp_path / "tracelake.yaml").write_text(CONFIG % lake)
    config = load(tmp_path / "tracelake.yaml")
    bus = EmbeddedBus(1, 10**6, 2**30)
    worker = build_worker(config, bus.reader(0))
    _publish(bus, 1, 10)
    while worker.step():
        pass
    swapped = worker.request_swap(build_worker_chain(config))
    worker.step()  # the swap happens at this batch boundary
    assert swapped.result(timeout=0) is None
    _publish(bus, 101, 10)
    bus.close()
    worker.run()
    assert worker.error is None
    held = [str(p) for p in table_files(lake, "holdback")]
    ids = duckdb.sql(f"SELECT DISTINCT trace_id FROM read_parquet({held!r}) ORDER BY 1").fetchall()
    assert [int(t, 16) for (t,) in ids] == [*range(1, 11), *range(101, 111)]
    assert not table_files(lake, "spans"), "the sampler kept nothing"


def test_a_batch_waits_max_batch_delay_for_more_messages(tmp_path: Path) -> None:
    """A bus hands over what is waiting at once; the worker then waits up to `max_batch_delay` for a fuller
    batch (per-batch costs make batches of one small request twice as expensive per span)."""
    (tmp_path / "tracelake.yaml").write_text(
        CONFIG.replace("pipelines:", "worker: {max_batch_delay: 2s}\npipelines:") % (tmp_path / "lake")
    )
    config = load(tmp_path / "tracelake.yaml")
    bus = EmbeddedBus(1, 10**6, 2**30)
    worker = build_worker(config, bus.reader(0))
    _publish(bus, 1, 10)
    later = threading.Timer(0.3, _publish, (bus, 101, 10))
    later.start()
    try:
        assert worker.step() == 2, "the message published 0.3 s later belongs to the same batch"
        assert worker.stats.batches == 1
    finally:
        later.join()
        bus.close()
        worker.run()
    assert worker.error is None
