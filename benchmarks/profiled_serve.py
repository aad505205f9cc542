"""`tracelake run` with one cProfile per thread of the receiving process (worker processes are not profiled).

    python benchmarks/profiled_serve.py CONFIG OUT_PREFIX

On exit, writes OUT_PREFIX.<group>.prof per thread group (`otlp-grpc` handler threads, `worker`,
`other`), merged over the group's threads; read them with pstats. Times are per-thread CPU
time (time.thread_time), so waiting on locks and queues does not show. cProfile slows Python code about
2x, so read the shares, not the absolute rates.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import threading
import time

_profiles: list[tuple[str, cProfile.Profile]] = []
_lock = threading.Lock()
_original_run = threading.Thread.run


def _profiled_run(self: threading.Thread) -> None:
    prof = cProfile.Profile(time.thread_time)  # CPU of this thread, not wall time (waits)
    with _lock:
        _profiles.append((self.name, prof))
    prof.enable()
    try:
        _original_run(self)
    finally:
        prof.disable()


def _group(thread_name: str) -> str:
    if thread_name.startswith("otlp-grpc"):
        return "otlp-grpc"
    if thread_name == "worker":
        return "worker"
    return "other"


def main() -> int:
    config, prefix = sys.argv[1], sys.argv[2]
    threading.Thread.run = _profiled_run  # type: ignore[method-assign]
    from pipeline.cli import main as cli_main

    rc = cli_main(["run", "--config", config])
    groups: dict[str, pstats.Stats] = {}
    with _lock:
        profiles = list(_profiles)
    for name, prof in profiles:
        prof.disable()
        try:
            stats = pstats.Stats(prof)
        except TypeError:  # a thread that never ran Python code under the profiler
            continue
        g = _group(name)
        if g in groups:
            groups[g].add(stats)
        else:
            groups[g] = stats
    for g, stats in groups.items():
        stats.dump_stats(f"{prefix}.{g}.prof")
    return rc


if __name__ == "__main__":
    sys.exit(main())
