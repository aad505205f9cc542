"""What the benchmarks share: requests on disk, raw-gRPC client processes, the worker's path in one
process, server processes and their CPU from /proc, waiting, and counting the lake.

Run the benchmarks from the repository root (they import `pipeline`, `processors`, `sinks`, `tests`).
Nothing here is timed by itself; each script says what it measures with these parts.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import signal
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
BATCH_SPANS = 8192  # the worker's default max_batch_spans
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- requests --------------------------------------------------------------------------------------
def span_count(body: bytes) -> int:
    req = ExportTraceServiceRequest.FromString(body)
    return sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)


def worker_batches(requests: Sequence[bytes], max_spans: int = BATCH_SPANS) -> list[list[bytes]]:
    """Requests grouped the way the worker takes bus messages: up to `max_spans` spans per batch."""
    out: list[list[bytes]] = []
    group: list[bytes] = []
    spans = 0
    for body in requests:
        n = span_count(body)
        if group and spans + n > max_spans:
            out.append(group)
            group, spans = [], 0
        group.append(body)
        spans += n
    if group:
        out.append(group)
    return out


def write_requests(path: Path, requests: Sequence[bytes]) -> None:
    """One file the client processes read: (length, span count, bytes) per request."""
    with open(path, "wb") as fh:
        for body in requests:
            fh.write(struct.pack("<II", len(body), span_count(body)))
            fh.write(body)


def read_requests(path: str | Path) -> list[tuple[bytes, int]]:
    data = Path(path).read_bytes()
    out, pos = [], 0
    while pos < len(data):
        n, spans = struct.unpack_from("<II", data, pos)
        out.append((data[pos + 8 : pos + 8 + n], spans))
        pos += 8 + n
    return out


# -- the worker's path in this process -------------------------------------------------------------
PATH_STAGES = ("decode", "normalize", "chain", "sink.write", "sink.flush")


@dataclass
class PathRun:
    spans: int = 0  # spans out of the chain
    wall: float = 0.0
    cpu: float = 0.0  # process CPU seconds (pyarrow's own threads included)
    stages: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PATH_STAGES, 0.0))


def worker_path(batches: Sequence[Sequence[bytes]], chain: Sequence[Any], lake: Path, sink: Any = None) -> PathRun:
    """The worker's own functions on pre-grouped requests, one thread, no bus: the columnar decode
    (`pipeline.otlp.wire.decode_bodies`, protobuf parsing inside) → normalize → each processor's
    `process` → `ParquetSink.write`, then `flush_all` (sort, zstd, fsync). Wall seconds per stage.
    `chain`: processors; `sink`: a ParquetSink (default: one over `lake` that rolls only at the end)."""
    from core.conventions import Normalizer
    from pipeline.otlp.wire import decode_bodies
    from sinks.parquet.config import ParquetSinkConfig
    from sinks.parquet.sink import ParquetSink

    shutil.rmtree(lake, ignore_errors=True)
    if sink is None:
        sink = ParquetSink(ParquetSinkConfig(path=str(lake), roll_rows=10**9, roll_bytes=2**40, roll_seconds=10**9))
    normalizer = Normalizer()
    run = PathRun()
    st = run.stages
    clock = time.perf_counter
    offset = 0
    t0, cpu0 = clock(), time.process_time()
    for group in batches:
        t1 = clock()
        table = decode_bodies(list(group), [f"bench/0@{offset + j}" for j in range(len(group))])
        offset += len(group)
        t2 = clock()
        table = normalizer(table)
        t3 = clock()
        for proc in chain:
            table = proc.process(table)
        t4 = clock()
        sink.write("spans", table)
        st["sink.write"] += clock() - t4
        st["decode"] += t2 - t1
        st["normalize"] += t3 - t2
        st["chain"] += t4 - t3
        run.spans += table.num_rows
    t5 = clock()
    sink.flush_all()
    st["sink.flush"] += clock() - t5
    run.wall, run.cpu = clock() - t0, time.process_time() - cpu0
    return run


# -- client processes ------------------------------------------------------------------------------
def _channel(target: str) -> Any:
    import grpc

    channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 * 2**20)])
    grpc.channel_ready_future(channel).result(timeout=20)
    return channel, channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)


def _burst_client(idx: int, clients: int, path: str, target: str, ready: Any, go: Any, out: Any, leave: Any) -> None:
    """Sends every clients-th request as fast as answers come, retrying RESOURCE_EXHAUSTED and
    UNAVAILABLE after 50 ms; reports (idx, [(monotonic time of the OK, spans)], retries, error), then
    idles until `leave` (its exit would compete with the server for the cores)."""
    import grpc

    try:
        mine = read_requests(path)[idx::clients]
        channel, call = _channel(target)
        ready.put(idx)
        if not go.wait(120):
            raise TimeoutError("no start signal")
        acks: list[tuple[float, int]] = []
        retries = 0
        deadline = time.monotonic() + 900
        for body, spans in mine:
            while True:
                try:
                    call(body, timeout=60)
                    acks.append((time.monotonic(), spans))
                    break
                except grpc.RpcError as e:
                    code = e.code()  # type: ignore[attr-defined]
                    retryable = code in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)
                    if not retryable or time.monotonic() > deadline:
                        raise
                    retries += 1
                    time.sleep(0.05)
        out.put((idx, acks, retries, ""))
        leave.wait(3600)
        channel.close()
    except Exception as e:  # report, never hang the parent
        ready.put(idx)
        out.put((idx, [], 0, f"{type(e).__name__}: {e}"))


def _paced_client(
    idx: int,
    clients: int,
    path: str,
    target: str,
    interval: float,
    seconds: float,
    ready: Any,
    go: Any,
    out: Any,
    leave: Any,
) -> None:
    """Sends its share of the requests (cyclically) one every `interval` seconds; reports each call's
    duration, the sends that started over half a slot late (closed loop), and failed calls."""
    import grpc

    try:
        mine = [body for body, _ in read_requests(path)[idx::clients]]
        channel, call = _channel(target)
        ready.put(idx)
        if not go.wait(120):
            raise TimeoutError("no start signal")
        start = time.monotonic() + idx * interval / clients  # the clients interleave
        latencies: list[float] = []
        late = failed = i = 0
        while (slot := start + i * interval) - start <= seconds:
            now = time.monotonic()
            if now < slot:
                time.sleep(slot - now)
            elif now - slot > interval / 2:
                late += 1
            t = time.perf_counter()
            try:
                call(mine[i % len(mine)], timeout=30)
                latencies.append(time.perf_counter() - t)
            except grpc.RpcError:
                failed += 1
            i += 1
        out.put((idx, (latencies, late, failed), 0, ""))
        channel.close()
    except Exception as e:  # report, never hang the parent
        ready.put(idx)
        out.put((idx, ([], 0, 0), 0, f"{type(e).__name__}: {e}"))


class _ClientProcesses:
    """`clients` spawned processes running `target_fn(i, clients, *args, ready, go, out, leave)`: started and
    connected on entry, released together by `go()`, told to leave and joined on exit."""

    def __init__(self, target_fn: Callable[..., None], clients: int, args: tuple) -> None:
        ctx = mp.get_context("spawn")
        self.ready, self.out, self.go_event, self.leave = ctx.Queue(), ctx.Queue(), ctx.Event(), ctx.Event()
        queues = (self.ready, self.go_event, self.out, self.leave)
        self.procs = [ctx.Process(target=target_fn, args=(i, clients, *args, *queues)) for i in range(clients)]

    def __enter__(self) -> _ClientProcesses:
        for p in self.procs:
            p.start()
        try:
            for _ in self.procs:
                self.ready.get(timeout=120)
        except BaseException:
            self.__exit__()
            raise
        return self

    def go(self) -> float:
        """Releases the clients; returns time.monotonic() of the release."""
        self.go_event.set()
        return time.monotonic()

    def cpu(self) -> float:
        """CPU seconds of this process and of the client processes so far."""
        return time.process_time() + sum(own_cpu(p.pid) for p in self.procs if p.pid is not None)

    def results(self, timeout: float) -> list[tuple]:
        """Every client's report; raises on a client's error."""
        results = [self.out.get(timeout=timeout) for _ in self.procs]
        errors = [r[3] for r in results if r[3]]
        if errors:
            raise RuntimeError(f"client failed: {errors[0]}")
        return results

    def __exit__(self, *exc: object) -> None:
        self.leave.set()
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.kill()


@dataclass
class Burst:
    """Every request sent once by the client processes, as fast as the server answers."""

    t0: float  # time.monotonic() of the first send (all clients are released together)
    acks: list[tuple[float, int]]  # (monotonic time of each OK answer, spans), in time order
    retries: int  # refusals (RESOURCE_EXHAUSTED / UNAVAILABLE) retried
    then: Any = None  # what `send_burst`'s `then` returned
    machine_cpu: float = 0.0  # busy core-seconds of the whole machine from the first send to the end of `then`
    bench_cpu: float = 0.0  # of which this process and the clients

    @property
    def spans(self) -> int:
        return sum(n for _, n in self.acks)

    @property
    def accepted_s(self) -> float:
        """First send → the last OK answer."""
        return self.acks[-1][0] - self.t0 if self.acks else 0.0

    def slowest_window(self, seconds: float = 1.0) -> float | None:
        """The lowest ack rate (spans/s) over consecutive whole windows of `seconds` from the first
        send; None when the burst was shorter than two windows (too short to say)."""
        whole = int(self.accepted_s // seconds)
        if whole < 2:
            return None
        per = [0] * whole
        for t, n in self.acks:
            w = int((t - self.t0) // seconds)
            if w < whole:
                per[w] += n
        return min(per) / seconds


def send_burst(
    req_file: Path, target: str, clients: int, timeout: float = 1800, then: Callable[[], Any] | None = None
) -> Burst:
    """Every request of `req_file` once, split over `clients` processes. `then` runs right after the last OK,
    while the clients idle (their exit would delay it and take CPU from the server); its result is `.then`."""
    with _ClientProcesses(_burst_client, clients, (str(req_file), target)) as procs:
        busy0, cpu0 = busy_cores_seconds(), procs.cpu()
        t0 = procs.go()
        results = procs.results(timeout)
        after = then() if then is not None else None
        busy, cpu = busy_cores_seconds() - busy0, procs.cpu() - cpu0
    acks = sorted(a for r in results for a in r[1])
    return Burst(t0, acks, sum(r[2] for r in results), after, busy, cpu)


@dataclass
class Latency:
    calls: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    late: int  # sends that started over half a slot late because the previous call overran
    failed: int


def send_paced(req_file: Path, target: str, clients: int, interval: float, seconds: float) -> Latency:
    """Each client sends one request every `interval` seconds for `seconds`: client-side Export latency."""
    import statistics

    with _ClientProcesses(_paced_client, clients, (str(req_file), target, interval, seconds)) as procs:
        procs.go()
        results = procs.results(seconds + 120)
    lat = sorted(x for r in results for x in r[1][0])
    if not lat:
        raise RuntimeError("no Export call succeeded in the paced phase")
    q = statistics.quantiles(lat, n=100, method="inclusive")
    return Latency(
        len(lat), q[49] * 1e3, q[98] * 1e3, lat[-1] * 1e3, sum(r[1][1] for r in results), sum(r[1][2] for r in results)
    )


# -- processes and their CPU (Linux /proc) ---------------------------------------------------------
def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field 3 on), None once the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def own_cpu(pid: int) -> float:
    """CPU seconds (user + system) of the process itself; 0 once it is gone."""
    f = _stat(pid)
    return (int(f[11]) + int(f[12])) / CLK_TCK if f else 0.0


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants, alive or not yet reaped."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (f := _stat(int(entry.name))) is not None:
            children.setdefault(int(f[1]), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and every descendant, at this moment: each process's own time plus what
    its reaped children used (a process that exited counts in its parent once reaped, and by itself
    until then, so nothing is counted twice or lost)."""
    total = 0
    for p in process_tree(pid):
        if (f := _stat(p)) is not None:
            total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    return total / CLK_TCK


def busy_cores_seconds() -> float:
    """CPU seconds all cores of the machine have spent busy since boot (/proc/stat: all but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLK_TCK


def wait_quiet(cores: float, timeout: float) -> float:
    """Until the whole machine has used under `cores` cores for 2 s in a row (other people's work; call it
    when what you started is idle); gives up after `timeout` s. Returns the last 2 s average."""
    deadline = time.monotonic() + timeout
    while True:
        before = busy_cores_seconds()
        time.sleep(2)
        load = (busy_cores_seconds() - before) / 2
        if load < cores or time.monotonic() > deadline:
            return load


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass
class Exit:
    code: int
    at: float  # time.monotonic() when the exit was seen (polled every 5 ms)
    own_cpu: float  # CPU seconds of the process itself over its life
    tree_cpu: float  # itself plus every child it reaped (worker processes) over their lives


def terminate(proc: Any, timeout: float = 600) -> Exit:
    """SIGTERM a server (a subprocess.Popen) and wait for its exit; the CPU it and its reaped children
    used is read from /proc before it is reaped (waitid WNOWAIT)."""
    proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is None:
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise TimeoutError(f"pid {proc.pid} did not exit within {timeout:g}s of SIGTERM")
        time.sleep(0.005)
    at = time.monotonic()
    own, tree = own_cpu(proc.pid), tree_cpu(proc.pid)
    return Exit(proc.wait(), at, own, tree)


# -- waiting ---------------------------------------------------------------------------------------
def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> float:
    """Polls until `predicate()`; returns the monotonic time it first held, raises TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g}s")
        time.sleep(interval)


def wait_idle(pids: Callable[[], Sequence[int]], quiet: float = 1.0, timeout: float = 300) -> None:
    """Until the processes (and their children) together use under a tenth of a core for `quiet` s in a row."""

    def cpu() -> float:
        return sum(tree_cpu(p) for p in pids())

    deadline = time.monotonic() + timeout
    last, since = cpu(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = cpu()
        if now - last >= 0.02:
            since = time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        last = now
    raise TimeoutError(f"the server did not go idle within {timeout:g}s")


# -- the lake --------------------------------------------------------------------------------------
@dataclass
class LakeCount:
    span_rows: int  # rows in spans/ and _holdback/ files (what tail sampling dropped is held back)
    distinct_spans: int  # distinct (trace_id, span_id) among them
    kept_spans: int  # rows in spans/ files
    traces: int  # rows of the `traces` view (one per trace)
    split_traces: int  # traces whose summary was written in more than one part


def count_lake(lake: Path) -> LakeCount:
    """Counts over the live files as written (`table_files`: not the inputs a compaction replaced, which stay
    on disk for a grace period); rows a replay wrote twice count twice here (the views hide them)."""
    import duckdb

    from pipeline.query import connect
    from sinks.parquet.layout import table_files

    spans = [str(p) for p in table_files(lake, "spans")]
    files = spans + [str(p) for p in table_files(lake, "holdback")]
    if not files:
        return LakeCount(0, 0, 0, 0, 0)
    con = duckdb.connect()
    rows = f"read_parquet({files!r}, union_by_name = true)"
    span_rows, distinct = con.execute(f"SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM {rows}").fetchone()  # type: ignore[misc]
    kept = con.execute(f"SELECT count(*) FROM read_parquet({spans!r})").fetchone()[0] if spans else 0  # type: ignore[index]
    con.close()
    traces = split = 0
    if (lake / "traces").exists():
        view = connect(lake)
        traces, split = view.execute("SELECT count(*), count(*) FILTER (parts > 1) FROM traces").fetchone()  # type: ignore[misc]
        view.close()
    return LakeCount(span_rows, distinct, kept, traces, split)
