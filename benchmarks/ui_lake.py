"""A big lake for the UI benchmark, in the layout `tracelake run` + `tracelake compact` leave behind.

    python benchmarks/ui_lake.py DIR [--spans 10000000] [--days 7] [--pool-traces 3000] [--sampled-out 0.1]

The traffic is real demo traffic: `pipeline.demo.build_requests` (the OpenTelemetry SDK's encoder, three
applications in the three attribute conventions, long prompts, chat histories, JSON tool arguments)
goes through a real `Worker` with the `cost` processor into a small pool lake. The pool's spans and trace
summaries are then copied with pyarrow: every copy of a trace gets a new trace id and a start time
spread uniformly over `--days` days ending an hour ago (span ids and everything else are kept, so
every copied trace is a real one). `--sampled-out` of the traces keep only
their `traces` row (kept = false), as tail sampling leaves them, and the copying goes on until `spans`
holds `--spans` rows. 1% of traces get a thumbs up or down 30 s after they started: a `feedback` row
and the late summary part it makes (in its own hour, as the worker writes it).
Rows are written by the real ParquetSink (one file per hour per ~500k spans flushed), then every hour is
compacted by the real Compactor (sorted by trace id, 64k-row groups).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core import schema
from core.conventions import Normalizer
from core.processor import ProcessorContext
from pipeline.bus.embedded import EmbeddedBus
from pipeline.demo import build_requests
from pipeline.maintenance.compact import Compactor
from pipeline.query import connect
from pipeline.trace_summary import TraceSummarizer
from pipeline.worker import Worker
from processors.cost import CostConfig
from processors.cost import factory as cost_factory
from sinks.parquet.config import ParquetSinkConfig
from sinks.parquet.sink import ParquetSink

HOUR_NS = 3600 * 10**9
DAY_NS = 24 * HOUR_NS
FLUSH_SPANS = 500_000


def build_pool(pool_dir: Path, traces: int, seed: int = 0) -> tuple[pa.Table, pa.Table]:
    """(spans, traces) of `traces` demo traces as the real worker with the cost processor writes them."""
    requests = build_requests(traces, seed)
    bus = EmbeddedBus(1, capacity_spans=10**9, capacity_bytes=2**40)
    source = bus.reader(0)
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    for body in requests:
        req = ExportTraceServiceRequest.FromString(body)
        n = sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
        bus.publish(req, body, n)
    bus.close()
    normalizer = Normalizer()
    cost = cost_factory.create(CostConfig(), ProcessorContext(processor_id="cost", normalizer=normalizer))
    sink = ParquetSink(ParquetSinkConfig(path=str(pool_dir)))
    worker = Worker(source, [("cost", cost)], [sink], normalizer, TraceSummarizer(5.0))
    worker.run()
    if worker.error is not None:
        raise RuntimeError(f"pool worker failed: {worker.error}")
    con = connect(pool_dir)
    spans = con.sql("SELECT * EXCLUDE (dt, hour) FROM spans ORDER BY trace_id, start_time").to_arrow_table()
    summaries = con.sql(
        "SELECT * EXCLUDE (dt, hour) FROM read_parquet($g)", params={"g": str(pool_dir / "traces/*/*/*.parquet")}
    )
    return schema.conform(spans, schema.SPANS), schema.conform(summaries.to_arrow_table(), schema.TRACES)


def _hex_ids(rng: np.random.Generator, n: int) -> pa.Array:
    raw = rng.integers(0, 2**63, size=(n, 2), dtype=np.int64).astype(np.uint64)
    return pa.array([f"{a:016x}{b:016x}" for a, b in raw], pa.string())


def _shift(col: pa.ChunkedArray | pa.Array, delta_ns: pa.Array) -> pa.Array:
    ns = pc.cast(pc.cast(col, pa.timestamp("ns")), pa.int64())
    return pc.cast(pc.cast(pc.add(ns, delta_ns), pa.timestamp("ns")), schema.TS)


def _at(ns: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(ns, pa.int64()).cast(pa.timestamp("ns")), schema.TS)


def generate(lake: Path, n_spans: int, days: float, pool_traces: int, sampled_out: float, seed: int = 0) -> dict:
    """Copies of the pool until `spans` holds at least `n_spans` rows; returns what was written."""
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="tracelake-ui-pool-") as pool_dir:
        pool_spans, pool_parts = build_pool(Path(pool_dir), pool_traces, seed)
    pool_ids = pc.unique(pool_parts.column("trace_id"))
    n_pool = len(pool_ids)
    span_trace = pc.index_in(pool_spans.column("trace_id"), pool_ids)
    part_trace = pc.index_in(pool_parts.column("trace_id"), pool_ids)
    # each pool trace's start, so that a copy can be moved to its new start
    own_start = np.full(n_pool, np.iinfo(np.int64).max, np.int64)
    starts = pc.cast(pool_parts.column("start_time").cast(pa.timestamp("ns")), pa.int64()).to_numpy()
    np.minimum.at(own_start, part_trace.to_numpy(), starts)
    end = (time.time_ns() // HOUR_NS - 1) * HOUR_NS
    begin = end - int(days * DAY_NS)
    sink = ParquetSink(ParquetSinkConfig(path=str(lake), roll_rows=10**9, roll_bytes=2**40))
    written = pending = traces = kept_traces = feedback = copy = 0
    while written < n_spans:
        new_ids = _hex_ids(rng, n_pool)
        new_start = rng.integers(begin, end - 10 * 60 * 10**9, size=n_pool)
        delta = pa.array(new_start - own_start, pa.int64())
        kept = pa.array(rng.random(n_pool) >= sampled_out)
        spans = pool_spans.set_column(0, "trace_id", new_ids.take(span_trace))
        for name in ("start_time", "end_time"):
            i = spans.schema.get_field_index(name)
            spans = spans.set_column(i, name, _shift(spans.column(name), delta.take(span_trace)))
        spans = spans.filter(kept.take(span_trace))
        parts = pool_parts.set_column(0, "trace_id", new_ids.take(part_trace))
        parts = parts.set_column(1, "part_id", pc.binary_join_element_wise(parts.column("part_id"), f"-{copy}", ""))
        for name in ("start_time", "end_time"):
            i = parts.schema.get_field_index(name)
            parts = parts.set_column(i, name, _shift(parts.column(name), delta.take(part_trace)))
        part_kept = kept.take(part_trace)
        parts = parts.set_column(parts.schema.get_field_index("kept"), "kept", part_kept)
        reasons = pc.if_else(part_kept, parts.column("keep_reasons"), pa.scalar([], pa.list_(pa.string())))
        parts = parts.set_column(parts.schema.get_field_index("keep_reasons"), "keep_reasons", reasons)
        # 1% of the traces get a thumbs up or down half a minute after they started: a feedback event, and
        # the late part of the trace's summary that it makes (in the hour of the feedback, as the worker does)
        rated = rng.choice(n_pool, size=max(1, n_pool // 100), replace=False)
        values = rng.integers(0, 2, rated.size).astype(float)
        at = _at(new_start[rated] + 30 * 10**9)
        ids = new_ids.take(pa.array(rated))
        events = pa.table(
            {
                "time": at,
                "trace_id": ids,
                "name": pa.array(["user_thumbs"] * rated.size),
                "value": pa.array(values),
                "comment": pa.array(["wrong answer" if v == 0 else None for v in values], pa.string()),
                "source": pa.array(["api"] * rated.size),
                "lake_source": pa.array([f"bench@{copy}"] * rated.size),
            }
        )
        late = pa.table(
            {
                "trace_id": ids,
                "part_id": pa.array([f"feedback-{copy}-{i}" for i in range(rated.size)]),
                "start_time": at,
                "span_count": pa.array(np.zeros(rated.size, np.int64)),
                "feedback_min": pa.array(values),
                "kept": kept.take(pa.array(rated)),
                "lake_source": pa.array([f"bench@{copy}"] * rated.size),
            }
        )
        sink.write("spans", spans)
        sink.write("traces", parts)
        sink.write("traces", schema.conform(late, schema.TRACES))
        sink.write("feedback", schema.conform(events, schema.FEEDBACK))
        written += spans.num_rows
        pending += spans.num_rows
        traces += n_pool
        kept_traces += pc.sum(kept).as_py()
        feedback += rated.size
        copy += 1
        if pending >= FLUSH_SPANS:
            sink.flush_all()
            pending = 0
            print(f"  {written:,} spans written", flush=True)
    sink.flush_all()
    return {"spans": written, "traces": traces, "kept": kept_traces, "feedback": feedback, "days": days}


def compact(lake: Path) -> float:
    t0 = time.perf_counter()
    report = Compactor(lake).run(0.0)
    if report.errors:
        raise RuntimeError(f"compaction failed: {report.errors[0].error}")
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("lake", type=Path)
    ap.add_argument("--spans", type=int, default=10_000_000)
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--pool-traces", type=int, default=3000)
    ap.add_argument("--sampled-out", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    shutil.rmtree(args.lake, ignore_errors=True)
    t0 = time.perf_counter()
    info = generate(args.lake, args.spans, args.days, args.pool_traces, args.sampled_out, args.seed)
    print(f"generated {info} in {time.perf_counter() - t0:.0f}s")
    print(f"compacted in {compact(args.lake):.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
