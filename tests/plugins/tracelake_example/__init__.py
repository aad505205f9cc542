"""A third-party tracelake processor, written against processors/README.md and core/processor.py only.

`example_hold` is a `Sampler`: it holds every real span for `hold` seconds, then releases it labelled
kept, or dropped when the span has `drop_attribute` = "yes" (the worker puts dropped spans in the holdback
area). Negative feedback for a trace it dropped promotes the trace. Every hook call is appended to the file
`record` (one line: pid, hook, detail), so a test can check the lifecycle the worker drove from outside
the worker process. tests/plugins/tracelake_example-0.1.0.dist-info registers it, as `pip install` would.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from core import feedback, schema, source_ref
from core.config import Seconds
from core.processor import (
    SAMPLING_KEPT,
    SAMPLING_REASONS,
    ProcessorConfig,
    ProcessorContext,
    ProcessorFactory,
)

REASON = "example_hold"


class ExampleHoldConfig(ProcessorConfig):
    hold: Seconds = 0.2
    drop_attribute: str = "example.drop"
    record: str | None = None


@dataclass
class _Held:
    rows: pa.Table
    since: float


class ExampleHold:
    def __init__(self, config: ExampleHoldConfig, context: ProcessorContext) -> None:
        self.config = config
        self.context = context
        self._held: list[_Held] = []
        self._dropped: set[str] = set()
        self._promotions: list[tuple[str, str]] = []
        self._shut_down = False
        self.stats: dict[str, int | dict[str, int]] = {
            "held_spans": 0,
            "released_spans": 0,
            "dropped_spans": 0,
            "promotions": 0,
            "calls": dict.fromkeys(
                ["process", "tick", "shutdown", "retire", "on_revoke", "forget", "take_promotions"], 0
            ),
        }
        self._record("build", context.stage)

    # -- Processor ---------------------------------------------------------------------------
    def process(self, batch: pa.Table) -> pa.Table:
        self._record("process", str(batch.num_rows))
        synthetic = feedback.is_synthetic(batch)
        for row in batch.filter(synthetic).select(["trace_id", "attributes"]).to_pylist():
            value = dict(row["attributes"] or []).get(feedback.VALUE)
            if row["trace_id"] in self._dropped and value is not None and float(value) <= 0:
                self._dropped.discard(row["trace_id"])
                self._promotions.append((row["trace_id"], REASON))
                self._count("promotions", 1)
        real = batch.filter(pc.invert(synthetic))
        if real.num_rows:
            self._held.append(_Held(real, time.monotonic()))
            self._count("held_spans", real.num_rows)
        # feedback spans pass at once, untouched but for the two columns every row of a Sampler carries
        return self._label(batch.filter(synthetic), keep_all=True)

    # -- StatefulProcessor -------------------------------------------------------------------
    def tick(self, now_ns: int) -> pa.Table:
        self._record("tick")
        due = time.monotonic() - self.config.hold
        return self._release([h for h in self._held if h.since <= due])

    def shutdown(self) -> pa.Table:
        self._record("shutdown", str(sum(h.rows.num_rows for h in self._held)))
        self._shut_down = True
        return self._label(self._empty()) if self.context.replayable_source else self._release(list(self._held))

    def retire(self) -> pa.Table:
        self._record("retire", str(sum(h.rows.num_rows for h in self._held)))
        self._shut_down = True
        return self._release(list(self._held))

    def on_revoke(self, sources: set[str]) -> pa.Table:
        self._record("on_revoke", ",".join(sorted(sources)))
        return self._release([h for h in self._held if self._partitions(h) & sources])

    def forget(self, sources: set[str] | None) -> None:
        self._record("forget", "None" if sources is None else ",".join(sorted(sources)))
        gone = self._held if sources is None else [h for h in self._held if self._partitions(h) & sources]
        self._held = [h for h in self._held if h not in gone]
        self._count("held_spans", -sum(h.rows.num_rows for h in gone))

    def low_watermarks(self) -> dict[str, int]:
        self._record("low_watermarks")
        marks: dict[str, int] = {}
        for h in self._held:
            parts, offsets = source_ref.partitions_and_offsets(h.rows.column("lake_source"))
            for part, offset in zip(parts.to_pylist(), offsets.to_pylist(), strict=True):
                if part is not None and offset < marks.get(part, offset + 1):
                    marks[part] = offset
        return marks

    # -- Sampler -----------------------------------------------------------------------------
    def take_promotions(self) -> list[tuple[str, str]]:
        self._record("take_promotions", str(len(self._promotions)))
        out, self._promotions = self._promotions, []
        return out

    # -- helpers -----------------------------------------------------------------------------
    def _release(self, parts: list[_Held]) -> pa.Table:
        self._held = [h for h in self._held if h not in parts]
        if not parts:
            return self._label(self._empty())
        rows = pa.concat_tables([h.rows for h in parts])
        self._count("held_spans", -rows.num_rows)
        self._count("released_spans", rows.num_rows)
        out = self._label(rows)
        self._count("dropped_spans", out.num_rows - (pc.sum(out.column("sampling_kept")).as_py() or 0))
        self._dropped.update(out.filter(pc.invert(out.column("sampling_kept"))).column("trace_id").to_pylist())
        return out

    def _label(self, rows: pa.Table, keep_all: bool = False) -> pa.Table:
        value = pc.map_lookup(rows.column("attributes"), pa.scalar(self.config.drop_attribute, pa.string()), "first")
        kept = [keep_all or v != "yes" for v in value.to_pylist()]
        reasons = [[REASON] if k else [] for k in kept]
        return rows.append_column(SAMPLING_KEPT, pa.array(kept, SAMPLING_KEPT.type)).append_column(
            SAMPLING_REASONS, pa.array(reasons, SAMPLING_REASONS.type)
        )

    def _empty(self) -> pa.Table:
        return self._held[0].rows.slice(0, 0) if self._held else schema.empty("spans")

    @staticmethod
    def _partitions(h: _Held) -> set[str]:
        return {p for p in source_ref.partitions(h.rows.column("lake_source")).to_pylist() if p is not None}

    def _count(self, key: str, n: int) -> None:
        value = self.stats[key]
        assert isinstance(value, int)
        self.stats[key] = value + n

    def _record(self, hook: str, detail: str = "") -> None:
        calls = self.stats["calls"]
        assert isinstance(calls, dict)
        if hook in calls:
            calls[hook] += 1
        if self.config.record:
            if self._shut_down and hook not in ("low_watermarks", "forget"):
                hook = f"AFTER-SHUTDOWN {hook}"
            with open(self.config.record, "a") as f:
                f.write(f"{os.getpid()} {hook} {detail}\n")


factory = ProcessorFactory(
    type="example_hold",
    config_class=ExampleHoldConfig,
    create=ExampleHold,
    description="holds spans for `hold`, then keeps them unless drop_attribute is yes (a test plugin)",
    stateful=True,
)
