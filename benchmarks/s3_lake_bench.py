"""The lake on S3 against the lake on local disk: write throughput, and a trace lookup's latency and requests.

    .venv/bin/python benchmarks/s3_lake_bench.py [--traces 4000] [--hours 4] [--lookups 10] [--compact]

The S3 server is moto's standalone server on loopback (tests/s3_server.py, the one the tests use), in this
process: it is an in-memory Python server, far slower per request than AWS S3 or MinIO, so the S3 figures
are a floor for the request path, and the request counts are what carries over.

Traffic: `benchmarks.traffic.prompt_heavy_requests` (~1.9 KB per span of prompts, JSON tool arguments),
spread over `--hours` hour partitions, decoded and normalised (the worker's own functions) one hour at a time, so
that a lake of millions of spans never sits in memory at once; then:

1. **write**: each Arrow batch (8,192 spans) and its `traces` rows (the worker's `TraceSummarizer`, every trace
   of the batch summarised) into a `ParquetSink` on a local directory and one on `s3://bench/lake`, one
   `spans` and one `traces` file per batch and hour (`flush_all` after every batch, as a busy worker's roll
   does), alternating which goes first batch by batch: spans/s for each and their ratio per hour of traffic
   (the spread across hours is the run's noise).
2. **look-ups**, for `--lookups` random trace ids, each on a fresh connection: latency p50 / max, the HTTP
   requests the S3 server served per look-up (from its access log: LIST, HEAD, GET of an object's bytes) and
   how many distinct objects it opened:
   - `query (every file)`: `tracelake query "SELECT … FROM spans WHERE trace_id = '…'"` (`pipeline.query.connect`:
     views over every live file, each file's footer read);
   - `tracelake trace`: its read, `pipeline.query.connect_trace` + `trace_view.load_trace` (spans, summary,
     feedback): the trace-id index names the `traces` / `feedback` files, the summary's start/end the hours
     of `spans` to list and open;
   - `UI trace page`: `pipeline.ui.trace_detail.load_trace` on one long-lived `LakeReader`, as a running
     `tracelake ui` serves them (the first page opens each object, later ones reuse their sizes and footers).
3. `tracelake compact` of `traces` and `feedback` only, which builds the trace-id index
   (sinks/parquet/trace_index.py), `spans` left as written; then 2.'s look-ups again.
4. with `--compact`: `spans` compacted too (every hour is closed: one sorted run per hour), then 2. again.
Every look-up of a trace must find the same number of spans (checked at the end).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.traffic import prompt_heavy_requests
from core.conventions import Normalizer
from pipeline.maintenance.compact import Compactor
from pipeline.otlp.wire import decode_bodies
from pipeline.query import connect, connect_trace
from pipeline.trace_summary import TraceSummarizer
from pipeline.trace_view import load_trace
from pipeline.ui.lake import LakeReader
from pipeline.ui.trace_detail import TraceDetail
from pipeline.ui.trace_detail import load_trace as load_page
from sinks.parquet.config import ParquetSinkConfig, S3Options
from sinks.parquet.layout import lake_files, open_lake
from sinks.parquet.sink import ParquetSink
from tests.s3_server import CREDENTIALS, S3Server, s3_environment

HOUR_NS = 3600 * 10**9
T = TypeVar("T")
BATCH = 8192


def hour_batches(traces: int, hours: int) -> Iterator[list[pa.Table]]:
    """The traffic of each hour in turn, as the sink's batches (one hour in memory at a time)."""
    base = (time.time_ns() // HOUR_NS - hours) * HOUR_NS
    normalizer = Normalizer()
    for h in range(hours):
        requests = prompt_heavy_requests(traces // hours, seed=h, base_ns=base + h * HOUR_NS)
        rows = normalizer(decode_bodies(requests, [f"bench:{h}@{i}" for i in range(len(requests))])).combine_chunks()
        yield [rows.slice(i, BATCH) for i in range(0, rows.num_rows, BATCH)]


def write_one(sink: ParquetSink, part: pa.Table, summaries: pa.Table, offset: int) -> float:
    """Seconds to write one batch of spans and its trace summaries, one file each (a worker's roll)."""
    t0 = time.perf_counter()
    sink.write("spans", part, "bench/0", (offset, offset))
    sink.write("traces", summaries, "bench/0", (offset, offset))
    sink.flush_all()
    return time.perf_counter() - t0


def summaries(summarizer: TraceSummarizer, part: pa.Table, offset: int) -> pa.Table:
    """The `traces` rows of one batch, as the worker's summarizer makes them (every trace forced due)."""
    summarizer.observe(part, "bench/0", (offset, offset))
    return pa.concat_tables([b.rows for b in summarizer.due(force=True)])


def kind(method: str, path: str) -> str:
    """LIST (a GET on the bucket with a prefix), HEAD, GET (of an object's bytes), PUT, POST…"""
    return "LIST" if method == "GET" and ("list-type" in path or "prefix=" in path) else method


def kinds(requests: list[tuple[str, str]]) -> Counter:
    """S3 requests by kind."""
    return Counter(kind(m, p) for m, p in requests)


def objects_read(requests: list[tuple[str, str]]) -> int:
    """How many distinct objects the requests opened (a HEAD or a GET of the object's bytes)."""
    return len({p.partition("?")[0] for m, p in requests if kind(m, p) in ("GET", "HEAD")})


class Look:
    """Latencies and S3 requests of one kind of look-up, repeated for several trace ids."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.requests: Counter = Counter()
        self.objects: list[int] = []

    def time(self, server: S3Server | None, run: Callable[[], T]) -> T:
        before = len(server.requests) if server else 0
        t0 = time.perf_counter()
        out = run()
        self.seconds.append(time.perf_counter() - t0)
        if server:
            served = server.requests[before:]
            self.requests.update(kinds(served))
            self.objects.append(objects_read(served))
        return out


def query_lookups(lake: str, trace_ids: list[str], server: S3Server | None) -> Look:
    """`tracelake query "SELECT … FROM spans WHERE trace_id = '…'"`: views over every live file of the lake."""
    look = Look()
    for trace_id in trace_ids:

        def run(trace_id: str = trace_id) -> int:
            con = connect(lake)
            try:
                sql = "SELECT span_id, name, attributes FROM spans WHERE trace_id = ?"
                return len(con.execute(sql, [trace_id]).fetchall())
            finally:
                con.close()

        SPANS.setdefault(trace_id, set()).add(look.time(server, run))
    return look


def trace_lookups(lake: str, trace_ids: list[str], server: S3Server | None) -> Look:
    """`tracelake trace ID`'s read: `connect_trace` (the trace-id index names the `traces`/`feedback` files,
    the summary's start/end the `spans` hours) and `trace_view.load_trace` (spans, summary, feedback)."""
    look = Look()
    for trace_id in trace_ids:

        def run(trace_id: str = trace_id) -> int:
            con = connect_trace(lake, trace_id)
            try:
                trace = load_trace(con, trace_id)
                assert trace is not None and trace.summary is not None, trace_id
                return len(trace.spans)
            finally:
                con.close()

        SPANS.setdefault(trace_id, set()).add(look.time(server, run))
    return look


def ui_pages(lake: str, trace_ids: list[str], server: S3Server | None) -> Look:
    """The UI's trace page read (`trace_detail.load_trace`) on one long-lived LakeReader, as a server runs it:
    the files' footers and object sizes are cached after the first page."""
    reader = LakeReader(lake)
    look = Look()
    try:
        for trace_id in trace_ids:

            def run(trace_id: str = trace_id) -> TraceDetail | None:
                return load_page(reader, trace_id)

            detail = look.time(server, run)
            assert detail is not None and detail.waterfall, trace_id
    finally:
        reader.close()
    return look


def show(label: str, name: str, look: Look, first: bool = False) -> None:
    """One line: latency (the first look apart, for the UI's caches) and the S3 requests per look."""
    secs = look.seconds
    if first:
        timing = f"first {secs[0] * 1000:7.1f} ms, then p50 {statistics.median(secs[1:] or secs) * 1000:7.1f} ms"
    else:
        timing = f"p50 {statistics.median(secs) * 1000:7.1f} ms, max {max(secs) * 1000:7.1f} ms"
    line = f"  {label:22s} {name:5s}: {timing}"
    if look.objects:
        per = {m: round(n / len(secs), 1) for m, n in sorted(look.requests.items())}
        line += f", requests per look {per}, objects opened {min(look.objects)}-{max(look.objects)}"
    print(line)


def lookup_round(title: str, both: tuple, chosen: list[str], ui: bool = True) -> None:
    print(title)
    for name, lake, srv in both:
        show("query (every file)", name, query_lookups(lake, chosen, srv))
    for name, lake, srv in both:
        show("tracelake trace", name, trace_lookups(lake, chosen, srv))
    if ui:
        for name, lake, srv in both:
            show("UI trace page", name, ui_pages(lake, chosen, srv), first=True)


def compact(both: tuple, tables: list[str]) -> None:
    for name, lake, _srv in both:
        t0 = time.perf_counter()
        report = Compactor(lake, tables=tables).run(older_than_s=0)
        files = {t: len(lake_files(open_lake(lake), t)) for t in ("spans", "traces")}
        print(
            f"  compact {'/'.join(tables)} {name:5s}: {time.perf_counter() - t0:.0f} s; files now {files};"
            f" trace-id index for {report.days_indexed or 'no day'}"
        )


SPANS: dict[str, set[int]] = {}  # spans found per trace id, by every look-up: one count each


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
            summarizer = TraceSummarizer(trace_idle=0)
            print("1. write: spans/s (spans + trace summaries, one file each per batch), per hour of traffic")
            ratios, spans, nbytes, offset, started = [], 0, 0, 0, time.perf_counter()
            totals = {"local": 0.0, "s3": 0.0}
            for h, parts in enumerate(hour_batches(args.traces, args.hours)):
                secs = {"local": 0.0, "s3": 0.0}
                before = len(server.requests)
                for part in parts:
                    rows = summaries(summarizer, part, offset)
                    order = (
                        [("local", local), ("s3", remote)] if offset % 2 == 0 else [("s3", remote), ("local", local)]
                    )
                    for name, sink in order:
                        secs[name] += write_one(sink, part, rows, offset)
                    offset += 1
                n = sum(p.num_rows for p in parts)
                spans, nbytes = spans + n, nbytes + sum(p.nbytes for p in parts)
                totals = {k: totals[k] + secs[k] for k in totals}
                ratios.append(secs["local"] / secs["s3"])
                requests = dict(kinds(server.requests[before:]))
                print(
                    f"  hour {h + 1}: {n:,} spans in {len(parts)} batches  local {n / secs['local']:,.0f}  "
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
            ids = [r[0] for r in con.execute("SELECT DISTINCT trace_id FROM spans ORDER BY 1").fetchall()]
            con.close()
            chosen = random.Random(0).sample(ids, min(args.lookups, len(ids)))
            files = {t: len(lake_files(open_lake(lake_local), t)) for t in ("spans", "traces")}
            both = (("local", lake_local, None), ("s3", lake_s3, server))
            lookup_round(
                f"\n2. look-ups on a lake of {spans:,} spans, files {files}, {len(ids):,} traces"
                f" ({len(chosen)} random trace ids; no trace-id index yet)",
                both,
                chosen,
            )
            print("\n3. `tracelake compact` of traces and feedback only (builds the trace-id index; spans untouched)")
            compact(both, ["traces", "feedback"])
            lookup_round("", both, chosen, ui=False)
            if args.compact:
                print("\n4. `tracelake compact` of spans too (every hour closed: one sorted run per hour)")
                compact(both, ["spans"])
                lookup_round("", both, chosen)
            wrong = {t: n for t, n in SPANS.items() if len(n) != 1}
            assert not wrong, f"look-ups disagree on the spans of {wrong}"
    finally:
        server.stop()


if __name__ == "__main__":
    main()
