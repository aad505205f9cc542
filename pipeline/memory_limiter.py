"""MemoryLimiter: refuse new data while the process is above its soft memory limit (like the
OpenTelemetry Collector's memory_limiter).

Soft limit = `limit - spike_limit`. Above it, receivers answer RESOURCE_EXHAUSTED / 429 with a
retry delay, so clients back off instead of the process being killed by the OOM killer and
losing what it holds. Above the hard `limit` it also asks Python and Arrow to return free memory.
Memory is read from /proc/self/statm (resident set size) every `check_interval`, off the hot path.
"""

from __future__ import annotations

import gc
import logging
import os
import threading

import pyarrow as pa

from core import metrics

log = logging.getLogger("tracelake.memory_limiter")

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class MemoryLimiter:
    def __init__(self, limit: int, spike_limit: int, check_interval: float, retry_after: float = 1.0) -> None:
        if spike_limit >= limit:
            raise ValueError("spike_limit must be smaller than limit")
        self.limit = limit
        self.soft_limit = limit - spike_limit
        self.check_interval = check_interval
        self.retry_after = retry_after
        self.over_limit = False
        self.reason = ""
        self.rss = 0
        self.refusal_periods = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-limiter", daemon=True)

    def metrics(self) -> list[metrics.Sample]:
        return [
            metrics.gauge("tracelake_memory_limiter_over_limit", "1 while refusing", int(self.over_limit)),
            metrics.gauge("tracelake_memory_limiter_soft_limit_bytes", "soft limit", self.soft_limit),
        ]

    def readiness_problems(self) -> list[str]:
        return [self.reason] if self.over_limit else []

    def check(self) -> None:
        self.rss = rss = resident_bytes()
        if rss > self.limit:
            gc.collect()
            pa.default_memory_pool().release_unused()
            self.rss = rss = resident_bytes()
        over = rss > self.soft_limit
        if over and not self.over_limit:
            self.refusal_periods += 1
            log.warning(
                "memory %d MiB above the soft limit %d MiB: refusing new data until it falls",
                rss >> 20,
                self.soft_limit >> 20,
            )
        elif not over and self.over_limit:
            log.info("memory %d MiB below the soft limit again: accepting data", rss >> 20)
        self.reason = f"memory limit: {rss >> 20} MiB in use, soft limit {self.soft_limit >> 20} MiB"
        self.over_limit = over

    def _run(self) -> None:
        while not self._stop.wait(self.check_interval):
            self.check()

    def start(self) -> None:
        self.check()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
