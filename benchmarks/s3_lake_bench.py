"""The lake on S3 against the lake on local disk: write throughput, and a trace lookup's latency and requests.

    .venv/bin/python benchmarks/s3_lake_bench.py [--traces 4000] [--hours 4] [--lookups 10] [--compact]

The S3 server is moto's standalone server on loopback (tests/s3_server.py, the one the tests use), in this
process: it is an in-memory Python server, far slower per request than AWS S3 or MinIO, so the S3 figures
are a floor for the request path, and the request counts are what carries over.

Traffic: `benchmarks.traffic.prompt_heavy_requests` (~1.9 KB per span of prompts, JSON tool arguments),
spread over `--hours` hour partitions, decoded and normalised (the worker's own functions) one hour at a time, so
that a lake of millions of spans never sits in memory at once; then:

1. **write**: each Arrow batch (8,192 spans) into a `ParquetSink` on a local directory and one on
   `s3://bench/lake`, one file per batch and partition (`flush_all` after every batch, as a busy worker's
   roll does), alternating which goes first batch by batch: spans/s for each and their ratio per hour of traffic
   (the spread across hours is the run's noise).
2. **lookup**: `tracelake trace`'s read, `SELECT … FROM spans WHERE trace_id = ?` on a fresh
   `pipeline.query.connect` connection (it lists the table, opens the files' footers and reads the row
   groups whose statistics may hold the id), for `--lookups` random trace ids; latency p50 / max and the
   HTTP requests the S3 server served per lookup (from its access log, by method). Then the same with the
   trace's hour known (`dt`/`hour` in the WHERE clause, as the UI's trace page has from the `traces` row).
   Then the UI's trace page (`pipeline.ui.trace_detail.load_trace`) for the same ids on one `LakeReader`, as a
   running `tracelake ui` serves them (no `traces` table here, so it reads every hour's spans footers, as the
   query does; the first page opens each object, later ones reuse their sizes and footers).
3. with `--compact`: `tracelake compact`'s compaction of both lakes (every hour is closed), then 2.'s lookups
   again on the compacted lakes.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.traffic import prompt_heavy_requests
from core.conventions import Normalizer
from pipeline.maintenance.compact import Compactor
from pipeline.otlp.wire import decode_bodies
from pipeline.query import connect
from pipeline.ui.lake import LakeReader
from pipeline.ui.trace_detail import load_trace
from sinks.parquet.config import ParquetSinkConfig, S3Options
from sinks.parquet.layout import lake_files, open_lake
from sinks.parquet.sink import ParquetSink
from tests.s3_server import CREDENTIALS, S3Server, s3_environment

HOUR_NS = 3600 * 10**9
BATCH = 8192


def hour_batches(traces: int, hours: int) -> Iterator[list[pa.Table]]:
    """The traffic of each hour in turn, as the sink's batches (one hour in memory at a time)."""
    base = (time.time_ns() // HOUR_NS - hours) * HOUR_NS
    normalizer = Normalizer()
    for h in range(hours):
        requests = prompt_heavy_requests(traces // hours, seed=h, base_ns=base + h * HOUR_NS)
        rows = normalizer(decode_bodies(requests, [f"bench:{h}@{i}" for i in range(len(requests))])).combine_chunks()
        yield [rows.slice(i, BATCH) for i in range(0, rows.num_rows, BATCH)]


def write_one(sink: ParquetSink, part: pa.Table, offset: int) -> float:
    """Seconds to write one batch as one file."""
    t0 = time.perf_counter()
    sink.write("spans", part, "bench/0", (offset, offset))
    sink.flush_all()
    return time.perf_counter() - t0


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


def ui_pages(lake: str, trace_ids: list[str], server: S3Server | None) -> tuple[list[float], Counter]:
    """The UI's trace page read (`trace_detail.load_trace`) on one long-lived LakeReader, as a server runs it:
    the files' footers and object sizes are cached after the first page."""
    reader = LakeReader(lake)
    before = len(server.requests) if server else 0
    seconds = []
    try:
        for trace_id in trace_ids:
            t0 = time.perf_counter()
            detail = load_trace(reader, trace_id)
            seconds.append(time.perf_counter() - t0)
            assert detail is not None and detail.waterfall, trace_id
    finally:
        reader.close()
    requests = Counter(m for m, _ in server.requests[before:]) if server else Counter()
    return seconds, requests


def show(label: str, name: str, secs: list[float], reqs: Counter, server: S3Server | None, first: bool = False) -> None:
    """One line: latency (the first look apart, for the UI's caches) and the S3 requests per look."""
    per = {m: round(n / len(secs), 1) for m, n in reqs.items()}
    if first:
        timing = f"first {secs[0] * 1000:7.1f} ms, then p50 {statistics.median(secs[1:] or secs) * 1000:7.1f} ms"
    else:
        timing = f"p50 {statistics.median(secs) * 1000:7.1f} ms, max {max(secs) * 1000:7.1f} ms"
    print(f"  {label:20s} {name:5s}: {timing}" + (f", requests per look {per}" if server else ""))


HOURS: dict[str, tuple[object, int]] = {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--traces", type=int, default=4000)
    ap.add_argument("--hours", type=int, default=4)
    ap.add_argument("--lookups", type=int, default=10)
    ap.add_argument("--compact", action="store_true", help="then compact both lakes and look the traces up again")
    args = ap.parse_args()

    server = S3Server()
    options = S3Options(
        endpoint_override=server.endpoint,
        access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region=CREDENTIALS["AWS_REGION"],
    )
    try:
        with tempfile.TemporaryDirectory(prefix="s3-bench-") as tmp, s3_environment(server):
            bucket = server.new_bucket()
            local = ParquetSink(ParquetSinkConfig(path=f"{tmp}/lake-0"))
            remote = ParquetSink(ParquetSinkConfig(path=f"s3://{bucket}/lake", s3=options))
            print("1. write: spans/s (one file per batch and hour), per hour of prompt-heavy traffic")
            ratios, spans, nbytes, offset, started = [], 0, 0, 0, time.perf_counter()
            totals = {"local": 0.0, "s3": 0.0}
            for h, parts in enumerate(hour_batches(args.traces, args.hours)):
                secs = {"local": 0.0, "s3": 0.0}
                before = len(server.requests)
                for part in parts:
                    order = (
                        [("local", local), ("s3", remote)] if offset % 2 == 0 else [("s3", remote), ("local", local)]
                    )
                    for name, sink in order:
                        secs[name] += write_one(sink, part, offset)
                    offset += 1
                n = sum(p.num_rows for p in parts)
                spans, nbytes = spans + n, nbytes + sum(p.nbytes for p in parts)
                totals = {k: totals[k] + secs[k] for k in totals}
                ratios.append(secs["local"] / secs["s3"])
                requests = dict(Counter(m for m, _ in server.requests[before:]))
                print(
                    f"  hour {h + 1}: {n:,} spans in {len(parts)} files  local {n / secs['local']:,.0f}  "
                    f"s3 {n / secs['s3']:,.0f}  s3/local {ratios[-1]:.2f}  (requests {requests})"
                )
            print(
                f"  all: {spans:,} spans, {nbytes / 2**20:,.0f} MiB of Arrow, {remote.files_written} objects;"
                f" local {spans / totals['local']:,.0f} spans/s, s3 {spans / totals['s3']:,.0f} spans/s;"
                f" s3/local median {statistics.median(ratios):.2f}, spread {min(ratios):.2f}-{max(ratios):.2f}"
                f" ({time.perf_counter() - started:.0f} s with generating the traffic)"
            )

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
            both = (("local", lake_local, None), ("s3", lake_s3, server))
            for hour_known in (False, True):
                for name, lake, srv in both:
                    show(
                        "trace_id only" if not hour_known else "trace_id + dt/hour",
                        name,
                        *lookups(lake, chosen, srv, hour_known),
                        srv,
                    )
            for name, lake, srv in both:
                show("UI trace page", name, *ui_pages(lake, chosen, srv), srv, first=True)
            if not args.compact:
                return
            print("\n3. after `tracelake compact` (every hour is closed: one sorted run per hour)")
            for name, lake, _srv in both:
                t0 = time.perf_counter()
                Compactor(lake, tables=["spans"]).run(older_than_s=0)
                objects = len(lake_files(open_lake(lake), "spans"))
                print(f"  compact {name:5s}: {time.perf_counter() - t0:.0f} s, {objects} files now")
            for name, lake, srv in both:
                show("trace_id only", name, *lookups(lake, chosen, srv, False), srv)
            for name, lake, srv in both:
                show("UI trace page", name, *ui_pages(lake, chosen, srv), srv, first=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
