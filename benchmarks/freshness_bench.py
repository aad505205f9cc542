"""Freshness: how soon a span is queryable after its export was acknowledged, and what that costs in files.

    python benchmarks/freshness_bench.py [--config conf/tracelake.yaml] [--loads 5,40] [--seconds 60]
                                         [--apps 10] [--export-interval 5] [--sim-rate 200] [--sim-minutes 75]
                                         [--lookups 40] [--skip-live] [--skip-sim] [--keep DIR]

(1) live: a real `tracelake run --config CONFIG` (default: the shipped conf/tracelake.yaml, every processor on;
    ports, lake and hash key moved into a temporary directory) per load in `--loads` (spans/s offered). The
    traffic is the demo's traces (`pipeline.demo`: three applications, ~3.6 spans per trace, prompts of ~1.4 KB)
    sent as `--apps` applications would: each exports, every `--export-interval` seconds (the OTel SDK's
    BatchSpanProcessor default is 5 s), the whole traces it finished since its last export, staggered across
    applications. Exports go over raw gRPC from separate client processes, each recording the moment its
    export was acknowledged (CLOCK_MONOTONIC, shared by every process of the machine).
    - *span freshness* = first moment the span is in a file a new query would read (`pipeline.query`'s own
      listing, `sinks.parquet.layout.table_files`, polled every 100 ms; each new file's trace and
      span ids read with pyarrow) minus the acknowledgement of the export that carried it. Resolution 0.1 s.
    - *trace freshness*: the same for the trace's row in `traces` (a summary is written `worker.trace_idle`
      after the trace's last span).
    - *probes*: every 3 s the spans of the latest acknowledged export are looked up with real queries
      (`pipeline.query.connect`, `SELECT count(*) FROM spans WHERE trace_id IN …`, polled every 50 ms):
      acknowledgement → the query sees all of them. They check the file watcher against what a user sees.
    - the server's CPU, and its background compactor's log lines.
(2) simulated hour: the same demo spans, restamped and with fresh trace ids, go through the real
    `ParquetSink` (+ `TraceSummarizer`) at `--sim-rate` spans/s, one export per simulated second, with the
    config's sink settings, and through the real `Compactor` every `compaction.interval` as the background
    compactor runs it, on a simulated clock for `--sim-minutes` minutes from the start of an hour. Printed:
    files in the hour's partitions every 15 simulated minutes, bytes the sink wrote against bytes compaction
    wrote (write amplification), compaction's wall time. A second lake gets the same traffic without
    compaction.
(3) lookups: `SELECT * FROM spans WHERE trace_id = ?` for `--lookups` random trace ids of that hour, each on
    a fresh connection (as one `tracelake query` would), on the compacted and the uncompacted lake.
"""

from __future__ import annotations

# first, as in `tracelake run`: importing pipeline configures Arrow's jemalloc before pyarrow loads
import pipeline  # noqa: F401

# isort: split
import argparse
import multiprocessing as mp
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` (the repository root)

from benchmarks import harness
from core.conventions import normalize
from pipeline.config import load as load_config
from pipeline.config.model import CompactionConfig
from pipeline.demo import emit_traces, make_providers
from pipeline.maintenance.compact import Compactor
from pipeline.otlp.wire import decode_bodies
from pipeline.query import connect
from sinks.parquet.config import ParquetSinkConfig
from sinks.parquet.layout import hour_partitions, live_files, table_files
from sinks.parquet.sink import ParquetSink

REPO = Path(__file__).resolve().parent.parent
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
READY = re.compile(r"tracelake ready .*?grpc=(\S+)")
HOUR_S = 3600


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))] if ordered else float("nan")


def describe(values: list[float]) -> str:
    if not values:
        return "n=0"
    return (
        f"n={len(values)} p50 {pct(values, 50):.2f}s p90 {pct(values, 90):.2f}s "
        f"p99 {pct(values, 99):.2f}s max {max(values):.2f}s"
    )


# -- traffic -----------------------------------------------------------------------------------------
def demo_traces(traces: int, seed: int, start_ns: int) -> list[list[ReadableSpan]]:
    """`traces` demo traces, each as the list of its finished spans."""
    memory = InMemorySpanExporter()
    rng = random.Random(seed)
    providers = make_providers(SimpleSpanProcessor(memory), rng)
    out: list[list[ReadableSpan]] = []

    def collect(_i: int) -> None:
        out.append(list(memory.get_finished_spans()))
        memory.clear()

    emit_traces(providers, rng, traces, start_ns, after_trace=collect)
    return out


@dataclass
class Export:
    at: float  # seconds after the start of the phase
    body: bytes
    ids: list[tuple[str, str]]  # (trace_id, span_id) hex


def schedule(rate: float, seconds: float, apps: int, interval: float, seed: int) -> list[list[Export]]:
    """Per application, its exports: every `interval` s (staggered), whole traces worth rate×interval/apps spans."""
    per_export = rate * interval / apps
    ticks = int(seconds / interval)
    need = int(rate * seconds / 3.0) + apps * ticks + 10  # demo traces hold ~3.6 spans
    pool = demo_traces(need, seed, time.time_ns() - int(need * 0.25e9))
    it = iter(pool)
    plans: list[list[Export]] = []
    for app in range(apps):
        exports = []
        carry = 0.0
        for k in range(ticks):
            carry += per_export
            spans: list[ReadableSpan] = []
            while len(spans) < carry:
                spans.extend(next(it))
            carry -= len(spans)
            ids = [(f"{s.context.trace_id:032x}", f"{s.context.span_id:016x}") for s in spans]
            at = interval * (k + app / apps)
            exports.append(Export(at, encode_spans(spans).SerializeToString(), ids))
        plans.append(exports)
    return plans


def client(app: int, bodies: list[tuple[float, bytes]], target: str, start: float, out: Any) -> None:
    """One application: send each export at its time (late ones at once), retry refusals; report each
    acknowledgement as it happens, ("ack", app, export, time), then ("done", app, retries, error)."""
    import grpc

    channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 * 2**20)])
    call = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
    retries = 0
    retryable = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)
    try:
        for k, (at, body) in enumerate(bodies):
            delay = start + at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            while True:
                try:
                    call(body, timeout=30)
                    break
                except grpc.RpcError as e:
                    if e.code() not in retryable:  # type: ignore[attr-defined]
                        raise
                    retries += 1
                    time.sleep(0.2)
            out.put(("ack", app, k, time.monotonic()))
        out.put(("done", app, retries, ""))
    except Exception as e:  # report, never hang the parent
        out.put(("done", app, retries, f"{type(e).__name__}: {e}"))
    finally:
        channel.close()


# -- watching the lake ----------------------------------------------------------------------------------
class LakeWatcher:
    """First moment each span / trace summary is in a file a new query reads."""

    def __init__(self, lake: Path, poll: float = 0.1) -> None:
        self.lake = lake
        self.poll = poll
        self.span_seen: dict[tuple[str, str], float] = {}
        self.trace_seen: dict[str, float] = {}
        self._files: set[Path] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            for table, columns in (("spans", ["trace_id", "span_id"]), ("traces", ["trace_id"])):
                for path in table_files(self.lake, table):
                    if path in self._files:
                        continue
                    try:
                        rows = pq.read_table(path, columns=columns)
                    except (OSError, pa.ArrowInvalid):
                        continue  # vanished after its grace period (only for very slow polls)
                    self._files.add(path)
                    if table == "spans":
                        for key in zip(*(rows.column(c).to_pylist() for c in columns), strict=True):
                            self.span_seen.setdefault(key, now)
                    else:
                        for tid in rows.column("trace_id").to_pylist():
                            self.trace_seen.setdefault(tid, now)
            self._stop.wait(self.poll)


def probe(
    lake: Path, acked: list[tuple[float, list[tuple[str, str]]]], stop: threading.Event, out: list[float]
) -> None:
    """Every 3 s: the latest acknowledged export, looked up with real queries until all its spans show."""
    while not stop.wait(3.0):
        if not acked:
            continue
        ack, ids = acked[-1]
        traces = sorted({t for t, _ in ids})
        marks = ", ".join(f"'{t}'" for t in traces)
        while not stop.is_set():
            con = connect(lake)
            n = con.sql(f"SELECT count(*) FROM spans WHERE trace_id IN ({marks})").fetchall()[0][0]
            con.close()
            if n >= len(ids):
                out.append(time.monotonic() - ack)
                break
            time.sleep(0.05)


# -- (1) live -----------------------------------------------------------------------------------------
@dataclass
class LivePhase:
    rate: float
    spans: int = 0
    exports: int = 0
    retries: int = 0
    span_fresh: list[float] = field(default_factory=list)
    trace_fresh: list[float] = field(default_factory=list)
    probes: list[float] = field(default_factory=list)
    late_sends: int = 0
    server_cpu_s: float = 0.0
    seconds: float = 0.0
    compactor_lines: list[str] = field(default_factory=list)
    files: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def start_server(config: Path, work: Path, code: str | None = None) -> tuple[subprocess.Popen[str], str, list[str]]:
    env = {
        **os.environ,
        **({"PYTHONPATH": code} if code else {}),
        "TRACELAKE_GRPC_ENDPOINT": "127.0.0.1:0",
        "TRACELAKE_HTTP_ENDPOINT": "127.0.0.1:0",
        "TRACELAKE_TELEMETRY_ENDPOINT": "127.0.0.1:0",
        "TRACELAKE_LAKE": str(work / "lake"),
        "TRACELAKE_HASH_KEY_FILE": str(work / "hash.key"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "run", "--config", str(config)],
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    log: list[str] = []
    assert proc.stderr is not None
    for line in proc.stderr:
        log.append(line)
        m = READY.search(line)
        if m:
            threading.Thread(target=lambda: log.extend(proc.stderr or []), daemon=True).start()
            return proc, m.group(1), log
    raise RuntimeError("tracelake did not start:\n" + "".join(log[-20:]))


def run_live(config: Path, rate: float, args: argparse.Namespace, work: Path) -> LivePhase:
    phase = LivePhase(rate)
    plans = schedule(rate, args.seconds, args.apps, args.export_interval, seed=int(rate))
    exports = [e for plan in plans for e in plan]
    phase.exports = len(exports)
    phase.spans = sum(len(e.ids) for e in exports)
    proc, target, log = start_server(config, work, args.server_code)
    lake = work / "lake"
    watcher = LakeWatcher(lake)
    watcher.start()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    start = time.monotonic() + 3.0
    clients = [
        ctx.Process(target=client, args=(app, [(e.at, e.body) for e in plan], target, start, out), daemon=True)
        for app, plan in enumerate(plans)
    ]
    for c in clients:
        c.start()
    acked: list[tuple[float, list[tuple[str, str]]]] = []
    stop_probe = threading.Event()
    prober = threading.Thread(target=probe, args=(lake, acked, stop_probe, phase.probes), daemon=True)
    cpu0 = harness.tree_cpu(proc.pid)
    prober.start()
    ack_of: dict[tuple[str, str], float] = {}
    trace_ack: dict[str, float] = {}
    running = len(clients)
    while running:
        msg = out.get(timeout=args.seconds + 300)
        if msg[0] == "done":
            running -= 1
            phase.retries += msg[2]
            if msg[3]:
                phase.errors.append(f"app {msg[1]}: {msg[3]}")
            continue
        _, app, k, ack = msg
        e = plans[app][k]
        phase.late_sends += ack - (start + e.at) > 1.0
        acked.append((ack, e.ids))
        for key in e.ids:
            ack_of[key] = ack
            trace_ack[key[0]] = max(trace_ack.get(key[0], 0.0), ack)
    for c in clients:
        c.join()
    # everything acknowledged must become visible; then the distributions
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and (
        len(watcher.span_seen.keys() & ack_of.keys()) < len(ack_of)
        or len(watcher.trace_seen.keys() & trace_ack.keys()) < len(trace_ack)
    ):
        time.sleep(0.5)
    stop_probe.set()
    prober.join()
    watcher.stop()
    phase.server_cpu_s = harness.tree_cpu(proc.pid) - cpu0  # the run process and its worker processes
    phase.seconds = time.monotonic() - start
    phase.span_fresh = [watcher.span_seen[k] - a for k, a in ack_of.items() if k in watcher.span_seen]
    phase.trace_fresh = [watcher.trace_seen[t] - a for t, a in trace_ack.items() if t in watcher.trace_seen]
    missing = len(ack_of) - len(phase.span_fresh)
    if missing:
        phase.errors.append(f"{missing} acknowledged spans never became visible")
    phase.files = {t: len(table_files(lake, t)) for t in ("spans", "traces")}
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(120)
    if rc != 0:
        phase.errors.append(f"server exited {rc}")
    phase.compactor_lines = [line.strip() for line in log if "tracelake.compact" in line or "compacted" in line]
    return phase


def print_live(phase: LivePhase) -> None:
    print(
        f"\nlive, {phase.rate:g} spans/s offered: {phase.spans} spans in {phase.exports} exports "
        f"({phase.spans / max(phase.exports, 1):.1f} spans each), {phase.retries} refusals retried, "
        f"{phase.late_sends} exports sent >1 s late"
    )
    print(f"  span freshness  (ack -> in a file a query reads): {describe(phase.span_fresh)}")
    print(f"  trace freshness (last ack -> summary row):        {describe(phase.trace_fresh)}")
    print(f"  probes (ack -> a real query sees the export):     {describe(phase.probes)}")
    print(
        f"  server CPU {phase.server_cpu_s:.1f} s over {phase.seconds:.0f} s; live files at the end: "
        + ", ".join(f"{t} {n}" for t, n in phase.files.items())
    )
    for line in phase.compactor_lines[-3:]:
        print(f"  log: {line[:160]}")
    for e in phase.errors:
        print(f"  ERROR: {e}")


# -- (2) simulated hour ---------------------------------------------------------------------------------
class SimClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def span_pool(traces: int, seed: int) -> pa.Table:
    """Demo spans as the worker has them after decoding and normalizing."""
    pool = demo_traces(traces, seed, time.time_ns())
    bodies = [encode_spans(spans).SerializeToString() for spans in pool]
    table = normalize(decode_bodies(bodies, [f"sim@{i}" for i in range(len(bodies))]))
    return table.sort_by([("trace_id", "ascending")])


def restamp(rows: pa.Table, export_no: int, at_ns: int) -> pa.Table:
    """The rows as a new export: trace ids made unique for this export, times moved to `at_ns`."""
    tid = pc.binary_join_element_wise(
        pa.scalar(f"{export_no:08x}"), pc.utf8_slice_codeunits(rows.column("trace_id"), 8), ""
    )
    start = rows.column("start_time").cast(pa.int64())
    shift = at_ns - pc.min(start).as_py()
    out = rows.set_column(rows.schema.get_field_index("trace_id"), "trace_id", tid)
    for name in ("start_time", "end_time"):
        i = out.schema.get_field_index(name)
        col = out.column(name)
        out = out.set_column(i, name, pc.add(col.cast(pa.int64()), shift).cast(col.type))
    return out


@dataclass
class SimResult:
    samples: list[tuple[int, dict[str, int]]] = field(default_factory=list)  # (minute, files per table)
    max_open_files: dict[str, int] = field(default_factory=dict)
    sink_bytes: int = 0
    sink_files: int = 0
    compaction_bytes: int = 0
    compaction_seconds: float = 0.0
    compaction_runs: int = 0
    trace_ids: list[str] = field(default_factory=list)
    hour_dirs: dict[str, Path] = field(default_factory=dict)


def simulate(
    lake: Path,
    pool: pa.Table,
    rate: float,
    minutes: float,
    sink_cfg: ParquetSinkConfig,
    compaction: CompactionConfig | None,
) -> SimResult:
    """An hour (and more) of steady traffic through the real sink and compactor on a simulated clock."""
    from pipeline.trace_summary import TraceSummarizer

    res = SimResult()
    hour0 = (int(time.time()) // HOUR_S - 3) * HOUR_S  # an hour that is over in real time too
    clock = SimClock(float(hour0))
    cfg = sink_cfg.model_copy(update={"path": str(lake)})
    sink = ParquetSink(cfg, clock=clock)
    summarizer = TraceSummarizer(5.0, clock=clock)
    compactor = None
    if compaction is not None:
        compactor = Compactor(
            lake,
            target_file_bytes=compaction.target_file_bytes,
            row_group_rows=compaction.row_group_rows,
            threads=compaction.threads or 1,
            grace_s=compaction.grace,
            clock=clock,
        )
    ids = pool.column("trace_id").to_pylist()
    bounds = [0] + [i for i in range(1, len(ids)) if ids[i] != ids[i - 1]] + [len(ids)]
    traces = [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    next_trace = 0
    carry = 0.0
    step = 0.2
    end = hour0 + minutes * 60
    next_compaction = hour0 + (compaction.interval if compaction else 0)
    next_sample = hour0 + 15 * 60
    export_no = 0
    while clock.now < end:
        if abs(clock.now - round(clock.now)) < 1e-6 and clock.now < hour0 + HOUR_S:  # one export a second
            carry += rate
            parts = []
            while carry >= 1:
                lo, hi = traces[next_trace % len(traces)]
                next_trace += 1
                parts.append(pool.slice(lo, hi - lo))
                carry -= hi - lo
            if parts:
                export_no += 1
                batch = restamp(pa.concat_tables(parts), export_no, int(clock.now * 1e9))
                if len(res.trace_ids) < 5000 and export_no % 7 == 0:
                    res.trace_ids.append(batch.column("trace_id")[0].as_py())
                sink.write("spans", batch)
                summarizer.observe(batch)
        for part in summarizer.due():
            sink.write("traces", part.rows)
        for w in sink.flush_due():
            res.sink_bytes += w.bytes
            res.sink_files += 1
        if compactor is not None and clock.now >= next_compaction:
            t0 = time.perf_counter()
            report = compactor.run(compaction.older_than, recent=True)  # type: ignore[union-attr]
            res.compaction_seconds += time.perf_counter() - t0
            res.compaction_runs += 1
            res.compaction_bytes += sum(r.bytes_out for r in report.compacted if r.error is None)
            next_compaction += compaction.interval  # type: ignore[union-attr]
        if clock.now < hour0 + HOUR_S and clock.now % 10 < 1e-6:
            for table, n in hour_files(lake, hour0).items():
                res.max_open_files[table] = max(res.max_open_files.get(table, 0), n)
        if clock.now >= next_sample:
            res.samples.append((round((clock.now - hour0) / 60), hour_files(lake, hour0)))
            next_sample += 15 * 60
        clock.now = round(clock.now + step, 6)
    for w in sink.flush_all():
        res.sink_bytes += w.bytes
        res.sink_files += 1
    res.samples.append((round((clock.now - hour0) / 60), hour_files(lake, hour0)))
    for table in ("spans", "traces"):
        for part in hour_partitions(lake, table):
            if part.start.timestamp() == hour0:
                res.hour_dirs[table] = part.path
    return res


def hour_files(lake: Path, hour0: int) -> dict[str, int]:
    """Live files in the simulated hour's partition, per table."""
    return {
        table: sum(len(live_files(p.path)) for p in hour_partitions(lake, table) if p.start.timestamp() == hour0)
        for table in ("spans", "traces")
    }


# -- (3) lookups ----------------------------------------------------------------------------------------
def lookups(lake: Path, trace_ids: list[str], n: int) -> tuple[list[float], list[float]]:
    """(connect + query, query alone) seconds for `n` random trace ids, each on a fresh connection."""
    rnd = random.Random(3)
    total, query = [], []
    for tid in rnd.sample(trace_ids, min(n, len(trace_ids))):
        t0 = time.perf_counter()
        con = connect(lake)
        t1 = time.perf_counter()
        rows = con.sql("SELECT * FROM spans WHERE trace_id = ?", params=[tid]).to_arrow_table()
        t2 = time.perf_counter()
        con.close()
        if not rows.num_rows:
            raise RuntimeError(f"trace {tid} not found in {lake}")
        total.append(t2 - t0)
        query.append(t2 - t1)
    return total, query


def ms(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1e3:.0f} ms, p90 {pct(values, 90) * 1e3:.0f} ms"


# -- main -----------------------------------------------------------------------------------------------
def without_worker_ner(config: Path, out: Path) -> Path:
    """A copy of the config whose worker-stage redact_pii instances detect patterns only."""
    import yaml

    doc = yaml.safe_load(config.read_text())
    for pid in doc["pipelines"]["traces"].get("process", []):
        if pid.split("/")[0] == "redact_pii":
            doc["processors"][pid] = {**(doc["processors"].get(pid) or {}), "ner": "off"}
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def iter_rates(text: str) -> Iterator[float]:
    for part in text.split(","):
        if part.strip():
            yield float(part)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "conf" / "tracelake.yaml"))
    ap.add_argument("--loads", default="5,40", help="spans/s offered, comma-separated (live part)")
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each live load")
    ap.add_argument("--apps", type=int, default=10)
    ap.add_argument("--export-interval", type=float, default=5.0)
    ap.add_argument("--sim-rate", type=float, default=200.0, help="spans/s of the simulated hour")
    ap.add_argument("--sim-minutes", type=float, default=75.0)
    ap.add_argument("--lookups", type=int, default=40)
    ap.add_argument("--skip-live", action="store_true")
    ap.add_argument("--skip-sim", action="store_true")
    ap.add_argument("--keep", help="write the lakes here and keep them")
    ap.add_argument(
        "--server-code", help="run `tracelake run` from this checkout (PYTHONPATH), e.g. the code before a change"
    )
    ap.add_argument(
        "--worker-ner-off",
        action="store_true",
        help='the config with `ner: "off"` for every redact_pii in the worker (patterns only), to load it past NER',
    )
    args = ap.parse_args(argv)

    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="freshness-"))
    base.mkdir(parents=True, exist_ok=True)
    config_path = Path(args.config).resolve()
    if args.worker_ner_off:
        config_path = without_worker_ner(config_path, base / "config-ner-off.yaml")
    os.environ.setdefault("TRACELAKE_HASH_KEY", "0" * 64)  # only for loading the config below
    config = load_config(config_path)
    sink_cfg = config.sinks["parquet"].config
    assert isinstance(sink_cfg, ParquetSinkConfig)
    comp = config.raw.compaction
    print(
        f"config {config_path}: process {config.pipeline.process}; sink flush_idle {sink_cfg.flush_idle:g}s "
        f"roll_seconds {sink_cfg.roll_seconds:g}s; worker trace_idle {config.raw.worker.trace_idle:g}s; "
        f"compaction interval {comp.interval:g}s older_than {comp.older_than:g}s grace {comp.grace:g}s"
    )
    try:
        if not args.skip_live:
            for rate in iter_rates(args.loads):
                work = base / f"live-{rate:g}"
                shutil.rmtree(work, ignore_errors=True)
                work.mkdir(parents=True)
                print_live(run_live(config_path, rate, args, work))
        if not args.skip_sim:
            t0 = time.perf_counter()
            pool = span_pool(3000, seed=1)
            print(
                f"\nsimulated hour: {args.sim_rate:g} spans/s for 60 min, then {args.sim_minutes - 60:g} min idle; "
                f"pool of {pool.num_rows} demo spans (built in {time.perf_counter() - t0:.1f}s)"
            )
            results = {}
            for label, compaction in (("compacted", comp), ("uncompacted", None)):
                lake = base / f"sim-{label}"
                shutil.rmtree(lake, ignore_errors=True)
                t0 = time.perf_counter()
                res = simulate(lake, pool, args.sim_rate, args.sim_minutes, sink_cfg, compaction)
                results[label] = res
                print(f"  {label} ({time.perf_counter() - t0:.0f}s real):")
                for minute, files in res.samples:
                    print(
                        f"    minute {minute:3d}: files in the hour: " + ", ".join(f"{t} {n}" for t, n in files.items())
                    )
                print(
                    "    most live files in the hour while it was open (sampled every 10 s): "
                    + ", ".join(f"{t} {n}" for t, n in res.max_open_files.items())
                )
                print(f"    sink: {res.sink_files} files, {res.sink_bytes / 1e6:.1f} MB")
                if compaction is not None:
                    print(
                        f"    compaction: {res.compaction_runs} runs, {res.compaction_bytes / 1e6:.1f} MB written "
                        f"({res.compaction_bytes / max(res.sink_bytes, 1):.2f}x the sink's bytes), "
                        f"{res.compaction_seconds:.1f}s wall"
                    )
            ids = results["compacted"].trace_ids
            print(f"\nlookups: SELECT * FROM spans WHERE trace_id = ? ({args.lookups} random trace ids of the hour)")
            for label in ("compacted", "uncompacted"):
                total, query = lookups(base / f"sim-{label}", ids, args.lookups)
                print(f"  {label:11s}: connect + query {ms(total)}; query alone {ms(query)}")
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
