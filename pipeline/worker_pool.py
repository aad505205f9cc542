"""WorkerPool: `worker.processes` worker processes, kept running, stopped with a drain.

On the embedded bus each process owns one partition (a share of trace-id space) and is fed over a
pipe by a `PartitionFeed`; on Kafka each process is a consumer-group member of its own. When a worker
process dies, the pool starts another in its place: on the embedded bus it replays its partition from
the last committed offset (the bus kept every message that was not yet durable), on Kafka the group
rebalances and the replacement resumes from the committed offsets. Restarts back off (1 s doubling to
30 s) so a worker that cannot start does not spin.

Reloading (`reload`): every running process is sent the new config over its control pipe, swaps its chain
at a batch boundary and answers; a process that could not keeps its old chain and says why. Processes
started after the reload (replacements) build the new config when their own process swapped.

Stopping: the bus is closed (embedded) or each process is told "stop" (Kafka); every process drains what
is left, shuts its processors down, flushes its sinks, commits and exits. A process that dies during the
drain is replaced until its partition is fully committed.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess

from core import metrics
from pipeline.bus.embedded import EmbeddedBus
from pipeline.bus.pipe import PartitionFeed
from pipeline.config import Config
from pipeline.worker_process import WorkerProcessSpec, main

log = logging.getLogger("tracelake.workers")

RESTART_BACKOFF_MIN = 1.0
RESTART_BACKOFF_MAX = 30.0
LEAVE_GRACE_S = 10.0  # after a Kafka member's final commit, for its group leave
KAFKA_STOP_TIMEOUT_S = 50.0  # drain (≤ 10 s, after a rebalance ≤ 10 s more), final flush and commit, leave (≤ 10 s)
READY_TIMEOUT = 120.0
# a reload waits for the current batch (redaction of 8k spans can take seconds) and a chain build (NER models)
RELOAD_TIMEOUT = 120.0


class WorkerStartError(Exception):
    """A worker process could not be built (bad config it only sees when building, disk, ...)."""


@dataclass
class _Slot:
    """One worker position; its process is replaced when it dies."""

    spec: WorkerProcessSpec
    process: BaseProcess | None = None
    control: Connection | None = None
    feed: PartitionFeed | None = None
    ready: bool = False
    exited: int | None = None  # exit code reported by the process itself ("exiting")
    samples: list[metrics.Sample] = field(default_factory=list)
    restarts: int = 0
    backoff: float = RESTART_BACKOFF_MIN
    restart_at: float | None = None
    started_at: float = 0.0
    failure: str | None = None
    reloaded: tuple[int, str | None] | None = None  # (generation, error or None) the process answered
    leaving: tuple[float, int] | None = None  # (since, exit code): a Kafka member past its final commit


class WorkerPool:
    def __init__(
        self, config: Config, processes: int, bus: EmbeddedBus | None, log_level: str = "info", log_json: bool = False
    ) -> None:
        if bus is not None and bus.partitions != processes:
            raise ValueError("the embedded bus needs one partition per worker process")
        self.config = config
        self.bus = bus
        self._ctx = mp.get_context("spawn")
        self._slots = [
            _Slot(
                WorkerProcessSpec(
                    config,
                    i,
                    partition=i if bus is not None else None,
                    partition_key=bus.partition_key(i) if bus is not None else None,
                    log_level=log_level,
                    log_json=log_json,
                )
            )
            for i in range(processes)
        ]
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()  # the monitor, stop() and reload() all write to the pipes
        self._reload_lock = threading.Lock()
        self._answered = threading.Condition()
        self._stopping = False
        self._done = threading.Event()
        self._monitor = threading.Thread(target=self._watch, name="worker-pool", daemon=True)
        self.failed = False  # a process exited non-zero at the end, or could not be kept running
        self._exit_hook = False
        self._killed = False  # kill() ran: nothing is restarted after it

    # -- lifecycle --------------------------------------------------------------------------
    def launch(self) -> None:
        """Start every process; they build their chains while the caller does its own set-up."""
        if not self._exit_hook:
            # a pool its owner never stopped (a test, an embedding program) must not keep the interpreter
            # waiting at exit for processes that ignore SIGTERM: multiprocessing joins them after this runs
            atexit.register(self.kill)
            self._exit_hook = True
        for slot in self._slots:
            if slot.process is None:
                self._spawn(slot)

    def start(self, timeout: float = READY_TIMEOUT) -> None:
        """Start every process (unless `launch` did) and wait until each has built its chain and sinks."""
        self.launch()
        deadline = time.monotonic() + timeout
        for slot in self._slots:
            while not slot.ready:
                self._pump(slot, max(0.0, min(0.2, deadline - time.monotonic())))
                if slot.failure is not None or (slot.process is not None and not slot.process.is_alive()):
                    self._kill_all()
                    why = slot.failure or f"exit code {slot.process.exitcode if slot.process else '?'}"
                    raise WorkerStartError(f"worker process {slot.spec.index} failed to start: {why}")
                if time.monotonic() >= deadline:
                    self._kill_all()
                    raise WorkerStartError(f"worker process {slot.spec.index} not ready within {timeout:g}s")
        self._monitor.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Drain and stop every process. Returns False when one of them failed."""
        with self._lock:
            self._stopping = True
        if not self._monitor.is_alive():  # never started (or start failed): nothing was accepted for them
            self._kill_all()
            return not self.failed
        if self.bus is not None:
            self.bus.close()
        else:
            for slot in self._slots:
                if slot.control is not None:
                    self._tell(slot, ("stop",))
        if timeout is None and self.bus is None:
            # Kafka members: what they have not committed is replayed by the group, so a member stuck in its
            # stop (a broker that stopped answering) is killed rather than waited for forever
            timeout = KAFKA_STOP_TIMEOUT_S
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._done.wait(0.2):
            if deadline is not None and time.monotonic() > deadline:
                stuck = [s.process for s in self._slots if s.process is not None and s.process.is_alive()]
                log.critical(
                    "worker processes %s did not stop within %gs; their stacks follow, then they are killed",
                    ", ".join(str(p.pid) for p in stuck),
                    timeout,
                )
                for proc in stuck:
                    if proc.pid is not None:
                        os.kill(proc.pid, signal.SIGUSR1)  # faulthandler: every thread's stack to the log
                time.sleep(1.0)
                self.kill()
                self.failed = True
                break
        return not self.failed

    def reload(self, config: Config, generation: int, timeout: float = RELOAD_TIMEOUT) -> list[str]:
        """Every running process swaps to `config` at its next batch boundary. Returns one error per process
        that kept its old chain (empty: all swapped). A process restarted later builds the config of its slot:
        the new one once its own swap succeeded, or when it was not running during the reload."""
        with self._reload_lock:
            asked: list[tuple[_Slot, BaseProcess]] = []
            idle: list[_Slot] = []
            for slot in self._slots:
                slot.reloaded = None
                proc = slot.process
                if proc is not None and proc.is_alive() and slot.ready and slot.control is not None:
                    self._tell(slot, ("reload", generation, config))
                    asked.append((slot, proc))
                else:
                    idle.append(slot)
            deadline = time.monotonic() + timeout
            with self._answered:
                while time.monotonic() < deadline:
                    waiting = [s for s, proc in asked if s.reloaded is None and s.process is proc]
                    if not waiting:
                        break
                    self._answered.wait(0.2)
            errors, swapped = [], 0
            for slot, proc in asked:
                answer = slot.reloaded
                if answer is not None and answer[0] == generation and answer[1] is None:
                    slot.spec = replace(slot.spec, config=config)
                    swapped += 1
                elif answer is not None:
                    errors.append(f"worker process {slot.spec.index}: {answer[1]}")
                elif slot.process is not proc:
                    errors.append(
                        f"worker process {slot.spec.index} died during the reload; it restarts with the old chain"
                    )
                else:
                    errors.append(f"worker process {slot.spec.index} did not answer within {timeout:g}s")
            if swapped or not asked:
                for slot in idle:
                    slot.spec = replace(slot.spec, config=config)
                self.config = config
            return errors

    @property
    def processes(self) -> int:
        return len(self._slots)

    def pids(self) -> list[int | None]:
        return [s.process.pid if s.process is not None else None for s in self._slots]

    def readiness_problems(self) -> list[str]:
        problems = []
        for s in self._slots:
            if not s.ready or s.process is None or not s.process.is_alive():
                problems.append(f"worker process {s.spec.index} is not running (restarts: {s.restarts})")
        return problems

    def metrics(self) -> list[metrics.Sample]:
        with self._lock:
            per_process = [list(s.samples) for s in self._slots]
            running = sum(1 for s in self._slots if s.ready and s.process is not None and s.process.is_alive())
            restarts = sum(s.restarts for s in self._slots)
        merged = metrics.merge(per_process)
        merged.append(metrics.gauge("tracelake_worker_processes", "worker processes configured", len(self._slots)))
        merged.append(metrics.gauge("tracelake_worker_processes_running", "worker processes running", running))
        merged.append(
            metrics.counter("tracelake_worker_process_restarts", "worker processes started after one died", restarts)
        )
        return merged

    # -- processes --------------------------------------------------------------------------
    def _spawn(self, slot: _Slot) -> None:
        control_parent, control_child = self._ctx.Pipe(duplex=True)
        data_parent = data_child = None
        spec = slot.spec
        if self.bus is not None:
            assert spec.partition is not None
            data_parent, data_child = self._ctx.Pipe(duplex=True)
            first_offset, reader = self.bus.attach(spec.partition)
            spec = replace(spec, first_offset=first_offset)
        process = self._ctx.Process(
            target=main, args=(spec, control_child, data_child), name=f"tracelake-worker-{spec.index}", daemon=False
        )
        slot.leaving = None
        process.start()
        control_child.close()
        if data_child is not None:
            data_child.close()
        slot.process, slot.control, slot.ready, slot.exited, slot.failure = process, control_parent, False, None, None
        slot.started_at = time.monotonic()
        log.info("worker process %d started (pid %s)", spec.index, process.pid)
        if data_parent is not None:
            assert self.bus is not None and spec.partition is not None
            slot.feed = PartitionFeed(self.bus, spec.partition, reader, data_parent)
            slot.feed.start()

    def _pump(self, slot: _Slot, timeout: float) -> None:
        """Read what a process reported (ready, metrics, exiting) without blocking longer than `timeout`."""
        conn = slot.control
        if conn is None:
            return
        try:
            while conn.poll(timeout):
                timeout = 0
                msg = conn.recv()
                kind = msg[0]
                if kind == "ready":
                    slot.ready = True
                    took = time.monotonic() - slot.started_at
                    log.debug("worker process %d ready after %.1fs", slot.spec.index, took)
                elif kind == "metrics":
                    with self._lock:
                        slot.samples = msg[1]
                elif kind == "exiting":
                    slot.exited = msg[1]
                    with self._lock:
                        slot.samples = msg[2]
                elif kind == "leaving":
                    slot.leaving = (time.monotonic(), msg[1])
                elif kind == "failed":
                    slot.failure = msg[1]
                elif kind == "reloaded":
                    with self._answered:
                        slot.reloaded = (msg[1], msg[2])
                        self._answered.notify_all()
        except (EOFError, OSError):
            slot.control = None

    def _tell(self, slot: _Slot, msg: tuple) -> None:
        try:
            with self._send_lock:
                if slot.control is not None:
                    slot.control.send(msg)
        except OSError:
            pass

    def _watch(self) -> None:
        """Collect reports, notice deaths, restart, and finish the stop."""
        while True:
            conns = [s.control for s in self._slots if s.control is not None]
            sentinels = [s.process.sentinel for s in self._slots if s.process is not None]
            wait([*conns, *sentinels], timeout=0.5)
            for slot in self._slots:
                self._pump(slot, 0)
                proc = slot.process
                if proc is not None and slot.leaving is not None and time.monotonic() - slot.leaving[0] > LEAVE_GRACE_S:
                    # everything is written and committed; only the group leave hangs (a broker that does not
                    # answer it): ending the process loses nothing, the group drops the member on its own
                    log.warning("worker process %d hangs leaving the consumer group; ending it", slot.spec.index)
                    slot.exited = slot.leaving[1]
                    slot.leaving = None
                    proc.kill()
                    proc.join(5)
                if proc is not None and not proc.is_alive():
                    proc.join()
                    self._pump(slot, 0)  # a last report may still sit in the pipe
                    self._exited(slot, proc)
                if self._killed:
                    slot.restart_at = None
                if slot.process is None and slot.restart_at is not None and time.monotonic() >= slot.restart_at:
                    slot.restart_at = None
                    slot.restarts += 1
                    log.warning("starting worker process %d again (restart %d)", slot.spec.index, slot.restarts)
                    self._spawn(slot)
            if self._stopping and all(s.process is None and s.restart_at is None for s in self._slots):
                self._done.set()
                return

    def _exited(self, slot: _Slot, proc: BaseProcess) -> None:
        code = proc.exitcode
        if slot.feed is not None:
            slot.feed.join(1)
            slot.feed = None
        slot.process, slot.control = None, None
        with self._answered:  # a reload waiting for this process stops waiting
            self._answered.notify_all()
        clean = slot.exited is not None
        finished = self._stopping and (self.bus is None or self.bus.end_of_partition(slot.spec.partition or 0))
        if clean and finished:
            if slot.exited != 0:
                self.failed = True
            log.info("worker process %d stopped (exit %s)", slot.spec.index, slot.exited)
            return
        if not clean and self._stopping and self.bus is None:
            # a Kafka member that died while stopping: the group will hand its partitions to nobody
            # in this process; what it had not committed stays in Kafka for the next start
            log.error("worker process %d died while stopping (exit %s)", slot.spec.index, code)
            self.failed = True
            return
        uptime = time.monotonic() - slot.started_at
        if uptime > 60:
            slot.backoff = RESTART_BACKOFF_MIN
        log.error(
            "worker process %d (pid %s) died (exit %s, %s); restarting in %.0fs%s",
            slot.spec.index,
            proc.pid,
            code,
            f"signal {-code}" if code is not None and code < 0 else "no clean stop",
            slot.backoff,
            "; it replays what was not yet written from the bus" if self.bus is not None else "",
        )
        slot.restart_at = time.monotonic() + slot.backoff
        slot.backoff = min(RESTART_BACKOFF_MAX, slot.backoff * 2)

    def kill(self) -> None:
        """No drain: for a caller that failed to set up around the pool, and at interpreter exit for an owner
        that never stopped it (what was not yet written stays on the bus, or in Kafka, for the next start)."""
        with self._lock:
            self._killed = True
            self._stopping = True
        self._kill_all()

    def _kill_all(self) -> None:
        for slot in self._slots:
            if slot.process is not None and slot.process.is_alive():
                slot.process.kill()
                slot.process.join(5)
