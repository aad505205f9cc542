"""cost: spans/s with the `cost` processor against the empty chain, in the same run, on the same bytes.

    python benchmarks/cost_bench.py [--traces 6000] [--seed 3] [--repeat 5] [--batch 8192]

Traffic: `pipeline.demo.build_requests(traces, seed)` — the demo's three applications (OTel GenAI,
OpenInference, OpenLLMetry legacy), about a third of the spans LLM calls over a handful of models
(gpt-4o, gpt-4o-mini, o3-mini, claude-3-5-sonnet with cache reads/writes, gemini-1.5-flash via two
providers, a vLLM and an Ollama model no price table knows).

Two measurements, each alternating the two chains `repeat` times and keeping the best pass:
(1) the worker's floor, one thread, no network: decode (pipeline.otlp.wire) → normalize → chain →
    ParquetSink.write → flush (zstd), in batches of up to --batch spans as the worker takes them;
(2) the processor alone on the same normalized batches (what `cost` adds per span).
Printed: spans/s for both chains, the ratio (target >= 0.90), and the processor's own spans/s.
"""

from __future__ import annotations

# first, as in `tracelake run`: importing pipeline configures Arrow's jemalloc before pyarrow loads
import pipeline  # noqa: F401

# isort: split
import argparse
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import harness
from core.conventions import Normalizer
from pipeline.demo import build_requests
from pipeline.otlp.wire import decode_bodies
from pipeline.service import use_server_memory_pool
from processors.cost import CostConfig, CostProcessor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--traces", type=int, default=6000)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8192, help="spans per batch (the worker's max_batch_spans)")
    args = ap.parse_args()
    use_server_memory_pool()  # the worker's allocator

    requests = build_requests(args.traces, seed=args.seed)
    groups = harness.worker_batches(requests, args.batch)
    normalizer = Normalizer()
    tables = []
    for i, group in enumerate(groups):
        tables.append(normalizer(decode_bodies(group, [f"bench:{i}@{j}" for j in range(len(group))])))
    whole = pa.concat_tables(tables)
    n = whole.num_rows
    llm = pc.sum(pc.is_in(whole.column("span_type"), pa.array(["llm", "embedding"]))).as_py()
    models = pc.count_distinct(pc.coalesce(whole.column("response_model"), whole.column("request_model"))).as_py()
    sizes = [t.num_rows for t in tables]
    print(
        f"traffic: {n} spans in {len(tables)} batches ({min(sizes)}-{max(sizes)} spans), "
        f"{llm / n:.0%} LLM spans, {models} distinct model names, "
        f"{sum(len(b) for b in requests) / n:.0f} B/span of OTLP"
    )

    cost = CostProcessor(CostConfig())
    for t in tables:  # warm: resolve every model once, as a long-running worker has
        cost.process(t)

    with tempfile.TemporaryDirectory(prefix="cost-bench-") as tmp:
        lake = Path(tmp) / "lake"
        wall = {"empty": float("inf"), "cost": float("inf")}
        cpu = dict(wall)
        for r in range(args.repeat):
            order = [("empty", []), ("cost", [cost])]
            for name, chain in order if r % 2 == 0 else order[::-1]:  # alternate: no first-run advantage
                run = harness.worker_path(groups, chain, lake)
                assert run.spans == n
                wall[name] = min(wall[name], run.wall)
                cpu[name] = min(cpu[name], run.cpu)
    print(f"(1) worker floor, decode → normalize → chain → Parquet, best of {args.repeat}, alternating:")
    print("                  wall spans/s    CPU spans/s")
    for name, label in (("empty", "empty chain"), ("cost", "[cost]     ")):
        print(f"    {label}   {n / wall[name]:12,.0f}   {n / cpu[name]:12,.0f}")
    print(
        f"    ratio         {wall['empty'] / wall['cost']:12.3f}   {cpu['empty'] / cpu['cost']:12.3f}"
        "   (target >= 0.90)"
    )

    alone = float("inf")
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        for t in tables:
            cost.process(t)
        alone = min(alone, time.perf_counter() - t0)
    print(f"(2) cost.process alone: {n / alone:,.0f} spans/s ({alone / n * 1e6:.2f} µs/span)")
    print(
        f"    ratio implied by (1) empty wall + (2): {wall['empty'] / (wall['empty'] + alone):.3f}"
        " (less noisy than (1) on a shared machine)"
    )
    fresh = CostProcessor(CostConfig())
    out = pa.concat_tables([fresh.process(t) for t in tables])
    counts = pc.value_counts(out.column("cost_status")).flatten()
    statuses = dict(zip(*(c.to_pylist() for c in counts), strict=True))
    print(f"    statuses: {statuses}")
    print(f"    unknown models: {fresh.stats['unknown_model']}")


if __name__ == "__main__":
    main()
