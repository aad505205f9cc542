"""`tracelake explain`: run a config's chains in-process on sample traffic and say what each processor did.

The chains are built by the real builders (pipeline/build.py) and fed by the real decode path and normalizer;
each processor's output is compared with its input span by span (columns and attribute keys that changed, spans
it dropped). A stateful processor is `retire()`d after the input so that everything it holds is decided now
(as a reload decides it). Offloaded values go to a temporary store, never the configured one. Spans read from
a lake are shown without their text: changed keys, entity types and counts, numbers, never raw values.
"""

from __future__ import annotations

import dataclasses
import io
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core import schema
from core.processor import SAMPLING_KEPT, SAMPLING_REASONS, StatefulProcessor
from pipeline.build import build_chain, build_normalizer
from pipeline.config import Config
from pipeline.testing import rows
from processors.offload_artifacts.config import OffloadArtifactsConfig

ARTIFACT_PREFIX = "artifact:"
MAP_COLUMNS = ("attributes", "resource_attributes", "pii_found")
SHOWN_CHARS = 80


@dataclass
class SpanChange:
    """What one processor did to one span."""

    trace_id: str
    span_id: str
    name: str
    dropped: bool = False
    held: bool = False  # decided later (a sampler's retire): the span left this processor after the input
    columns: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    attributes: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # key → (before, after); None: absent
    pii: dict[str, int] = field(default_factory=dict)  # entity type → count found in this span (pii_found)


@dataclass
class Step:
    processor: str
    stage: str
    spans_in: int
    spans_out: int
    changes: list[SpanChange]


@dataclass
class Decision:
    trace_id: str
    kept: bool
    policies: list[str]  # the sampler's policies that kept it (sampling_reasons); empty when dropped


@dataclass
class Totals:
    spans_in: int = 0
    spans_out: int = 0  # reach `spans` (kept, or no sampler)
    spans_dropped: int = 0  # dropped by a processor (a filter), reach no table
    spans_held_back: int = 0  # a sampler dropped their trace: the holdback area
    traces: int = 0
    traces_kept: int = 0
    traces_dropped: int = 0
    cost_usd: float = 0.0  # of every span out of the chain (kept or held back): the traces table counts both
    priced_spans: int = 0
    pii: dict[str, int] = field(default_factory=dict)
    offloaded_values: int = 0
    bytes_written: int = 0  # `spans` Parquet of the kept spans (zstd, as the sink writes)


@dataclass
class Explanation:
    config: str
    source: str
    hide_values: bool
    steps: list[Step]
    decisions: list[Decision]
    totals: Totals


# -- input -------------------------------------------------------------------------------------------
def demo_input(traces: int, seed: int) -> list[bytes]:
    from pipeline.demo import build_requests

    return build_requests(traces, seed=seed)


def otlp_input(path: Path) -> list[bytes]:
    """An export request as OTLP/protobuf (.pb) or OTLP/JSON (.json), as the HTTP receiver takes them."""
    data = path.read_bytes()
    if path.suffix == ".json":
        from pipeline.receiver.otlp_json import parse_json

        parsed = parse_json(data)
        for reason in parsed.rejected:
            raise ValueError(f"{path}: {reason}")
        return [parsed.request.SerializeToString()]
    return [data]


def decode_input(bodies: list[bytes]) -> pa.Table:
    """The worker's decode path (explain normalizes, as its first step)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from pipeline.receiver.intake import decode_request

    tables = [decode_request(ExportTraceServiceRequest.FromString(b), b, f"explain:{i}") for i, b in enumerate(bodies)]
    return pa.concat_tables(tables) if tables else schema.empty("spans")


def lake_input(lake: Path, trace_id: str) -> pa.Table:
    """One trace's spans from a lake: `spans`, else the holdback area (a trace the sampler dropped)."""
    from pipeline.query import connect

    con = connect(lake)
    rows = con.sql("SELECT * FROM spans WHERE trace_id = $id", params={"id": trace_id}).to_arrow_table()
    held = lake / schema.TABLE_DIRS["holdback"]
    if rows.num_rows == 0 and any(held.rglob("*.parquet")):
        rows = con.sql(
            f"SELECT * FROM read_parquet('{held}/**/*.parquet', hive_partitioning = true, union_by_name = true) "
            "WHERE trace_id = $id",
            params={"id": trace_id},
        ).to_arrow_table()
    if rows.num_rows == 0:
        raise ValueError(f"no span of trace {trace_id} in the lake {lake} (spans or _holdback)")
    return schema.conform(rows, schema.SPANS)


# -- running -----------------------------------------------------------------------------------------
def _explain_config(config: Config, store: Path) -> Config:
    """The config with every artifact store pointed at `store`: explaining never writes to the real one."""
    processors = {
        pid: dataclasses.replace(spec, config=spec.config.model_copy(update={"store": f"file://{store}"}))
        if isinstance(spec.config, OffloadArtifactsConfig)
        else spec
        for pid, spec in config.processors.items()
    }
    return dataclasses.replace(config, processors=processors)


def _keyed(table: pa.Table) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["trace_id"], r["span_id"]): r for r in rows(table)}  # times as int ns


def _as_map(value: Any) -> dict[str, Any]:
    return dict(value or [])


def _span_change(before: dict[str, Any], after: dict[str, Any] | None) -> SpanChange:
    change = SpanChange(before["trace_id"], before["span_id"], before["name"] or "")
    if after is None:
        change.dropped = True
        return change
    for column, old in before.items():
        new = after.get(column)
        if column in MAP_COLUMNS:
            a, b = _as_map(old), _as_map(new)
            if column == "pii_found":
                found = {k: v - a.get(k, 0) for k, v in b.items() if v != a.get(k, 0)}
                change.pii.update({k: int(v) for k, v in found.items()})
                continue
            prefix = "" if column == "attributes" else "resource."
            for key in sorted(set(a) | set(b)):
                if a.get(key) != b.get(key):
                    change.attributes[prefix + key] = (a.get(key), b.get(key))
        elif old != new:
            change.columns[column] = (old, new)
    return change


def _changed(change: SpanChange) -> bool:
    return change.dropped or change.held or bool(change.columns or change.attributes or change.pii)


def _step(processor: str, stage: str, before: pa.Table, out: pa.Table, held: set[tuple[str, str]]) -> Step:
    outputs = _keyed(out)
    changes = []
    for key, row in _keyed(before).items():
        change = _span_change(row, outputs.get(key))
        change.held = key in held
        if _changed(change):
            changes.append(change)
    return Step(processor, stage, before.num_rows, out.num_rows, changes)


def run_chain_explained(config: Config, spans: pa.Table) -> tuple[list[Step], pa.Table]:
    """The normalizer (columns filled from the attribute dialects), then every processor of ingest and process,
    over all of `spans`; returns the steps and the chain's output."""
    normalizer = build_normalizer(config)
    normalized = normalizer(spans)
    steps = [_step("normalize", "decode", spans, normalized, set())]
    spans = normalized
    with tempfile.TemporaryDirectory(prefix="tracelake-explain-") as store:
        explained = _explain_config(config, Path(store))
        for stage in ("ingest", "process"):
            for pid, proc in build_chain(explained, stage, normalizer):
                before = spans
                out = proc.process(spans) if spans.num_rows else spans
                if isinstance(proc, StatefulProcessor):
                    released = proc.retire()  # everything held, decided now (as at a reload)
                    if released.num_rows:
                        out = pa.concat_tables([out, released], promote_options="permissive")
                    held = set(_keyed(released)) if released.num_rows else set()
                else:
                    held = set()
                steps.append(_step(pid, stage, before, out, held))
                spans = out
    return steps, spans


def _decisions(out: pa.Table) -> list[Decision]:
    if SAMPLING_KEPT.name not in out.column_names:
        return []
    per_trace: dict[str, Decision] = {}
    for tid, kept, reasons in zip(
        out.column("trace_id").to_pylist(),
        out.column(SAMPLING_KEPT.name).to_pylist(),
        out.column(SAMPLING_REASONS.name).to_pylist(),
        strict=True,
    ):
        d = per_trace.setdefault(tid, Decision(tid, bool(kept), []))
        d.kept = d.kept or bool(kept)
        d.policies += [r for r in reasons or [] if r not in d.policies]
    return sorted(per_trace.values(), key=lambda d: d.trace_id)


def _parquet_bytes(table: pa.Table) -> int:
    if table.num_rows == 0:
        return 0
    buf = io.BytesIO()
    pq.write_table(schema.conform(table, schema.SPANS), buf, compression="zstd")
    return buf.tell()


def _totals(spans_in: pa.Table, out: pa.Table, steps: list[Step], decisions: list[Decision]) -> Totals:
    t = Totals(spans_in=spans_in.num_rows, traces=len(set(spans_in.column("trace_id").to_pylist())))
    t.spans_dropped = sum(1 for step in steps for c in step.changes if c.dropped)
    kept = out
    if SAMPLING_KEPT.name in out.column_names:
        mask = pc.fill_null(out.column(SAMPLING_KEPT.name), True)
        kept = out.filter(mask)
        t.spans_held_back = out.num_rows - kept.num_rows
    t.spans_out = kept.num_rows
    t.traces_kept = sum(1 for d in decisions if d.kept) if decisions else len(set(kept.column("trace_id").to_pylist()))
    t.traces_dropped = sum(1 for d in decisions if not d.kept)
    t.cost_usd = round(pc.sum(out.column("cost_usd")).as_py() or 0.0, 10)
    t.priced_spans = pc.sum(pc.equal(out.column("cost_status"), "priced")).as_py() or 0
    for step in steps:
        for c in step.changes:
            for entity, n in c.pii.items():
                t.pii[entity] = t.pii.get(entity, 0) + n
            t.offloaded_values += sum(
                1
                for old, new in c.attributes.values()
                if isinstance(new, str) and new.startswith(ARTIFACT_PREFIX) and not str(old).startswith(ARTIFACT_PREFIX)
            )
    t.bytes_written = _parquet_bytes(kept)
    return t


def explain(config: Config, spans: pa.Table, source: str, hide_values: bool) -> Explanation:
    steps, out = run_chain_explained(config, spans)
    decisions = _decisions(out)
    return Explanation(config.source, source, hide_values, steps, decisions, _totals(spans, out, steps, decisions))


# -- output ------------------------------------------------------------------------------------------
def _shown(value: Any, hide: bool, key: str = "") -> Any:
    """A value as explain prints it: cut to SHOWN_CHARS; from a lake only numbers, booleans and tracelake.* values."""
    if value is None or isinstance(value, bool | int | float):
        return value
    text = str(value)
    if hide and not key.startswith("tracelake.") and key not in ("cost_status", "span_type"):
        return f"<{len(text)} chars>"
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"


def to_json(e: Explanation) -> dict[str, Any]:
    def change(c: SpanChange) -> dict[str, Any]:
        return {
            "trace_id": c.trace_id,
            "span_id": c.span_id,
            "name": c.name,
            "dropped": c.dropped,
            "held": c.held,
            "columns": {
                k: [_shown(a, e.hide_values, k), _shown(b, e.hide_values, k)] for k, (a, b) in c.columns.items()
            },
            "attributes": {
                k: [_shown(a, e.hide_values, k), _shown(b, e.hide_values, k)] for k, (a, b) in c.attributes.items()
            },
            "pii": c.pii,
        }

    return {
        "config": e.config,
        "input": e.source,
        "steps": [
            {
                "processor": s.processor,
                "stage": s.stage,
                "spans_in": s.spans_in,
                "spans_out": s.spans_out,
                "changes": [change(c) for c in s.changes],
            }
            for s in e.steps
        ],
        "decisions": [dataclasses.asdict(d) for d in e.decisions],
        "totals": dataclasses.asdict(e.totals),
    }


def _change_lines(c: SpanChange, hide: bool) -> Iterator[str]:
    if c.dropped:
        yield "dropped (reaches no table)"
        return
    if c.pii:
        yield "found " + ", ".join(f"{entity} ×{n}" for entity, n in sorted(c.pii.items()))
    for key, (old, new) in c.columns.items():
        yield f"{key}: {_shown(old, hide, key)!r} → {_shown(new, hide, key)!r}"
    for key, (old, new) in c.attributes.items():
        if old is None:
            yield f"+ {key} = {_shown(new, hide, key)!r}"
        elif new is None:
            yield f"- {key}"
        elif isinstance(new, str) and new.startswith(ARTIFACT_PREFIX):
            yield f"{key}: offloaded ({len(str(old))} chars) → {new[:40]}…"
        else:
            yield f"{key}: {_shown(old, hide, key)!r} → {_shown(new, hide, key)!r}"
    if c.held:
        yield "held until its trace was decided (see the sampling decisions)"


def to_text(e: Explanation) -> str:
    hide = e.hide_values
    lines = [f"{e.config} on {e.source}" + (" (values from a lake are not shown)" if hide else "")]
    for s in e.steps:
        lines.append(f"\n{s.stage} · {s.processor}: {s.spans_in} spans in, {s.spans_out} out, {len(s.changes)} changed")
        for c in s.changes:
            lines.append(f"  {c.trace_id[:8]}… {c.span_id[:8]}… {c.name}")
            lines += [f"      {line}" for line in _change_lines(c, hide)]
    if e.decisions:
        lines.append("\nsampling decisions:")
        for d in e.decisions:
            why = f"kept by {', '.join(d.policies)}" if d.kept else "dropped: no policy kept it (held back)"
            lines.append(f"  {d.trace_id}  {why}")
    lines.append("\n" + _totals_text(e.totals))
    return "\n".join(lines)


def _totals_text(t: Totals) -> str:
    pii = ", ".join(f"{k} ×{v}" for k, v in sorted(t.pii.items())) or "none"
    return (
        f"totals: {t.spans_in} spans of {t.traces} traces in; {t.spans_out} to spans, {t.spans_held_back} held back, "
        f"{t.spans_dropped} dropped; traces kept {t.traces_kept}, dropped {t.traces_dropped}; cost ${t.cost_usd:.6f} "
        f"({t.priced_spans} spans priced); PII found: {pii}; {t.offloaded_values} values offloaded; "
        f"{t.bytes_written} bytes of spans Parquet"
    )


DIFF_ROWS = (
    "spans_out",
    "spans_held_back",
    "spans_dropped",
    "traces_kept",
    "traces_dropped",
    "cost_usd",
    "priced_spans",
    "pii_found",
    "offloaded_values",
    "bytes_written",
)


def _diff_value(t: Totals, row: str) -> float:
    return float(sum(t.pii.values())) if row == "pii_found" else float(getattr(t, row))


def diff_json(a: Explanation, b: Explanation) -> dict[str, Any]:
    decided_a = {d.trace_id: d.kept for d in a.decisions}
    decided_b = {d.trace_id: d.kept for d in b.decisions}
    differ = sorted(t for t in decided_a.keys() | decided_b.keys() if decided_a.get(t, True) != decided_b.get(t, True))
    return {
        "input": a.source,
        "configs": [a.config, b.config],
        "totals": {row: [_diff_value(a.totals, row), _diff_value(b.totals, row)] for row in DIFF_ROWS},
        "pii": [a.totals.pii, b.totals.pii],
        "traces_decided_differently": [
            {"trace_id": t, "kept": [decided_a.get(t, True), decided_b.get(t, True)]} for t in differ
        ],
    }


def diff_text(a: Explanation, b: Explanation) -> str:
    d = diff_json(a, b)
    width = max(len(a.config), len(b.config), 12)
    lines = [f"{a.source}: {a.config} vs {b.config}", f"{'':18} {a.config:>{width}} {b.config:>{width}}   change"]
    for row, (x, y) in d["totals"].items():
        fmt = (lambda v: f"{v:.6f}") if row == "cost_usd" else (lambda v: f"{v:.0f}")
        lines.append(f"{row:18} {fmt(x):>{width}} {fmt(y):>{width}}   {'+' if y >= x else ''}{fmt(y - x)}")
    for t in d["traces_decided_differently"]:
        ka, kb = t["kept"]
        lines.append(f"  {t['trace_id']}: {'kept' if ka else 'dropped'} → {'kept' if kb else 'dropped'}")
    return "\n".join(lines)
