"""Throughput of tracelake end to end: traffic shapes × processor chains × worker processes × bus, in one run.

    python benchmarks/throughput.py [--quick] [--shapes demo,prompt-heavy]
                                    [--chains empty,redact,pattern,shipped,shipped-ingest]
                                    [--processes 1,auto] [--buses embedded,kafka] [--rounds 1]
                                    [--traces 15000] [--ner-traces 4000] [--warmup-traces 300] [--clients 2]
                                    [--seed 0] [--wait-quiet 0.5] [--timeline] [--skip-in-process]
                                    [--profile floor|worker] [--py-spy DIR] [--server-code DIR]

Traffic (benchmarks/traffic.py): `demo` (the `tracelake demo` generator: three applications, 512-span
requests) and `prompt-heavy` (a support assistant: 4 spans per trace with a 1.4 KB system prompt, a unique
0.7 KB user message holding a name, an email and a card number, a retrieved article, JSON tool calls).
The `shipped` chain runs on the first --ner-traces traces (NER is slow), the others on --traces.

Chains (each a whole config: conf/tracelake.yaml with its processors and pipeline replaced, so that bus,
memory limiter, sinks and worker settings are the shipped ones):
  empty     no processor
  redact    redact_pii {ner: off} alone (issue 12 item 4: the pattern-only chain against the empty chain)
  pattern   redact_pii {ner: off}, cost, tail_sampling (errors, thumbs-down, 10% baseline),
            offload_artifacts, all in the worker
  shipped   conf/tracelake.yaml as shipped: redact_pii with NER, cost, tail_sampling (100% baseline),
            offload_artifacts in the worker processes, nothing in the receiver
  shipped-ingest  the same plus a pattern-only redact_pii in the receiver's `ingest` (what a Kafka deployment
            runs so the brokers never store raw PII): what that stage costs the receiver's ack rate

(1) in-process, one thread, no network (skip with --skip-in-process): the floor (decode → normalize →
    Parquet, per stage) and, per chain, the worker the server builds (`pipeline.build.build_worker` from the
    same config) draining a pre-filled embedded bus. Spans per CPU-second here is what one worker
    process can do on one core.
(2) `tracelake run` (embedded bus) for every chain and `worker.processes` value, fed by --clients
    processes that send the pre-built requests as raw bytes over gRPC (benchmarks/harness.py). Each
    server first gets an untimed warm-up burst (other traces; models, caches and pages get loaded) and
    goes idle. Then, from the first send of the timed burst:
      accepted  the last OK answer (the bus holds 1M spans / 1 GiB as shipped: it has room throughout;
                refusals are retried and counted); "slowest 1 s" is the lowest ack rate over whole
                seconds of the burst
      durable   SIGTERM right after the last OK; the server drains, writes and exits. Then the lake is
                checked with DuckDB: every span (warm-up included) is in spans/ or _holdback/ and
                every trace has one summary; rows a replay wrote twice (at-least-once, the views count
                them once) are printed as "replayed"
      CPU       all processes of the server (receiver process + worker processes), from /proc:
                spans per CPU-second, and the split receiver / workers
(3) with `kafka` in --buses, every chain and processes value runs twice more, measured alike while the
    server keeps running (a Kafka worker does not drain its topic on stop, and its tail sampling keeps
    pending traces for the next owner): `tracelake receiver` + `tracelake worker` on a Tansu broker
    (tests/kafka_broker.py, lz4, 4 partitions), and `tracelake run` beside it. "durable" is then the moment
    everything is committed (Kafka: the group's committed offsets reach the end of every partition;
    embedded: `tracelake_bus_held_spans` is 0), with parquet `roll_seconds: 1s`, `trace_idle: 1s`,
    `decision_wait: 1s` and 1 s commits on both, so both carry the same ~2 s of fixed latency.

--rounds N repeats (2) and (3) N times, interleaved; every round's ratios come from that round.
--py-spy DIR records every server process during each timed burst with py-spy (pip install py-spy) and
prints the functions most often on-CPU per process; profiled runs are slower (py-spy shares the cores).
--server-code DIR: the servers of (2) and (3) run another checkout's `tracelake` (its .venv, its shipped
config) with this script's clients and traffic; benchmarks/before_after.py interleaves two checkouts.
"""

from __future__ import annotations

# first, as in `tracelake run`: importing pipeline configures Arrow's jemalloc before pyarrow loads
import pipeline  # noqa: F401

# isort: split
import argparse
import cProfile
import io
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO)]

from benchmarks import harness  # noqa: E402
from benchmarks.traffic import SHAPES, build, describe  # noqa: E402
from pipeline.service import use_server_memory_pool  # noqa: E402
from tests.conftest import RunningTracelake  # noqa: E402

SHIPPED = REPO / "conf" / "tracelake.yaml"
HASH_KEY = "benchmark-only-key-0123456789abcdef0123456789abcdef"
CHAINS = ("empty", "redact", "pattern", "shipped", "shipped-ingest")
PATTERN_PROCESSORS: dict[str, Any] = {
    "redact_pii": {"ner": "off"},
    "cost": {},
    "tail_sampling": {
        "decision_wait": "5s",
        "late_feedback_window": "24h",
        "policies": [
            {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
            {"name": "thumbs_down", "type": "feedback", "feedback": {"max_value": 0}},
            {"name": "baseline", "type": "probabilistic", "probabilistic": {"sampling_percentage": 10}},
        ],
    },
    "offload_artifacts": {"min_bytes": "4KiB", "store": "${env:TRACELAKE_LAKE:-./lake}/_artifacts"},
}
KAFKA_PARTITIONS = 4
READY_S = 180  # a loaded 2-core machine takes a while to import spaCy and Presidio
KAFKA_GROUP_SETTINGS = {"max.poll.interval.ms": 120000, "heartbeat.interval.ms": 500}


@dataclass(frozen=True)
class ServerCode:
    """Which checkout's `tracelake` the servers run (--server-code; benchmarks/before_after.py runs two):
    `python` has it installed (its virtualenv), `shipped` is its conf/tracelake.yaml, which every chain's
    config starts from, and `settings` are merged over each config (nested mappings, key by key)."""

    python: str = sys.executable
    shipped: Path = SHIPPED
    settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def checkout(cls, root: Path, settings: dict[str, Any] | None = None) -> ServerCode:
        """The checkout at `root` with its own virtualenv (`root/.venv`)."""
        return cls(str(root / ".venv" / "bin" / "python"), root / "conf" / "tracelake.yaml", settings or {})


def merge(doc: dict[str, Any], settings: dict[str, Any]) -> None:
    """`settings` into `doc` in place: mappings merged key by key, anything else replaced."""
    for key, value in settings.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            merge(doc[key], value)
        else:
            doc[key] = value


# -- configs ---------------------------------------------------------------------------------------
def server_config(
    chain: str, processes: str, bus: dict[str, Any] | None = None, running: bool = False, code: ServerCode | None = None
) -> str:
    """conf/tracelake.yaml (`code.shipped`) with the chain's processors, `worker.processes`, and optionally
    another bus. `running`: short roll/idle/decision times, for measuring while the server runs. Ports, lake
    and hash key come from the environment (`server_env`), as the shipped file reads them."""
    code = code or ServerCode()
    doc = yaml.safe_load(code.shipped.read_text())
    traces = doc["pipelines"]["traces"]
    if chain == "empty":
        doc["processors"] = {}
        traces["ingest"], traces["process"] = [], []
    elif chain == "pattern":
        doc["processors"] = yaml.safe_load(yaml.safe_dump(PATTERN_PROCESSORS))
        traces["ingest"], traces["process"] = [], list(PATTERN_PROCESSORS)
    elif chain == "redact":
        doc["processors"] = {"redact_pii": dict(PATTERN_PROCESSORS["redact_pii"])}
        traces["ingest"], traces["process"] = [], ["redact_pii"]
    elif chain == "shipped-ingest":
        doc["processors"]["redact_pii/ingest"] = {**doc["processors"]["redact_pii"], "ner": "off"}
        traces["ingest"] = ["redact_pii/ingest"]
    elif chain != "shipped":
        raise ValueError(f"unknown chain {chain!r}; known: {', '.join(CHAINS)}")
    doc["worker"]["processes"] = processes if processes == "auto" else int(processes)
    if bus is not None:
        doc["bus"] = bus
    if running:
        doc["sinks"]["parquet"]["roll_seconds"] = "1s"
        doc["worker"]["trace_idle"] = "1s"
        if "tail_sampling" in doc["processors"]:
            doc["processors"]["tail_sampling"]["decision_wait"] = "1s"
    merge(doc, code.settings)
    return yaml.safe_dump(doc, sort_keys=False)


def server_env(lake: Path) -> dict[str, str]:
    return {
        "TRACELAKE_GRPC_ENDPOINT": "127.0.0.1:0",
        "TRACELAKE_HTTP_ENDPOINT": "127.0.0.1:0",
        "TRACELAKE_TELEMETRY_ENDPOINT": "127.0.0.1:0",
        "TRACELAKE_LAKE": str(lake),
        "TRACELAKE_HASH_KEY": HASH_KEY,
    }


def kafka_bus(address: str, topic: str) -> dict[str, Any]:
    return {
        "type": "kafka",
        "brokers": address,
        "topic": topic,
        "group": f"g-{topic}",
        "partitions": KAFKA_PARTITIONS,
        "session_timeout": "10s",
        "delivery_timeout": "10s",
        "commit_interval": "1s",  # the embedded bus's worker commits every second too
        "compression": "lz4",
        "consumer": KAFKA_GROUP_SETTINGS,
    }


# -- traffic ---------------------------------------------------------------------------------------
@dataclass
class Traffic:
    shape: str
    file: Path  # the timed burst, for the client processes
    warmup: Path  # other traces, sent untimed first
    spans: int
    traces: int
    warm_spans: int
    warm_traces: int
    requests: list[bytes]


def prepare(shape: str, traces: int, seed: int, workdir: Path, warm_traces: int) -> Traffic:
    requests = build(shape, traces, seed)
    warm = build(shape, warm_traces, seed + 7919)
    file, warm_file = workdir / f"{shape}-{traces}.bin", workdir / f"{shape}-{traces}-warm.bin"
    harness.write_requests(file, requests)
    harness.write_requests(warm_file, warm)
    return Traffic(
        shape, file, warm_file, sum(map(harness.span_count, requests)), _traces(requests),
        sum(map(harness.span_count, warm)), _traces(warm), requests,
    )  # fmt: skip


def _traces(requests: list[bytes]) -> int:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    ids = set()
    for body in requests:
        req = ExportTraceServiceRequest.FromString(body)
        ids.update(sp.trace_id for rs in req.resource_spans for ss in rs.scope_spans for sp in ss.spans)
    return len(ids)


# -- (1) in-process --------------------------------------------------------------------------------
def in_process(traffic: Traffic, chains: list[str], ner_traffic: Traffic, workdir: Path, profile: str | None) -> None:
    from pipeline.build import build_worker
    from pipeline.bus.embedded import EmbeddedBus
    from pipeline.config import load

    batches = harness.worker_batches(traffic.requests)
    floor = harness.worker_path(batches, [], workdir / "lake-floor")
    print(f"  (1) in-process, one thread, batches of {harness.BATCH_SPANS} spans")
    stages = ", ".join(f"{k} {floor.spans / v:,.0f}/s" for k, v in floor.stages.items() if v and k != "chain")
    print(f"      floor (decode → normalize → Parquet) {floor.spans / floor.wall:9,.0f} spans/s, "
          f"{floor.spans / floor.cpu:9,.0f} per CPU-s; per stage: {stages}")  # fmt: skip
    if profile == "floor":
        prof = cProfile.Profile()
        prof.enable()
        harness.worker_path(batches, [], workdir / "lake-floor")
        prof.disable()
        print_stats("floor", prof)
    for chain in chains:
        t = ner_traffic if chain.startswith("shipped") else traffic
        lake = workdir / f"lake-inproc-{chain}"
        shutil.rmtree(lake, ignore_errors=True)
        cfg_file = workdir / f"inproc-{chain}.yaml"
        cfg_file.write_text(server_config(chain, "1"))
        os.environ.update(server_env(lake))  # as the server's processes get it; processors read it when built
        config = load(cfg_file)
        bus = EmbeddedBus(1, 10**9, 2**40)
        worker = build_worker(config, bus.reader(0))
        for body, n in harness.read_requests(t.warmup):  # warm: models, caches; not timed
            bus.publish(None, body, n)  # type: ignore[arg-type]
        while worker.step():
            pass
        for body in t.requests:
            bus.publish(None, body, harness.span_count(body))  # type: ignore[arg-type]
        bus.close()
        prof = cProfile.Profile() if profile == "worker" else None
        t0, cpu0 = time.perf_counter(), time.process_time()
        if prof is not None:
            prof.enable()
        worker.run()
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        if prof is not None:
            prof.disable()
            print_stats(f"worker in-process, {chain}", prof)
        if worker.error is not None:
            raise RuntimeError(f"in-process worker ({chain}) failed: {worker.error}")
        print(f"      worker, {chain:<8} {t.spans / wall:9,.0f} spans/s, {t.spans / cpu:9,.0f} per CPU-s "
              f"({t.spans} spans)")  # fmt: skip


def print_stats(title: str, prof: cProfile.Profile, top: int = 25) -> None:
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    text = buf.getvalue()
    print(f"\n--- {title}: top {top} by own time ---")
    print(text[text.find("   ncalls") :] if "   ncalls" in text else text)


# -- (2), (3) servers ------------------------------------------------------------------------------
@dataclass
class Run:
    shape: str
    chain: str
    processes: str
    bus: str  # "embedded" (durable = drained exit), "embedded running" / "kafka" (durable = committed)
    spans: int
    accepted_s: float
    slowest_ack: float | None
    retries: int
    durable_s: float
    drain_s: float | None  # SIGTERM → exit (embedded); None when measured while running
    receiver_cpu: float
    worker_cpu: float
    broker_cpu: float
    others: float  # cores busy with work that is not ours (other people's processes, steal) during the run
    problems: list[str] = field(default_factory=list)
    replayed: int = 0  # span rows written twice (a replay after a rebalance or restart; the views count them once)

    @property
    def cpu(self) -> float:
        return self.receiver_cpu + self.worker_cpu

    @property
    def durable_rate(self) -> float:
        return self.spans / self.durable_s

    @property
    def accepted_rate(self) -> float:
        return self.spans / self.accepted_s


class Spy:
    """py-spy recording every process of a server tree during the timed burst (--py-spy)."""

    def __init__(self, out: Path | None, label: str) -> None:
        self.out, self.label = out, label
        self.procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        beside = Path(sys.executable).parent / "py-spy"  # installed into the same virtualenv
        self.exe = str(beside) if beside.exists() else (shutil.which("py-spy") or "py-spy")

    def start(self, roles: dict[str, int]) -> None:
        if self.out is None:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        for role, pid in roles.items():
            path = self.out / f"{self.label}.{role}.txt"
            cmd = [self.exe, "record", "--pid", str(pid), "--rate", "50", "--format", "raw", "-o", str(path)]
            self.procs.append((role, subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), path))

    def stop(self) -> None:
        for _, p, _ in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for role, p, path in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
            if path.exists():
                print_spy(f"{self.label} {role}", path)
        self.procs = []


class Timeline:
    """Cores used by each server process, sampled every 0.25 s (--timeline)."""

    STEP = 0.25

    def __init__(self, roles: dict[str, int]) -> None:
        self.roles = roles
        self.samples: list[tuple[float, dict[str, float], float]] = []
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.is_set():
            cpu = {r: harness.own_cpu(p) for r, p in self.roles.items()}
            self.samples.append((time.monotonic(), cpu, harness.busy_cores_seconds()))
            self._stop.wait(self.STEP)

    def print(self, label: str, t0: float, acked: float, done: float) -> None:
        self._stop.set()
        print(f"    timeline {label}: cores per process every {self.STEP}s from the first send "
              f"(last OK at {acked - t0:.2f}s, durable at {done - t0:.2f}s; 'machine': all processes)")  # fmt: skip
        print("      " + "".join(f"{r:>9}" for r in ["t", *self.roles, "machine"]))
        for (t1, c1, m1), (t2, c2, m2) in zip(self.samples, self.samples[1:], strict=False):
            if t2 < t0 or t1 > done:
                continue
            dt = t2 - t1
            cells = [f"{t2 - t0:9.2f}"] + [f"{max(0.0, c2[r] - c1[r]) / dt:9.2f}" for r in self.roles]
            print("      " + "".join(cells) + f"{(m2 - m1) / dt:9.2f}")


def print_spy(title: str, path: Path, top: int = 12) -> None:
    """Functions by samples on top of the stack (own) and anywhere in it (total), from py-spy's raw output."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        samples += int(n)
        own[frames[-1]] += int(n)
        for f in set(frames):
            total[f] += int(n)
    print(f"    py-spy {title}: {samples} samples ({path})")
    for f, n in own.most_common(top):
        print(f"      {n / samples:6.1%} own {total[f] / samples:6.1%} total  {f}")


def server_roles(pid: int) -> dict[str, int]:
    """The receiving process and its worker processes (children that run pipeline code)."""
    roles = {"receiver": pid}
    for i, child in enumerate(p for p in harness.process_tree(pid) if p != pid and _is_worker(p)):
        roles[f"worker{i}"] = child
    return roles


def _is_worker(pid: int) -> bool:
    try:
        return (
            b"multiprocessing" in Path(f"/proc/{pid}/cmdline").read_bytes()
            and b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()
        )
    except OSError:
        return False


def metric(address: str, name: str) -> float:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " "))


def _warm(tl: RunningTracelake, setup: Setup) -> None:
    """Untimed: other traces through every worker process (models, caches, pages), before the timed burst."""
    burst = harness.send_burst(setup.traffic.warmup, tl.grpc, setup.clients)
    if burst.spans != setup.traffic.warm_spans:
        raise RuntimeError(f"warm-up: {burst.spans} of {setup.traffic.warm_spans} spans acknowledged")


def _check_lake(run: Run, lake: Path, traffic: Traffic) -> None:
    """Every span sent is in the lake, each trace has one summary. Rows written twice by a replay are
    allowed (at-least-once; the views count them once) and reported in the row as `replayed`."""
    c = harness.count_lake(lake)
    spans, traces = traffic.spans + traffic.warm_spans, traffic.traces + traffic.warm_traces
    if c.distinct_spans != spans:
        run.problems.append(f"lake: {c.distinct_spans} distinct spans, {spans} sent")
    if c.traces != traces:
        run.problems.append(f"lake: {c.traces} trace summaries, {traces} traces sent")
    run.replayed = c.span_rows - c.distinct_spans


@dataclass
class Setup:
    """One cell of the matrix and how to run it."""

    traffic: Traffic
    chain: str
    processes: str
    clients: int
    workdir: Path
    spy: Path | None
    quiet: float  # wait until other work on the machine uses under this many cores (0: don't)
    broker: Any = None
    timeline: bool = False  # print each server process's CPU over the run
    code: ServerCode = field(default_factory=ServerCode)  # whose `tracelake` runs, from which shipped config


@dataclass
class CpuSnapshot:
    receiver: float  # the receiving process (`tracelake run` itself, or `tracelake receiver`'s tree)
    total: float  # receiver and worker processes
    broker: float = 0.0


def _timed(
    setup: Setup,
    bus: str,
    ingress: RunningTracelake,
    roles: dict[str, int],
    cpu: Callable[[], CpuSnapshot],
    finish: Callable[[], tuple[float, float | None, CpuSnapshot]],
) -> Run:
    """The timed burst, alike in every mode. `finish` waits for durability and returns (its monotonic time,
    the drain after SIGTERM or None, the CPU snapshot at that moment)."""
    others = harness.wait_quiet(setup.quiet, 300) if setup.quiet > 0 else None
    if others is not None and others >= setup.quiet:
        print(f"    (machine still busy with other work: {others:.2f} cores; measuring anyway)", flush=True)
    c0 = cpu()
    label = f"{setup.traffic.shape}-{setup.chain}-{setup.processes}-{bus.replace(' ', '-')}"
    profiler = Spy(setup.spy, label)
    profiler.start(roles)
    timeline = Timeline(roles) if setup.timeline else None
    burst = harness.send_burst(setup.traffic.file, ingress.grpc, setup.clients, then=finish)
    done, drain, c1 = burst.then
    profiler.stop()
    if timeline is not None:
        timeline.print(label, burst.t0, burst.acks[-1][0], done)
    receiver, total, broker = c1.receiver - c0.receiver, c1.total - c0.total, c1.broker - c0.broker
    durable = done - burst.t0
    others_cores = (burst.machine_cpu - total - broker - burst.bench_cpu) / durable
    return Run(
        setup.traffic.shape, setup.chain, setup.processes, bus, burst.spans, burst.accepted_s, burst.slowest_window(),
        burst.retries, durable, drain, receiver, total - receiver, broker, others_cores,
    )  # fmt: skip


def _stopped(run: Run, servers: list[RunningTracelake], lake: Path, traffic: Traffic, codes: list[int]) -> Run:
    run.problems += [f"{tl.config.stem} exited with {code}:\n" + "".join(tl.log_lines[-20:])
                     for tl, code in zip(servers, codes, strict=True) if code != 0]  # fmt: skip
    _check_lake(run, lake, traffic)
    return run


def _kill(servers: list[RunningTracelake]) -> None:
    for tl in servers:
        if tl.proc.poll() is None:
            tl.proc.kill()
            tl.proc.wait()


def _server(setup: Setup, workdir: Path, config: str, env: dict[str, str], command: str = "run") -> RunningTracelake:
    return RunningTracelake(
        workdir, config, env=env, command=command, name=command, ready_timeout=READY_S, python=setup.code.python
    )


def run_embedded(setup: Setup) -> Run:
    """`tracelake run`; durable = SIGTERM right after the last OK → drained exit."""
    setup.workdir.mkdir(parents=True)
    config = server_config(setup.chain, setup.processes, code=setup.code)
    tl = _server(setup, setup.workdir, config, server_env(setup.workdir / "lake"))
    pid = tl.proc.pid
    ends: list[harness.Exit] = []

    def finish() -> tuple[float, float | None, CpuSnapshot]:
        term = time.monotonic()
        ends.append(harness.terminate(tl.proc))
        return ends[0].at, ends[0].at - term, CpuSnapshot(ends[0].own_cpu, ends[0].tree_cpu)

    try:
        _warm(tl, setup)
        harness.wait_idle(lambda: [pid])
        run = _timed(setup, "embedded", tl, server_roles(pid), lambda: CpuSnapshot(
            harness.own_cpu(pid), harness.tree_cpu(pid)), finish)  # fmt: skip
    finally:
        _kill([tl])
    return _stopped(run, [tl], tl.lake, setup.traffic, [ends[0].code])


def run_embedded_running(setup: Setup) -> Run:
    """`tracelake run`; durable = the embedded bus holds nothing that is not committed (server running)."""
    setup.workdir.mkdir(parents=True)
    config = server_config(setup.chain, setup.processes, running=True, code=setup.code)
    tl = _server(setup, setup.workdir, config, server_env(setup.workdir / "lake"))
    pid = tl.proc.pid

    def cpu() -> CpuSnapshot:
        return CpuSnapshot(harness.own_cpu(pid), harness.tree_cpu(pid))

    def committed() -> bool:
        return metric(tl.telemetry, "tracelake_bus_held_spans") == 0

    def finish() -> tuple[float, float | None, CpuSnapshot]:
        done = harness.wait_until(committed, 1800, "everything committed", 0.05)
        return done, None, cpu()

    try:
        _warm(tl, setup)
        harness.wait_until(committed, 300, "the warm-up committed")
        harness.wait_idle(lambda: [pid])
        run = _timed(setup, "embedded running", tl, server_roles(pid), cpu, finish)
        code = tl.stop(timeout=300)
    finally:
        _kill([tl])
    return _stopped(run, [tl], tl.lake, setup.traffic, [code])


def kafka_committed(address: str, topic: str, group: str) -> Any:
    """A check: has `group` committed every partition of `topic` up to its end?"""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": address, "group.id": group, "enable.auto.commit": False})
    tps = [TopicPartition(topic, p) for p in range(KAFKA_PARTITIONS)]

    def check() -> bool:
        committed = consumer.committed(tps, timeout=5)
        for tp, c in zip(tps, committed, strict=True):
            _low, high = consumer.get_watermark_offsets(tp, timeout=5, cached=False)
            if high > 0 and c.offset < high:
                return False
        return True

    check.close = consumer.close  # type: ignore[attr-defined]
    return check


def run_kafka(setup: Setup) -> Run:
    """`tracelake receiver` + `tracelake worker`; durable = the group committed every partition to its end."""
    broker = setup.broker
    topic = f"bench_{os.getpid()}_{int(time.time() * 1000) % 10**8}"
    bus = kafka_bus(broker.address, topic)
    config = server_config(setup.chain, setup.processes, bus=bus, running=True, code=setup.code)
    env = server_env(setup.workdir / "lake")
    (setup.workdir / "receiver").mkdir(parents=True)
    receiver = _server(setup, setup.workdir / "receiver", config, env, "receiver")
    servers = [receiver]
    committed = kafka_committed(broker.address, topic, bus["group"])
    try:
        worker = _server(setup, setup.workdir, config, env, "worker")
        servers.append(worker)
        pids = (receiver.proc.pid, worker.proc.pid)

        def cpu() -> CpuSnapshot:
            recv = harness.tree_cpu(pids[0])
            return CpuSnapshot(recv, recv + harness.tree_cpu(pids[1]), harness.own_cpu(broker.proc.pid))

        def finish() -> tuple[float, float | None, CpuSnapshot]:
            done = harness.wait_until(committed, 1800, "everything committed", 0.05)
            return done, None, cpu()

        members = worker.log.count("started (pid")

        def assigned() -> int:
            return len({line.split()[3] for line in worker.log_lines if "assigned partitions" in line})

        harness.wait_until(lambda: assigned() >= members, 120, f"{members} consumer-group members assigned")
        _warm(receiver, setup)
        harness.wait_until(committed, 300, "the warm-up committed", 0.2)
        harness.wait_idle(lambda: [*pids, broker.proc.pid])
        roles = {"receiver": pids[0], **{k: v for k, v in server_roles(pids[1]).items() if k != "receiver"}}
        run = _timed(setup, "kafka", receiver, roles, cpu, finish)
        codes = [tl.stop(timeout=300) for tl in servers]
    finally:
        committed.close()
        _kill(servers)
    return _stopped(run, servers, worker.lake, setup.traffic, codes)


# -- report ----------------------------------------------------------------------------------------
HEAD = (
    f"{'shape':<13}{'chain':<8}{'proc':>5} {'bus':<17}{'accepted/s':>11}{'slowest 1s':>11}{'refused':>8}"
    f"{'durable/s':>11}{'drain s':>8}{'CPU s':>7}{'spans/CPU-s':>12}{'recv CPU':>9}{'work CPU':>9}{'cores':>6}"
    f"{'others':>7}"
)


def line(r: Run) -> str:
    slow = f"{r.slowest_ack:,.0f}" if r.slowest_ack is not None else "-"
    drain = f"{r.drain_s:.2f}" if r.drain_s is not None else "-"
    extra = f"  broker {r.broker_cpu:.1f}s" if r.bus == "kafka" else ""
    ok = f"  replayed {r.replayed} rows" if r.replayed else ""
    ok += "" if not r.problems else "  PROBLEM: " + "; ".join(r.problems)
    return (
        f"{r.shape:<13}{r.chain:<8}{r.processes:>5} {r.bus:<17}{r.accepted_rate:>11,.0f}{slow:>11}{r.retries:>8}"
        f"{r.durable_rate:>11,.0f}{drain:>8}{r.cpu:>7.1f}{r.spans / r.cpu:>12,.0f}{r.receiver_cpu:>9.1f}"
        f"{r.worker_cpu:>9.1f}{r.cpu / r.durable_s:>6.2f}{r.others:>7.2f}{extra}{ok}"
    )


def summary(rounds: list[list[Run]]) -> None:
    """Per cell: the range over rounds; then the ratios the issue's targets are stated in, per round."""
    cells: dict[tuple[str, str, str, str], list[Run]] = {}
    for rnd in rounds:
        for r in rnd:
            cells.setdefault((r.shape, r.chain, r.processes, r.bus), []).append(r)
    if len(rounds) > 1:
        print(f"\n== ranges over {len(rounds)} rounds (min–max) ==")
        print(f"{'shape':<13}{'chain':<8}{'proc':>5} {'bus':<17}{'accepted/s':>19}{'durable/s':>19}{'spans/CPU-s':>19}")
        for (shape, chain, proc, bus), runs in cells.items():

            def rng(vals: list[float]) -> str:
                return f"{min(vals):,.0f}–{max(vals):,.0f}"

            print(
                f"{shape:<13}{chain:<8}{proc:>5} {bus:<17}{rng([r.accepted_rate for r in runs]):>19}"
                f"{rng([r.durable_rate for r in runs]):>19}{rng([r.spans / r.cpu for r in runs]):>19}"
            )
    print("\n== ratios within each round ==")
    for i, rnd in enumerate(rounds, 1):
        by = {(r.shape, r.chain, r.processes, r.bus): r for r in rnd}
        out = []
        for (shape, chain, proc, bus), r in by.items():
            if proc == "auto" and (one := by.get((shape, chain, "1", bus))):
                out.append(f"{shape} {chain} {bus}: auto / 1 = {r.durable_rate / one.durable_rate:.2f}")
            if chain != "empty" and (empty := by.get((shape, "empty", proc, bus))):
                out.append(
                    f"{shape} {chain} processes {proc} {bus}: / empty = {r.durable_rate / empty.durable_rate:.2f} "
                    f"durable, {(r.spans / r.cpu) / (empty.spans / empty.cpu):.2f} per CPU-s"
                )
            if bus == "kafka" and (emb := by.get((shape, chain, proc, "embedded running"))):
                out.append(
                    f"{shape} {chain} processes {proc}: kafka / embedded = {r.durable_rate / emb.durable_rate:.2f}"
                    f" (accepted {r.accepted_rate / emb.accepted_rate:.2f})"
                )
        for s in out:
            print(f"  round {i}: {s}")
    print("\n== targets (issue 12), per round ==")
    for i, rnd in enumerate(rounds, 1):
        by = {(r.shape, r.chain, r.processes, r.bus): r for r in rnd}
        p_auto, p_one = by.get(("demo", "pattern", "auto", "embedded")), by.get(("demo", "pattern", "1", "embedded"))
        if p_auto and p_one:
            ratio = p_auto.durable_rate / p_one.durable_rate
            print(f"  round {i}: pattern chain, demo, auto: {p_auto.durable_rate:,.0f} spans/s durable "
                  f"(target ≥ 25,000: {_met(p_auto.durable_rate >= 25000)}), {ratio:.2f}× processes 1 "
                  f"(target ≥ 1.7: {_met(ratio >= 1.7)})")  # fmt: skip
        for name in ("shipped", "shipped-ingest"):
            if not (s := by.get(("prompt-heavy", name, "auto", "embedded"))):
                continue
            slow = s.slowest_ack if s.slowest_ack is not None else s.accepted_rate
            print(f"  round {i}: {name} chain, prompt-heavy, auto: {s.durable_rate:,.0f} spans/s durable "
                  f"(target ≥ 2,000: {_met(s.durable_rate >= 2000)}); receiver acks {s.accepted_rate:,.0f}/s, "
                  f"slowest second {slow:,.0f}/s with {s.retries} refusals "
                  f"(target ≥ 20,000: {_met(slow >= 20000)})")  # fmt: skip
        for (shape, chain, proc, bus), r in by.items():
            if shape == "prompt-heavy" and chain == "redact" and (empty := by.get((shape, "empty", proc, bus))):
                ratio, cpu = r.durable_rate / empty.durable_rate, (r.spans / r.cpu) / (empty.spans / empty.cpu)
                met = _met(ratio >= 0.75)
                print(f"  round {i}: redact_pii patterns only, prompt-heavy, processes {proc}, {bus}: {ratio:.2f} "
                      f"of the empty chain's spans/s (target ≥ 0.75: {met}), {cpu:.2f} per CPU-s")  # fmt: skip
        for (shape, chain, proc, bus), k in by.items():
            if bus == "kafka" and chain == "pattern" and (emb := by.get((shape, chain, proc, "embedded running"))):
                ratio = k.durable_rate / emb.durable_rate
                print(f"  round {i}: kafka, pattern chain, {shape}, processes {proc}: {ratio:.2f} of embedded "
                      f"(target ≥ 0.80: {_met(ratio >= 0.8)})")  # fmt: skip


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


# -- main ------------------------------------------------------------------------------------------
def _list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


QUICK = {
    "chains": "empty,pattern,shipped",
    "processes": "auto",
    "buses": "embedded",
    "traces": 3000,
    "ner_traces": 600,
    "warmup_traces": 100,
    "skip_in_process": True,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a few minutes: " + " ".join(f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}")
                                          for k, v in QUICK.items()) + " (flags given win)",
    )  # fmt: skip
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--chains", default=",".join(CHAINS))
    ap.add_argument("--processes", default="1,auto", help="worker.processes values (1, 2, ..., auto)")
    ap.add_argument("--buses", default="embedded,kafka")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the server runs, interleaved")
    ap.add_argument("--traces", type=int, default=15000, help="traces per shape (demo ~3.5 spans, prompt-heavy 4)")
    ap.add_argument("--ner-traces", type=int, default=4000, help="traces for the shipped chain (NER)")
    ap.add_argument("--warmup-traces", type=int, default=300)
    ap.add_argument("--clients", type=int, default=2, help="client processes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--wait-quiet",
        type=float,
        default=0.5,
        metavar="CORES",
        help="before each timed burst, wait (up to 5 min) until other work uses under CORES cores; 0: don't",
    )
    ap.add_argument("--timeline", action="store_true", help="print each server process's CPU over each run")
    ap.add_argument("--skip-in-process", action="store_true")
    ap.add_argument("--profile", choices=["floor", "worker"], default=None, help="cProfile of (1)")
    ap.add_argument("--py-spy", type=Path, default=None, metavar="DIR", help="py-spy every server process")
    ap.add_argument(
        "--server-code",
        type=Path,
        default=None,
        metavar="DIR",
        help="servers run that checkout's tracelake (DIR/.venv/bin/python) from its conf/tracelake.yaml, e.g. the "
        "code before a change; (1) in-process still runs this checkout (benchmarks/before_after.py compares two)",
    )
    if ap.parse_known_args(argv)[0].quick:
        ap.set_defaults(**QUICK)
    args = ap.parse_args(argv)
    shapes, chains, procs, buses = _list(args.shapes), _list(args.chains), _list(args.processes), _list(args.buses)
    for c in chains:
        if c not in CHAINS:
            ap.error(f"unknown chain {c!r}; known: {', '.join(CHAINS)}")
    for b in buses:
        if b not in ("embedded", "kafka"):
            ap.error(f"unknown bus {b!r}; known: embedded, kafka")
    pool = use_server_memory_pool()
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; Arrow memory pool {pool}; "
          f"{args.clients} client processes")  # fmt: skip
    code = ServerCode.checkout(args.server_code.resolve()) if args.server_code else ServerCode()
    workdir = Path(tempfile.mkdtemp(prefix="tracelake-throughput-"))
    broker = None
    rounds: list[list[Run]] = [[] for _ in range(args.rounds)]
    failed: list[str] = []
    try:
        traffic: dict[tuple[str, bool], Traffic] = {}
        for shape in shapes:
            t0 = time.perf_counter()
            traffic[(shape, False)] = prepare(shape, args.traces, args.seed, workdir, args.warmup_traces)
            n = min(args.ner_traces, args.traces)
            traffic[(shape, True)] = (
                prepare(shape, n, args.seed, workdir, args.warmup_traces)
                if any(c.startswith("shipped") for c in chains)
                else traffic[(shape, False)]
            )
            print(
                f"\n== {shape}: {describe(traffic[(shape, False)].requests)} (built in {time.perf_counter() - t0:.0f}s)"
            )
            if any(c.startswith("shipped") for c in chains):
                print(f"   shipped chain on {n} traces: {traffic[(shape, True)].spans:,} spans")
            if not args.skip_in_process:
                in_process(traffic[(shape, False)], chains, traffic[(shape, True)], workdir / shape, args.profile)
        if "kafka" in buses:
            from tests.kafka_broker import Broker

            broker = Broker()
        print(f"\n{HEAD}")
        k = 0
        for rnd in rounds:
            for shape in shapes:
                for chain in chains:
                    t = traffic[(shape, chain.startswith("shipped"))]
                    for proc in procs:
                        todo = []
                        if "embedded" in buses:
                            todo.append(run_embedded)
                        if "kafka" in buses:
                            todo += [run_embedded_running, run_kafka]
                        for fn in todo:
                            k += 1
                            cell = Setup(t, chain, proc, args.clients, workdir / f"run{k}", args.py_spy,
                                         args.wait_quiet, broker, args.timeline, code)  # fmt: skip
                            try:
                                r = fn(cell)
                            except Exception as e:  # one cell failing must not lose the rest of a long run
                                failed.append(f"{t.shape} {chain} {proc} {fn.__name__}: {type(e).__name__}: {e}")
                                print(f"FAILED {failed[-1][:2000]}", flush=True)
                                continue
                            finally:
                                shutil.rmtree(workdir / f"run{k}", ignore_errors=True)
                            rnd.append(r)
                            print(line(r), flush=True)
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    summary([r for r in rounds if r])
    bad = [r for rnd in rounds for r in rnd if r.problems]
    for f in failed:
        print(f"FAILED {f[:300]}")
    return 1 if bad or failed else 0


if __name__ == "__main__":
    sys.exit(main())
