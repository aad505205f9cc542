"""The lake on S3 against the lake on local disk: write throughput, and a trace lookup's latency and requests.

    .venv/bin/python benchmarks/s3_lake_bench.py [--traces 4000] [--hours 4] [--repeat 3] [--lookups 10]

The S3 server is moto's standalone server on loopback (tests/s3_server.py, the one the tests use), in this
process: it is an in-memory Python server, far slower per request than AWS S3 or MinIO, so the S3 figures
are a floor for the request path, and the request counts are what carries over.

Traffic: `benchmarks.traffic.prompt_heavy_requests` (~1.9 KB per span of prompts, JSON tool arguments),
spread over `--hours` hour partitions, decoded and normalised once (the worker's own functions); then:

1. **write**: the same Arrow batches (8,192 spans) into a `ParquetSink` on a local directory and on
   `s3://bench/lake`, one file per batch and partition (`flush_all` after every batch, as a busy worker's
   roll does): spans/s for each, alternating which goes first, `--repeat` times; the ratio per round.
2. **lookup**: `tracelake trace`'s read, `SELECT … FROM spans WHERE trace_id = ?` on a fresh
   `pipeline.query.connect` connection (it lists the table, opens the files' footers and reads the row
   groups whose statistics may hold the id), for `--lookups` random trace ids; latency p50 / max and the
   HTTP requests the S3 server served per lookup (from its access log, by method). Then the same with the
   trace's hour known (`dt`/`hour` in the WHERE clause, as the UI's trace page has from the `traces` row).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.traffic import prompt_heavy_requests
from core.conventions import Normalizer
from pipeline.otlp.wire import decode_bodies
from pipeline.query import connect
from sinks.parquet.config import ParquetSinkConfig, S3Options
from sinks.parquet.sink import ParquetSink
from tests.s3_server import CREDENTIALS, S3Server, s3_environment

HOUR_NS = 3600 * 10**9
BATCH = 8192


def batches(traces: int, hours: int) -> list[pa.Table]:
    base = (time.time_ns() // HOUR_NS - hours) * HOUR_NS
    normalizer = Normalizer()
    tables = []
    for h in range(hours):
        requests = prompt_heavy_requests(traces // hours, seed=h, base_ns=base + h * HOUR_NS)
        tables.append(normalizer(decode_bodies(requests, [f"bench:{h}@{i}" for i in range(len(requests))])))
    rows = pa.concat_tables(tables).combine_chunks()
    return [rows.slice(i, BATCH) for i in range(0, rows.num_rows, BATCH)]


def write(sink: ParquetSink, parts: list[pa.Table]) -> float:
    t0 = time.perf_counter()
    for i, part in enumerate(parts):
        sink.write("spans", part, "bench/0", (i, i))
        sink.flush_all()
    return sum(p.num_rows for p in parts) / (time.perf_counter() - t0)


def lookups(lake: str, trace_ids: list[str], server: S3Server | None, hour_known: bool) -> tuple[list[float], Counter]:
    seconds: list[float] = []
    requests: Counter = Counter()
    for trace_id in trace_ids:
        before = len(server.requests) if server else 0
        t0 = time.perf_counter()
        con = connect(lake)
        where = "trace_id = $id"
        params: dict[str, object] = {"id": trace_id}
        if hour_known:
            dt, hour = HOURS[trace_id]  # known beforehand, as the trace page knows it from the `traces` row
            where += " AND dt = $dt AND hour = $hour"
            params.update(dt=dt, hour=hour)
        rows = con.execute(f"SELECT span_id, name, attributes FROM spans WHERE {where}", params).fetchall()
        seconds.append(time.perf_counter() - t0)
        con.close()
        assert rows, trace_id
        if server:
            requests.update(m for m, _ in server.requests[before:])
    return seconds, requests


HOURS: dict[str, tuple[object, int]] = {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--traces", type=int, default=4000)
    ap.add_argument("--hours", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--lookups", type=int, default=10)
    args = ap.parse_args()

    parts = batches(args.traces, args.hours)
    spans = sum(p.num_rows for p in parts)
    nbytes = sum(p.nbytes for p in parts)
    print(
        f"traffic: prompt-heavy, {spans:,} spans in {len(parts)} batches, {nbytes / 2**20:.0f} MiB of Arrow, "
        f"{args.hours} hour partitions"
    )
    server = S3Server()
    options = S3Options(
        endpoint_override=server.endpoint,
        access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region=CREDENTIALS["AWS_REGION"],
    )
    try:
        with tempfile.TemporaryDirectory(prefix="s3-bench-") as tmp, s3_environment(server):
            print("\n1. write: spans/s (one file per batch and hour)")
            ratios = []
            for r in range(args.repeat):
                bucket = server.new_bucket()
                local = ParquetSink(ParquetSinkConfig(path=f"{tmp}/lake-{r}"))
                remote = ParquetSink(ParquetSinkConfig(path=f"s3://{bucket}/lake", s3=options))
                order = [("local", local), ("s3", remote)] if r % 2 == 0 else [("s3", remote), ("local", local)]
                before = len(server.requests)
                rates = {name: write(sink, parts) for name, sink in order}
                puts = Counter(m for m, _ in server.requests[before:])
                ratios.append(rates["s3"] / rates["local"])
                print(
                    f"  round {r + 1}: local {rates['local']:,.0f}  s3 {rates['s3']:,.0f}  "
                    f"s3/local {ratios[-1]:.2f}  ({remote.files_written} objects, requests {dict(puts)})"
                )
            print(f"  s3/local: median {statistics.median(ratios):.2f}, spread {min(ratios):.2f}-{max(ratios):.2f}")

            lake_local, lake_s3 = f"{tmp}/lake-0", f"s3://{bucket}/lake"
            con = connect(lake_local)
            rng = random.Random(0)
            ids = [r[0] for r in con.execute("SELECT DISTINCT trace_id FROM spans ORDER BY 1").fetchall()]
            chosen = rng.sample(ids, min(args.lookups, len(ids)))
            for trace_id in chosen:
                HOURS[trace_id] = con.execute(
                    "SELECT dt, hour FROM spans WHERE trace_id = ? LIMIT 1", [trace_id]
                ).fetchone()
            files = con.execute(
                "SELECT count(DISTINCT filename) FROM read_parquet($p, filename=true)",
                {"p": f"{lake_local}/spans/*/*/*.parquet"},
            ).fetchone()[0]
            con.close()
            print(f"\n2. trace lookup on a lake of {spans:,} spans in {files} files ({args.lookups} lookups)")
            for hour_known in (False, True):
                label = "trace_id only" if not hour_known else "trace_id + dt/hour"
                for name, lake, srv in (("local", lake_local, None), ("s3", lake_s3, server)):
                    secs, reqs = lookups(lake, chosen, srv, hour_known)
                    per = {m: round(n / len(chosen), 1) for m, n in reqs.items()}
                    print(
                        f"  {label:20s} {name:5s}: p50 {statistics.median(secs) * 1000:7.1f} ms, "
                        f"max {max(secs) * 1000:7.1f} ms" + (f", requests per lookup {per}" if srv else "")
                    )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
