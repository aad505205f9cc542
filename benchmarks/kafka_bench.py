"""Kafka bus against the embedded bus: throughput (accepted, durable) and Export latency, in one run.

    .venv/bin/python benchmarks/kafka_bench.py [--traces 3000] [--clients 2] [--seed 0]
                                               [--codecs zstd,lz4] [--partitions 4]
                                               [--latency-load 0.5] [--latency-seconds 20]

Traffic: `pipeline.demo.build_requests(traces, seed)`, the same pre-built ExportTraceServiceRequests (512
spans each), sent as raw bytes by --clients separate processes with benchmarks/harness.py's
burst client (unary `TraceService/Export`, identity serializer, RESOURCE_EXHAUSTED/UNAVAILABLE retried after
50 ms). Every tracelake process uses tests/conftest.py's `config_yaml()` (ephemeral ports, parquet
roll_seconds 1s, worker trace_idle 1s) plus a bus block.

(1) embedded: `tracelake run` (embedded bus of --bus-capacity spans).
(2) kafka: a Tansu broker (tests/kafka_broker.py, memory storage, own process), one `tracelake receiver`
    and one `tracelake worker` (its own consumer group), once per codec in --codecs (the bus's
    `compression` key, which is librdkafka's `compression.type`), a fresh topic each. The clients start
    once the worker has its partitions.
    For every run, from the first send: "accepted" = the last OK answer; "durable" = the lake (counted
    with DuckDB through `pipeline.query.connect`, polled every --poll seconds) holds every span sent.
    For Kafka, the growth of the broker's resident memory during the run is printed as a rough proxy
    for the bytes it stores (memory storage; not an exact byte count).
(3) latency (Kafka only, per codec, on the same receiver and worker after (2)): the clients send paced,
    at --latency-load times the accepted rate measured in (2), for --latency-seconds; p50/p99/max of
    the client-side duration of each Export call. A call that overruns its slot delays the next one
    (closed loop); the number of such late sends is printed.

The machine may be shared: compare the ratios of one run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` and `tests` (the repository root)

from benchmarks import harness
from pipeline.demo import build_requests
from pipeline.query import connect
from tests.conftest import RunningTracelake, config_yaml
from tests.kafka_broker import FAST_GROUP, Broker


# -- helpers ---------------------------------------------------------------------------------------
def lake_spans(lake: Path) -> int:
    """Spans in the lake, 0 before the first file exists."""
    if not (lake / "spans").exists():
        return 0
    try:
        row = connect(lake).execute("select count(*) from spans").fetchone()
    except Exception:  # a file being renamed into place, or no file yet
        return 0
    return int(row[0]) if row else 0


def kafka_bus(broker: Broker, topic: str, partitions: int, compression: str, delivery_timeout: float) -> str:
    """The bus block of tests/test_kafka.py's `kafka_bus()`, with the codec and delivery timeout set."""
    consumer = ", ".join(f"{k}: {v}" for k, v in FAST_GROUP.items())
    return (
        f"bus:\n  type: kafka\n  brokers: {broker.address}\n  topic: {topic}\n  group: g-{topic}\n"
        f"  partitions: {partitions}\n  session_timeout: 6s\n  delivery_timeout: {delivery_timeout}s\n"
        f"  commit_interval: 200ms\n  compression: {compression}\n  consumer: {{{consumer}}}\n"
    )


# -- runs ------------------------------------------------------------------------------------------
@dataclass
class Run:
    name: str
    spans: int
    accepted_s: float
    durable_s: float | None  # None: the lake never held every span within the timeout
    lake_spans: int
    retries: int
    broker_rss_growth: int | None = None
    latency: harness.Latency | None = None
    latency_load: float = 0.0  # the paced phase's offered load, spans/s

    @property
    def accepted_rate(self) -> float:
        return self.spans / self.accepted_s

    @property
    def durable_rate(self) -> float | None:
        return self.spans / self.durable_s if self.durable_s else None


def durable_at(lake: Path, total: int, args: argparse.Namespace) -> float | None:
    """time.monotonic() when the lake's spans view first holds `total` spans (polled every --poll s); None when
    it does not within --timeout."""
    try:
        return harness.wait_until(lambda: lake_spans(lake) >= total, args.timeout, "every span in the lake", args.poll)
    except TimeoutError:
        return None


def stop_all(*procs: RunningTracelake) -> list[str]:
    """Stops every process (SIGTERM, clean drain); returns problems seen."""
    problems = []
    for p in procs:
        try:
            rc = p.stop(timeout=120)
            if rc != 0:
                problems.append(f"{p.config.stem} exited with {rc}:\n" + "".join(p.log_lines[-20:]))
        except AssertionError as e:
            problems.append(str(e)[-3000:])
    return problems


def run_embedded(args: argparse.Namespace, req_file: Path, total: int, workdir: Path) -> Run:
    workdir.mkdir()
    bus = f"bus: {{type: embedded, capacity_spans: {args.bus_capacity}}}\n"
    tl = RunningTracelake(workdir, config_yaml(extra=bus), command="run", name="embedded")
    problems: list[str] = []
    try:
        sent = harness.send_burst(req_file, tl.grpc, args.clients, then=lambda: durable_at(tl.lake, total, args))
        durable = sent.then - sent.t0 if sent.then is not None else None
    finally:
        problems = stop_all(tl)
    for p in problems:
        print("WARNING:", p, file=sys.stderr)
    return Run("embedded", total, sent.accepted_s, durable, lake_spans(tl.lake), sent.retries)


def run_kafka(
    args: argparse.Namespace, req_file: Path, total: int, per_request: float, broker: Broker, codec: str, workdir: Path
) -> Run:
    topic = f"bench_{codec}_{os.getpid()}"
    bus = kafka_bus(broker, topic, args.partitions, codec, args.delivery_timeout)
    (workdir / "receiver").mkdir(parents=True)
    assert broker.proc is not None
    rss0 = harness.rss_bytes(broker.proc.pid)
    receiver = RunningTracelake(workdir / "receiver", config_yaml(extra=bus), command="receiver", name="receiver")
    procs = [receiver]
    problems: list[str] = []
    try:
        worker = RunningTracelake(workdir, config_yaml(extra=bus), command="worker", name="worker")
        procs.append(worker)
        harness.wait_until(lambda: "assigned partitions" in worker.log, 60, "the worker's partitions assigned")
        lake = worker.lake
        sent = harness.send_burst(req_file, receiver.grpc, args.clients, then=lambda: durable_at(lake, total, args))
        durable = sent.then - sent.t0 if sent.then is not None else None
        growth = harness.rss_bytes(broker.proc.pid) - rss0
        run = Run(f"kafka {codec}", total, sent.accepted_s, durable, lake_spans(worker.lake), sent.retries, growth)
        if args.latency_seconds > 0:
            run.latency_load = args.latency_load * run.accepted_rate
            interval = args.clients * per_request / run.latency_load  # per client
            run.latency = harness.send_paced(req_file, receiver.grpc, args.clients, interval, args.latency_seconds)
    finally:
        problems = stop_all(*procs)
    for p in problems:
        print("WARNING:", p, file=sys.stderr)
    return run


# -- report ----------------------------------------------------------------------------------------
def fmt_rate(x: float | None) -> str:
    return f"{x:,.0f}" if x else "-"


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "-"


def report(runs: list[Run], total_bytes: int) -> None:
    base = runs[0]
    print(
        f"\n{'run':<12}{'acc. s':>8}{'dur. s':>8}{'accepted/s':>12}{'durable/s':>12}{'acc. ×emb':>11}{'dur. ×emb':>11}"
        f"{'retries':>9}{'lake':>9}{'broker +RSS':>13}"
    )
    for r in runs:
        rss = f"{r.broker_rss_growth / 2**20:.1f} MiB" if r.broker_rss_growth is not None else "-"
        print(
            f"{r.name:<12}{r.accepted_s:>8.2f}{r.durable_s or 0:>8.2f}"
            f"{fmt_rate(r.accepted_rate):>12}{fmt_rate(r.durable_rate):>12}"
            f"{ratio(r.accepted_rate, base.accepted_rate):>11}{ratio(r.durable_rate, base.durable_rate):>11}"
            f"{r.retries:>9}{r.lake_spans:>9}{rss:>13}"
        )
    lat = [r for r in runs if r.latency is not None]
    if lat:
        print(
            f"\n{'latency':<12}{'load spans/s':>13}{'calls':>7}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
            f"{'late':>6}{'failed':>8}"
        )
        for r in lat:
            assert r.latency is not None
            m = r.latency
            print(
                f"{r.name:<12}{r.latency_load:>13,.0f}{m.calls:>7}{m.p50_ms:>9.1f}{m.p99_ms:>9.1f}{m.max_ms:>9.1f}"
                f"{m.late:>6}{m.failed:>8}"
            )
    by_name = {r.name: r for r in runs}
    lz4, zstd = by_name.get("kafka lz4"), by_name.get("kafka zstd")
    if lz4 and zstd:
        print("\nlz4 / zstd:")
        print(
            f"    accepted {ratio(lz4.accepted_rate, zstd.accepted_rate)}, "
            f"durable {ratio(lz4.durable_rate, zstd.durable_rate)}"
        )
        if lz4.broker_rss_growth and zstd.broker_rss_growth:
            print(f"    broker RSS growth {lz4.broker_rss_growth / zstd.broker_rss_growth:.2f}")
        if lz4.latency and zstd.latency:
            print(
                f"    latency p50 {lz4.latency.p50_ms / zstd.latency.p50_ms:.2f}, "
                f"p99 {lz4.latency.p99_ms / zstd.latency.p99_ms:.2f}"
            )
    print(f"\n(OTLP sent per run: {total_bytes / 2**20:.1f} MiB)")


# -- main ------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--traces", type=int, default=3000, help="demo traces to generate (~3.5 spans each)")
    ap.add_argument("--clients", type=int, default=2, help="gRPC client processes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--codecs", default="zstd,lz4", help="comma-separated Kafka codecs, one run each")
    ap.add_argument("--partitions", type=int, default=4, help="partitions of each fresh topic")
    ap.add_argument("--delivery-timeout", type=float, default=5.0, help="bus delivery_timeout, seconds")
    ap.add_argument("--bus-capacity", type=int, default=200_000, help="embedded bus capacity in spans")
    ap.add_argument("--latency-load", type=float, default=0.5, help="paced load as a share of the accepted rate")
    ap.add_argument("--latency-seconds", type=float, default=20.0, help="0 skips the latency phase")
    ap.add_argument("--poll", type=float, default=0.5, help="seconds between lake counts")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the lake to hold every span")
    args = ap.parse_args(argv)
    codecs = [c.strip() for c in args.codecs.split(",") if c.strip()]

    t = time.perf_counter()
    requests = build_requests(args.traces, seed=args.seed)
    counts = [harness.span_count(b) for b in requests]
    total, total_bytes = sum(counts), sum(map(len, requests))
    print(
        f"traffic: {args.traces} traces, {total} spans, {len(requests)} requests, {total_bytes / 2**20:.1f} MiB "
        f"(built in {time.perf_counter() - t:.1f}s, seed {args.seed}); {args.clients} client processes"
    )
    workdir = Path(tempfile.mkdtemp(prefix="tracelake-kafka-bench-"))
    broker: Broker | None = None
    runs: list[Run] = []
    try:
        req_file = workdir / "requests.bin"
        harness.write_requests(req_file, requests)
        print("(1) embedded: tracelake run ...", flush=True)
        runs.append(run_embedded(args, req_file, total, workdir / "embedded"))
        broker = Broker()
        for codec in codecs:
            print(
                f"(2) kafka {codec}: tracelake receiver + tracelake worker over Tansu {broker.address} ...", flush=True
            )
            runs.append(run_kafka(args, req_file, total, total / len(requests), broker, codec, workdir / codec))
    finally:
        if broker is not None:
            broker.stop()
        if runs:
            report(runs, total_bytes)
        shutil.rmtree(workdir, ignore_errors=True)
    bad = [r for r in runs if r.durable_s is None or r.lake_spans != r.spans]
    for r in bad:
        print(f"ERROR: {r.name}: the lake holds {r.lake_spans} spans, {r.spans} were sent", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
