"""Builders shared by this package's tests and benchmark: spans, feedback and samplers with an injected clock."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from core.feedback import FeedbackEvent
from core.processor import ProcessorContext
from pipeline.testing import feedback_batch, spans_batch
from processors.tail_sampling.config import TailSamplingConfig
from processors.tail_sampling.processor import TailSampler

MS = 1_000_000
BASE_NS = 1_800_000_000_000_000_000


def tid(i: int) -> str:
    return f"{i + 1:032x}"


def span(trace: int | str, n: int = 1, *, at_ms: float = 0, ms: float = 1, **extra: Any) -> dict[str, Any]:
    """A span dict for make_request: `at_ms` after BASE_NS, lasting `ms`; extra: attrs, error, parent."""
    start = BASE_NS + int(at_ms * MS)
    trace_id = trace if isinstance(trace, str) else tid(trace)
    return {"trace_id": trace_id, "span_id": f"{n:016x}", "start": start, "end": start + int(ms * MS), **extra}


def batch(
    spans: list[dict[str, Any]],
    source: str = "kafka:spans/0@100",
    resource: dict[str, object] | None = None,
    cost: list[float | None] | None = None,
) -> pa.Table:
    table = spans_batch(spans, source, resource=resource)
    if cost is not None:
        i = table.schema.get_field_index("cost_usd")
        table = table.set_column(i, "cost_usd", pa.array(cost, pa.float64()))
    return table


def concat(*tables: pa.Table) -> pa.Table:
    return pa.concat_tables(tables)


def feedback(trace: int | str, value: float, name: str = "thumbs", source: str = "kafka:spans/0@900") -> pa.Table:
    """A synthetic feedback span, exactly as POST /v1/feedback puts it on the bus."""
    trace_id = trace if isinstance(trace, str) else tid(trace)
    return feedback_batch([FeedbackEvent(trace_id, name, value, time_ns=BASE_NS)], source)


class Clock:
    """Injected monotonic clock: tests move time instead of sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def sampler(
    policies: list[dict[str, Any]], clock: Clock | None = None, replayable: bool = False, **settings: Any
) -> TailSampler:
    """A sampler that holds every trace for decision_wait unless `early_release=True` is passed: most tests
    here are about holding and deciding; test_processor.py's early-release tests cover the default."""
    config = TailSamplingConfig.model_validate(
        {"decision_wait": "10s", "early_release": False, "policies": policies, **settings}
    )
    context = ProcessorContext("tail_sampling", replayable_source=replayable)
    return TailSampler(config, context, clock=clock or Clock())


def decisions(table: pa.Table, feedback_rows: bool = False) -> dict[str, tuple[bool, list[str]]]:
    """trace id -> (sampling_kept, sampling_reasons) of its span rows (or of its feedback rows, which are
    released at once, before the decision), checking that all those rows of a trace agree."""
    out: dict[str, tuple[bool, list[str]]] = {}
    is_feedback = pc.is_valid(
        pc.map_lookup(table.column("attributes"), pa.scalar("feedback.value", pa.string()), "first")
    )
    table = table.filter(is_feedback if feedback_rows else pc.invert(is_feedback))
    for row in table.select(["trace_id", "sampling_kept", "sampling_reasons"]).to_pylist():
        d = (row["sampling_kept"], row["sampling_reasons"])
        assert out.setdefault(row["trace_id"], d) == d, f"rows of {row['trace_id']} disagree"
    return out


def decide(ts: TailSampler, clock: Clock, *batches: pa.Table) -> dict[str, tuple[bool, list[str]]]:
    """Feed batches, wait out decision_wait, tick: the decisions of everything released."""
    released = [ts.process(b) for b in batches]
    clock.advance(ts.config.decision_wait + 1)
    released.append(ts.tick(0))
    return decisions(pa.concat_tables(released))
