"""Compaction: files, bytes and query latency over one busy hour of spans, before and after.

    python benchmarks/compact_bench.py [--spans 2000000] [--kafka-partitions 4] [--row-groups 65536]
                                       [--replays 0.01] [--lookups 7] [--threads 2] [--keep DIR]

The hour is laid out as `tracelake run` / workers write it: ParquetSink rolls one file per minute
per Kafka partition (`--roll-minutes`, `--kafka-partitions`), each sorted by trace id with 128k-row
groups, and a fraction of the files (`--replays`) is written a second time under another offset
range, as a replay after a crash does. Spans: `--spans-per-trace` per trace (agent, chat calls,
tools), 4 attributes each including ~120 B of prompt-like text, traces spread over the hour.

Measured, each query on a fresh connection (as one `tracelake query` process would: the first row
is that fixed cost, included in every other row), median of `--lookups` runs with different trace
ids / windows:
- lookup:  SELECT * FROM spans WHERE trace_id = …   (the view, and raw read_parquet over the glob)
- window:  5 minutes of spans by start_time, count and token sum (view and raw)
- scan:    p95 latency by model over the whole hour (view)
then `Compactor.run` once per `--row-groups` value (a comma list compares row-group sizes; each
variant compacts a fresh copy) and the same queries again.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow as pa

from core import schema
from pipeline.maintenance.compact import Compactor
from pipeline.query import connect
from sinks.parquet.config import ParquetSinkConfig
from sinks.parquet.sink import ParquetSink

HOUR_NS = 3600 * 10**9
MODELS = ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4", "gemini-2.0-flash"]
STEPS = [("agent", "agent", None), ("chat", "llm", "chat"), ("search", "tool", "execute_tool")]
WORDS = ["the", "of", "refund", "policy", "order", "shipping", "account", "invoice", "reset", "password", "late"]


def generate(lake: Path, n_spans: int, per_trace: int, partitions: int, roll_minutes: int, replays: float) -> float:
    """Write the hour; returns its start (unix ns). One ParquetSink flush per (roll window, partition)."""
    rnd = random.Random(7)
    hour0 = (time.time_ns() // HOUR_NS - 3) * HOUR_NS
    n_traces = n_spans // per_trace
    trace_ids = [f"{rnd.getrandbits(128):032x}" for _ in range(n_traces)]
    trace_start = sorted(hour0 + rnd.randrange(HOUR_NS - 60 * 10**9) for _ in range(n_traces))
    rnd.shuffle(trace_ids)  # start order is not id order
    sink = ParquetSink(ParquetSinkConfig(path=str(lake), roll_rows=10**9, roll_bytes=2**40))
    window = roll_minutes * 60 * 10**9
    # traces grouped into files: (roll window of their start, kafka partition of their id)
    files: dict[tuple[int, int], list[int]] = {}
    for t in range(n_traces):
        files.setdefault(((trace_start[t] - hour0) // window, int(trace_ids[t][:8], 16) % partitions), []).append(t)
    offset = 0
    for (w, p), traces in sorted(files.items()):
        rows = _rows(traces, trace_ids, trace_start, per_trace, rnd)
        n = rows.num_rows
        source = f"kafka:otlp_spans/{p}"
        sink.write(
            "spans", _with_source(rows, f"{source}@{offset}"), source=f"otlp_spans/{p}", offsets=(offset, offset + n)
        )
        sink.flush_all()
        if rnd.random() < replays:  # the same spans again from a replay: another file name
            sink.write(
                "spans",
                _with_source(rows, f"{source}@r{offset}"),
                source=f"otlp_spans/{p}",
                offsets=(offset + 10**9, offset + 10**9 + n),
            )
            sink.flush_all()
        offset += n
        _ = w
    return hour0


def _with_source(rows: pa.Table, source: str) -> pa.Table:
    return rows.set_column(
        rows.schema.get_field_index("lake_source"), "lake_source", pa.array([source] * rows.num_rows)
    )


def _rows(traces: list[int], ids: list[str], starts: list[int], per_trace: int, rnd: random.Random) -> pa.Table:
    n = len(traces) * per_trace
    cols: dict[str, list[object]] = {
        k: []
        for k in (
            "trace_id",
            "span_id",
            "parent_span_id",
            "name",
            "span_type",
            "start_time",
            "end_time",
            "duration_ms",
            "request_model",
            "input_tokens",
            "output_tokens",
            "status_code",
        )
    }
    keys: list[str] = []
    values: list[str] = []
    for t in traces:
        model = MODELS[t % len(MODELS)]
        root = f"{rnd.getrandbits(64):016x}"
        t0 = starts[t]
        for j in range(per_trace):
            name, span_type, op = STEPS[0] if j == 0 else STEPS[1 + j % 2]
            sid = root if j == 0 else f"{rnd.getrandbits(64):016x}"
            start = t0 + j * 50_000_000
            dur = rnd.randint(5, 3000) * 10**6
            cols["trace_id"].append(ids[t])
            cols["span_id"].append(sid)
            cols["parent_span_id"].append(None if j == 0 else root)
            cols["name"].append(name)
            cols["span_type"].append(span_type)
            cols["start_time"].append(start)
            cols["end_time"].append(start + dur)
            cols["duration_ms"].append(dur / 1e6)
            cols["request_model"].append(model if span_type == "llm" else None)
            cols["input_tokens"].append(rnd.randint(100, 8000) if span_type == "llm" else None)
            cols["output_tokens"].append(rnd.randint(10, 800) if span_type == "llm" else None)
            cols["status_code"].append("ERROR" if rnd.random() < 0.01 else "UNSET")
            keys += ["gen_ai.operation.name", "gen_ai.request.model", "session.id", "gen_ai.prompt"]
            values += [op or "invoke_agent", model, f"s-{t % 5000}", " ".join(rnd.choices(WORDS, k=20))]
    offsets = pa.array(range(0, 4 * n + 1, 4), pa.int32())
    attrs = pa.MapArray.from_arrays(offsets, pa.array(keys, pa.string()), pa.array(values, pa.string()))
    table = pa.table(
        {
            **{k: pa.array(v, schema.SPANS.field(k).type) for k, v in cols.items()},
            "attributes": attrs,
            "service_name": pa.array(["support-bot"] * n),
            "kind": pa.array(["INTERNAL"] * n),
            "lake_source": pa.array([""] * n),
        }
    )
    return schema.conform(table, schema.SPANS)


# -- measuring -------------------------------------------------------------------------------------
def _median_ms(fn: Callable[[int], object], runs: int) -> float:
    times = []
    for i in range(runs):
        t0 = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def measure(lake: Path, hour0: int, probe_ids: list[str], runs: int, threads: int) -> dict[str, float]:
    glob = str(lake / "spans" / "*" / "*" / "*.parquet")
    files = list((lake / "spans").rglob("*.parquet"))

    def con() -> duckdb.DuckDBPyConnection:
        c = connect(lake)
        c.execute(f"SET threads = {threads}")
        return c

    def raw(_c: duckdb.DuckDBPyConnection) -> str:
        return f"read_parquet('{glob}', hive_partitioning=true, hive_types={{'dt': DATE, 'hour': INTEGER}})"

    def lookup_view(i: int) -> None:
        rows = con().sql("SELECT * FROM spans WHERE trace_id = $t", params={"t": probe_ids[i]}).to_arrow_table()
        assert rows.num_rows > 0

    def lookup_raw(i: int) -> None:
        c = con()
        rows = c.sql(f"SELECT * FROM {raw(c)} WHERE trace_id = $t", params={"t": probe_ids[i]}).to_arrow_table()
        assert rows.num_rows > 0

    def window(i: int) -> tuple[int, int]:
        lo = hour0 + (i * 7 % 11) * 5 * 60 * 10**9
        return lo, lo + 5 * 60 * 10**9

    def window_view(i: int) -> None:
        lo, hi = window(i)
        con().sql(
            "SELECT count(*), sum(input_tokens) FROM spans WHERE start_time >= make_timestamp_ns($lo)::TIMESTAMPTZ_NS"
            " AND start_time < make_timestamp_ns($hi)::TIMESTAMPTZ_NS",
            params={"lo": lo, "hi": hi},
        ).fetchall()

    def window_raw(i: int) -> None:
        lo, hi = window(i)
        c = con()
        c.sql(
            f"SELECT count(*), sum(input_tokens) FROM {raw(c)}"
            " WHERE start_time >= make_timestamp_ns($lo)::TIMESTAMPTZ_NS"
            " AND start_time < make_timestamp_ns($hi)::TIMESTAMPTZ_NS",
            params={"lo": lo, "hi": hi},
        ).fetchall()

    def scan_view(_i: int) -> None:
        con().sql("SELECT request_model, count(*), quantile_cont(duration_ms, 0.95) FROM spans GROUP BY 1").fetchall()

    return {
        "files": len(files),
        "MB": sum(f.stat().st_size for f in files) / 2**20,
        "raw rows": con().sql(f"SELECT count(*) FROM read_parquet('{glob}')").fetchall()[0][0],
        "connect (fixed cost) ms": _median_ms(lambda _i: con(), runs),
        "lookup view ms": _median_ms(lookup_view, runs),
        "lookup raw ms": _median_ms(lookup_raw, runs),
        "5-min window view ms": _median_ms(window_view, runs),
        "5-min window raw ms": _median_ms(window_raw, runs),
        "scan p95 by model (view) ms": _median_ms(scan_view, max(3, runs // 2)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spans", type=int, default=2_000_000)
    ap.add_argument("--spans-per-trace", type=int, default=10)
    ap.add_argument("--kafka-partitions", type=int, default=4)
    ap.add_argument("--roll-minutes", type=int, default=1)
    ap.add_argument("--replays", type=float, default=0.01, help="fraction of files written twice")
    ap.add_argument("--row-groups", default="65536", help="comma list of row-group sizes to compare")
    ap.add_argument("--target-mb", type=int, default=128)
    ap.add_argument("--lookups", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep", default=None, help="build the lake here and keep it")
    args = ap.parse_args()

    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="compact-bench-"))
    src = base / "lake"
    try:
        t0 = time.perf_counter()
        hour0 = generate(src, args.spans, args.spans_per_trace, args.kafka_partitions, args.roll_minutes, args.replays)
        print(f"generated {args.spans:,} spans in {time.perf_counter() - t0:.1f}s under {src}")
        sample = f"SELECT trace_id FROM read_parquet('{src}/spans/*/*/*.parquet') USING SAMPLE {args.lookups} ROWS"
        probe_ids = [r[0] for r in duckdb.sql(sample).fetchall()]
        results = {"before": measure(src, hour0, probe_ids, args.lookups, args.threads)}
        sizes = [int(s) for s in args.row_groups.split(",")]
        for rg in sizes:
            lake = src if len(sizes) == 1 else base / f"lake-rg{rg}"
            if lake != src:
                shutil.copytree(src, lake)
            t0 = time.perf_counter()
            report = Compactor(
                lake, row_group_rows=rg, target_file_bytes=args.target_mb * 2**20, threads=args.threads
            ).run(0)
            took = time.perf_counter() - t0
            r = report.compacted[0]
            print(
                f"compacted row groups {rg:,}: {r.inputs} files -> {len(r.outputs)} in {took:.1f}s "
                f"({r.rows_out / took:,.0f} spans/s), {r.duplicates_removed:,} duplicates removed"
            )
            results[f"after (rg {rg // 1024}k)"] = measure(lake, hour0, probe_ids, args.lookups, args.threads)
        metrics = list(results["before"])
        print(f"\n{'':30}" + "".join(f"{k:>16}" for k in results))
        for m in metrics:
            print(f"{m:30}" + "".join(f"{results[k][m]:>16,.1f}" for k in results))
        print(
            f"\n{args.spans:,} spans, {args.spans // args.spans_per_trace:,} traces, threads={args.threads}, "
            f"cpu={os.cpu_count()}"
        )
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
