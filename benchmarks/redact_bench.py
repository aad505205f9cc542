"""redact_pii: spans/s with the processor against the empty chain, on the same requests, in one run.

    python benchmarks/redact_bench.py [--shapes demo,prompt-heavy] [--traces 3000] [--ner-traces 1000]
                                      [--seed 3] [--repeat 3] [--chains empty,pattern,default]

Traffic (benchmarks/traffic.py): `demo` (the `tracelake demo` generator, 512-span requests) and
`prompt-heavy` (a RAG support assistant: 4 spans per trace, a 1.4 KB shared system prompt, a 0.7 KB unique
user message with a name, an email and a card number, a 0.5 KB retrieved article, JSON tool arguments).
Requests are grouped like the worker groups bus messages: up to 8,192 spans (max_batch_spans) per batch.

Chains, each on the worker's path end to end in this process (columnar decode → normalize → chain →
ParquetSink → flush), one process, one thread:
  empty     no processor: the baseline
  pattern   redact_pii with ner: off (structured types and secrets: the RE2 fast path)
  default   redact_pii as conf/tracelake.yaml runs it in the worker: patterns and spaCy NER on `ner_keys`
  presidio  redact_pii ner: off, detector: presidio (Presidio's recognizers on the RE2-flagged values)

Printed per shape and chain: spans/s for the whole path (wall clock, best of --repeat), spans per CPU-second
of the process (best), the ratio to the empty chain of both, the processor's own share, and its counters.
Chains are interleaved within a repeat, so machine noise hits them alike; each repeat builds a fresh
processor after an untimed warm-up on other traffic (models, phone metadata, tldextract), caches cleared.
The NER chain runs on the first --ner-traces traces only, next to an empty chain on the same subset
(`empty@ner`).
"""

from __future__ import annotations

# first, as in `tracelake run`: importing pipeline configures Arrow's jemalloc before pyarrow loads
import pipeline  # noqa: F401

# isort: split
import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import harness
from benchmarks.traffic import SHAPES, build, describe
from core.conventions import Normalizer
from core.processor import ProcessorContext
from pipeline.service import use_server_memory_pool
from processors.redact_pii import PiiRedactor, RedactPiiConfig

CHAINS: dict[str, dict[str, Any] | None] = {
    "empty": None,
    "pattern": {"ner": "off"},
    "default": {"ner": "on"},
    "presidio": {"ner": "off", "detector": "presidio"},
}
COUNTERS = ("values", "scanned", "known_clean", "flagged", "cache_hits", "cache_misses", "hashed", "ner_texts",
            "ner_skipped", "ner_windows", "ner_chars")  # fmt: skip


def make_processor(name: str) -> PiiRedactor | None:
    cfg = CHAINS[name]
    if cfg is None:
        return None
    return PiiRedactor(RedactPiiConfig(**cfg), ProcessorContext(processor_id="redact_pii", normalizer=Normalizer()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--traces", type=int, default=3000)
    ap.add_argument("--ner-traces", type=int, default=1000, help="traces for the default chain and its empty@ner")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--chains", default="empty,pattern,default")
    args = ap.parse_args()
    use_server_memory_pool()  # the worker's allocator
    os.environ.setdefault("TRACELAKE_HASH_KEY", "benchmark-only-key-0123456789abcdef")
    chains = [c.strip() for c in args.chains.split(",") if c.strip()]
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    for c in chains:
        if c not in CHAINS:
            raise SystemExit(f"unknown chain {c!r}; known: {', '.join(CHAINS)}")
    workdir = Path(tempfile.mkdtemp(prefix="redact_bench_"))
    try:
        for shape in shapes:
            bench_shape(shape, chains, args, workdir / shape)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def bench_shape(shape: str, chains: list[str], args: argparse.Namespace, workdir: Path) -> None:
    requests = build(shape, args.traces, args.seed)
    batches = harness.worker_batches(requests)
    ner_batches = harness.worker_batches(build(shape, args.ner_traces, args.seed))
    warm = harness.worker_batches(build(shape, 100, args.seed + 1000))  # phone metadata, spaCy, tldextract
    print(f"\n== {shape}: {args.traces} traces: {describe(requests)}; batches of {harness.BATCH_SPANS} spans")
    results: dict[str, dict[str, float]] = {}
    counters: dict[str, dict[str, int]] = {}

    def measure(label: str, name: str, traffic: list[list[bytes]], rep: int) -> None:
        proc = make_processor(name)
        chain = [proc] if proc is not None else []
        harness.worker_path(warm, chain, workdir / f"warm_{label}_{rep}")
        if proc is not None:
            proc.reset_caches()
            proc.counters.clear()
        run = harness.worker_path(traffic, chain, workdir / f"{label}_{rep}")
        r = {"spans": run.spans, "seconds": run.wall, "cpu": run.cpu, "proc_seconds": run.stages["chain"]}
        best = results.setdefault(label, dict(r))
        best["cpu"] = min(best["cpu"], r["cpu"])
        if r["seconds"] <= best["seconds"]:
            best.update(spans=r["spans"], seconds=r["seconds"], proc_seconds=r["proc_seconds"])
            counters[label] = dict(proc.counters) if proc is not None else {}

    for rep in range(args.repeat):
        for name in chains:  # interleaved, so that machine noise hits every chain alike
            if name != "default":
                measure(name, name, batches, rep)
        if "default" in chains:
            measure("empty@ner", "empty", ner_batches, rep)
            measure("default", "default", ner_batches, rep)

    head = f"{'chain':10}{'spans':>8}{'spans/s':>10}{'vs empty':>10}{'spans/CPU-s':>13}{'vs empty':>10}"
    head += f"{'proc µs/span':>14}"
    print(head)
    for name in [c for c in chains if c != "default"] + (["empty@ner", "default"] if "default" in chains else []):
        r = results[name]
        base = results["empty@ner" if name in ("default", "empty@ner") else "empty"]
        wall, cpu = r["spans"] / r["seconds"], r["spans"] / r["cpu"]
        ratio = wall / (base["spans"] / base["seconds"])
        cpu_ratio = cpu / (base["spans"] / base["cpu"])
        proc = f"{r['proc_seconds'] / r['spans'] * 1e6:.1f}" if r["proc_seconds"] else "-"
        print(f"{name:10}{r['spans']:>8}{wall:>10,.0f}{ratio:>10.0%}{cpu:>13,.0f}{cpu_ratio:>10.0%}{proc:>14}")
    for name, c in counters.items():
        if c:
            print(f"  {name}: " + "  ".join(f"{k}={c.get(k, 0)}" for k in COUNTERS if c.get(k)))


if __name__ == "__main__":
    main()
