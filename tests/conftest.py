"""Shared fixtures: a real `tracelake run` in a subprocess. The OTLP builders (`kv`, `make_request`) are
pipeline.testing's, importable from here too."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.testing import kv, make_request

__all__ = ["RunningTracelake", "config_yaml", "kv", "make_request", "tracelake"]

READY = re.compile(r"tracelake ready (?:grpc=(\S+))? ?(?:http=(\S+))?.*?(?:telemetry=(\S+))?$")


class RunningTracelake:
    """`python -m pipeline.cli run` on ephemeral ports; the ready log line tells the ports. `python`: the
    interpreter (default this one; a benchmark passes another checkout's virtualenv to run its code)."""

    def __init__(
        self,
        workdir: Path,
        config_yaml: str,
        env: dict[str, str] | None = None,
        command: str = "run",
        name: str = "tracelake",
        args: tuple[str, ...] = (),
        ready_timeout: float = 30,
        python: str = sys.executable,
    ) -> None:
        self.workdir = workdir
        self.lake = workdir / "lake"
        self.config = workdir / f"{name}.yaml"
        self.config.write_text(config_yaml.replace("{lake}", str(self.lake)))
        self.log_lines: list[str] = []
        self._ready = threading.Event()
        self.grpc = self.http = self.telemetry = ""
        self.proc = subprocess.Popen(
            [python, "-m", "pipeline.cli", command, "--config", str(self.config), *args],
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(ready_timeout):
            self.proc.kill()
            raise RuntimeError("tracelake did not become ready:\n" + self.log)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log_lines.append(line)
            m = READY.search(line)
            if m:
                self.grpc, self.http = m.group(1) or "", m.group(2) or ""
                self.telemetry = m.group(3) or ""
                self._ready.set()

    @property
    def log(self) -> str:
        return "".join(self.log_lines)

    def worker_pids(self) -> dict[int, int]:
        """Worker process index → its current pid, from the 'worker process N started (pid P)' lines."""
        pids: dict[int, int] = {}
        for m in re.finditer(r"worker process (\d+) started \(pid (\d+)\)", self.log):
            pids[int(m.group(1))] = int(m.group(2))
        return pids

    def kill(self) -> None:
        """After a test that did not stop it: no drain, nothing left running."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGUSR1)  # thread stacks into the log
            time.sleep(1)
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"did not stop within {timeout}s:\n{self.log}") from None
        time.sleep(0.05)  # let the reader thread collect the last lines
        return rc


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`python -m pipeline.cli ARGS` from the repository root; stdout and stderr captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        timeout=timeout,
        env=env,
    )


def config_yaml(process: str = "[]", processors: str = "{}", extra: str = "") -> str:
    return (
        textwrap.dedent(
            f"""\
        receivers:
          otlp:
            grpc: {{endpoint: 127.0.0.1:0}}
            http: {{endpoint: 127.0.0.1:0}}
        processors: {processors}
        sinks:
          parquet: {{path: "{{lake}}", roll_seconds: 1s}}
        worker: {{trace_idle: 1s, max_batch_delay: 50ms}}
        telemetry: {{endpoint: 127.0.0.1:0}}
        pipelines:
          traces:
            process: {process}
            sinks: [parquet]
        """
        )
        + extra
    )


@pytest.fixture
def tracelake(tmp_path: Path) -> Iterator[RunningTracelake]:
    tl = RunningTracelake(tmp_path, config_yaml())
    try:
        yield tl
    finally:
        tl.kill()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A test that leaks worker processes must not keep pytest from exiting (CI would wait out its limit)."""
    import multiprocessing

    for child in multiprocessing.active_children():
        sys.stderr.write(f"\nkilling leftover process {child.name} (pid {child.pid})\n")
        child.kill()
        child.join(5)
