"""A big lake for the UI benchmark, in the layout `tracelake run` + `tracelake compact` leave behind.

    python benchmarks/ui_lake.py DIR [--spans 10000000] [--days 7] [--pool-traces 3000] [--sampled-out 0.1]

The traffic is real demo traffic: `pipeline.demo.build_requests` (the OpenTelemetry SDK's encoder, three
applications in the three attribute conventions, long prompts, chat histories, JSON tool arguments)
goes through a real `Worker` with the `cost` processor into a small pool lake. The pool's spans and trace
summaries are then copied with pyarrow until the lake holds `--spans` spans: every copy of a trace gets
a new trace id and a start time spread uniformly over `--days` days ending an hour ago (span ids and
everything else are kept, so every copied trace is a real one). `--sampled-out` of the traces keep only
their `traces` row (kept = false), as tail sampling leaves them; 1% of traces get a feedback event.
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

from pipeline import schema
from pipeline.bus.embedded import EmbeddedBus
from pipeline.config.model import ParquetSinkConfig
from pipeline.conventions import Normalizer
from pipeline.demo import build_requests
from pipeline.maintenance.compact import Compactor
from pipeline.query import connect
from pipeline.trace_summary import TraceSummarizer
from pipeline.worker import Worker
from processors.base import ProcessorContext
from processors.cost import CostConfig
from processors.cost import factory as cost_factory
from sinks.parquet.sink import ParquetSink

HOUR_NS = 3600 * 10**9
DAY_NS = 24 * HOUR_NS
FLUSH_SPANS = 500_000


def build_pool(pool_dir: Path, traces: int, seed: int = 0) -> tuple[pa.Table, pa.Table]:
    """(spans, traces) of `traces` demo traces as the real worker with the cost processor writes them."""
    requests = build_requests(traces, seed)
    bus = EmbeddedBus(capacity_spans=10**9)
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    for body in requests:
        req = ExportTraceServiceRequest.FromString(body)
        n = sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
        bus.publish(req, body, n)
    bus.close()
    normalizer = Normalizer()
    cost = cost_factory.create(CostConfig(), ProcessorContext(processor_id="cost", normalizer=normalizer))
    sink = ParquetSink(ParquetSinkConfig(path=str(pool_dir)))
    worker = Worker(bus, [("cost", cost)], [sink], normalizer, TraceSummarizer(5.0))
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


def generate(lake: Path, n_spans: int, days: float, pool_traces: int, sampled_out: float, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="tracelake-ui-pool-") as pool_dir:
        pool_spans, pool_traces_t = build_pool(Path(pool_dir), pool_traces, seed)
    pool_ids = pc.unique(pool_traces_t.column("trace_id"))
    n_pool = len(pool_ids)
    span_trace = pc.index_in(pool_spans.column("trace_id"), pool_ids)
    summary_trace = pc.index_in(pool_traces_t.column("trace_id"), pool_ids)
    # each pool trace's own start, so a copy can be moved to its new start
    pool_start = pc.cast(
        pc.cast(pc.min_max(pool_traces_t.column("start_time"))["min"].cast(pa.timestamp("ns")), pa.int64()), pa.int64()
    ).as_py()
    trace_start = pc.cast(pc.cast(pool_traces_t.column("start_time"), pa.timestamp("ns")), pa.int64())
    first_start = {}
    for tid, st in zip(summary_trace.to_pylist(), trace_start.to_pylist(), strict=True):
        first_start[tid] = min(st, first_start.get(tid, st))
    own_start = np.array([first_start.get(i, pool_start) for i in range(n_pool)], dtype=np.int64)
    end = (time.time_ns() // HOUR_NS - 1) * HOUR_NS
    begin = end - int(days * DAY_NS)
    copies = -(-n_spans // pool_spans.num_rows)
    sink = ParquetSink(ParquetSinkConfig(path=str(lake), roll_rows=10**9, roll_bytes=2**40))
    written = pending = traces_total = kept_total = feedback_total = 0
    for c in range(copies):
        take = min(pool_spans.num_rows, n_spans - written)
        new_ids = _hex_ids(rng, n_pool)
        new_start = rng.integers(begin, end - 10 * 60 * 10**9, size=n_pool)
        delta = pa.array(new_start - own_start, pa.int64())
        kept = rng.random(n_pool) >= sampled_out
        spans = pool_spans.slice(0, take)
        idx = span_trace.slice(0, take)
        spans = spans.set_column(0, "trace_id", new_ids.take(idx))
        d = delta.take(idx)
        for name in ("start_time", "end_time"):
            spans = spans.set_column(spans.schema.get_field_index(name), name, _shift(spans.column(name), d))
        spans = spans.filter(pa.array(kept).take(idx))
        traced = set(pc.unique(idx).to_pylist())
        mask = pa.array([i in traced for i in range(n_pool)])
        summaries = pool_traces_t.filter(pc.is_in(summary_trace, pa.array(sorted(traced), pa.int32())))
        sidx = pc.index_in(summaries.column("trace_id"), pool_ids)
        summaries = summaries.set_column(0, "trace_id", new_ids.take(sidx))
        summaries = summaries.set_column(
            1, "part_id", pc.binary_join_element_wise(summaries.column("part_id"), f"-{c}", "")
        )
        sd = delta.take(sidx)
        for name in ("start_time", "end_time"):
            i = summaries.schema.get_field_index(name)
            summaries = summaries.set_column(i, name, _shift(summaries.column(name), sd))
        s_kept = pa.array(kept).take(sidx)
        summaries = summaries.set_column(summaries.schema.get_field_index("kept"), "kept", s_kept)
        reasons = pc.if_else(s_kept, summaries.column("keep_reasons"), pa.scalar([], pa.list_(pa.string())))
        summaries = summaries.set_column(summaries.schema.get_field_index("keep_reasons"), "keep_reasons", reasons)
        n_fb = max(1, len(traced) // 100)
        fb_traces = rng.choice(sorted(traced), size=n_fb, replace=False)
        fb_time = pa.array(new_start[fb_traces] + 30 * 10**9, pa.int64())
        feedback = pa.table(
            {
                "time": pc.cast(pc.cast(fb_time, pa.timestamp("ns")), schema.TS),
                "trace_id": new_ids.take(pa.array(fb_traces)),
                "span_id": pa.nulls(n_fb, pa.string()),
                "name": pa.array(["user_thumbs"] * n_fb),
                "value": pa.array(rng.integers(0, 2, n_fb).astype(float)),
                "comment": pa.array(["wrong answer" if i % 2 else None for i in range(n_fb)], pa.string()),
                "source": pa.array(["api"] * n_fb),
                "lake_source": pa.array([f"bench@{c}"] * n_fb),
            }
        )
        sink.write("spans", spans)
        sink.write("traces", summaries)
        sink.write("feedback", schema.conform(feedback, schema.FEEDBACK))
        written += take
        pending += take
        traces_total += len(traced)
        kept_total += int(np.count_nonzero(kept & np.array(mask)))
        feedback_total += n_fb
        if pending >= FLUSH_SPANS:
            sink.flush_all()
            pending = 0
            print(f"  {written:,} spans written", flush=True)
    sink.flush_all()
    return {
        "spans": written,
        "traces": traces_total,
        "kept": kept_total,
        "feedback": feedback_total,
        "begin_ns": begin,
        "end_ns": end,
    }


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
