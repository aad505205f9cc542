"""One `tracelake run` (with the cost processor) and one fake provider for the whole compatibility suite; every
instrumentation family drives the real SDKs against them from a process of its own, all at once."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from core.schema import TOKEN_COLUMNS
from pipeline.query import connect
from tests.compat.expected import FAMILIES
from tests.compat.fake_provider import FakeProvider
from tests.compat.scenarios import SCENARIO_ATTRIBUTE, Scenario
from tests.conftest import RunningTracelake, config_yaml

REPO = Path(__file__).resolve().parents[2]
SPAN_COLUMNS = (
    "trace_id",
    "span_id",
    "name",
    "service_name",
    "scope_name",
    "status_code",
    "span_type",
    "provider",
    "request_model",
    "response_model",
    *TOKEN_COLUMNS,
    "cost_usd",
    "cost_status",
    "finish_reason",
    "tool_name",
    "duplicate_of",
    "attributes",
)


@dataclass
class Lake:
    """What the families left in the lake, read back through the `spans` and `traces` views."""

    spans: list[dict[str, Any]]
    traces: dict[str, dict[str, Any]]  # by trace id

    def of(self, family: str, scenario: Scenario) -> list[dict[str, Any]]:
        """The spans a family recorded for a scenario (its app span left out), by start time."""
        mine = [s for s in self.spans if s["service_name"] == f"compat-{family}"]
        if scenario.wrapped:
            root = [s for s in mine if s["attributes"].get(SCENARIO_ATTRIBUTE) == scenario.name]
            assert len(root) == 1, f"{family}: no trace for {scenario.name}"
            found = [s for s in mine if s["trace_id"] == root[0]["trace_id"] and s is not root[0]]
        else:  # no app span: its spans are the only ones with its model
            found = [s for s in mine if scenario.request_model in (s["request_model"], s["response_model"])]
        return sorted(found, key=lambda s: s["start_ns"])


def _drive(family: str, tl: RunningTracelake, provider: FakeProvider) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ANTHROPIC_", "OPENAI_", "TRACELOOP_"))}
    env.update(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://{tl.grpc}", COMPAT_PROVIDER_URL=provider.url)
    return subprocess.Popen(
        [sys.executable, "-m", "tests.compat.drive", family],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture(scope="session")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lake]:
    provider = FakeProvider()
    tl = RunningTracelake(tmp_path_factory.mktemp("compat"), config_yaml(process="[cost]", processors="{cost: {}}"))
    try:
        drivers = {family: _drive(family, tl, provider) for family in FAMILIES}
        failed = {}
        for family, proc in drivers.items():
            out, _ = proc.communicate(timeout=120)
            if proc.returncode:
                failed[family] = out
        assert not failed, "\n".join(f"--- {f}:\n{out}" for f, out in failed.items())
    finally:
        rc = tl.stop()
        provider.close()
    assert rc == 0, tl.log
    con = connect(tl.lake)
    columns = ", ".join(SPAN_COLUMNS)
    spans = con.sql(f"SELECT {columns}, epoch_ns(start_time) AS start_ns FROM spans").to_arrow_table().to_pylist()
    for span in spans:
        span["attributes"] = dict(span["attributes"])
        span["start_time"] = datetime.fromtimestamp(span["start_ns"] / 1e9, UTC)
    traces = con.sql("SELECT * EXCLUDE (start_time, end_time) FROM traces").to_arrow_table().to_pylist()
    traces = {t["trace_id"]: t for t in traces}
    yield Lake(spans, traces)
