"""Trace summaries and the one-call-counted-once rule: CPU per span, with and without repeated calls.

    python benchmarks/trace_summary_bench.py [--traces 8000] [--seed 0] [--repeat 5]

Traffic: `pipeline.demo.build_requests(traces, seed)` decoded and normalised once (the demo's three
applications; 35% LLM spans). Then, best of --repeat, CPU seconds per span of:

- `normalize` (the dialect columns, including OpenInference's invocation-parameter models);
- `TraceSummarizer.observe` over batches of 8192 spans, then `due(force=True)`, on
  (a) the demo traffic, in which no call is recorded twice, and
  (b) the same traffic with every LLM span recorded a second time by another instrumentation (a child span
      with its own id and scope, as the anthropic SDK's own span nests under an instrumentor's): every call
      is then a pair that pipeline/duplicate_calls.py must find, and the script checks that it finds all.
"""

from __future__ import annotations

# first, as in `tracelake run`: importing pipeline configures Arrow's jemalloc before pyarrow loads
import pipeline  # noqa: F401

# isort: split
import argparse
import time

import pyarrow as pa
import pyarrow.compute as pc

from core.conventions import normalize
from pipeline.demo import build_requests
from pipeline.otlp.wire import decode_bodies
from pipeline.trace_summary import TraceSummarizer

BATCH_SPANS = 8192


def _best(repeat: int, run: object) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        run()  # type: ignore[operator]
        best = min(best, time.process_time() - start)
    return best


def _twice(table: pa.Table) -> pa.Table:
    """`table` plus, for every LLM span, a child span of another scope describing the same call."""
    llm = table.filter(pc.equal(table.column("span_type"), "llm"))
    n = llm.num_rows
    changes = {
        "parent_span_id": llm.column("span_id"),
        "span_id": pa.array([f"{i:016x}" for i in range(1, n + 1)]),
        "scope_name": pa.array(["com.anthropic.sdk.python"] * n),
    }
    for name, column in changes.items():
        llm = llm.set_column(llm.schema.get_field_index(name), name, column)
    return pa.concat_tables([table, llm])


def _summarise(table: pa.Table) -> int:
    summarizer = TraceSummarizer(trace_idle=5, clock=lambda: 0.0)
    for i in range(0, table.num_rows, BATCH_SPANS):
        summarizer.observe(table.slice(i, BATCH_SPANS), "bench", (1, 1))
    parts = summarizer.due(force=True)
    return sum(len(d) for p in parts for d in p.rows.column("duplicate_spans").to_pylist())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", type=int, default=8000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    bodies = [r if isinstance(r, bytes) else r.SerializeToString() for r in build_requests(args.traces, args.seed)]
    raw = decode_bodies(bodies, [f"bench@{i}" for i in range(len(bodies))])
    table = normalize(raw)
    twice = _twice(table)
    print(f"traffic: {table.num_rows} spans of {args.traces} demo traces; best of {args.repeat}, CPU time")
    seconds = _best(args.repeat, lambda: normalize(raw))
    print(f"  normalize                          {seconds * 1e6 / table.num_rows:6.2f} µs/span")
    for label, spans, expected in (("no call recorded twice", table, 0), ("every LLM call twice", twice, None)):
        found = _summarise(spans)
        pairs = spans.num_rows - table.num_rows
        assert found == (expected if expected is not None else pairs), (label, found)
        seconds = _best(args.repeat, lambda s=spans: _summarise(s))
        print(f"  summaries, {label:24s} {seconds * 1e6 / spans.num_rows:6.2f} µs/span ({found} duplicates found)")


if __name__ == "__main__":
    main()
