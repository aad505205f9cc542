"""BackgroundCompactor: a running server keeps its own lake compact.

The sink writes small files every few seconds so that data is queryable at once; `tracelake run`
and `tracelake worker` (with `compaction.background`) merge them from a thread of their own. Every
`compaction.interval` it tries the lake's maintenance lock without waiting: when another process
holds it (another worker writing the same lake, `tracelake compact`, retention, forget) the round
is skipped. However many processes write one lake, one compaction runs at a time, and no writer
ever waits for it.

It stays off the worker's path: DuckDB reads, sorts and writes with the GIL released, on one DuckDB
thread unless `compaction.threads` says otherwise, and the thread runs at a lower scheduling
priority, so on a small machine the worker keeps its core.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.config.model import CompactionConfig
from pipeline.maintenance import TABLES, MaintenanceBusy
from pipeline.maintenance.compact import CompactionReport, Compactor
from sinks.parquet.layout import Lake, open_lake

log = logging.getLogger("tracelake.compact")

NICE = 10  # added to the compaction thread's scheduling niceness (Linux: per thread)
# the holdback area too: with sampling below 100% most spans land there, as small files as any
BACKGROUND_TABLES = (*TABLES, "holdback")


class BackgroundCompactor:
    def __init__(
        self,
        lake: str | Path | Lake,
        config: CompactionConfig,
        compression_level: int = 3,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.lake = open_lake(lake)
        self.config = config
        self.compactor = Compactor(
            self.lake,
            target_file_bytes=config.target_file_bytes,
            row_group_rows=config.row_group_rows,
            compression_level=compression_level,
            threads=config.threads or 1,
            memory_limit=config.memory_limit,
            grace_s=config.grace,
            tables=BACKGROUND_TABLES,
            lock_wait_s=0.0,
            clock=clock,
        )
        self.runs = 0
        self.skipped_busy = 0
        self.failures = 0
        self.partitions_compacted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="compactor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Abandon a merge in progress (its inputs stay as they were) and end the thread."""
        self._stop.set()
        self.compactor.interrupt()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def run_once(self) -> CompactionReport | None:
        """One round; None when another process holds the lake's maintenance lock (or the round failed)."""
        t0 = time.perf_counter()
        try:
            report = self.compactor.run(self.config.older_than, recent=True)
        except MaintenanceBusy:
            self.skipped_busy += 1
            return None
        except Exception:  # a bad file or a full disk must not end the thread; the next round retries
            self.failures += 1
            log.exception("background compaction of %s failed", self.lake)
            return None
        self.runs += 1
        done = [r for r in report.compacted if r.error is None]
        self.partitions_compacted += len(done)
        if done or report.files_deleted:
            log.info(
                "compacted %d partitions of %s: %d files -> %d (%.1f MB -> %.1f MB), %d replaced files deleted, %.2fs",
                len(done),
                self.lake,
                sum(r.inputs for r in done),
                sum(len(r.outputs) for r in done),
                sum(r.bytes_in for r in done) / 1e6,
                sum(r.bytes_out for r in done) / 1e6,
                report.files_deleted,
                time.perf_counter() - t0,
            )
        return report

    def _loop(self) -> None:
        with contextlib.suppress(OSError, AttributeError):  # not Linux, or not allowed: normal priority
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + NICE)
        while not self._stop.wait(self.config.interval):
            self.run_once()
