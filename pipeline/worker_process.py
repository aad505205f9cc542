"""The body of one worker process: processors and sinks over a share of the traces.

`tracelake run` and `tracelake worker` start `worker.processes` of these (pipeline/worker_pool.py).
Each builds its own processor chain, sinks and trace summaries from the validated config it is
handed, reads its share of the bus (a partition of the embedded bus over a pipe, or its Kafka
consumer-group assignment) and runs the same `Worker` loop either way.

A worker process leaves stopping to its parent: it ignores SIGINT (a Ctrl-C reaches the whole process
group) and SIGTERM (systemd signals every process of a unit), and stops when the parent says so (the
embedded bus answers "end"; a Kafka worker is told "stop") or when the parent disappears. It reports
its metrics to the parent every second over a control pipe.

A reload arrives on the same pipe as ("reload", generation, Config): the process builds the new chain and
sinks beside the running ones, the worker swaps at its next batch boundary, and the process answers
("reloaded", generation, None) or, keeping its old chain, ("reloaded", generation, "why").
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from pipeline.config import Config

if TYPE_CHECKING:
    from pipeline.bus.base import Source
    from pipeline.worker import Worker

log = logging.getLogger("tracelake.worker")

STATS_INTERVAL = 1.0


@dataclass(frozen=True)
class WorkerProcessSpec:
    config: Config
    index: int
    # embedded bus: the partition this process owns and its key (the `lake_source` prefix)
    partition: int | None = None
    partition_key: str | None = None
    first_offset: int = 0
    log_level: str = "info"
    log_json: bool = False


def _setup(spec: WorkerProcessSpec) -> None:
    from pipeline.logs import setup_logging

    setup_logging(spec.log_level, spec.log_json, process=f"worker-{spec.index}")
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    import faulthandler

    faulthandler.register(signal.SIGUSR1, all_threads=True)


def main(spec: WorkerProcessSpec, control: Connection, data: Connection | None) -> None:
    """Entry point of the spawned process (multiprocessing target)."""
    _setup(spec)
    from pipeline.build import build_worker
    from pipeline.service import use_server_memory_pool

    use_server_memory_pool()
    source: Source
    if data is not None:
        from pipeline.bus.pipe import PipeSource

        assert spec.partition_key is not None
        source = PipeSource(data, spec.partition_key, spec.first_offset)
    else:
        from pipeline.bus.kafka import KafkaSource
        from pipeline.config.model import KafkaBusConfig

        bus = spec.config.raw.bus
        assert isinstance(bus, KafkaBusConfig)
        source = KafkaSource(bus)
    try:
        worker = build_worker(spec.config, source)
    except Exception as e:
        log.critical("cannot build the worker: %s", e, exc_info=not isinstance(e, OSError | ValueError))
        _send(control, ("failed", str(e)))
        os._exit(3)
    if hasattr(source, "on_leave"):  # Kafka: past this point everything is committed
        source.on_leave = lambda: _send(control, ("leaving", 0 if worker.error is None else 1))
    reporter = _Reporter(control, worker, source)
    _send(control, ("metrics", reporter.snapshot()))  # /metrics has every series from the first scrape on
    _send(control, ("ready", os.getpid()))
    reporter.start()
    worker.run()
    reporter.stop()
    code = 1 if worker.error is not None else 0
    _send(control, ("exiting", code, reporter.snapshot()))
    logging.shutdown()
    sys.stderr.flush()
    os._exit(code)  # everything is flushed and committed; interpreter teardown only costs time


_send_lock = threading.Lock()


def _send(conn: Connection, msg: tuple) -> None:
    with _send_lock, contextlib.suppress(OSError):  # OSError: the parent is gone
        conn.send(msg)


class _Reporter:
    """Sends metrics every second and takes the parent's orders (stop) on the control pipe."""

    def __init__(self, control: Connection, worker: Worker, source: Source) -> None:
        self.control = control
        self.worker = worker
        self.source = source
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reporter", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def snapshot(self) -> list:
        samples = list(self.worker.metrics())
        source_metrics = getattr(self.source, "metrics", None)
        if source_metrics is not None:
            samples.extend(source_metrics())
        return samples

    def _reload(self, generation: int, config: Config) -> None:
        """Build beside the running chain (a model load must not stall the worker), then swap at a batch boundary."""
        from pipeline.build import build_worker_chain

        try:
            chain = build_worker_chain(config)
        except Exception as e:
            log.error("reload %d: cannot build the new chain, keeping the old one: %s", generation, e)
            _send(self.control, ("reloaded", generation, f"cannot build the new chain: {e}"))
            return
        try:
            self.worker.request_swap(chain).result()
        except Exception as e:  # logged by the worker
            _send(self.control, ("reloaded", generation, f"kept the old chain: {e}"))
            return
        _send(self.control, ("reloaded", generation, None))

    def _run(self) -> None:
        next_report = time.monotonic() + STATS_INTERVAL
        while not self._stop.is_set():
            try:
                if self.control.poll(0.2):
                    msg = self.control.recv()
                    if msg[0] == "stop":
                        self.source.close()
                    elif msg[0] == "reload":
                        threading.Thread(target=self._reload, args=msg[1:], name="reload", daemon=True).start()
            except (EOFError, OSError):
                log.error("lost the tracelake process that started this worker; stopping")
                self.source.close()
                return
            now = time.monotonic()
            if now >= next_report:
                next_report = now + STATS_INTERVAL
                try:
                    _send(self.control, ("metrics", self.snapshot()))
                except Exception:  # a racing dict during a snapshot must not end reporting
                    log.debug("metrics snapshot failed", exc_info=True)
